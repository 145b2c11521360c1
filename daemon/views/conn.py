"""The ``conn@1`` view: 17 features per connection, computed from flow records.

Pure, vectorised arithmetic over a batch of finished connections (rows laid
out as in :mod:`malsensor.daemon.flows.layout`). Two semantics:

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


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0.0 where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def interval(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """later - earlier in seconds, 0.0 unless both timestamps were seen."""
    ok = (later != 0) & (earlier != 0)
    return np.where(ok, (later - earlier) / _NS, 0.0)


def side_iat_mean(first_ts: np.ndarray, last_ts: np.ndarray, pkts: np.ndarray) -> np.ndarray:
    """Mean gap between consecutive packets of one side, in seconds (0 below 2 packets)."""
    return safe_div((last_ts - first_ts) / _NS, np.maximum(pkts - 1, 0))


def malsensor_conn_features(rec: np.ndarray) -> np.ndarray:
    """The 17 features in ``malsensor`` semantics, float64 (n, 17)."""
    rec = np.asarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
    s_pkts = rec[:, L.S_PKTS]
    d_pkts = rec[:, L.D_PKTS]
    s_bytes = rec[:, L.S_IP_BYTES]
    d_bytes = rec[:, L.D_IP_BYTES]
    dur = (rec[:, L.LAST_TS] - rec[:, L.FIRST_TS]) / _NS
    syn_ack = interval(rec[:, L.SYNACK_TS], rec[:, L.SYN_TS])
    ack_dat = interval(rec[:, L.ACK_TS], rec[:, L.SYNACK_TS])
    handshake = (syn_ack > 0) & (rec[:, L.ACK_TS] != 0)
    out = np.empty((rec.shape[0], N_FEATURES), dtype=np.float64)
    out[:, 0] = dur
    out[:, 1] = L.proto_of(rec)
    out[:, 2] = s_bytes
    out[:, 3] = d_bytes
    out[:, 4] = safe_div(rec[:, L.S_TTL_SUM], s_pkts)
    out[:, 5] = safe_div(rec[:, L.D_TTL_SUM], d_pkts)
    out[:, 6] = safe_div(s_bytes * 8.0, dur)
    out[:, 7] = safe_div(d_bytes * 8.0, dur)
    out[:, 8] = s_pkts
    out[:, 9] = d_pkts
    out[:, 10] = safe_div(s_bytes, s_pkts)
    out[:, 11] = safe_div(d_bytes, d_pkts)
    out[:, 12] = side_iat_mean(rec[:, L.S_FIRST_TS], rec[:, L.S_LAST_TS], s_pkts)
    out[:, 13] = side_iat_mean(rec[:, L.D_FIRST_TS], rec[:, L.D_LAST_TS], d_pkts)
    out[:, 14] = np.where(handshake, syn_ack + ack_dat, 0.0)
    out[:, 15] = syn_ack
    out[:, 16] = ack_dat
    return out


def conn_features(rec: np.ndarray, semantics: str = "malsensor") -> np.ndarray:
    """The ``conn@1`` view of finished connections, float64 (n, 17)."""
    if semantics == "malsensor":
        return malsensor_conn_features(rec)
    if semantics == "argus":
        from .argus import argus_conn_features

        return argus_conn_features(rec)
    raise ValueError(f"unknown semantics {semantics!r} (allowed: {', '.join(SEMANTICS)})")
