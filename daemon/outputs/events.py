"""Event formatters by entity: the envelope every event shares, and the registry.

Every event is one JSON object per line with the same envelope::

    {"timestamp": "...+0000", "event_type": "...", "host": "...",
     "prediction": {"model", "version", "label", "class_id", "probability",
                    "topk": [[label, p], ...], "alert", "trigger"},
     ... the fields of the entity}

A formatter is registered for each entity a view describes (``connection``: the numba EVE
kernel of :mod:`.eve`, registered by :mod:`.connection`). An entity ``foo`` is looked up in
the module ``malsensor.daemon.outputs.foo``. Entities with few events (a processor trace, a
host window) subclass :class:`JsonFormatter` and only say what their fields are; the
connection formatter is a numba kernel because connections come by the hundred thousand.
"""
from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import numpy as np

from ..plugins import Registry
from .eve import PredictionBatch


class Formatter:
    entity: ClassVar[str]
    event_type: ClassVar[str]

    def eve_lines(self, pb: PredictionBatch, *, features: bool = True, select: np.ndarray | None = None,
                  **output_options) -> bytes:
        """UTF-8 lines (each ending in a newline) for the rows of ``pb`` (those in ``select``).
        ``features``: include what the model saw (``detail``). ``output_options``: the keys of the
        ``[[output]]`` that a formatter may use (``community_id_seed`` for connections)."""
        raise NotImplementedError

    def written(self, pb: PredictionBatch) -> None:
        """Called by the writer once every output has been handed ``pb``'s events (whether or not
        one asked this formatter for them): what the entity's source should only do once its
        events are written (the trace spool moves a sample to done/)."""


def format_time(ts_ns: int) -> str:
    """Epoch ns as Suricata writes ``timestamp``: ``YYYY-MM-DDTHH:MM:SS.uuuuuu+0000`` (UTC)."""
    sec, ns = divmod(int(ts_ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ns // 1000:06d}+0000"


def envelope(pb: PredictionBatch, j: int, event_type: str, ts_ns: int) -> dict[str, Any]:
    """The part every event shares, for row ``j``."""
    p = pb.probs[j].astype(np.float64)
    c = int(pb.class_id[j])
    prob = _finite(p[c]) if 0 <= c < p.shape[0] else None
    return {"timestamp": format_time(ts_ns), "event_type": event_type, "host": pb.host,
            "prediction": {"model": pb.model, "version": pb.version, "label": pb.label_of(c), "class_id": c,
                           "probability": prob,
                           "topk": [[pb.label_of(int(k)), _finite(p[k]) if 0 <= k < p.shape[0] else None]
                                    for k in pb.topk[j].tolist()],
                           "alert": bool(pb.alert[j]), "trigger": pb.trigger}}


def _finite(v: float) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


class JsonFormatter(Formatter):
    """Events built as dicts and serialised by :mod:`json` (a few microseconds each)."""

    def time_ns(self, pb: PredictionBatch, j: int) -> int:
        """The event's timestamp (epoch ns): when the entity's data ended. Default: now."""
        return time.time_ns()

    def fields(self, pb: PredictionBatch, j: int, features: bool) -> dict[str, Any]:
        """The entity's fields for row ``j``."""
        raise NotImplementedError

    def eve_lines(self, pb: PredictionBatch, *, features: bool = True, select: np.ndarray | None = None,
                  **output_options) -> bytes:
        rows = range(pb.n) if select is None else np.flatnonzero(select).tolist()
        out = []
        for j in rows:
            ev = envelope(pb, j, self.event_type, self.time_ns(pb, j))
            ev.update(self.fields(pb, j, features))
            out.append(json.dumps(ev, allow_nan=False, default=_plain))
        return ("\n".join(out) + "\n").encode() if out else b""


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON")


FORMATTERS: Registry[Formatter] = Registry("event formatter", "malsensor.daemon.outputs")


def register_formatter(fmt: Formatter) -> Formatter:
    return FORMATTERS.register(fmt.entity, fmt)
