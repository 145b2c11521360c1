"""Batched inference: bounded per-model queues, padding to fixed sizes, one worker per model.

Capture threads call :meth:`Dispatcher.dispatch` with each batch of finished (or
snapshotted) connections. It picks, per model, the rows that model's trigger wants and
puts them on that model's :class:`ConnQueue` - a bounded queue counted in connections.
Live capture never waits: when a queue is full the rows are counted as dropped. Replay
waits for room instead (there is no kernel buffer to lose packets from).

A :class:`ModelWorker` takes up to the largest configured batch size from its queue,
flushing a partial batch once its oldest connection has waited ``max_delay``; pads it to
the next configured size (each one compiled and warmed before the model serves), runs the
model that is current *at that moment* and hands a :class:`PredictionBatch` to the writer.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..flows import layout as L
from ..outputs.eve import PredictionBatch
from ..pipeline import ConnBatch
from ..views.conn_series import SeriesAssembler
from .registry import ModelSlot

log = logging.getLogger("malsensor.inference")


class ConnQueue:
    """Bounded FIFO of connection rows (records, features, arrival time), counted in rows."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: collections.deque = collections.deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.accepted = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._rows

    def put(self, records: np.ndarray, features: np.ndarray, t_ns: int, *, block: bool,
            stop: threading.Event | None = None, on_wait: Callable[[], None] | None = None) -> int:
        """Queue rows; returns how many were accepted (the rest are counted as dropped)."""
        n = int(records.shape[0])
        if n == 0:
            return 0
        with self._cond:
            if block:
                while self._rows + n > self.capacity and self._rows > 0 and not self._closed:
                    if stop is not None and stop.is_set():
                        break
                    self._cond.wait(0.1)
                    if on_wait is not None:
                        on_wait()  # waiting on the model is progress, not a stuck capture thread
            room = self.capacity - self._rows if not block or self._rows > 0 else n
            if self._closed:
                room = 0
            take = min(n, max(room, 0))
            if take < n:
                self.dropped += n - take
            if take:
                if take < n:
                    records, features = records[:take], features[:take]
                self._chunks.append((records, features, t_ns))
                self._rows += take
                self.accepted += take
                self._cond.notify_all()
            return take

    def take(self, max_rows: int, max_delay_s: float, poll_s: float = 0.5) -> tuple | None:
        """Rows for one batch: waits until ``max_rows`` are queued or the oldest row has
        waited ``max_delay_s``. Returns None after ``poll_s`` with nothing queued (so the
        worker can show it is alive), or ``()`` once closed and empty."""
        with self._cond:
            deadline = time.monotonic() + poll_s
            while self._rows == 0:
                if self._closed:
                    return ()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            oldest_ns = self._chunks[0][2]
            flush_at = oldest_ns / 1e9 + max_delay_s
            while self._rows < max_rows and not self._closed:
                left = flush_at - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            recs, feats, ts = [], [], []
            need = max_rows
            while need and self._chunks:
                r, f, t = self._chunks[0]
                k = r.shape[0]
                if k <= need:
                    self._chunks.popleft()
                else:
                    self._chunks[0] = (r[need:], f[need:], t)
                    r, f, k = r[:need], f[:need], need
                recs.append(r)
                feats.append(f)
                ts.append(np.full(k, t, dtype=np.int64))
                need -= k
            got = max_rows - need
            self._rows -= got
            self._cond.notify_all()
        if len(recs) == 1:
            return recs[0], feats[0], ts[0]
        return np.concatenate(recs), np.concatenate(feats), np.concatenate(ts)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class SeriesRoute:
    """A conn_series model's :class:`SeriesAssembler`, shared by the capture threads.

    Serials are unique per tracker, and there is one tracker per capture thread: the
    thread id keeps them apart. Kept across configuration reloads (the assembler holds
    the snapshots of connections still alive)."""

    def __init__(self, lookback: int, snapshot_points: Sequence[int]) -> None:
        self.assembler = SeriesAssembler(lookback, snapshot_points)
        self.lookback = lookback
        self.snapshot_points = tuple(snapshot_points)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.assembler)

    def feed(self, cb: ConnBatch) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self.assembler.feed(cb.records, cb.features, threading.get_ident())


@dataclass(frozen=True)
class Route:
    """Which rows of a connection batch go to one model."""

    slot: ModelSlot
    queue: ConnQueue
    trigger: str               # "end" | "early"
    early_packets: int = 0
    snapshot_index: int = -1   # position of early_packets in the tracker's snapshot points
    series: SeriesRoute | None = None  # conn_series models: rows are assembled into (L, 17) series

    def select(self, cb: ConnBatch, is_snap: np.ndarray) -> np.ndarray:
        if self.trigger == "end":
            return ~is_snap
        rec = cb.records
        pkts = rec[:, L.S_PKTS] + rec[:, L.D_PKTS]
        at_point = is_snap & ((rec[:, L.END] >> 8) == self.snapshot_index)
        return at_point | (~is_snap & (pkts < self.early_packets))


