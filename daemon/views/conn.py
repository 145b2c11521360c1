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

import numpy as np
from ..jit import njit

from ..flows import layout as L

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
