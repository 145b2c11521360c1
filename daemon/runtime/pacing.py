"""Pacing of a replay: finished connections handed on at a fixed rate of wall-clock time.

The schedule runs over the whole replay, not per pass, and covers every connection the
pipeline hands over - those of the packet batches and those flushed at the end of each pass
(end_reason "eof"), which come all at once: a batch of connections is cut into slices of
about 10 ms worth and each slice waits for its turn. (Measured before this module: a
``--rate 100`` replay of synscan.pcapng sent its 1,994 end-of-file connections in 0.06 s,
and ``--repeat 0 --rate 300`` ran at ~46,000 connections/s because each pass restarted the
schedule.)
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from ..pipeline import ConnBatch

SLICE_S = 0.01  # a slice holds about this many seconds of connections at the paced rate
CATCH_UP_S = 0.1  # at most this much lateness is made up by sending faster (no burst after a pause)


class Pacer:
    """Hands on connection batches at ``rate`` finished connections per second."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.clock = clock
        self.slice_rows = max(1, int(rate * SLICE_S))
        self.due: float | None = None  # when the next connection may go
        self.sent = 0

    def pace(self, cb: ConnBatch, stop: threading.Event, beat: Callable[[], None] | None = None
             ) -> Iterator[ConnBatch]:
        """Slices of ``cb``, each yielded once its time has come (at once after ``stop``)."""
        finished = ~cb.is_snapshot
        for i in range(0, cb.n, self.slice_rows):
            part = ConnBatch(cb.records[i:i + self.slice_rows], cb.features[i:i + self.slice_rows],
                             None if cb.seq is None else cb.seq[i:i + self.slice_rows])
            k = int(finished[i:i + self.slice_rows].sum())
            if k:
                self._wait(stop, beat)
            yield part
            if k:
                self.sent += k
                self.due += k / self.rate  # type: ignore[operator]

    def _wait(self, stop: threading.Event, beat: Callable[[], None] | None) -> None:
        now = self.clock()
        if self.due is None:
            self.due = now
        elif self.due < now - CATCH_UP_S:  # late (a pause between passes, a slow model)
            self.due = now - CATCH_UP_S
        while not stop.is_set():
            ahead = self.due - self.clock()
            if ahead <= 0:
                return
            if beat is not None:
                beat()
            stop.wait(min(ahead, 0.2))
