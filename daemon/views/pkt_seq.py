"""The ``pkt_seq@1`` view: a connection's first N packets, one row per packet.

Row ``j`` of a connection's ``(N, 7)`` sample describes its ``j``-th packet (both directions,
in capture order): ``size`` (IP total length, capped at 32767), ``direction`` (+1 originator ->
responder, -1 back), ``iat`` (seconds since the connection's previous packet, 0 for the first),
``tcp_flags`` (the TCP flag byte, 0 for other protocols), ``proto`` (the IP protocol) and
``service_port`` (the responder's port: IoT Sentinel's per-packet port class, the same on every
packet of a connection) and ``mask`` (1 for a packet, 0 for the padding of connections with
fewer than N packets; every other column is 0 there).

The tracker keeps these packets only when a model reads this view
(``TrackerConfig.seq_packets``, the largest ``n_packets`` of the configured models; see
daemon/flows/seq.py for the record and its bytes per flow). The trainer reads captures through
the same pipeline (models/data/pkt_seq.py), so the rows cannot differ.

Trigger ``end`` classifies a connection when it ends; ``early`` as soon as it has
``n_packets`` packets (a tracker snapshot), or at its end if it ends with fewer.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..flows.seq import N_SEQ_COLUMNS, SEQ_COLUMNS
from ..schema import Checker, opt
from .base import EntityRows, register_view
from .conn import ConnectionView, ConnRouter

PKT_SEQ_VIEW = "pkt_seq"
PKT_SEQ_VERSION = 1
N_PACKETS_DEFAULT = 16
N_PACKETS_MAX = 256


@dataclass(frozen=True)
class DeviceOptions:
    """Per-device pooling (daemon/runtime/devices.py), for the views that identify devices from
    their connections (``pkt_seq@1``, ``conn_ctx@1``, ``conn_profile@1``): the service reads these keys by
    name."""

    device_window: float = opt(0.0, "a device view (pkt_seq@1, conn_ctx@1, conn_profile@1): also pool the "
                                    "connections of each source MAC over windows of this many seconds into one "
                                    "\"device\" event (0 = off; docs/devices.md)", min=0.0, max=86400.0)
    device_pool: str = opt("mean", "a device view: how a device window pools its connections' probabilities",
                           choices=("mean", "logmean", "vote"))
    device_min_connections: int = opt(1, "a device view: device windows with fewer connections are not reported",
                                      min=1, max=1_000_000)


def check_device_options(o: DeviceOptions, ck: Checker, path) -> None:
    if not o.device_window and (o.device_pool != "mean" or o.device_min_connections != 1):
        ck.problem((*path, "device_window"), "device_pool and device_min_connections need device_window > 0")


@dataclass(frozen=True)
class PktSeqOptions(DeviceOptions):
    """The keys ``pkt_seq@1`` adds to a ``[[model]]`` table."""

    n_packets: int = opt(N_PACKETS_DEFAULT, "view = \"pkt_seq@1\": packets per connection the model reads "
                                            "(its first N, both directions; fewer are padded with mask 0)",
                         min=1, max=N_PACKETS_MAX)
    trigger: str = opt("end", "view = \"pkt_seq@1\": classify at the connection's end, or \"early\" as soon as "
                              "it has n_packets packets (at its end if it ends with fewer)",
                       choices=("end", "early"))


class PktSeqRouter(ConnRouter):
    """``conn@1``'s triggers (the early one at ``n_packets``) over the connections' first
    ``n_packets`` packets. Stateless: the sequences travel with the batch (``ConnBatch.seq``)."""

    def __init__(self, n_packets: int, early_packets: int, snapshot_index: int) -> None:
        super().__init__(early_packets, snapshot_index)
        self.n_packets = n_packets

    def route(self, cb) -> EntityRows | None:
        if cb.seq is None or cb.seq.shape[1] < self.n_packets:
            raise RuntimeError(f"pkt_seq@1 needs the flow tracker to keep {self.n_packets} packets per "
                               f"connection (TrackerConfig.seq_packets)")
        m = self.selected(cb)
        if not m.any():
            return None
        x = cb.seq[m, :self.n_packets]
        return EntityRows(cb.records[m], x, cb.features[m])  # events show the conn features


class PktSeqView(ConnectionView):
    name = PKT_SEQ_VIEW
    version = PKT_SEQ_VERSION
    axes = ("packet", "feature")
    columns = SEQ_COLUMNS
    options = PktSeqOptions
    reader = "malsensor.models.data.pkt_seq:PKT_SEQ_READER"
    description = "size, direction, gap and TCP flags of a connection's first N packets"

    def shape(self, o: PktSeqOptions) -> tuple[int, ...]:
        return (o.n_packets, N_SEQ_COLUMNS)

    def options_for(self, info) -> PktSeqOptions:
        (n_packets,) = self.sized_axes(info, ("n_packets",), N_SEQ_COLUMNS)
        if not 1 <= n_packets <= N_PACKETS_MAX:
            raise ValueError(f"{self.ref} takes n_packets 1..{N_PACKETS_MAX}, the artifact says {n_packets}")
        return PktSeqOptions(n_packets=n_packets)

    def check(self, o: PktSeqOptions, ck: Checker, path) -> None:
        check_device_options(o, ck, path)

    def seq_packets(self, o: PktSeqOptions) -> int:
        return o.n_packets

    def early_at(self, o: PktSeqOptions) -> int:
        return o.n_packets if o.trigger == "early" else 0

    def router(self, o: PktSeqOptions, facts) -> PktSeqRouter:
        return PktSeqRouter(o.n_packets, self.early_at(o), self.snapshot_index(o, facts))


PKT_SEQ = register_view(PktSeqView())

