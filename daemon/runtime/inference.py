"""Batched inference: bounded per-model queues, padding to fixed sizes, one worker per model.

Source threads call :meth:`Dispatcher.dispatch` with each batch they produce (finished or
snapshotted connections, for the packet sources). Each model's :class:`Route` asks its
view's router which rows that model classifies now and with what inputs, and puts them on
the model's :class:`EntityQueue` - a bounded queue counted in rows. Live sources never
wait: when a queue is full the rows are counted as dropped. Sources that end by themselves
(a file) wait for room instead (there is no kernel buffer to lose packets from).

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

from ..outputs.eve import PredictionBatch
from ..views.base import EntityRows, Router
from .registry import ModelSlot

log = logging.getLogger("malsensor.inference")


class EntityQueue:
    """Bounded FIFO of routed rows (keys, inputs, event detail, arrival time), counted in rows."""

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

    def put(self, rows: EntityRows, t_ns: int, *, block: bool, stop: threading.Event | None = None,
            on_wait: Callable[[], None] | None = None) -> int:
        """Queue rows; returns how many were accepted (the rest are counted as dropped)."""
        n = rows.n
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
                detail = rows.x if rows.detail is None else rows.detail
                keys, x = rows.keys, rows.x
                if take < n:
                    keys, x, detail = keys[:take], x[:take], detail[:take]
                self._chunks.append((keys, x, detail, t_ns))
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
            oldest_ns = self._chunks[0][3]
            flush_at = oldest_ns / 1e9 + max_delay_s
            while self._rows < max_rows and not self._closed:
                left = flush_at - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            keys, xs, details, ts = [], [], [], []
            need = max_rows
            while need and self._chunks:
                k_, x, d, t = self._chunks[0]
                k = x.shape[0]
                if k <= need:
                    self._chunks.popleft()
                else:
                    self._chunks[0] = (k_[need:], x[need:], d[need:], t)
                    k_, x, d, k = k_[:need], x[:need], d[:need], need
                keys.append(k_)
                xs.append(x)
                details.append(d)
                ts.append(np.full(k, t, dtype=np.int64))
                need -= k
            got = max_rows - need
            self._rows -= got
            self._cond.notify_all()
        if len(xs) == 1:
            return keys[0], xs[0], details[0], ts[0]
        return np.concatenate(keys), np.concatenate(xs), np.concatenate(details), np.concatenate(ts)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(frozen=True)
class Route:
    """One model's share of what a source produces: its view's router picks the rows."""

    slot: ModelSlot
    queue: EntityQueue
    router: Router
    consumes: str               # the product the view reads ("connections", ...)


class Dispatcher:
    """Fans the sources' batches out to the models' queues (called from source threads)."""

    def __init__(self, *, block: bool, stop: threading.Event) -> None:
        self.routes: tuple[Route, ...] = ()
        self.block = block
        self.stop = stop
        self._lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()  # what the batches say they hold
        self.batches = 0

    def set_routes(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)  # one assignment: capture threads see the old or the new tuple

    def dispatch(self, batch, beat: Callable[[], None] | None = None) -> None:
        t = time.monotonic_ns()
        counts = batch.counts()
        with self._lock:
            self.counts.update(counts)
            self.batches += 1
        for r in self.routes:
            if r.consumes != batch.product:
                continue
            rows = r.router.route(batch)
            if rows is not None and rows.n:
                r.queue.put(rows, t, block=self.block, stop=self.stop, on_wait=beat)

    def finish(self) -> None:
        """The sources have stopped: each router hands over what it still holds (Router.finish)."""
        t = time.monotonic_ns()
        for r in self.routes:
            rows = r.router.finish()
            if rows is not None and rows.n:
                r.queue.put(rows, t, block=self.block, stop=self.stop)


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

    def __init__(self, slot: ModelSlot, queue: EntityQueue, batch_sizes: Sequence[int],
                 max_delay_s: Callable[[], float], emit: Callable[[PredictionBatch], None],
                 host: str = "", router: Callable[[], Router | None] = lambda: None) -> None:
        super().__init__(name=f"malsensor-model-{slot.name}", daemon=True)
        self.slot = slot
        self.queue = queue
        self.sizes = sorted(batch_sizes)
        self.max_delay_s = max_delay_s
        self.emit = emit
        self.counters = WorkerCounters()
        self.host = host
        self.router = router  # the model's current router (its trigger goes into the events)
        self.heartbeat = time.monotonic()
        self.busy_since: float | None = None
        self._pad: dict[tuple[int, ...], np.ndarray] = {}

    def _padded(self, x: np.ndarray, size: int, dtype: str) -> np.ndarray:
        key = (size, *x.shape[1:])  # (size, *the view's shape)
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
            keys, x, detail, t_ns = got
            self.busy_since = self.heartbeat
            try:
                self._run_batch(keys, x, detail, t_ns)
            except Exception:
                self.counters.errors += 1
                log.exception("model %s: inference failed for a batch of %d rows", self.slot.name, x.shape[0])
            finally:
                self.busy_since = None

    def _run_batch(self, keys: np.ndarray, features: np.ndarray, detail: np.ndarray, t_ns: np.ndarray) -> None:
        model = self.slot.current  # read once: a swap during this batch does not affect it
        cfg = self.slot.cfg
        n = features.shape[0]
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
        router = self.router()
        self.emit(PredictionBatch(self.slot.name, model.version, router.trigger if router is not None else "end",
                                  labels, keys, detail, probs, cls.astype(np.int64), topk.astype(np.int64), alert,
                                  t_ns, entity=cfg.view_spec().entity, host=self.host))
