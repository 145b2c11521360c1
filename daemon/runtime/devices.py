"""Per-device verdicts: the per-connection probabilities of one source MAC pooled over a window.

Device identification (IoT Sentinel) names a device from the connections it opens, and one
connection is often ambiguous (a DNS query looks alike from every device). A model whose view
asks for it (``pkt_seq@1``'s ``device_window``) gets a :class:`DeviceAggregator` between its
worker and the writer: every prediction batch goes on to the outputs unchanged, and the
connections' probabilities are pooled per originator MAC over tumbling windows of connection
time (``device_window`` seconds, aligned on multiples of it since the epoch, by each
connection's start). A window is reported as one ``device`` event (daemon/outputs/device.py)
when a later window of the same MAC starts, when the newest connection seen is a whole window
past its end (a MAC that went quiet), and at shutdown.

Pooling (``device_pool``), measured on IoT Sentinel (README, quality table):

* ``mean``: the mean of the probability vectors;
* ``logmean``: the normalised geometric mean (sum of log probabilities, floored at 1e-6):
  confident connections weigh more;
* ``vote``: the share of connections whose top class is each class.

The trainer's per-capture accuracy (models/device_eval.py, bench/bench_quality.py) pools with
the same :func:`pool_probs`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..flows import layout as L
from ..outputs.device import DEVICE_KEY
from ..outputs.eve import PredictionBatch

POOLS = ("mean", "logmean", "vote")
LOG_FLOOR = 1e-6
NS = 1_000_000_000


def pool_sums(probs: np.ndarray, pool: str) -> np.ndarray:
    """What a window accumulates per connection for ``pool`` (summed over its connections)."""
    p = np.asarray(probs, dtype=np.float64)
    if pool == "mean":
        return p
    if pool == "logmean":
        return np.log(np.maximum(p, LOG_FLOOR))
    if pool == "vote":
        return np.eye(p.shape[1])[np.argmax(p, axis=1)]
    raise ValueError(f"unknown pool {pool!r} (allowed: {', '.join(POOLS)})")


def pooled(sums: np.ndarray, count: int, pool: str) -> np.ndarray:
    """A window's pooled probabilities from its sums."""
    if pool == "logmean":
        z = sums / max(count, 1)
        z = np.exp(z - z.max())
        return z / z.sum()
    return sums / max(count, 1)


def pool_probs(probs: np.ndarray, pool: str) -> np.ndarray:
    """The pooled probability vector of a set of connections."""
    return pooled(pool_sums(probs, pool).sum(axis=0), probs.shape[0], pool)


@dataclass
class _Window:
    index: int
    sums: np.ndarray
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass
class DeviceAggregator:
    """Pools one model's connection predictions per source MAC (thread-safe)."""

    window_s: float
    pool: str
    emit: Callable[[PredictionBatch], None]
    benign_labels: tuple[str, ...] = ()
    alert_threshold: float = 0.5
    min_connections: int = 1
    open: dict[int, _Window] = field(default_factory=dict)
    events: int = 0
    watermark: int = 0

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r} (allowed: {', '.join(POOLS)})")
        self.window_ns = max(1, round(self.window_s * NS))
        self._lock = threading.Lock()
        self._template: PredictionBatch | None = None

    def __call__(self, pb: PredictionBatch) -> None:
        self.emit(pb)
        out = self.add(pb)
        if out is not None:
            self.emit(out)

    def add(self, pb: PredictionBatch) -> PredictionBatch | None:
        """Account a batch of connection predictions; the device windows it closes."""
        if pb.n == 0 or pb.entity != "connection":
            return None
        rec = pb.keys
        mac = rec[:, L.SRC_MAC]
        ts = rec[:, L.FIRST_TS]
        win = ts // self.window_ns
        sums = pool_sums(pb.probs, self.pool)
        # group the batch by (MAC, window): per device, not per connection
        pairs = np.stack([mac, win], axis=1)
        uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        g_sums = np.zeros((uniq.shape[0], sums.shape[1]))
        np.add.at(g_sums, inv, sums)
        g_count = np.bincount(inv, minlength=uniq.shape[0])
        g_first = np.full(uniq.shape[0], np.iinfo(np.int64).max)
        np.minimum.at(g_first, inv, ts)
        g_last = np.zeros(uniq.shape[0], dtype=np.int64)
        np.maximum.at(g_last, inv, rec[:, L.LAST_TS])
        closed: list[tuple[int, _Window]] = []
        with self._lock:
            self._template = pb
            for k in range(uniq.shape[0]):   # one step per (device, window) of the batch
                m, w = int(uniq[k, 0]), int(uniq[k, 1])
                cur = self.open.get(m)
                if cur is not None and cur.index < w:
                    closed.append((m, self.open.pop(m)))
                    cur = None
                if cur is None:
                    cur = self.open[m] = _Window(w, np.zeros(sums.shape[1]), 0, int(g_first[k]), int(g_last[k]))
                elif cur.index > w:   # a late connection of an already reported window: pooled in the open one
                    pass
                cur.sums += g_sums[k]
                cur.count += int(g_count[k])
                cur.first_ns = min(cur.first_ns, int(g_first[k]))
                cur.last_ns = max(cur.last_ns, int(g_last[k]))
            self.watermark = max(self.watermark, int(ts.max()))
            quiet = self.watermark // self.window_ns - 1
            for m in [m for m, w in self.open.items() if w.index < quiet]:
                closed.append((m, self.open.pop(m)))
            return self._batch(closed)

    def flush(self) -> PredictionBatch | None:
        """Every open window (shutdown)."""
        with self._lock:
            closed = list(self.open.items())
            self.open.clear()
            return self._batch(closed)

    def _batch(self, closed: list[tuple[int, _Window]]) -> PredictionBatch | None:
        closed = [(m, w) for m, w in closed if w.count >= self.min_connections]
        if not closed or self._template is None:
            return None
        t = self._template
        keys = np.zeros(len(closed), dtype=DEVICE_KEY)
        probs = np.zeros((len(closed), closed[0][1].sums.shape[0]), dtype=np.float32)
        for i, (m, w) in enumerate(closed):
            keys[i] = (m, w.index * self.window_ns, (w.index + 1) * self.window_ns, w.first_ns, w.last_ns, w.count)
            probs[i] = pooled(w.sums, w.count, self.pool)
        cls = np.argmax(probs, axis=1).astype(np.int64)
        k = t.topk.shape[1] if t.topk.ndim == 2 else 1
        topk = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
        p = probs[np.arange(len(closed)), cls]
        benign = np.array([t.label_of(c) in self.benign_labels for c in cls.tolist()], dtype=bool)
        alert = ~benign & (p >= self.alert_threshold)
        self.events += len(closed)
        return PredictionBatch(t.model, t.version, f"window:{self.pool}", t.labels, keys,
                               np.zeros((len(closed), 0)), probs, cls, topk, alert,
                               np.full(len(closed), t.t_ns.max() if t.t_ns.size else 0, dtype=np.int64),
                               entity="device", host=t.host)
