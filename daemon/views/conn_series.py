"""The ``conn_series@1`` view: a connection's ``conn`` features at fixed packet counts.

Row ``t`` of a connection's ``(L, 17)`` series holds its 17 ``conn`` features after its
first ``SERIES_POINTS[t]`` packets (both directions), or its final features when it ended
with fewer packets. The tracker emits the intermediate rows as snapshots
(``TrackerConfig.snapshot_packets`` must include ``SERIES_POINTS[:L]``); a
:class:`SeriesAssembler` joins them (by serial) with the connection's final row.

A connection is *complete* - classified once - when it reaches ``SERIES_POINTS[L-1]``
packets (emitted from that snapshot) or ends, whichever comes first. The daemon and the
trainer both assemble series with this class, so they cannot disagree.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..flows import layout as L
from ..schema import Checker, opt
from .base import EntityRows, Router, register_view
from .conn import CONN_COLUMNS, N_FEATURES, ConnectionView

CONN_SERIES_VIEW = "conn_series"
CONN_SERIES_VERSION = 1
SERIES_POINTS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def series_snapshot_points(lookback: int) -> tuple[int, ...]:
    """The tracker snapshot points a lookback-``L`` series needs."""
    check_lookback(lookback)
    return tuple(SERIES_POINTS[:lookback])


def check_lookback(lookback: int) -> None:
    if not 1 <= int(lookback) <= len(SERIES_POINTS):
        raise ValueError(f"conn_series lookback {lookback} must be 1..{len(SERIES_POINTS)} "
                         f"(snapshot points {SERIES_POINTS})")


class SeriesAssembler:
    """Joins snapshot rows and final rows into complete ``(L, 17)`` series.

    Not thread-safe (callers feeding from several threads hold a lock). Memory is bounded
    by the connections alive in the trackers: an entry exists only between a connection's
    first snapshot and its final row (an emitted entry keeps just a marker until then).
    """

    def __init__(self, lookback: int, snapshot_points: Sequence[int]) -> None:
        check_lookback(lookback)
        self.lookback = int(lookback)
        self.snapshot_points = tuple(int(p) for p in snapshot_points)
        missing = [p for p in SERIES_POINTS[:lookback] if p not in self.snapshot_points]
        if missing:
            raise ValueError(f"tracker snapshot points {self.snapshot_points} lack the conn_series points {missing}")
        # snapshot index (END >> 8) -> series position, -1 for points other models asked for
        self._pos = np.array([SERIES_POINTS.index(p) if p in SERIES_POINTS[:lookback] else -1
                              for p in self.snapshot_points] or [-1], dtype=np.int64)
        # (source, serial) -> (L, 17) partial series, or None once emitted at its snapshot
        self._open: dict[tuple[int, int], np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self._open)

    def feed(self, records: np.ndarray, features: np.ndarray, source: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows (snapshots and final rows, in tracker order) -> complete connections:
        ``(records_out (n, N_COLS), x_out (n, L, 17))``. A connection completed by its last
        series snapshot is returned with that snapshot's record; otherwise with its final record."""
        records = np.asarray(records, dtype=np.int64).reshape(-1, L.N_COLS)
        features = np.asarray(features, dtype=np.float64).reshape(-1, N_FEATURES)
        lb = self.lookback
        end = records[:, L.END]
        snap = (end & 0xFF) == L.END_SNAPSHOT
        out_rec: list[np.ndarray] = []
        out_x: list[np.ndarray] = []
        opened = self._open
        # snapshots first: each precedes its own connection's final row (here or in an earlier batch)
        if snap.any():
            idx = np.flatnonzero(snap)
            k = end[idx] >> 8
            pos = np.where(k < self._pos.shape[0], self._pos[np.minimum(k, self._pos.shape[0] - 1)], -1)
            done: list[int] = []
            early_x: list[np.ndarray] = []
            for i, t in zip(idx.tolist(), pos.tolist()):
                if t < 0:
                    continue
                key = (source, int(records[i, L.SERIAL]))
                x = opened.get(key, 0)
                if x is None:  # already emitted
                    continue
                if isinstance(x, int):
                    x = opened[key] = np.full((lb, N_FEATURES), np.nan)
                x[t] = features[i]
                if t == lb - 1:
                    opened[key] = None
                    done.append(i)
                    # every earlier point was passed on the way (a filtered-out one keeps this row)
                    holes = np.isnan(x[:, 0])
                    x[holes] = features[i]
                    early_x.append(x)
            if done:
                out_rec.append(records[done])
                out_x.append(np.stack(early_x))
        fin = np.flatnonzero(~snap)
        if fin.size:
            frec = records[fin]
            fx = np.repeat(features[fin][:, None, :], lb, axis=1)
            keep = np.ones(fin.size, dtype=bool)
            if opened:
                for j, serial in enumerate(frec[:, L.SERIAL].tolist()):
                    key = (source, serial)
                    if key not in opened:
                        continue
                    x = opened.pop(key)
                    if x is None:
                        keep[j] = False
                        continue
                    have = ~np.isnan(x[:, 0])
                    fx[j, have] = x[have]
            if not keep.all():
                frec, fx = frec[keep], fx[keep]
            out_rec.append(frec)
            out_x.append(fx)
        if not out_rec:
            return (np.zeros((0, L.N_COLS), dtype=np.int64), np.zeros((0, lb, N_FEATURES), dtype=np.float64))
        if len(out_rec) == 1:
            return out_rec[0], out_x[0]
        return np.concatenate(out_rec), np.concatenate(out_x)


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class SeriesOptions:
    """The keys ``conn_series@1`` adds to a ``[[model]]`` table."""

    lookback: int = opt(0, "view = \"conn_series@1\" only: series length L (2..10); the model reads the conn "
                           "features after 2, 4, 8, ... packets and classifies a connection at "
                           "2**L packets or at its end, whichever comes first (trigger = \"end\")", min=0, max=64)
    trigger: str = opt("end", "a conn_series model classifies at its last series point or at the "
                              "connection's end: \"end\" only", choices=("end", "early"))
    early_packets: int = opt(0, "not used by conn_series (0)", min=0, max=1_000_000)


