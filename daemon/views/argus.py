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
from ..jit import njit

from ..flows import layout as L
from ..intrinsics import borrowed

log = logging.getLogger("malsensor.views.argus")

_US = 1000            # ns per µs


# Set by :func:`argus_orient` on the rows that ``ra`` reverses; ra computes the loads *before*
# reversing and does not swap them, so the view swaps them back on these rows. View-private bit
# (far above the tracker's STATE bits).
ST_RA_REVERSED = 1 << 40
ST_ARGUS_ORIENTED = 1 << 41   # argus_orient has seen the row (makes it idempotent)

SERVICES_FILE = "/etc/services"


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


@njit(cache=True, nogil=True, inline="always")
def _swap_pair(r: np.ndarray, a: int, b: int) -> None:
    r[a], r[b] = r[b], r[a]


@njit(cache=True, nogil=True)
def _swap_sides(r: np.ndarray) -> None:
    """Exchange the s and d halves of one record (in place)."""
    _swap_pair(r, L.SRC_HI, L.DST_HI)
    _swap_pair(r, L.SRC_LO, L.DST_LO)
    _swap_pair(r, L.S_FIRST_TS, L.D_FIRST_TS)
    _swap_pair(r, L.S_LAST_TS, L.D_LAST_TS)
    _swap_pair(r, L.S_PKTS, L.D_PKTS)
    _swap_pair(r, L.S_IP_BYTES, L.D_IP_BYTES)
    _swap_pair(r, L.S_WIRE_BYTES, L.D_WIRE_BYTES)
    _swap_pair(r, L.S_TTL_SUM, L.D_TTL_SUM)
    _swap_pair(r, L.SRC_MAC, L.DST_MAC)
    key = r[L.KEY]
    r[L.KEY] = (key & ~np.int64(0xFFFFFFFF)) | ((key & 0xFFFF) << 16) | ((key >> 16) & 0xFFFF)
    ttl = r[L.TTL_LAST]
    r[L.TTL_LAST] = (ttl & ~np.int64(0xFFFF)) | ((ttl & 0xFF) << 8) | ((ttl >> 8) & 0xFF)
    iat = r[L.IAT_N]
    r[L.IAT_N] = ((iat & 0xFFFFFFFF) << 32) | ((iat >> 32) & 0xFFFFFFFF)
    st = r[L.STATE]
    sig_s = (st >> L.ST_SIG_S_SHIFT) & 0xFF   # each side's payload class goes with its side
    sig_d = (st >> L.ST_SIG_D_SHIFT) & 0xFF
    st = (st & ~np.int64(L.ST_SIG_BITS)) | (sig_d << L.ST_SIG_S_SHIFT) | (sig_s << L.ST_SIG_D_SHIFT)
    fins = st & (L.ST_FIN_S | L.ST_FIN_D)
    st &= ~np.int64(L.ST_FIN_S | L.ST_FIN_D)
    if fins & L.ST_FIN_S:
        st |= L.ST_FIN_D
    if fins & L.ST_FIN_D:
        st |= L.ST_FIN_S
    r[L.STATE] = st


@njit(cache=True, nogil=True)
def _orient_rows(rec: np.ndarray, service: np.ndarray) -> None:
    for i in range(rec.shape[0]):
        r = rec[i]
        st = r[L.STATE]
        key = r[L.KEY]
        tcp = ((key >> 32) & 0xFF) == 6
        v4 = ((key >> 40) & 0xFF) == 4
        # real mid-stream records (a status-split continuation is marked established: not reversed)
        if (tcp and (st & L.ST_MIDSTREAM) != 0 and (st & L.ST_ESTABLISHED) == 0
                and (st & ST_ARGUS_ORIENTED) == 0):
            first = r[L.FIRST_TS]
            if r[L.D_FIRST_TS] == first and r[L.S_FIRST_TS] != first:   # began with a SYN-ACK
                if v4 and r[L.S_PKTS] > 0:  # ra: answered, so the SYN-ACK's receiver stays s
                    r[L.STATE] |= ST_RA_REVERSED
                else:                       # Argus keeps the SYN-ACK sender as s
                    _swap_sides(r)
            elif v4:
                sport = (key >> 16) & 0xFFFF
                dport = key & 0xFFFF
                ss, ds = service[sport], service[dport]
                if (ss and not ds) or (ss and ds and sport < dport):
                    _swap_sides(r)
                    r[L.STATE] |= ST_RA_REVERSED
        r[L.STATE] |= ST_ARGUS_ORIENTED


