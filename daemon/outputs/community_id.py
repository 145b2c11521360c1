"""Community ID v1 of a connection (the flow hash Zeek, Suricata and Wireshark write), in numba.

Spec: https://github.com/corelight/community-id-spec. The ID is ``"1:"`` followed by the base64
of SHA-1 over, in network byte order::

    seed (2 bytes) | source address (4 or 16) | destination address (4 or 16) | IP protocol (1) |
    0 (1) | source port (2) | destination port (2)

The ports are present for TCP, UDP, SCTP, ICMP and ICMPv6 only (other protocols hash 12 or 36
bytes). The two endpoints are ordered so that both directions of a flow get one ID: the smaller
address (then the smaller port) goes first. ICMP and ICMPv6 use Zeek's port equivalents: the
source port is the message type; for a request/reply type the destination port is the type of
its counterpart (echo 8 <-> 0, timestamp 13 <-> 14, neighbour solicitation 135 <-> 136, ...)
and the pair is ordered as above; every other type is "one-way": the destination port is the
code and the tuple keeps the sender first.

The message is at most 40 bytes, so SHA-1 runs one 64-byte block; :func:`put_community_id`
writes the 30 characters straight into a JSON output buffer (about 0.2 µs per connection).

Flow records hold what the decoder keeps of an ICMP packet (:mod:`..decode`): the type and code
of the first packet, except echo request/reply, whose two "ports" both hold the identifier.
:func:`record_ports` turns that back into a type and code:

- ``sport == dport`` is an echo flow whose originator sent the request (type 8, ICMPv6 128);
  an originator that only sent replies (its requests were not captured) gets the request's ID
  from the other side, which is a different ID than the reply packets would give.
- except IPv4 type 3 code 3 (port unreachable, common): an IPv4 echo flow whose identifier is 3
  gets the port-unreachable ID. For ICMPv6 the ambiguous pair is type 1 code 1 (administratively
  prohibited), rarer than echo identifier 1 (Windows ping), so ``1/1`` stays echo.
"""
from __future__ import annotations

import ipaddress

import numpy as np
from ..jit import njit

from ..flows import layout as L

VERSION = "1:"
TEXT_LEN = 30  # "1:" + base64 of 20 bytes (27 characters and one "=")
WORK_LEN = 88  # int64 scratch: 80 message-schedule words, then the 5 digest words

_M32 = 0xFFFFFFFF
_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8).copy()

# ICMP and ICMPv6 request/reply types and their counterparts (Zeek's ICMP4/6_counterpart);
# -1: a one-way type.
_ICMP4_PAIR = np.full(256, -1, dtype=np.int64)
for _a, _b in ((8, 0), (13, 14), (15, 16), (10, 9), (17, 18)):
    _ICMP4_PAIR[_a], _ICMP4_PAIR[_b] = _b, _a
_ICMP6_PAIR = np.full(256, -1, dtype=np.int64)
for _a, _b in ((128, 129), (130, 131), (133, 134), (135, 136), (139, 140), (144, 145)):
    _ICMP6_PAIR[_a], _ICMP6_PAIR[_b] = _b, _a
del _a, _b

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_SCTP = 1, 6, 17, 58, 132


def new_work() -> np.ndarray:
    """Scratch for :func:`put_community_id` (one per kernel call)."""
    return np.zeros(WORK_LEN, dtype=np.int64)


@njit(cache=True, nogil=True, inline="always")
def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & _M32


@njit(cache=True, nogil=True, inline="always")
def _put_groups64(w, g, v) -> int:
    """The four 16-bit groups of ``v`` (big-endian) as message groups ``g..g+3``; returns g + 4."""
    for k in range(4):
        w[g + k] = (v >> (48 - 16 * k)) & 0xFFFF
    return g + 4


