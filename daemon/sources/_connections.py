"""What the two packet sources (``afpacket``, ``pcap``) share: one
:class:`~malsensor.daemon.capture.consumer.PipelineConsumer` per capture thread, whose
connection batches go to the models, and counters summed over those threads."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..capture.consumer import PipelineConsumer
from ..decode import MALFORMED_REASONS
from ..pipeline import ConnPipeline
from . import Heartbeat, Source, SourceContext


class ConnectionSource(Source):
    produces = "connections"

    def __init__(self, cfg: Any, ctx: SourceContext) -> None:
        super().__init__(cfg, ctx)
        self.consumers: list[PipelineConsumer] = []

    @classmethod
    def facts(cls, ctx: SourceContext) -> Mapping[str, Any]:
        return {"snapshot_points": tuple(ctx.tracking.snapshot_packets)}

    @classmethod
    def warm(cls, ctx: SourceContext) -> list:
        from ..capture.warm import warm_connections

        return warm_connections(ctx.tracking, ctx.semantics, files=cls.finite)

    def new_consumer(self, name: str, lag_ns: int = 0) -> PipelineConsumer:
        ctx = self.ctx
        pipe = ConnPipeline(ctx.tracking, ctx.semantics, ctx.protocols)
        holder: list[PipelineConsumer] = []

        def emit(cb) -> None:
            ctx.dispatch(cb, holder[0].beat)  # waiting for room in a model queue is progress

        c = PipelineConsumer(name, pipe, emit, lag_ns=lag_ns, emit_at_stop=ctx.emit_at_stop)
        holder.append(c)
        self.consumers.append(c)
        return c

    def heartbeats(self) -> list[Heartbeat]:
        return [Heartbeat(c.name, c.heartbeat, c.finished) for c in self.consumers]

    def kernel(self) -> tuple[int, int]:
        """Packets the kernel's socket filters saw, and dropped (live capture only)."""
        return 0, 0

    def stats(self) -> dict:
        packets = wire = flows = dropped = evicted = 0
        status = np.zeros(256, dtype=np.int64)
        for c in list(self.consumers):
            pc = c.pipe.counters
            packets += pc.packets
            wire += pc.wire_bytes
            status += pc.status
            flows += c.pipe.tracker.active
            evicted += c.pipe.tracker.stats()["flows_evicted"]
            dropped += c.dropped_at_stop
        kp, kd = self.kernel()
        return {"packets": packets, "wire_bytes": wire, "kernel_packets": kp, "kernel_drops": kd,
                "flows_active": flows, "flows_evicted": evicted, "dropped_at_stop": dropped,
                "malformed_by_reason": {n: int(status[c]) for c, n in MALFORMED_REASONS.items() if status[c]}}