def argus_orient(rec: np.ndarray, services_file: str = SERVICES_FILE, copy: bool = True) -> np.ndarray:
    """Records re-oriented the way ``ra`` prints them (rows ``ra`` reversed get ST_RA_REVERSED): a
    copy, or with ``copy=False`` ``rec`` itself, changed in place (a C-contiguous int64 array that
    the caller owns; the pipeline's, whose copy was 9 ms of an x8 IoT corpus extract).

    Argus's ``s`` is the sender of a record's first packet; ``ra`` then reverses IPv4 TCP records
    that began without a SYN (docs/argus-semantics.md, R7):

    - first packet a SYN-ACK: the tracker already made its receiver ``s``; ra agrees once the
      receiver answered (kept, marked reversed), a lone SYN-ACK stays with its sender as ``s``;
    - otherwise by ports: a port is service-like if < 1024 or named in /etc/services; if exactly
      one side's port is, it becomes the destination, if both are, the lower one does.

    IPv6 records are never reversed by ra (SYN-ACK-first ones go back to the sender as ``s``).
    """
    rec = (np.array(rec, dtype=np.int64, copy=True, order="C") if copy
           else np.require(rec, np.int64, ("C", "W"))).reshape(-1, L.N_COLS)
    if rec.shape[0]:
        _orient_rows(rec, server_like_ports(services_file))
    return rec


@njit(cache=True, nogil=True, inline="always")
def _load(nbytes: int, pkts: int, dur32: np.float32) -> float:
    """Argus ``sload``: float32(8 * (bytes - bytes // pkts)) / dur, 0 unless pkts > 1 and dur > 0."""
    if pkts > 1 and dur32 > 0:
        return np.float64(np.float32((nbytes - nbytes // pkts) * 8.0) / dur32)
    return 0.0


@njit(cache=True, nogil=True, inline="always")
def _mean_size(nbytes: int, pkts: int) -> float:
    return np.float64(np.float32(nbytes / pkts)) if pkts > 0 else 0.0


@njit(cache=True, nogil=True, inline="always")
def _iat_ms(first_ns: int, last_ns: int, gaps: int) -> float:
    """Argus ``sintpkt``: sum of counted gaps / their number, µs -> ms (0 without a counted gap)."""
    if gaps > 0:
        return np.float64(last_ns // _US - first_ns // _US) / gaps / 1000.0
    return 0.0


@njit(cache=True, nogil=True)
def _argus_rows(rec: np.ndarray, out: np.ndarray) -> None:
    # Argus's handshake checks (docs/argus-semantics.md, R6): the tracker's ST_ARGUS_* bits
    need = L.ST_SYN | L.ST_SYNACK | L.ST_SYNACK_ACKS_SYN | L.ST_ARGUS_SYNACK_OK
    rec, out = borrowed(rec), borrowed(out)  # row views without reference counts (19-22 against 30-35 ns a row)
    for i in range(rec.shape[0]):
        r = rec[i]
        o = out[i]
        s_pkts = r[L.S_PKTS]
        d_pkts = r[L.D_PKTS]
        s_bytes = r[L.S_WIRE_BYTES]
        d_bytes = r[L.D_WIRE_BYTES]
        state = r[L.STATE]
        proto = (r[L.KEY] >> 32) & 0xFF
        # every time is a difference of whole microseconds (libpcap's struct timeval)
        dur32 = np.float32((r[L.LAST_TS] // _US - r[L.FIRST_TS] // _US) / 1e6)
        synack = 0
        ackdat = 0
        if proto == 6 and (state & need) == need and r[L.SYN_TS] != 0 and r[L.SYNACK_TS] != 0:
            synack_t = r[L.SYNACK_TS] // _US
            synack = abs(synack_t - r[L.SYN_TS] // _US)
            if r[L.ACK_TS] != 0 and (state & L.ST_ARGUS_ACK_OK) != 0:
                ackdat = abs(r[L.ACK_TS] // _US - synack_t)
        o[0] = dur32
        o[1] = proto
        o[2] = s_bytes
        o[3] = d_bytes
        # the last TTL of a side persists into the flow's next record (R4; 0 when never seen)
        o[4] = r[L.TTL_LAST] & 0xFF
        o[5] = (r[L.TTL_LAST] >> 8) & 0xFF
        s_load = _load(s_bytes, s_pkts, dur32)
        d_load = _load(d_bytes, d_pkts, dur32)
        if state & ST_RA_REVERSED:   # ra leaves the loads of reversed records unswapped
            s_load, d_load = d_load, s_load
        o[6] = s_load
        o[7] = d_load
        o[8] = s_pkts
        o[9] = d_pkts
        o[10] = _mean_size(s_bytes, s_pkts)
        o[11] = _mean_size(d_bytes, d_pkts)
        o[12] = _iat_ms(r[L.S_FIRST_TS], r[L.S_LAST_TS], r[L.IAT_N] & 0xFFFFFFFF)
        o[13] = _iat_ms(r[L.D_FIRST_TS], r[L.D_LAST_TS], (r[L.IAT_N] >> 32) & 0xFFFFFFFF)
        o[14] = (synack + ackdat) / 1e6
        o[15] = synack / 1e6
        o[16] = ackdat / 1e6


def argus_conn_features(rec: np.ndarray) -> np.ndarray:
    """The 17 ``conn`` features in Argus semantics, float64 (n, 17), column order of ``CONN_COLUMNS``."""
    rec = np.ascontiguousarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
    out = np.empty((rec.shape[0], 17), dtype=np.float64)
    _argus_rows(rec, out)
    return out