class SeriesRouter(Router):
    """A :class:`SeriesAssembler` shared by the capture threads of the sources.

    Serials are unique per tracker, and there is one tracker per capture thread: the thread id
    keeps them apart. The service keeps a router across configuration reloads while its key is
    unchanged (the assembler holds the snapshots of connections still alive)."""

    def __init__(self, lookback: int, snapshot_points: Sequence[int]) -> None:
        self.assembler = SeriesAssembler(lookback, snapshot_points)
        self._lock = threading.Lock()

    def pending(self) -> int:
        return len(self.assembler)

    def route(self, cb) -> EntityRows | None:
        with self._lock:
            recs, x = self.assembler.feed(cb.records, cb.features, threading.get_ident())
        if recs.shape[0] == 0:
            return None
        return EntityRows(recs, x, x[:, -1, :])  # events show the latest 17 features


class ConnSeriesView(ConnectionView):
    name = CONN_SERIES_VIEW
    version = CONN_SERIES_VERSION
    axes = ("step", "feature")
    columns = CONN_COLUMNS
    options = SeriesOptions
    description = "a connection's 17 features after 2, 4, 8, ... packets"

    def shape(self, o: SeriesOptions) -> tuple[int, ...]:
        return (o.lookback, N_FEATURES)

    def options_for(self, info) -> SeriesOptions:
        (lookback,) = self.sized_axes(info, ("lookback",), N_FEATURES)
        check_lookback(lookback)
        return SeriesOptions(lookback=lookback)

    def check(self, o: SeriesOptions, ck: Checker, path) -> None:
        if not 2 <= o.lookback <= len(SERIES_POINTS):
            ck.problem((*path, "lookback"), f"view = \"{self.ref}\" needs lookback = 2..{len(SERIES_POINTS)} "
                                            f"(the series points are {list(SERIES_POINTS)})")
        if o.trigger != "end":
            ck.problem((*path, "trigger"), f"a {self.ref} model classifies at its last series point or at the "
                                           "connection's end: trigger must be \"end\"")
        elif o.early_packets:
            ck.problem((*path, "early_packets"), f"early_packets is not used with view = \"{self.ref}\"")

    def snapshot_points(self, o: SeriesOptions) -> set[int]:
        return set(SERIES_POINTS[:o.lookback])

    def router(self, o: SeriesOptions, facts) -> SeriesRouter:
        return SeriesRouter(o.lookback, tuple(facts.get("snapshot_points", ())))

    def router_key(self, o: SeriesOptions, facts) -> tuple:
        return (self.ref, o.lookback, tuple(facts.get("snapshot_points", ())))


CONN_SERIES = register_view(ConnSeriesView())