class Dispatcher:
    """Fans connection batches out to the models' queues (called from capture threads)."""

    def __init__(self, *, block: bool, stop: threading.Event) -> None:
        self.routes: tuple[Route, ...] = ()
        self.block = block
        self.stop = stop
        self._lock = threading.Lock()
        self.connections = 0
        self.snapshots = 0
        self.batches = 0

    def set_routes(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)  # one assignment: capture threads see the old or the new tuple

    def dispatch(self, cb: ConnBatch, beat: Callable[[], None] | None = None) -> None:
        t = time.monotonic_ns()
        is_snap = cb.is_snapshot
        n_snap = int(is_snap.sum())
        with self._lock:
            self.connections += cb.n - n_snap
            self.snapshots += n_snap
            self.batches += 1
        for r in self.routes:
            if r.series is not None:
                recs, x = r.series.feed(cb)
                r.queue.put(recs, x, t, block=self.block, stop=self.stop, on_wait=beat)
                continue
            m = r.select(cb, is_snap)
            if m.all():
                r.queue.put(cb.records, cb.features, t, block=self.block, stop=self.stop, on_wait=beat)
            elif m.any():
                r.queue.put(cb.records[m], cb.features[m], t, block=self.block, stop=self.stop, on_wait=beat)


@dataclass
class WorkerCounters:
    batches: int = 0
    predictions: int = 0
    alerts: int = 0
    padded_rows: int = 0
    unserved: int = 0          # rows that arrived while the slot had no model
    errors: int = 0
    batch_sizes: dict = None   # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.batch_sizes is None:
            self.batch_sizes = {}


class ModelWorker(threading.Thread):
    """Runs one model over its queue and hands predictions to ``emit``."""

    def __init__(self, slot: ModelSlot, queue: ConnQueue, batch_sizes: Sequence[int],
                 max_delay_s: Callable[[], float], emit: Callable[[PredictionBatch], None]) -> None:
        super().__init__(name=f"malsensor-model-{slot.name}", daemon=True)
        self.slot = slot
        self.queue = queue
        self.sizes = sorted(batch_sizes)
        self.max_delay_s = max_delay_s
        self.emit = emit
        self.counters = WorkerCounters()
        self.heartbeat = time.monotonic()
        self.busy_since: float | None = None
        self._pad: dict[tuple[int, ...], np.ndarray] = {}

    def _padded(self, x: np.ndarray, size: int, dtype: str) -> np.ndarray:
        key = (size, *x.shape[1:])  # (size, 17) or, for conn_series, (size, L, 17)
        buf = self._pad.get(key)
        if buf is None or buf.dtype != np.dtype(dtype):
            buf = self._pad[key] = np.zeros(key, dtype=dtype)
        n = x.shape[0]
        buf[:n] = x
        buf[n:] = 0
        return buf

    def run(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            got = self.queue.take(self.sizes[-1], self.max_delay_s())
            self.heartbeat = time.monotonic()
            if got is None:
                continue
            if len(got) == 0:  # closed and drained
                return
            records, features, t_ns = got
            self.busy_since = self.heartbeat
            try:
                self._run_batch(records, features, t_ns)
            except Exception:
                self.counters.errors += 1
                log.exception("model %s: inference failed for a batch of %d connections", self.slot.name,
                              records.shape[0])
            finally:
                self.busy_since = None

    def _run_batch(self, records: np.ndarray, features: np.ndarray, t_ns: np.ndarray) -> None:
        model = self.slot.current  # read once: a swap during this batch does not affect it
        cfg = self.slot.cfg
        n = records.shape[0]
        if model is None:
            self.counters.unserved += n
            return
        art = model.artifact
        size = next(s for s in self.sizes if s >= n)
        x = self._padded(features, size, art.view.dtype)
        probs = np.asarray(art.predict_proba(x))[:n]
        cls = np.argmax(probs, axis=1)
        k = min(cfg.topk, probs.shape[1])
        topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        p = probs[np.arange(n), cls]
        labels = model.labels
        benign = np.array([(labels[i] if i < len(labels) else f"unknown_{i}") in cfg.benign_labels
                           for i in range(probs.shape[1])], dtype=bool)
        alert = ~benign[cls] & (p >= cfg.alert_threshold)
        c = self.counters
        c.batches += 1
        c.predictions += n
        c.alerts += int(alert.sum())
        c.padded_rows += size - n
        c.batch_sizes[size] = c.batch_sizes.get(size, 0) + 1
        if features.ndim == 3:  # a series: events carry its latest 17 features
            features = features[:, -1, :]
        self.emit(PredictionBatch(self.slot.name, model.version, cfg.trigger, labels, records, features, probs,
                                  cls.astype(np.int64), topk.astype(np.int64), alert, t_ns))
