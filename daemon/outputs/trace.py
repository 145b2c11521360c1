"""Events of entity ``trace`` (``event_type`` "trace"): one per processor trace and model.

The model scores windows; this formatter gathers a trace's windows (their rows may come in
several batches) and writes one event when the last arrives (daemon/pt/pending.py says how
many to expect). The trace's verdict follows Barnum: it alerts when any window alerts (a
non-benign class with probability >= the model's ``alert_threshold``); the event's label and
probability are those of its highest-scoring alerting window, else the class with the
highest mean probability over the windows. ``trace.top_windows`` lists the trace offsets of
the windows that score highest for the event's label.

Several outputs format the same batch: the aggregation runs once per batch and its events
are reused (``select``, an alerts-only output, keeps the alerting traces). Only when the
writer says the batch is with every output (``written``) are the traces it finished
completed, so a sample leaves the spool after its event was written.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np

from ..pt import pending
from .eve import PredictionBatch
from .events import JsonFormatter, _plain, envelope, register_formatter

TOP_WINDOWS = 5


class _Acc:
    __slots__ = ("probs", "alert", "offsets", "got", "top")

    def __init__(self, n: int, n_classes: int, top: int) -> None:
        self.probs = np.zeros((n, n_classes), np.float32)
        self.alert = np.zeros(n, bool)
        self.offsets = np.zeros(n, np.int64)
        self.got = np.zeros(n, bool)
        self.top = top


class TraceFormatter(JsonFormatter):
    entity = "trace"
    event_type = "trace"

    def __init__(self) -> None:
        self._acc: dict[tuple[int, int], _Acc] = {}
        self._lock = threading.Lock()
        # the batch last gathered: its events (alert, line) and the routes they complete
        self._last: tuple[PredictionBatch, list[tuple[bool, str]], list[tuple[int, int]]] | None = None

    def _gathered(self, pb: PredictionBatch) -> tuple:
        with self._lock:
            if self._last is None or self._last[0] is not pb:
                done: list[tuple[int, int]] = []
                self._last = (pb, self._gather(pb, done), done)
            return self._last

    def eve_lines(self, pb: PredictionBatch, *, features: bool = True, select: np.ndarray | None = None,
                  **output_options) -> bytes:
        lines = [text for alert, text in self._gathered(pb)[1] if select is None or alert]
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def written(self, pb: PredictionBatch) -> None:
        """The events are with every output: the traces they finish are done (daemon/pt/pending.py)."""
        _, _, done = self._gathered(pb)
        with self._lock:
            self._last = None
        for seq, rid in done:
            pending.complete_route(seq, rid)

    def _gather(self, pb: PredictionBatch, done: list[tuple[int, int]]) -> list[tuple[bool, str]]:
        out = []
        keys = pb.keys
        for j in range(pb.n):
            seq, rid, w, off = (int(v) for v in keys[j, :4])
            acc = self._acc.get((seq, rid))
            if acc is None:
                t = pending.get(seq)
                n = (t.routes.get(rid) if t is not None else None) or 0
                if n <= w:
                    continue   # a trace this process no longer tracks
                acc = self._acc[(seq, rid)] = _Acc(n, pb.probs.shape[1], t.top.get(rid, TOP_WINDOWS))
            acc.probs[w] = pb.probs[j]
            acc.alert[w] = pb.alert[j]
            acc.offsets[w] = off
            acc.got[w] = True
            if acc.got.all():
                del self._acc[(seq, rid)]
                out.append(self._event(pb, seq, acc))
                done.append((seq, rid))
        return out

    def _event(self, pb: PredictionBatch, seq: int, acc: _Acc) -> tuple[bool, str]:
        t = pending.get(seq)
        if acc.alert.any():
            idx = np.flatnonzero(acc.alert)
            best = idx[np.argmax(acc.probs[idx].max(axis=1))]
            probs = acc.probs[best]
        else:
            probs = acc.probs.mean(axis=0)
        cls = int(np.argmax(probs))
        alert = bool(acc.alert.any())
        topk = np.argsort(-probs, kind="stable")[: pb.topk.shape[1]]
        one = PredictionBatch(pb.model, pb.version, pb.trigger, pb.labels, pb.keys[:1], pb.detail[:1],
                              probs[None, :], np.array([cls]), topk[None, :], np.array([alert]), pb.t_ns[:1],
                              entity=pb.entity, host=pb.host)
        ev = envelope(one, 0, self.event_type, time.time_ns())
        order = np.argsort(-acc.probs[:, cls], kind="stable")[:acc.top]
        ev["trace"] = {"name": t.name if t else None, "label": t.label if t else None,
                       "source": t.source if t else None, "windows": int(acc.probs.shape[0]),
                       "alerting_windows": int(acc.alert.sum()),
                       "top_windows": [{"offset": int(acc.offsets[w]), "probability": float(acc.probs[w, cls])}
                                       for w in order.tolist()]}
        return alert, json.dumps(ev, allow_nan=False, default=_plain)

    def fields(self, pb, j, features):  # not used: eve_lines aggregates
        raise NotImplementedError


register_formatter(TraceFormatter())
