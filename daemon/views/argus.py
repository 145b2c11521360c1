"""The ``conn`` view in Argus semantics: what ``argus`` + ``ra`` print, i.e. what UNSW-NB15 holds.

Reproduces Argus 3.0.8.2 (``argus -X -J -S 3600`` then ``ra -n -u -p 6 -s dur proto sbytes dbytes
sttl dttl sload dload spkts dpkts smeansz dmeansz sintpkt dintpkt tcprtt synack ackdat``) from flow
records. Definitions, evidence and the remaining differences: docs/argus-semantics.md. In short:

- every time is a difference of *microsecond* timestamps (libpcap hands Argus ``struct timeval``);
  ``dur`` is a float32 (``RaGetFloatDuration``);
- bytes are whole frames as captured on the wire (``pcap_pkthdr.len``), per side;
- ``sttl``/``dttl`` are the TTL of the last packet of that side;
- ``sload`` = 8 * (sbytes - sbytes // spkts) / dur in bit/s, float32, 0 unless spkts > 1 and dur > 0;
- ``smeansz`` = sbytes / spkts (float32);
- ``sintpkt`` = mean gap between consecutive packets of that side in **milliseconds**, where only
  gaps to a strictly later microsecond count (so the mean is (last - first) / counted gaps);
- ``synack`` = SYN-ACK time - time of the last originator packet before it, ``ackdat`` = first
  originator ACK time - SYN-ACK time, both only when Argus's sequence checks pass (see the doc);
  ``tcprtt`` = synack + ackdat (summed even when one of them is 0).
"""
from __future__ import annotations

import numpy as np

from ..flows import layout as L

_US = 1000            # ns per µs
_F32 = np.float32

# Optional columns/bits a tracker may provide for exact Argus conformance (docs/argus-semantics.md,
# "Tracker requirements"). Without them the closest approximation from the base layout is used.
_ST_ARGUS_SYNACK_OK = getattr(L, "ST_ARGUS_SYNACK_OK", 0)   # SYN-ACK flags exactly SYN|ACK, in SYN_SENT
_ST_ARGUS_ACK_OK = getattr(L, "ST_ARGUS_ACK_OK", 0)         # first non-SYN packet after it: pure ACK from s


def _us(rec: np.ndarray, col: int) -> np.ndarray:
    """A timestamp column floored to microseconds (as libpcap delivers it to Argus)."""
    return rec[:, col] // _US


def _iat_ms(first_us: np.ndarray, last_us: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Argus ``sintpkt``: sum of counted gaps / their number, µs -> ms (0 without a counted gap)."""
    out = np.zeros(first_us.shape[0], dtype=np.float64)
    ok = gaps > 0
    span = (last_us - first_us).astype(np.float64)
    out[ok] = span[ok] / gaps[ok] / 1000.0
    return out


def _load(nbytes: np.ndarray, pkts: np.ndarray, dur32: np.ndarray) -> np.ndarray:
    """Argus ``sload``: float32(8 * (bytes - bytes // pkts)) / dur, 0 unless pkts > 1 and dur > 0."""
    out = np.zeros(nbytes.shape[0], dtype=np.float32)
    ok = (pkts > 1) & (dur32 > 0)
    per_pkt = nbytes[ok] // pkts[ok]
    out[ok] = ((nbytes[ok] - per_pkt) * 8.0).astype(_F32) / dur32[ok]
    return out.astype(np.float64)


def _mean_size(nbytes: np.ndarray, pkts: np.ndarray) -> np.ndarray:
    out = np.zeros(nbytes.shape[0], dtype=np.float32)
    ok = pkts > 0
    out[ok] = (nbytes[ok] / pkts[ok]).astype(_F32)
    return out.astype(np.float64)


def argus_conn_features(rec: np.ndarray) -> np.ndarray:
    """The 17 ``conn`` features in Argus semantics, float64 (n, 17), column order of ``CONN_COLUMNS``."""
    rec = np.asarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
    n = rec.shape[0]
    s_pkts = rec[:, L.S_PKTS]
    d_pkts = rec[:, L.D_PKTS]
    s_bytes = rec[:, L.S_WIRE_BYTES]
    d_bytes = rec[:, L.D_WIRE_BYTES]
    state = rec[:, L.STATE]
    proto = L.proto_of(rec)
    is_tcp = proto == 6

    first = _us(rec, L.FIRST_TS)
    last = _us(rec, L.LAST_TS)
    dur32 = ((last - first) / 1e6).astype(_F32)

    s_gaps = L.s_iat_n(rec)
    d_gaps = L.d_iat_n(rec)

    syn = _us(rec, L.SYN_TS)
    synack_t = _us(rec, L.SYNACK_TS)
    ack_t = _us(rec, L.ACK_TS)
    need = L.ST_SYN | L.ST_SYNACK | L.ST_SYNACK_ACKS_SYN | _ST_ARGUS_SYNACK_OK
    hs = is_tcp & ((state & need) == need) & (rec[:, L.SYN_TS] != 0) & (rec[:, L.SYNACK_TS] != 0)
    synack = np.where(hs, np.abs(synack_t - syn), 0)
    ack_ok = hs & (rec[:, L.ACK_TS] != 0)
    if _ST_ARGUS_ACK_OK:
        ack_ok &= (state & _ST_ARGUS_ACK_OK) != 0
    ackdat = np.where(ack_ok, np.abs(ack_t - synack_t), 0)

    out = np.empty((n, 17), dtype=np.float64)
    out[:, 0] = dur32
    out[:, 1] = proto
    out[:, 2] = s_bytes
    out[:, 3] = d_bytes
    out[:, 4] = np.where(s_pkts > 0, L.s_last_ttl(rec), 0)
    out[:, 5] = np.where(d_pkts > 0, L.d_last_ttl(rec), 0)
    out[:, 6] = _load(s_bytes, s_pkts, dur32)
    out[:, 7] = _load(d_bytes, d_pkts, dur32)
    out[:, 8] = s_pkts
    out[:, 9] = d_pkts
    out[:, 10] = _mean_size(s_bytes, s_pkts)
    out[:, 11] = _mean_size(d_bytes, d_pkts)
    out[:, 12] = _iat_ms(_us(rec, L.S_FIRST_TS), _us(rec, L.S_LAST_TS), s_gaps)
    out[:, 13] = _iat_ms(_us(rec, L.D_FIRST_TS), _us(rec, L.D_LAST_TS), d_gaps)
    out[:, 14] = (synack + ackdat) / 1e6
    out[:, 15] = synack / 1e6
    out[:, 16] = ackdat / 1e6
    return out
