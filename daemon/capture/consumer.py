"""One capture thread's decode -> track -> view chain, as the capture loops call it.

A :class:`PipelineConsumer` owns one :class:`~malsensor.daemon.pipeline.ConnPipeline` and
hands every batch of finished (or snapshotted) connections to ``emit`` from the capture
thread. The AF_PACKET capture threads (:class:`~malsensor.daemon.capture.afpacket.BatchConsumer`
contract: consume, idle, finish), the daemon's replay loop and ``malsensor extract
--interface`` all use it, so they cannot treat connections differently.
"""
from __future__ import annotations

import time
from typing import Callable

from ..flows import layout as L
from ..pipeline import ConnBatch, ConnPipeline
from .batch import BatchConsumer, PacketBatch


class PipelineConsumer(BatchConsumer):
    """``emit(conn_batch)`` gets every batch of connections; ``heartbeat`` shows progress."""

    def __init__(self, name: str, pipeline: ConnPipeline, emit: Callable[[ConnBatch], None], *, lag_ns: int = 0,
                 emit_at_stop: Callable[[], bool] = lambda: True, stop_reason: int = L.END_SHUTDOWN,
                 tap: Callable[[PacketBatch], None] | None = None) -> None:
        """``lag_ns``: how far behind the wall clock idle sweeps run (packets still in a partly
        filled ring block are up to a retire timeout old). ``emit_at_stop()``: whether the
        connections still open at a stop are emitted (else counted in ``dropped_at_stop``).
        ``tap(batch)`` sees every packet batch first (tests record packet times with it)."""
        self.name = name
        self.pipe = pipeline
        self.emit = emit
        self.lag_ns = lag_ns
        self.emit_at_stop = emit_at_stop
        self.stop_reason = stop_reason
        self.tap = tap
        self.heartbeat = time.monotonic()
        self.finished = False
        self.dropped_at_stop = 0

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _send(self, cbs) -> None:
        for cb in cbs:
            self.emit(cb)

    def consume(self, batch: PacketBatch) -> None:
        self.heartbeat = time.monotonic()
        if self.tap is not None:
            self.tap(batch)
        self._send(self.pipe.feed(batch))

    def idle(self, now_ns: int) -> None:
        self.heartbeat = time.monotonic()
        # sweep far enough behind now that no packet still in a ring block is older than the sweep
        self._send(self.pipe.expire(now_ns - self.lag_ns))

    def finish(self, reason: int | None = None) -> None:
        """End of input. An explicit ``reason`` (end of file: "eof") always emits; a stop
        ("shutdown") emits or drops per ``emit_at_stop``."""
        self.heartbeat = time.monotonic()
        if reason is not None or self.emit_at_stop():
            self._send(self.pipe.finish(self.stop_reason if reason is None else reason))
        else:
            self.dropped_at_stop += self.pipe.tracker.active
            for _ in self.pipe.finish(self.stop_reason):
                pass
        self.finished = True
