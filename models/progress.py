"""Progress: a tqdm bar on a terminal, a log line every few seconds otherwise."""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("malsensor.train")


class ProgressBar:
    """``with ProgressBar(desc, total) as p: p.update(n, loss=...)`` (increments; the daemon's
    :class:`malsensor.daemon.progress.Progress` takes the same (what, total) and absolute amounts)."""

    def __init__(self, desc: str, total: int, interval_s: float = 10.0, enabled: bool = True,
                 unit: str = "it") -> None:
        self.total = total
        self.desc = desc
        self.interval_s = interval_s
        self.done = 0
        self.unit = unit
        self._t0 = self._last = time.monotonic()
        self._bar = None
        self._post: dict = {}
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, **post) -> None:
        self.done += n
        if post:
            self._post.update(post)
        if self._bar is not None:
            self._bar.update(n)
            if post:
                self._bar.set_postfix({k: _fmt(v) for k, v in self._post.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            rate = self.done / max(now - self._t0, 1e-9)
            extra = " ".join(f"{k}={_fmt(v)}" for k, v in self._post.items())
            log.info("%s: %d/%d %s (%.1f %s/s) %s", self.desc, self.done, self.total, self.unit, rate,
                     self.unit, extra)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
