"""Packet decoder: a :class:`PacketBatch` in, one struct of per-packet arrays out.

One numba kernel walks the whole batch (link layer -> IPv4/IPv6 -> TCP/UDP/ICMP)
and writes into preallocated arrays; Python runs once per batch. Every byte
read is checked against the packet's ``caplen`` first, so no input can make the
kernel read outside a packet or raise: a packet that cannot be decoded gets a
malformed status code (>= 16, named in :data:`MALFORMED_REASONS`) instead.

Links (``batch.linktype`` per packet): Ethernet with any number of 802.1Q/802.1ad/0x9100
tags (also behind Linux cooked headers), Linux cooked v1/v2, raw IP (101, 12, 14: version
from the first nibble), LINKTYPE_IPV4/IPV6, BSD NULL/loopback (family 2 = IPv4, 24/28/30 =
IPv6, in either byte order; another family is ``not_ip``). IPv6 extension headers walked:
hop-by-hop, routing, fragment, destination options, AH, mobility, HIP, shim6; ESP and
"no next header" end the walk (``proto`` 50/59, ports 0).

Length rules (what a counter may trust):

* ``ip_len`` and ``payload_len`` come from the IP header lengths, never from
  ``caplen``: a capture cut short by the snap length still counts the bytes the
  packet really carried, as long as the transport header itself was captured
  (otherwise ``l4_truncated``).
* An IP length that exceeds what the frame on the wire (``wirelen``) can hold is
  ``ip_bad_total_length``; a frame longer than the IP length (Ethernet padding)
  is normal.
* Only the fixed part of a transport header must be captured (TCP 20 bytes,
  UDP 8, ICMP/ICMPv6 8); TCP options cut off by the snap length are fine.

Fragments: a non-first fragment (IPv4 offset > 0, IPv6 fragment header with
offset > 0) gets :data:`STATUS_FRAGMENT` with addresses, ``proto``, ``ttl``,
``ip_len`` and ``payload_len`` (= the fragment's IP payload) filled and ports 0;
it is counted, not reassembled, and not tracked. A first fragment decodes like
any packet (its ``payload_len`` is the part of the transport payload that it
carries; a UDP length larger than the fragment is not an error there).

Fields of a malformed packet hold whatever was decoded before the problem was
found (link addresses, VLAN, often the IP addresses) and 0 for the rest; only
``status`` is meaningful for them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from .jit import njit

from malsensor.daemon.capture.batch import NO_VLAN, PacketBatch
from malsensor.daemon.intrinsics import load_be16, load_be32, load_be48, load_be64, prefetch

__all__ = [
    "Decoded", "decode_batch", "status_counts", "malformed_count", "MALFORMED_REASONS", "STATUS_NAMES",
    "STATUS_OK", "STATUS_NOT_IP", "STATUS_FRAGMENT", "MALFORMED_MIN",
    "TCP_FIN", "TCP_SYN", "TCP_RST", "TCP_PSH", "TCP_ACK", "TCP_URG", "TCP_ECE", "TCP_CWR",
]

# ---------------------------------------------------------------- status codes
STATUS_OK = 0
STATUS_NOT_IP = 1    # a valid frame that carries no IPv4/IPv6 (ARP, LLDP, STP, ...)
STATUS_FRAGMENT = 2  # non-first IP fragment: counted, not tracked
MALFORMED_MIN = 16   # codes >= this are malformed packets

LINK_TRUNCATED = 16         # link-layer header (incl. VLAN tags, NULL family) not captured
UNKNOWN_LINKTYPE = 17       # batch.linktype is none the decoder knows
IP_TRUNCATED = 18           # IP header (20 bytes + options / 40 bytes) not captured
IP_BAD_VERSION = 19         # version nibble is not what the link layer announced (or not 4/6 on raw links)
IP_BAD_IHL = 20             # IPv4 header length < 20 bytes
IP_BAD_TOTAL_LENGTH = 21    # IP length < header length, or more than the frame on the wire holds
IPV6_EXT_TRUNCATED = 22     # an IPv6 extension header's first bytes were not captured
IPV6_BAD_EXT_LENGTH = 23    # an IPv6 extension header runs past the IPv6 payload length
L4_TRUNCATED = 24           # transport header present on the wire but not captured (snap length)
L4_SHORT = 25               # IP payload shorter than the minimal transport header (TCP 20, UDP/ICMP 8)
TCP_BAD_DATA_OFFSET = 26    # TCP data offset < 5 words, or beyond the IP payload
UDP_BAD_LENGTH = 27         # UDP length < 8, or more than the IP payload

MALFORMED_REASONS: dict[int, str] = {
    LINK_TRUNCATED: "link_truncated",
    UNKNOWN_LINKTYPE: "unknown_linktype",
    IP_TRUNCATED: "ip_truncated",
    IP_BAD_VERSION: "ip_bad_version",
    IP_BAD_IHL: "ip_bad_ihl",
    IP_BAD_TOTAL_LENGTH: "ip_bad_total_length",
    IPV6_EXT_TRUNCATED: "ipv6_ext_truncated",
    IPV6_BAD_EXT_LENGTH: "ipv6_bad_ext_length",
    L4_TRUNCATED: "l4_truncated",
    L4_SHORT: "l4_short",
    TCP_BAD_DATA_OFFSET: "tcp_bad_data_offset",
    UDP_BAD_LENGTH: "udp_bad_length",
}

STATUS_NAMES: dict[int, str] = {STATUS_OK: "ok", STATUS_NOT_IP: "not_ip", STATUS_FRAGMENT: "fragment",
                                **MALFORMED_REASONS}
_N_CODES = max(STATUS_NAMES) + 1

# TCP flag bits (tcp_flags)
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = (1 << b for b in range(8))

IPV4_MAPPED_PREFIX = 0x0000FFFF00000000  # lo half of ::ffff:a.b.c.d
# The kernel asks for the first 128 bytes of the packet this many places ahead while it decodes
# one: the record walk has streamed the whole 2 MiB chunk through the cache since, and the first
# load of each packet's headers was a miss that stalled the loop (40 % of the kernel's samples,
# perf, x8 IoT corpus through the file mapping). In-process extract of that corpus, decoding:
# 0.054-0.058 s without, 0.034-0.040 with 8 ahead; 16 measured alike, 4 less (0.039-0.045).
DECODE_PREFETCH = 8


@dataclass(slots=True)
class Decoded:
    """Decoded header fields, one entry per packet of the batch (struct of arrays).

    Addresses are IPv6 as two big-endian halves (``*_hi`` = first 8 bytes);
    IPv4 addresses are mapped to ``::ffff:a.b.c.d`` (hi 0, lo ``0xFFFF00000000 | addr``).
    ``sport``/``dport``: TCP/UDP ports; ICMP/ICMPv6 echo request/reply: both the
    identifier; other ICMP: type and code; other protocols 0.
    ``vlan``: the outermost 802.1Q/802.1ad tag in the frame, else the tag the
    kernel stripped (``batch.vlan & 0xfff``), else -1.
    """

    status: np.ndarray       # uint8
    ip_version: np.ndarray   # uint8: 4, 6, 0 when not IP
    proto: np.ndarray        # uint8: IP protocol after the IPv6 extension headers
    ttl: np.ndarray          # uint8: IPv4 TTL / IPv6 hop limit
    tcp_flags: np.ndarray    # uint8
    src_hi: np.ndarray       # uint64
    src_lo: np.ndarray       # uint64
    dst_hi: np.ndarray       # uint64
    dst_lo: np.ndarray       # uint64
    sport: np.ndarray        # uint16
    dport: np.ndarray        # uint16
    ip_len: np.ndarray       # int32: IPv4 total length, IPv6 40 + payload length
    seq: np.ndarray          # uint32 (TCP)
    ack: np.ndarray          # uint32 (TCP)
    payload_len: np.ndarray  # int32: transport payload bytes, from the IP lengths
    src_mac: np.ndarray      # uint64: 48-bit MAC, 0 when the link has none
    dst_mac: np.ndarray      # uint64
    vlan: np.ndarray         # int32: VLAN id or -1
    # IPv4 ICMP error messages (every type but the query/reply ones: 3, 4, 5, 11, 12, ...): the 5-tuple
    # of the packet they quote (IP header + first 8 bytes), for trackers that attribute the error to
    # that connection. q_proto 0 = no quote (not an ICMP error, quote not captured, quoted fragment,
    # or a TCP/UDP quote whose IP length leaves no room for the transport header).
    q_src_lo: np.ndarray     # uint64: quoted source, IPv4-mapped like src_lo (the hi half is 0)
    q_dst_lo: np.ndarray     # uint64
    q_sport: np.ndarray      # uint16: quoted TCP/UDP ports, 0 for other quoted protocols
    q_dport: np.ndarray      # uint16
    q_proto: np.ndarray      # uint8: quoted IP protocol, 0 when none
    # where the TCP/UDP payload starts, from the frame's first byte (0 for other packets): the flow
    # tracker reads a direction's first payload bytes there (flows/signature.py)
    payload_off: np.ndarray  # int32
    # the full-capacity arrays these are views of (decode_batch reuses them), or None
    _store: "Decoded | None" = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.status.shape[0])

    @staticmethod
    def empty(n: int) -> "Decoded":
        return Decoded(**{name: np.empty(n, dtype=dt) for name, dt in _FIELD_DTYPES.items()})


_FIELD_DTYPES: dict[str, type] = {
    "status": np.uint8, "ip_version": np.uint8, "proto": np.uint8, "ttl": np.uint8,
    "tcp_flags": np.uint8,
    "src_hi": np.uint64, "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64,
    "sport": np.uint16, "dport": np.uint16,
    "ip_len": np.int32, "seq": np.uint32, "ack": np.uint32, "payload_len": np.int32,
    "src_mac": np.uint64, "dst_mac": np.uint64, "vlan": np.int32,
    "q_src_lo": np.uint64, "q_dst_lo": np.uint64, "q_sport": np.uint16, "q_dport": np.uint16,
    "q_proto": np.uint8, "payload_off": np.int32,
}
assert tuple(_FIELD_DTYPES) == tuple(f.name for f in fields(Decoded) if not f.name.startswith("_"))


# ---------------------------------------------------------------- the kernel
# The intrinsics themselves, not inline="always" wrappers: numba copied the buffer argument into
# each inlined wrapper, and the copy of the Ethernet branch kept one reference-count increment and
# decrement (two atomic operations) per packet that its pruning could not pair. Decoding took
# 46-58 ns a packet with the wrappers and 38-48 without (bench/bench_stages.py with JIT kernels,
# three runs each way alternating, both semantics; Intel host, 2026-11-30).
_u16, _u32, _u48, _u64 = load_be16, load_be32, load_be48, load_be64


@njit(cache=True, nogil=True, inline="always")
def _icmp_info_type(t):
    """ICMP query/reply types (BSD ``ICMP_INFOTYPE``); every other type is an error that quotes a packet."""
    return t == 0 or t == 8 or t == 9 or t == 10 or (13 <= t <= 18)


@njit(cache=True, nogil=True)
def _decode_kernel(buf, offset, caplen, wirelen, linktype, kvlan,
                   o_status, o_ipver, o_proto, o_ttl, o_flags,
                   o_src_hi, o_src_lo, o_dst_hi, o_dst_lo, o_sport, o_dport,
                   o_ip_len, o_seq, o_ack, o_payload, o_src_mac, o_dst_mac, o_vlan,
                   o_q_src_lo, o_q_dst_lo, o_q_sport, o_q_dport, o_q_proto, o_payload_off):
    n = offset.shape[0]
    blen = buf.shape[0]
    v4map = np.uint64(IPV4_MAPPED_PREFIX)
    zero64 = np.uint64(0)
    for i in range(n):
        if i + DECODE_PREFETCH < n:  # the headers of a packet further on (see DECODE_PREFETCH)
            ahead = offset[i + DECODE_PREFETCH]
            if 0 <= ahead and ahead + 64 < blen:
                prefetch(buf, ahead)
                prefetch(buf, ahead + 64)
        # clamp the packet to the buffer so that a bad offset/caplen can't read outside it
        base = offset[i]
        cap = np.int64(caplen[i])
        if base < 0 or base > blen or cap < 0:
            cap = 0
            base = 0
        elif base + cap > blen:
            cap = blen - base
        wire = np.int64(wirelen[i])
        if wire < cap:
            wire = cap

        st = STATUS_OK
        ipver = 0
        proto = 0
        ttl = 0
        flags = 0
        src_hi = zero64
        src_lo = zero64
        dst_hi = zero64
        dst_lo = zero64
        sport = 0
        dport = 0
        ip_len = 0
        seq = 0
        ack = 0
        payload = 0
        smac = 0
        dmac = 0
        vl = -1
        q_src = zero64
        q_dst = zero64
        q_sport = 0
        q_dport = 0
        q_proto = 0
        poff = 0

        while True:  # runs once; `break` leaves with `st` set
            lt = linktype[i]
            p = 0          # start of the current header, relative to the packet
            et = -1        # ethertype, for the links that have one
            l3 = 0         # 4 or 6 when the link layer announces IP
            if lt == 1:    # Ethernet
                if cap < 14:
                    st = LINK_TRUNCATED
                    break
                dmac = _u48(buf, base)
                smac = _u48(buf, base + 6)
                et = _u16(buf, base + 12)
                p = 14
            elif lt == 113:  # Linux cooked v1
                if cap < 16:
                    st = LINK_TRUNCATED
                    break
                if _u16(buf, base + 4) == 6:
                    smac = _u48(buf, base + 6)
                et = _u16(buf, base + 14)
                p = 16
            elif lt == 276:  # Linux cooked v2
                if cap < 20:
                    st = LINK_TRUNCATED
                    break
                if buf[base + 11] == 6:
                    smac = _u48(buf, base + 12)
                et = _u16(buf, base)
                p = 20
            elif lt == 101 or lt == 12 or lt == 14:  # raw IP: version from the first nibble
                if cap < 1:
                    st = IP_TRUNCATED
                    break
                l3 = buf[base] >> 4
                if l3 != 4 and l3 != 6:
                    st = IP_BAD_VERSION
                    break
            elif lt == 228:
                l3 = 4
            elif lt == 229:
                l3 = 6
            elif lt == 0:  # BSD loopback: address family, host byte order (either)
                if cap < 4:
                    st = LINK_TRUNCATED
                    break
                fam_le = (np.int64(buf[base]) | (np.int64(buf[base + 1]) << 8)
                          | (np.int64(buf[base + 2]) << 16) | (np.int64(buf[base + 3]) << 24))
                fam_be = _u32(buf, base)
                if fam_le == 2 or fam_be == 2:
                    l3 = 4
                elif (fam_le == 24 or fam_le == 28 or fam_le == 30
                      or fam_be == 24 or fam_be == 28 or fam_be == 30):
                    l3 = 6
                else:
                    st = STATUS_NOT_IP
                    break
                p = 4
            else:
                st = UNKNOWN_LINKTYPE
                break

            if et >= 0:
                # 802.1Q / 802.1ad / old QinQ tags, any number of them
                while et == 0x8100 or et == 0x88A8 or et == 0x9100:
                    if p + 4 > cap:
                        et = -1
                        break
                    if vl < 0:
                        vl = np.int64(_u16(buf, base + p) & 0xFFF)
                    et = _u16(buf, base + p + 2)
                    p += 4
                if et < 0:
                    st = LINK_TRUNCATED
                    break
                if et == 0x0800:
                    l3 = 4
                elif et == 0x86DD:
                    l3 = 6
                else:
                    st = STATUS_NOT_IP
                    break

            # ---------------- IP
            rem = cap - p
            q = base + p
            if rem < 1:
                st = IP_TRUNCATED
                break
            if (buf[q] >> 4) != l3:
                st = IP_BAD_VERSION
                break
            more_frags = False
            if l3 == 4:
                if rem < 20:
                    st = IP_TRUNCATED
                    break
                ipver = 4
                ihl = np.int64(buf[q] & 0xF) * 4
                ip_len = _u16(buf, q + 2)
                ttl = buf[q + 8]
                proto = buf[q + 9]
                src_lo = v4map | np.uint64(_u32(buf, q + 12))
                dst_lo = v4map | np.uint64(_u32(buf, q + 16))
                if ihl < 20:
                    st = IP_BAD_IHL
                    break
                if ip_len < ihl or ip_len > wire - p:
                    st = IP_BAD_TOTAL_LENGTH
                    break
                if ihl > rem:
                    st = IP_TRUNCATED
                    break
                fragw = _u16(buf, q + 6)
                l4 = p + ihl
                l4end = p + ip_len
                if (fragw & 0x1FFF) != 0:
                    st = STATUS_FRAGMENT
                    payload = l4end - l4
                    break
                more_frags = (fragw & 0x2000) != 0
            else:
                if rem < 40:
                    st = IP_TRUNCATED
                    break
                ipver = 6
                ip_len = 40 + _u16(buf, q + 4)
                nh = np.int64(buf[q + 6])
                ttl = buf[q + 7]
                src_hi = _u64(buf, q + 8)
                src_lo = _u64(buf, q + 16)
                dst_hi = _u64(buf, q + 24)
                dst_lo = _u64(buf, q + 32)
                proto = nh
                if ip_len > wire - p:
                    st = IP_BAD_TOTAL_LENGTH
                    break
                l4 = p + 40
                l4end = p + ip_len
                # walk the extension headers to the transport header
                while True:
                    if (nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140
                            or nh == 51 or nh == 44):
                        if l4 + 8 > l4end:
                            st = IPV6_BAD_EXT_LENGTH
                            break
                        if l4 + 4 > cap:
                            st = IPV6_EXT_TRUNCATED
                            break
                        q = base + l4
                        if nh == 44:  # fragment header: fixed 8 bytes
                            hl = 8
                            fo = _u16(buf, q + 2)
                            if (fo & 0xFFF8) != 0:
                                st = STATUS_FRAGMENT
                            more_frags = (fo & 1) != 0
                        elif nh == 51:  # AH: length in 4-byte units, minus 2
                            hl = (np.int64(buf[q + 1]) + 2) * 4
                        else:
                            hl = (np.int64(buf[q + 1]) + 1) * 8
                        if l4 + hl > l4end:
                            st = IPV6_BAD_EXT_LENGTH
                            break
                        nh = np.int64(buf[q])
                        l4 += hl
                        if st == STATUS_FRAGMENT:
                            break
                    else:
                        break
                proto = nh
                if st == STATUS_FRAGMENT:
                    payload = l4end - l4
                    break
                if st != STATUS_OK:
                    break

            # ---------------- transport
            ipl = l4end - l4   # transport bytes according to the IP header(s)
            capl4 = cap - l4   # transport bytes captured
            q = base + l4
            if proto == 6:
                if ipl < 20:
                    st = L4_SHORT
                    break
                if capl4 < 20:
                    st = L4_TRUNCATED
                    break
                sport = _u16(buf, q)
                dport = _u16(buf, q + 2)
                seq = _u32(buf, q + 4)
                ack = _u32(buf, q + 8)
                doff = (np.int64(buf[q + 12]) >> 4) * 4
                flags = buf[q + 13]
                if doff < 20 or doff > ipl:
                    st = TCP_BAD_DATA_OFFSET
                    break
                payload = ipl - doff
                poff = l4 + doff
            elif proto == 17:
                if ipl < 8:
                    st = L4_SHORT
                    break
                if capl4 < 8:
                    st = L4_TRUNCATED
                    break
                sport = _u16(buf, q)
                dport = _u16(buf, q + 2)
                ulen = _u16(buf, q + 4)
                if ulen < 8 or (ulen > ipl and not more_frags):
                    st = UDP_BAD_LENGTH
                    break
                payload = ipl - 8
                poff = l4 + 8
            elif proto == 1 or proto == 58:
                if ipl < 8:
                    st = L4_SHORT
                    break
                if capl4 < 8:
                    st = L4_TRUNCATED
                    break
                itype = np.int64(buf[q])
                if (proto == 1 and (itype == 8 or itype == 0)) or (proto == 58 and (itype == 128 or itype == 129)):
                    sport = _u16(buf, q + 4)
                    dport = sport
                else:
                    sport = itype
                    dport = np.int64(buf[q + 1])
                    if proto == 1 and ipver == 4 and not _icmp_info_type(itype):
                        # the quoted IPv4 header (+ 8 bytes), inside what was captured of this packet
                        qa = l4 + 8
                        qend = min(cap, l4end)
                        if qa + 20 <= qend and (buf[base + qa] >> 4) == 4:
                            qihl = np.int64(buf[base + qa] & 0xF) * 4
                            qlen = _u16(buf, base + qa + 2)
                            qp = np.int64(buf[base + qa + 9])
                            # (Argus: no ports unless the quoted length holds the transport header)
                            need = 20 if qp == 6 else (8 if qp == 17 else 0)
                            if qihl >= 20 and (_u16(buf, base + qa + 6) & 0x1FFF) == 0:
                                if need == 0:
                                    q_proto = qp
                                elif qlen - qihl >= need and qa + qihl + 4 <= qend:
                                    q_proto = qp
                                    q_sport = _u16(buf, base + qa + qihl)
                                    q_dport = _u16(buf, base + qa + qihl + 2)
                                if q_proto != 0:
                                    q_src = v4map | np.uint64(_u32(buf, base + qa + 12))
                                    q_dst = v4map | np.uint64(_u32(buf, base + qa + 16))
                payload = ipl - 8
            else:
                payload = ipl
            break

        if vl < 0 and kvlan[i] != NO_VLAN:
            vl = np.int64(kvlan[i] & 0xFFF)
        o_status[i] = st
        o_ipver[i] = ipver
        o_proto[i] = proto
        o_ttl[i] = ttl
        o_flags[i] = flags
        o_src_hi[i] = src_hi
        o_src_lo[i] = src_lo
        o_dst_hi[i] = dst_hi
        o_dst_lo[i] = dst_lo
        o_sport[i] = sport
        o_dport[i] = dport
        o_ip_len[i] = ip_len
        o_seq[i] = seq
        o_ack[i] = ack
        o_payload[i] = payload
        o_src_mac[i] = smac
        o_dst_mac[i] = dmac
        o_vlan[i] = vl
        o_q_src_lo[i] = q_src
        o_q_dst_lo[i] = q_dst
        o_q_sport[i] = q_sport
        o_q_dport[i] = q_dport
        o_q_proto[i] = q_proto
        o_payload_off[i] = poff


# ---------------------------------------------------------------- Python API
def decode_batch(batch: PacketBatch, out: Decoded | None = None) -> Decoded:
    """Decode every packet of ``batch``.

    ``out`` (the result of an earlier call, or ``Decoded.empty(capacity)``) lends
    its arrays when they hold at least ``batch.n`` entries: the result then holds
    views of their first ``n`` entries (and remembers the full arrays, so that
    ``d = decode_batch(batch, d)`` in a loop allocates only when a batch is larger
    than every batch before it, with a quarter more room). The arrays are
    overwritten: a caller that keeps a result across calls must copy it.
    """
    n = batch.n
    store = None if out is None else (out if out._store is None else out._store)
    if store is None or store.n < n:
        # a quarter more: packets per chunk vary a little, and each new maximum made new arrays
        # (six sets of fresh pages in an x8 extract before this headroom)
        store = Decoded.empty(n + n // 4)
    if store.n == n:
        res = store
    else:
        res = Decoded(**{f: getattr(store, f)[:n] for f in _FIELD_DTYPES}, _store=store)
    if n == 0:
        return res
    _decode_kernel(
        np.asarray(batch.buf, dtype=np.uint8).reshape(-1),
        np.asarray(batch.offset, dtype=np.int64),
        np.asarray(batch.caplen, dtype=np.int32),
        np.asarray(batch.wirelen, dtype=np.int32),
        np.asarray(batch.linktype, dtype=np.int32),
        np.asarray(batch.vlan, dtype=np.int32),
        res.status, res.ip_version, res.proto, res.ttl, res.tcp_flags,
        res.src_hi, res.src_lo, res.dst_hi, res.dst_lo, res.sport, res.dport,
        res.ip_len, res.seq, res.ack, res.payload_len, res.src_mac, res.dst_mac, res.vlan,
        res.q_src_lo, res.q_dst_lo, res.q_sport, res.q_dport, res.q_proto, res.payload_off,
    )
    return res


def status_counts(decoded: Decoded) -> dict[str, int]:
    """Packets per status name: ``ok``, ``not_ip``, ``fragment`` and every malformed reason (zeros included)."""
    counts = np.bincount(decoded.status, minlength=_N_CODES)
    return {name: int(counts[code]) for code, name in STATUS_NAMES.items()}


def malformed_count(decoded: Decoded) -> int:
    """Packets with a malformed status (code >= 16)."""
    return int(np.count_nonzero(decoded.status >= MALFORMED_MIN))