@njit(cache=True, nogil=True)
def _sha1_one_block(w) -> None:
    """SHA-1 of the padded 64-byte block in ``w[0:16]`` (big-endian words); digest -> ``w[80:85]``.

    The four 20-round stages are separate loops: a branch per round cost about a third more."""
    for t in range(16, 80):
        w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
    a = np.int64(0x67452301)
    b = np.int64(0xEFCDAB89)
    c = np.int64(0x98BADCFE)
    d = np.int64(0x10325476)
    e = np.int64(0xC3D2E1F0)
    for t in range(0, 20):
        tmp = (_rotl(a, 5) + ((b & c) | (~b & d & _M32)) + e + 0x5A827999 + w[t]) & _M32
        e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    for t in range(20, 40):
        tmp = (_rotl(a, 5) + (b ^ c ^ d) + e + 0x6ED9EBA1 + w[t]) & _M32
        e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    for t in range(40, 60):
        tmp = (_rotl(a, 5) + ((b & c) | (b & d) | (c & d)) + e + 0x8F1BBCDC + w[t]) & _M32
        e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    for t in range(60, 80):
        tmp = (_rotl(a, 5) + (b ^ c ^ d) + e + 0xCA62C1D6 + w[t]) & _M32
        e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    w[80] = (0x67452301 + a) & _M32
    w[81] = (0xEFCDAB89 + b) & _M32
    w[82] = (0x98BADCFE + c) & _M32
    w[83] = (0x10325476 + d) & _M32
    w[84] = (0xC3D2E1F0 + e) & _M32


@njit(cache=True, nogil=True, inline="always")
def _digest_byte(w, k):
    return (w[80 + (k >> 2)] >> (24 - 8 * (k & 3))) & 0xFF


@njit(cache=True, nogil=True)
def port_equivalents(proto, sport, dport):
    """(port 1, port 2, one_way) of a packet's ports (ICMP/ICMPv6: type and code), as Zeek maps them."""
    if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        t = sport & 0xFF
        pair = _ICMP4_PAIR[t] if proto == IPPROTO_ICMP else _ICMP6_PAIR[t]
        if pair < 0:
            return sport, dport, True
        return sport, pair, False
    return sport, dport, False


@njit(cache=True, nogil=True)
def _endpoint_less(v6, a_hi, a_lo, b_hi, b_lo) -> bool:
    """Address a < b in network byte order (IPv4: the low 32 bits of the mapped form)."""
    if v6:
        ah, bh = np.uint64(a_hi), np.uint64(b_hi)
        return ah < bh or (ah == bh and np.uint64(a_lo) < np.uint64(b_lo))
    return (a_lo & _M32) < (b_lo & _M32)


@njit(cache=True, nogil=True)
def put_tuple_id(buf, pos, work, seed, v6, proto, s_hi, s_lo, d_hi, d_lo, sport, dport) -> int:
    """Community ID text (``1:`` + base64, no quotes) of one packet's tuple at ``buf[pos]``.

    Addresses as the decoder stores them (two int64 halves, IPv4 mapped into ::ffff:0:0/96),
    ``sport``/``dport`` the TCP/UDP/SCTP ports or the ICMP type/code, ``work`` from :func:`new_work`."""
    has_ports = (proto == IPPROTO_TCP or proto == IPPROTO_UDP or proto == IPPROTO_SCTP
                 or proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6)
    p1, p2, one_way = port_equivalents(proto, sport, dport)
    if not has_ports:
        p1 = 0
        p2 = 0
    swap = False
    if not one_way:
        if _endpoint_less(v6, d_hi, d_lo, s_hi, s_lo):
            swap = True
        elif not _endpoint_less(v6, s_hi, s_lo, d_hi, d_lo) and has_ports and p2 < p1:
            swap = True  # equal addresses: the smaller port first
    if swap:
        s_hi, s_lo, d_hi, d_lo = d_hi, d_lo, s_hi, s_lo
        p1, p2 = p2, p1
    # the message as 16-bit groups in work[16:48] (every field is a whole number of groups),
    # then packed two groups a word into work[0:16]
    g = 17
    work[16] = seed & 0xFFFF
    if v6:
        g = _put_groups64(work, g, s_hi)
        g = _put_groups64(work, g, s_lo)
        g = _put_groups64(work, g, d_hi)
        g = _put_groups64(work, g, d_lo)
    else:
        work[17] = (s_lo >> 16) & 0xFFFF
        work[18] = s_lo & 0xFFFF
        work[19] = (d_lo >> 16) & 0xFFFF
        work[20] = d_lo & 0xFFFF
        g = 21
    work[g] = (proto & 0xFF) << 8  # protocol, then one zero byte
    g += 1
    if has_ports:
        work[g] = p1 & 0xFFFF
        work[g + 1] = p2 & 0xFFFF
        g += 2
    nbytes = 2 * (g - 16)      # at most 40: one block
    work[g] = 0x8000           # the padding's first bit
    for k in range(g + 1, 48):
        work[k] = 0
    for i in range(16):
        work[i] = (work[16 + 2 * i] << 16) | work[17 + 2 * i]
    work[15] = nbytes * 8      # message length in bits (the word before it is 0)
    _sha1_one_block(work)
    buf[pos] = 49      # '1'
    buf[pos + 1] = 58  # ':'
    pos += 2
    for k in range(0, 18, 3):
        v = (_digest_byte(work, k) << 16) | (_digest_byte(work, k + 1) << 8) | _digest_byte(work, k + 2)
        buf[pos] = _B64[v >> 18]
        buf[pos + 1] = _B64[(v >> 12) & 63]
        buf[pos + 2] = _B64[(v >> 6) & 63]
        buf[pos + 3] = _B64[v & 63]
        pos += 4
    v = (_digest_byte(work, 18) << 8) | _digest_byte(work, 19)  # the last 2 bytes: 3 characters and "="
    buf[pos] = _B64[v >> 10]
    buf[pos + 1] = _B64[(v >> 4) & 63]
    buf[pos + 2] = _B64[(v << 2) & 63]
    buf[pos + 3] = 61
    return pos + 4


