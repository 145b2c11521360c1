"""Traces in flight between the ``pt_spool`` source and the ``trace`` event formatter.

A trace is cut into many windows; the models score them in batches that may split a trace,
so the formatter gathers a trace's windows (per model) and writes one event when the last
one arrives. The source registers each trace before dispatching it; each model's router
adds one expected route with its window count (and how many top windows to show); the formatter completes routes. When the
source has finished dispatching and every route is complete, ``on_done`` runs (the source
moves the sample to done/): a sample leaves the spool only after its events were formatted,
so a crash before that processes it again.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Callable

_seq = itertools.count(1)
_lock = threading.Lock()


@dataclass
class TraceInFlight:
    seq: int
    name: str
    label: str | None
    source: str                                   # where the sample came from (a path)
    on_done: Callable[["TraceInFlight"], None] | None = None
    routes: dict[int, int] = field(default_factory=dict)   # router id -> windows routed
    top: dict[int, int] = field(default_factory=dict)      # router id -> top windows its events show
    dispatched: bool = False
    finished: bool = False


_TRACES: dict[int, TraceInFlight] = {}


def register(name: str, label: str | None, source: str, on_done=None) -> TraceInFlight:
    t = TraceInFlight(next(_seq), name, label, source, on_done)
    with _lock:
        _TRACES[t.seq] = t
    return t


def get(seq: int) -> TraceInFlight | None:
    with _lock:
        return _TRACES.get(seq)


def add_route(seq: int, router: int, windows: int, top: int) -> None:
    with _lock:
        t = _TRACES.get(seq)
        if t is not None:
            t.routes[router] = windows
            t.top[router] = top


def mark_dispatched(seq: int) -> None:
    with _lock:
        t = _TRACES.get(seq)
        if t is None:
            return
        t.dispatched = True
        ready = _ready(t)
    if ready:
        _finish(t)


def complete_route(seq: int, router: int) -> None:
    with _lock:
        t = _TRACES.get(seq)
        if t is None:
            return
        t.routes.pop(router, None)
        ready = _ready(t)
    if ready:
        _finish(t)


def _ready(t: TraceInFlight) -> bool:
    if t.dispatched and not t.routes and not t.finished:
        t.finished = True
        return True
    return False


def _finish(t: TraceInFlight) -> None:
    with _lock:
        _TRACES.pop(t.seq, None)
    if t.on_done is not None:
        t.on_done(t)


def in_flight() -> int:
    with _lock:
        return len(_TRACES)
