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

import functools
import logging

import numpy as np

from ..flows import layout as L

log = logging.getLogger("malsensor.views.argus")

_US = 1000            # ns per µs
_F32 = np.float32

# Optional columns/bits a tracker may provide for exact Argus conformance (docs/argus-semantics.md,
# "Tracker requirements"). Without them the closest approximation from the base layout is used.
_ST_ARGUS_SYNACK_OK = getattr(L, "ST_ARGUS_SYNACK_OK", 0)   # SYN-ACK flags exactly SYN|ACK, in SYN_SENT
_ST_ARGUS_ACK_OK = getattr(L, "ST_ARGUS_ACK_OK", 0)         # first non-SYN packet after it: pure ACK from s


# Set by :func:`argus_orient` on the rows that ``ra`` reverses; ra computes the loads *before*
# reversing and does not swap them, so the view swaps them back on these rows. View-private bit
# (far above the tracker's STATE bits).
ST_RA_REVERSED = 1 << 40
ST_ARGUS_ORIENTED = 1 << 41   # argus_orient has seen the row (makes it idempotent)

SERVICES_FILE = "/etc/services"

# per-side column pairs swapped when a record is re-oriented
_SIDE_COLS = ((L.SRC_HI, L.DST_HI), (L.SRC_LO, L.DST_LO), (L.S_FIRST_TS, L.D_FIRST_TS),
              (L.S_LAST_TS, L.D_LAST_TS), (L.S_PKTS, L.D_PKTS), (L.S_IP_BYTES, L.D_IP_BYTES),
              (L.S_WIRE_BYTES, L.D_WIRE_BYTES), (L.S_TTL_SUM, L.D_TTL_SUM), (L.SRC_MAC, L.DST_MAC))


@functools.lru_cache(maxsize=4)
def server_like_ports(services_file: str = SERVICES_FILE) -> np.ndarray:
    """bool[65536]: ports ``ra`` treats as a service side: < 1024, or named for TCP in /etc/services.

    Measured on 24 crafted port pairs (docs/argus-semantics.md, R7); without the file only the
    reserved range counts (logged once).
    """
    table = np.zeros(65536, dtype=bool)
    table[:1024] = True
    try:
        with open(services_file, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[1].endswith("/tcp"):
                    port = fields[1][:-4]
                    if port.isdigit() and int(port) < 65536:
                        table[int(port)] = True
    except OSError as exc:
        log.warning("cannot read %s (%s): Argus orientation of mid-stream TCP connections uses "
                    "only ports < 1024", services_file, exc.strerror)
    return table


def _swap_sides(rec: np.ndarray, rows: np.ndarray) -> None:
    """Exchange the s and d halves of the records ``rows`` (in place)."""
    if not rows.any():
        return
    sub = rec[rows]
    for a, b in _SIDE_COLS:
        sub[:, [a, b]] = sub[:, [b, a]]
    key = sub[:, L.KEY]
    sport, dport = (key >> 16) & 0xFFFF, key & 0xFFFF
    sub[:, L.KEY] = (key & ~np.int64(0xFFFFFFFF)) | (dport << 16) | sport
    ttl = sub[:, L.TTL_LAST]
    sub[:, L.TTL_LAST] = (ttl & ~np.int64(0xFFFF)) | ((ttl & 0xFF) << 8) | ((ttl >> 8) & 0xFF)
    iat = sub[:, L.IAT_N]
    sub[:, L.IAT_N] = ((iat & 0xFFFFFFFF) << 32) | ((iat >> 32) & 0xFFFFFFFF)
    st = sub[:, L.STATE]
    fin_s, fin_d = (st & L.ST_FIN_S) != 0, (st & L.ST_FIN_D) != 0
    st = st & ~np.int64(L.ST_FIN_S | L.ST_FIN_D)
    sub[:, L.STATE] = st | np.where(fin_d, L.ST_FIN_S, 0) | np.where(fin_s, L.ST_FIN_D, 0)
    rec[rows] = sub


def argus_orient(rec: np.ndarray, services_file: str = SERVICES_FILE) -> np.ndarray:
    """Records re-oriented the way ``ra`` prints them (a copy; rows ``ra`` reversed get ST_RA_REVERSED).

    Argus's ``s`` is the sender of a record's first packet; ``ra`` then reverses IPv4 TCP records
    that began without a SYN (docs/argus-semantics.md, R7):

    - first packet a SYN-ACK: the tracker already made its receiver ``s``; ra agrees once the
      receiver answered (kept, marked reversed), a lone SYN-ACK stays with its sender as ``s``;
    - otherwise by ports: a port is service-like if < 1024 or named in /etc/services; if exactly
      one side's port is, it becomes the destination, if both are, the lower one does.

    IPv6 records are never reversed by ra (SYN-ACK-first ones go back to the sender as ``s``).
    """
    rec = np.array(rec, dtype=np.int64, copy=True).reshape(-1, L.N_COLS)
    if rec.shape[0] == 0:
        return rec
    st = rec[:, L.STATE]
    tcp = L.proto_of(rec) == 6
    v4 = L.ip_version_of(rec) == 4
    # real mid-stream records (a status-split continuation is marked established: not reversed)
    mid = (tcp & ((st & L.ST_MIDSTREAM) != 0) & ((st & L.ST_ESTABLISHED) == 0)
           & ((st & ST_ARGUS_ORIENTED) == 0))
    first = rec[:, L.FIRST_TS]
    synack_first = mid & (rec[:, L.D_FIRST_TS] == first) & (rec[:, L.S_FIRST_TS] != first)
    answered = rec[:, L.S_PKTS] > 0     # ra: SYN-ACK seen and the connection got established/closed
    back = synack_first & ~(v4 & answered)            # Argus keeps the SYN-ACK sender as s
    _swap_sides(rec, back)
    rec[synack_first & v4 & answered, L.STATE] |= ST_RA_REVERSED
    table = server_like_ports(services_file)
    sport, dport = L.sport_of(rec), L.dport_of(rec)
    ss, ds = table[sport], table[dport]
    by_ports = mid & ~synack_first & v4 & ((ss & ~ds) | (ss & ds & (sport < dport)))
    _swap_sides(rec, by_ports)
    rec[by_ports, L.STATE] |= ST_RA_REVERSED
    rec[:, L.STATE] |= ST_ARGUS_ORIENTED
    return rec


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
    # the last TTL of a side persists into the flow's next record (R4; 0 when never seen)
    out[:, 4] = L.s_last_ttl(rec)
    out[:, 5] = L.d_last_ttl(rec)
    s_load = _load(s_bytes, s_pkts, dur32)
    d_load = _load(d_bytes, d_pkts, dur32)
    rev = (state & ST_RA_REVERSED) != 0   # ra leaves the loads of reversed records unswapped
    out[:, 6] = np.where(rev, d_load, s_load)
    out[:, 7] = np.where(rev, s_load, d_load)
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