@njit(cache=True, nogil=True)
def record_ports(r):
    """(sport, dport) of a flow record as a packet of its originator would carry them
    (ICMP/ICMPv6: type and code; see the module docstring for echo flows)."""
    return key_ports(r[L.KEY])


@njit(cache=True, nogil=True)
def key_ports(key):
    """:func:`record_ports` of a record whose KEY column is ``key``."""
    sport = (key >> 16) & 0xFFFF
    dport = key & 0xFFFF
    proto = (key >> 32) & 0xFF
    if (proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6) and sport == dport:
        if proto == IPPROTO_ICMP and sport != 3:
            return 8, 0       # echo request
        if proto == IPPROTO_ICMPV6:
            return 128, 0     # echo request
    return sport, dport


@njit(cache=True, nogil=True)
def put_community_id(buf, pos, rec, i, seed, work) -> int:
    """Community ID text of flow record ``rec[i]`` (``1:`` + base64, no quotes) at ``buf[pos]``.

    The table and a row number rather than the row: a row view costs two atomic reference-count
    calls per record in numba's compiled code."""
    key = rec[i, L.KEY]
    sport, dport = key_ports(key)
    return put_tuple_id(buf, pos, work, seed, ((key >> 40) & 0xFF) == 6, (key >> 32) & 0xFF,
                        rec[i, L.SRC_HI], rec[i, L.SRC_LO], rec[i, L.DST_HI], rec[i, L.DST_LO], sport, dport)


@njit(cache=True, nogil=True)
def _record_ids(records, seed, out) -> None:
    work = np.zeros(WORK_LEN, dtype=np.int64)
    flat = out.reshape(-1)
    for i in range(records.shape[0]):
        put_community_id(flat, i * TEXT_LEN, records, i, seed, work)


def community_ids(records: np.ndarray, seed: int = 0) -> list[str]:
    """The Community ID of every flow record (the reference path for event and row dicts)."""
    records = np.ascontiguousarray(records, dtype=np.int64).reshape(-1, L.N_COLS)
    out = np.empty((records.shape[0], TEXT_LEN), dtype=np.uint8)
    _record_ids(records, check_seed(seed), out)
    return [row.tobytes().decode("ascii") for row in out]


@njit(cache=True, nogil=True)
def _tuple_id(out, seed, v6, proto, s_hi, s_lo, d_hi, d_lo, sport, dport) -> None:
    put_tuple_id(out, 0, np.zeros(WORK_LEN, dtype=np.int64), seed, v6, proto, s_hi, s_lo, d_hi, d_lo,
                 sport, dport)


def _halves(addr: str) -> tuple[int, int, bool]:
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return 0, 0xFFFF_0000_0000 | int(ip), False
    v = int(ip)
    return _signed(v >> 64), _signed(v & ((1 << 64) - 1)), True


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= 0xFFFF:
        raise ValueError(f"community ID seed must be an integer 0..65535, not {seed!r}")
    return int(seed)


def community_id(saddr: str, daddr: str, proto: int, sport: int = 0, dport: int = 0, seed: int = 0) -> str:
    """Community ID of one packet's tuple (addresses as text, ICMP type/code as the ports)."""
    s_hi, s_lo, v6 = _halves(saddr)
    d_hi, d_lo, d6 = _halves(daddr)
    if v6 != d6:
        raise ValueError(f"{saddr} and {daddr} are not of one IP version")
    out = np.empty(TEXT_LEN, dtype=np.uint8)
    _tuple_id(out, check_seed(seed), v6, int(proto), s_hi, s_lo, d_hi, d_lo, int(sport or 0), int(dport or 0))
    text = out.tobytes().decode("ascii")
    return text
