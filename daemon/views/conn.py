"""The ``conn@1`` view: 17 features per connection, computed from flow records.

Pure arithmetic over a batch of finished connections (rows laid out as in
:mod:`malsensor.daemon.flows.layout`), one numba loop over the rows (a dozen
numpy passes over the batch cost ~5x more per connection). Two semantics:

``malsensor`` (default)
    times in seconds from packet timestamps; bytes are IP total lengths; TTL
    means are sum / count; load = bytes * 8 / dur (bit/s); IAT mean = mean gap
    between consecutive packets of that side = (last - first) / (count - 1);
    syn_ack = SYN-ACK time - time of the last SYN before it; ack_dat = first
    originator ACK after the SYN-ACK - SYN-ACK time; tcp_rtt = syn_ack +
    ack_dat when both are defined. 0.0 wherever a value is undefined.

``argus``
    the values the Argus flow meter and ``ra`` print (what UNSW-NB15 holds);
    see :mod:`malsensor.daemon.views.argus` and docs/argus-semantics.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ..jit import njit

from ..flows import layout as L
from ..intrinsics import borrowed
from ..schema import Checker, opt
from .base import EntityRows, Router, View, register_view

CONN_VIEW = "conn"
CONN_VERSION = 1
CONN_COLUMNS = (
    "dur", "proto", "s_bytes_sum", "d_bytes_sum", "s_ttl_mean", "d_ttl_mean", "s_load", "d_load",
    "s_pkt_cnt", "d_pkt_cnt", "s_bytes_mean", "d_bytes_mean", "s_iat_mean", "d_iat_mean",
    "tcp_rtt", "syn_ack", "ack_dat",
)
N_FEATURES = len(CONN_COLUMNS)
SEMANTICS = ("malsensor", "argus")

_NS = 1e9


@njit(cache=True, nogil=True, inline="always")
def ratio(num: float, den: float) -> float:
    """num / den, 0.0 where den == 0."""
    return num / den if den != 0 else 0.0


@njit(cache=True, nogil=True, inline="always")
def interval(later: int, earlier: int) -> float:
    """later - earlier (ns) in seconds, 0.0 unless both timestamps were seen."""
    return (later - earlier) / _NS if later != 0 and earlier != 0 else 0.0


@njit(cache=True, nogil=True)
def _malsensor_rows(rec: np.ndarray, out: np.ndarray) -> None:
    rec, out = borrowed(rec), borrowed(out)  # row views without reference counts (16-19 against 39-41 ns a row)
    for i in range(rec.shape[0]):
        r = rec[i]
        s_pkts = r[L.S_PKTS]
        d_pkts = r[L.D_PKTS]
        s_bytes = np.float64(r[L.S_IP_BYTES])
        d_bytes = np.float64(r[L.D_IP_BYTES])
        dur = (r[L.LAST_TS] - r[L.FIRST_TS]) / _NS
        syn_ack = interval(r[L.SYNACK_TS], r[L.SYN_TS])
        ack_dat = interval(r[L.ACK_TS], r[L.SYNACK_TS])
        o = out[i]
        o[0] = dur
        o[1] = (r[L.KEY] >> 32) & 0xFF
        o[2] = s_bytes
        o[3] = d_bytes
        o[4] = ratio(np.float64(r[L.S_TTL_SUM]), np.float64(s_pkts))
        o[5] = ratio(np.float64(r[L.D_TTL_SUM]), np.float64(d_pkts))
        o[6] = ratio(s_bytes * 8.0, dur)
        o[7] = ratio(d_bytes * 8.0, dur)
        o[8] = s_pkts
        o[9] = d_pkts
        o[10] = ratio(s_bytes, np.float64(s_pkts))
        o[11] = ratio(d_bytes, np.float64(d_pkts))
        # mean gap between consecutive packets of a side (0 below 2 packets)
        o[12] = ratio((r[L.S_LAST_TS] - r[L.S_FIRST_TS]) / _NS, np.float64(max(s_pkts - 1, 0)))
        o[13] = ratio((r[L.D_LAST_TS] - r[L.D_FIRST_TS]) / _NS, np.float64(max(d_pkts - 1, 0)))
        o[14] = syn_ack + ack_dat if syn_ack > 0 and r[L.ACK_TS] != 0 else 0.0
        o[15] = syn_ack
        o[16] = ack_dat


def malsensor_conn_features(rec: np.ndarray) -> np.ndarray:
    """The 17 features in ``malsensor`` semantics, float64 (n, 17)."""
    rec = np.ascontiguousarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
    out = np.empty((rec.shape[0], N_FEATURES), dtype=np.float64)
    _malsensor_rows(rec, out)
    return out


def conn_features(rec: np.ndarray, semantics: str = "malsensor") -> np.ndarray:
    """The ``conn@1`` view of finished connections, float64 (n, 17)."""
    if semantics == "malsensor":
        return malsensor_conn_features(rec)
    if semantics == "argus":
        from .argus import argus_conn_features

        return argus_conn_features(rec)
    raise ValueError(f"unknown semantics {semantics!r} (allowed: {', '.join(SEMANTICS)})")


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class ConnOptions:
    """The keys ``conn@1`` adds to a ``[[model]]`` table."""

    trigger: str = opt("end", "classify at connection end, or early once a connection has early_packets "
                              "packets (connections ending before that are classified at their end)",
                       choices=("end", "early"))
    early_packets: int = opt(0, "packets (both directions) for trigger = \"early\"", min=0, max=1_000_000)
    lookback: int = opt(0, "view = \"conn_series@1\" only: series length L (2..10); the model reads the conn "
                           "features after 2, 4, 8, ... packets and classifies a connection at "
                           "2**L packets or at its end, whichever comes first (trigger = \"end\")", min=0, max=64)


class ConnRouter(Router):
    """Final rows (trigger ``end``, ``early_packets`` 0), or (``early``) the rows of the tracker's
    snapshot at ``early_packets`` (its ``snapshot_index``-th point) plus connections that ended
    before reaching it. The router of every :class:`ConnectionView` with these two triggers
    (subclasses change the inputs: :meth:`route` over the rows :meth:`selected` picks)."""

    def __init__(self, early_packets: int = 0, snapshot_index: int = -1) -> None:
        self.trigger = "early" if early_packets else "end"
        self.early_packets = early_packets
        self.snapshot_index = snapshot_index

    def selected(self, cb) -> np.ndarray:
        """bool (n,): the rows of a ``ConnBatch`` classified now."""
        is_snap = cb.is_snapshot
        if not self.early_packets:
            return ~is_snap
        rec = cb.records
        pkts = rec[:, L.S_PKTS] + rec[:, L.D_PKTS]
        return (is_snap & ((rec[:, L.END] >> 8) == self.snapshot_index)) | (~is_snap & (pkts < self.early_packets))

    def route(self, cb) -> EntityRows | None:
        m = self.selected(cb)
        if m.all():
            return EntityRows(cb.records, cb.features)
        if not m.any():
            return None
        return EntityRows(cb.records[m], cb.features[m])


class ConnectionView(View):
    """Base of the views over finished connections (sources ``afpacket`` and ``pcap``)."""

    entity = "connection"
    consumes = "connections"
    reader = "malsensor.models.data.readers:CONNECTION_READER"

    def early_at(self, options) -> int:
        """Packets (both directions) at which this model classifies a connection early, from the
        tracker's snapshot at that count (a connection ending before is classified at its end);
        0: at the end only. :class:`ConnRouter` takes it with :meth:`snapshot_index`."""
        return 0

    def snapshot_points(self, options) -> set[int]:
        """Packet counts at which the flow tracker must emit a snapshot row for this model."""
        n = self.early_at(options)
        return {n} if n else set()

    def snapshot_index(self, options, facts) -> int:
        """Where :meth:`early_at`'s snapshot stands among the tracker's snapshot points (its rows
        carry it in ``END >> 8``); -1 without an early trigger."""
        n = self.early_at(options)
        return tuple(facts.get("snapshot_points", ())).index(n) if n else -1

    def seq_packets(self, options) -> int:
        """Packets per connection the flow tracker must keep for this model (pkt_seq)."""
        return 0


class ConnView(ConnectionView):
    name = CONN_VIEW
    version = CONN_VERSION
    axes = ("feature",)
    columns = CONN_COLUMNS
    options = ConnOptions
    description = "17 features per connection"

    def shape(self, options) -> tuple[int, ...]:
        return (N_FEATURES,)

    def check(self, o: ConnOptions, ck: Checker, path) -> None:
        if o.trigger == "early" and o.early_packets < 1:
            ck.problem((*path, "early_packets"), "trigger = \"early\" needs early_packets >= 1")
        if o.trigger == "end" and o.early_packets:
            ck.problem((*path, "early_packets"), "early_packets is only used with trigger = \"early\"")
        if o.lookback:
            ck.problem((*path, "lookback"), "lookback is only used with view = \"conn_series@1\"")

    def early_at(self, o: ConnOptions) -> int:
        return o.early_packets if o.trigger == "early" else 0

    def router(self, o: ConnOptions, facts) -> ConnRouter:
        return ConnRouter(self.early_at(o), self.snapshot_index(o, facts))


CONN = register_view(ConnView())
