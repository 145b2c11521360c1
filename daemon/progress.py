"""Progress for long work: a one-line bar on a terminal, periodic log lines otherwise."""
from __future__ import annotations

import logging
import sys
import time


class Progress:
    """Call :meth:`update` with the amount done; cheap to call often."""

    def __init__(self, what: str, total: float | None, unit: str = "B", *, interval: float = 10.0,
                 stream=None, logger: logging.Logger | None = None) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.log = logger or logging.getLogger("malsensor.progress")
        self.start = time.monotonic()
        self._next = self.start + self.interval
        self.done = 0.0

    def _text(self) -> str:
        el = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / el
        if self.total:
            pct = 100.0 * self.done / self.total
            return f"{self.what}: {pct:5.1f}% {self.done:,.0f}/{self.total:,.0f} {self.unit} ({rate:,.0f} {self.unit}/s)"
        return f"{self.what}: {self.done:,.0f} {self.unit} ({rate:,.0f} {self.unit}/s)"

    def update(self, done: float) -> None:
        self.done = done
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        if self.tty:
            self.stream.write("\r" + self._text()[:120].ljust(80))
            self.stream.flush()
        else:
            self.log.info("%s", self._text())

    def close(self) -> None:
        if self.tty and time.monotonic() - self.start > self.interval:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
