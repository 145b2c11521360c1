"""Tests for malsensor.daemon.decode: crafted frames with exact field values, every
malformed reason, property tests on random and mutated real frames, and a
cross-check against tshark on the real captures."""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import RawPcapReader

from conftest import PCAPS, require_data, require_tool
from malsensor.daemon.capture.batch import NO_VLAN, PacketBatch
from malsensor.daemon.decode import (
    MALFORMED_MIN,
    MALFORMED_REASONS,
    STATUS_FRAGMENT,
    STATUS_NAMES,
    STATUS_NOT_IP,
    STATUS_OK,
    Decoded,
    decode_batch,
    malformed_count,
    status_counts,
)

# ------------------------------------------------------------------ helpers
MAC_S = "02:00:00:00:00:01"
MAC_D = "0a:1b:2c:3d:4e:5f"
A4, B4 = "192.0.2.1", "198.51.100.7"
A6, B6 = "2001:db8::1", "2001:db8:ffff::2"

DEFAULTS = dict(status=0, ip_version=0, proto=0, ttl=0, tcp_flags=0, src_hi=0, src_lo=0, dst_hi=0,
                dst_lo=0, sport=0, dport=0, ip_len=0, seq=0, ack=0, payload_len=0, src_mac=0,
                dst_mac=0, vlan=-1, q_src_lo=0, q_dst_lo=0, q_sport=0, q_dport=0, q_proto=0)
DTYPES = dict(status=np.uint8, ip_version=np.uint8, proto=np.uint8, ttl=np.uint8, tcp_flags=np.uint8,
              src_hi=np.uint64, src_lo=np.uint64, dst_hi=np.uint64, dst_lo=np.uint64,
              sport=np.uint16, dport=np.uint16, ip_len=np.int32, seq=np.uint32, ack=np.uint32,
              payload_len=np.int32, src_mac=np.uint64, dst_mac=np.uint64, vlan=np.int32,
              q_src_lo=np.uint64, q_dst_lo=np.uint64, q_sport=np.uint16, q_dport=np.uint16, q_proto=np.uint8,
              payload_off=np.int32)


def mac(s: str) -> int:
    return int(s.replace(":", ""), 16)


def addr(s: str) -> tuple[int, int]:
    a = ipaddress.ip_address(s)
    if a.version == 4:
        return 0, 0x0000FFFF00000000 | int(a)
    v = int(a)
    return v >> 64, v & 0xFFFFFFFFFFFFFFFF


def ips(src: str, dst: str) -> dict:
    sh, sl = addr(src)
    dh, dl = addr(dst)
    return dict(src_hi=sh, src_lo=sl, dst_hi=dh, dst_lo=dl,
                ip_version=ipaddress.ip_address(src).version)


MACS = dict(src_mac=mac(MAC_S), dst_mac=mac(MAC_D))


def eth(**kw) -> Ether:
    return Ether(src=MAC_S, dst=MAC_D, **kw)


def make_batch(frames: list[bytes], linktypes: list[int] | int = 1, wirelen: list[int] | None = None,
               vlan: list[int] | None = None) -> PacketBatch:
    b = PacketBatch.from_packets(frames, list(range(len(frames))), wirelen=wirelen)
    lt = np.full(len(frames), linktypes, dtype=np.int32) if isinstance(linktypes, int) \
        else np.asarray(linktypes, dtype=np.int32)
    vl = b.vlan if vlan is None else np.asarray(vlan, dtype=np.int32)
    return PacketBatch(b.buf, b.offset, b.caplen, b.wirelen, b.ts_ns, lt, vl)


def dec1(frame: bytes, linktype: int = 1, wirelen: int | None = None, vlan: int = NO_VLAN) -> dict:
    d = decode_batch(make_batch([frame], linktype, None if wirelen is None else [wirelen], [vlan]))
    return row(d, 0)


def row(d: Decoded, i: int) -> dict:
    return {f: int(getattr(d, f)[i]) for f in DEFAULTS}


def expect(got: dict, **kw) -> None:
    want = {**DEFAULTS, **kw}
    assert got == want, {k: (got[k], want[k]) for k in want if got[k] != want[k]}


# ------------------------------------------------------------------ API shape
def test_field_names_and_dtypes():
    d = decode_batch(make_batch([bytes(eth() / IP(src=A4, dst=B4) / TCP())]))
    assert tuple(DTYPES) == tuple(f.name for f in dataclasses.fields(Decoded) if not f.name.startswith("_"))
    for name, dt in DTYPES.items():
        arr = getattr(d, name)
        assert arr.dtype == dt, name
        assert arr.shape == (1,)
    assert d.n == 1


def test_payload_off_is_where_the_transport_payload_starts():
    """payload_off: from the frame's first byte to the TCP/UDP payload (the flow tracker reads a
    direction's first payload there); 0 for packets without a TCP/UDP payload position."""
    frames = [
        eth() / IP(src=A4, dst=B4) / TCP(options=[("MSS", 1460), ("NOP", None), ("NOP", None)]) / b"GET ",
        eth() / Dot1Q(vlan=5) / IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / UDP() / b"x",
        eth() / IP(src=A4, dst=B4, options=[IPOption_RR()]) / UDP() / b"",
        eth() / IP(src=A4, dst=B4) / ICMP() / b"ping",
        eth() / IP(src=A4, dst=B4, frag=5) / b"fragment",
    ]
    raw = [bytes(f) for f in frames]
    d = decode_batch(make_batch(raw))
    assert d.payload_off.tolist() == [14 + 20 + 28, 14 + 4 + 40 + 8 + 8, 14 + (raw[2][14] & 0xF) * 4 + 8, 0, 0]
    assert (raw[2][14] & 0xF) > 5
    assert raw[0][d.payload_off[0]:] == b"GET " and raw[1][d.payload_off[1]:] == b"x"


def test_status_code_names():
    assert (STATUS_OK, STATUS_NOT_IP, STATUS_FRAGMENT) == (0, 1, 2)
    assert all(code >= MALFORMED_MIN == 16 for code in MALFORMED_REASONS)
    assert set(MALFORMED_REASONS.values()) == {
        "link_truncated", "unknown_linktype", "ip_truncated", "ip_bad_version", "ip_bad_ihl",
        "ip_bad_total_length", "ipv6_ext_truncated", "ipv6_bad_ext_length", "l4_truncated",
        "l4_short", "tcp_bad_data_offset", "udp_bad_length"}


def test_empty_batch():
    d = decode_batch(make_batch([]))
    assert d.n == 0
    assert sum(status_counts(d).values()) == 0


# ------------------------------------------------------------------ Ethernet + IPv4
def test_ethernet_ipv4_tcp():
    f = eth() / IP(src=A4, dst=B4, ttl=61) / TCP(sport=40000, dport=443, flags="PA", seq=0xDEADBEEF,
                                                   ack=0x01020304) / (b"x" * 100)
    expect(dec1(bytes(f)), status=0, proto=6, ttl=61, tcp_flags=8 | 16, sport=40000, dport=443,
           ip_len=140, seq=0xDEADBEEF, ack=0x01020304, payload_len=100, **ips(A4, B4), **MACS)


@pytest.mark.parametrize("flags,value", [("F", 1), ("S", 2), ("R", 4), ("P", 8), ("A", 16), ("U", 32),
                                         ("E", 64), ("C", 128), ("SA", 18), ("FA", 17), (0x1FF, 255)])
def test_tcp_flags(flags, value):
    # 0x1FF also sets the NS bit (in the data-offset byte): tcp_flags holds the low 8 bits only
    f = eth() / IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags=flags, seq=1, ack=0)
    expect(dec1(bytes(f)), proto=6, ttl=64, tcp_flags=value, sport=1, dport=2, ip_len=40, seq=1,
           **ips(A4, B4), **MACS)


def test_tcp_options_and_ip_options_and_padding():
    tcp = TCP(sport=5555, dport=22, flags="S", seq=100,
              options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)])
    f = bytes(eth() / IP(src=A4, dst=B4, ttl=1, options=[IPOption_RR(routers=["10.0.0.1"])]) / tcp)
    ihl = (f[14] & 15) * 4
    doff = (f[14 + ihl + 12] >> 4) * 4
    assert ihl > 20 and doff > 20
    expect(dec1(f), proto=6, ttl=1, tcp_flags=2, sport=5555, dport=22, ip_len=ihl + doff, seq=100,
           **ips(A4, B4), **MACS)
    # Ethernet padding to the 60-byte minimum: lengths still come from the IP header
    small = bytes(eth() / IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="A", ack=9))
    assert len(small) == 54
    expect(dec1(small + b"\0" * 6), proto=6, ttl=64, tcp_flags=16, sport=1, dport=2, ip_len=40, ack=9,
           **ips(A4, B4), **MACS)


def test_udp():
    f = eth() / IP(src=B4, dst=A4, ttl=128) / UDP(sport=53, dport=33333) / b"abc"
    expect(dec1(bytes(f)), proto=17, ttl=128, sport=53, dport=33333, ip_len=31, payload_len=3,
           **ips(B4, A4), **MACS)


def test_icmp_echo_and_errors():
    req = eth() / IP(src=A4, dst=B4, ttl=64) / ICMP(type=8, id=0x1234, seq=7) / b"ping"
    rep = eth() / IP(src=B4, dst=A4, ttl=50) / ICMP(type=0, id=0x1234, seq=7) / b"ping"
    inner = IP(src=B4, dst=A4) / UDP(sport=1000, dport=2000)
    unreach = eth() / IP(src=B4, dst=A4, ttl=255) / ICMP(type=3, code=3) / inner
    ttlx = eth() / IP(src=B4, dst=A4, ttl=254) / ICMP(type=11, code=1) / inner
    d = decode_batch(make_batch([bytes(p) for p in (req, rep, unreach, ttlx)]))
    expect(row(d, 0), proto=1, ttl=64, sport=0x1234, dport=0x1234, ip_len=32, payload_len=4,
           **ips(A4, B4), **MACS)
    expect(row(d, 1), proto=1, ttl=50, sport=0x1234, dport=0x1234, ip_len=32, payload_len=4,
           **ips(B4, A4), **MACS)
    quote = dict(q_src_lo=addr(B4)[1], q_dst_lo=addr(A4)[1], q_sport=1000, q_dport=2000, q_proto=17)
    expect(row(d, 2), proto=1, ttl=255, sport=3, dport=3, ip_len=56, payload_len=28, **ips(B4, A4), **MACS,
           **quote)
    expect(row(d, 3), proto=1, ttl=254, sport=11, dport=1, ip_len=56, payload_len=28, **ips(B4, A4), **MACS,
           **quote)


def test_icmp_error_quote():
    """The 5-tuple quoted by IPv4 ICMP errors (Argus attributes the error to that flow)."""
    C4 = "203.0.113.9"
    syn = IP(src=A4, dst=B4, ttl=63) / TCP(sport=40017, dport=80, flags="S", seq=1000)
    router = eth() / IP(src=C4, dst=A4)
    tcp_q = dict(q_src_lo=addr(A4)[1], q_dst_lo=addr(B4)[1], q_sport=40017, q_dport=80, q_proto=6)
    outer = dict(proto=1, ttl=64, ip_len=20 + 8 + 40, payload_len=40, **ips(C4, A4), **MACS)
    frames = [
        router / ICMP(type=3, code=1) / syn,                              # 0 unreachable, whole SYN quoted
        router / ICMP(type=11, code=0) / Raw(bytes(syn)[:28]),            # 1 time exceeded, IP + 8 bytes
        router / ICMP(type=5, code=1, gw="10.0.0.1") / syn,               # 2 redirect
        router / ICMP(type=4) / syn,                                      # 3 source quench
        router / ICMP(type=12) / syn,                                     # 4 parameter problem
        router / ICMP(type=3, code=3) / IP(src=A4, dst=B4, options=[IPOption_RR(routers=["10.0.0.1"])])
        / UDP(sport=53, dport=5353),                                      # 5 quoted IP options
        router / ICMP(type=3) / IP(src=A4, dst=B4, proto=47) / GRE(),     # 6 other protocol: no ports
        router / ICMP(type=14) / syn,                                     # 7 timestamp reply: no quote
        router / ICMP(type=3) / Raw(bytes(syn)[:22]),                     # 8 quote cut before the ports
        router / ICMP(type=3) / IP(src=A4, dst=B4, frag=8, proto=6) / Raw(b"\0" * 8),   # 9 quoted fragment
        router / ICMP(type=3) / Raw(bytes(IP(src=A4, dst=B4, proto=6, len=36)) + bytes(syn)[20:28]),  # 10 short TCP
        eth() / IPv6(src=A6, dst=B6) / Raw(bytes([1, 4, 0, 0, 0, 0, 0, 0])) ,  # 11 ICMPv6 error: not mapped
    ]
    frames[11][IPv6].nh = 58
    d = decode_batch(make_batch([bytes(f) for f in frames]))
    expect(row(d, 0), sport=3, dport=1, **{**outer, **tcp_q})
    expect(row(d, 1), sport=11, dport=0, **{**outer, "ip_len": 56, "payload_len": 28, **tcp_q})
    expect(row(d, 2), sport=5, dport=1, **{**outer, **tcp_q})
    expect(row(d, 3), sport=4, dport=0, **{**outer, **tcp_q})
    expect(row(d, 4), sport=12, dport=0, **{**outer, **tcp_q})
    got = row(d, 5)
    assert (got["q_sport"], got["q_dport"], got["q_proto"], got["q_src_lo"], got["q_dst_lo"]) == \
        (53, 5353, 17, addr(A4)[1], addr(B4)[1])
    assert (row(d, 6)["q_proto"], row(d, 6)["q_sport"], row(d, 6)["q_dport"]) == (47, 0, 0)
    for i in (7, 8, 9, 10, 11):
        got = row(d, i)
        assert (got["q_proto"], got["q_sport"], got["q_dport"], got["q_src_lo"], got["q_dst_lo"]) == (0,) * 5, i
    # the quote must have been captured: the same unreachable cut by the snap length inside the ports
    full = bytes(frames[0])
    cut = decode_batch(make_batch([full[:14 + 20 + 8 + 20 + 2]], wirelen=[len(full)]))
    assert int(cut.status[0]) == STATUS_OK and int(cut.q_proto[0]) == 0
    cut = decode_batch(make_batch([full[:14 + 20 + 8 + 20 + 4]], wirelen=[len(full)]))
    assert (int(cut.q_proto[0]), int(cut.q_sport[0]), int(cut.q_dport[0])) == (6, 40017, 80)


def test_gre_and_other_protocols_have_no_ports():
    gre = eth() / IP(src=A4, dst=B4, ttl=30) / GRE() / IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=7, dport=8)
    sctp = eth() / IP(src=A4, dst=B4, proto=132) / Raw(b"\x00\x50\x00\x51" + b"\0" * 8)
    igmp6 = eth() / IPv6(src=A6, dst=B6, nh=2, hlim=1) / Raw(b"\x11" * 8)
    d = decode_batch(make_batch([bytes(gre), bytes(sctp), bytes(igmp6)]))
    expect(row(d, 0), proto=47, ttl=30, ip_len=20 + 4 + 40, payload_len=44, **ips(A4, B4), **MACS)
    expect(row(d, 1), proto=132, ttl=64, ip_len=32, payload_len=12, **ips(A4, B4), **MACS)
    expect(row(d, 2), proto=2, ttl=1, ip_len=48, payload_len=8, **ips(A6, B6), **MACS)


def test_not_ip_frames():
    arp = eth(type=0x0806) / ARP(hwsrc=MAC_S, psrc=A4, pdst=B4)
    lldp = eth(type=0x88CC) / Raw(b"\x02\x07\x04" + b"\0" * 40)
    llc = Ether(src=MAC_S, dst=MAC_D, type=38) / Raw(b"\x42\x42\x03" + b"\0" * 35)  # 802.3 length field
    vlan_arp = eth() / Dot1Q(vlan=9) / ARP()
    d = decode_batch(make_batch([bytes(p) for p in (arp, lldp, llc, vlan_arp)]))
    for i in range(3):
        expect(row(d, i), status=STATUS_NOT_IP, **MACS)
    expect(row(d, 3), status=STATUS_NOT_IP, vlan=9, **MACS)


# ------------------------------------------------------------------ VLAN
def test_dot1q_qinq_and_kernel_vlan():
    one = eth() / Dot1Q(vlan=100, prio=5) / IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / b"abc"
    qinq = eth() / Dot1AD(vlan=200) / Dot1Q(vlan=100) / IPv6(src=A6, dst=B6, hlim=9) / TCP(sport=3, dport=4, flags="S")
    old = eth(type=0x9100) / Dot1Q(vlan=7, type=0x8100) / Dot1Q(vlan=8) / IP(src=A4, dst=B4) / ICMP(id=5)
    plain = eth() / IP(src=A4, dst=B4) / UDP(sport=1, dport=2)
    frames = [bytes(p) for p in (one, qinq, old, plain, one)]
    assert frames[1][12:14] == b"\x88\xa8" and frames[2][12:14] == b"\x91\x00"
    # the kernel stripped a tag (TCI 0x2005: priority 1, id 5) of the last two
    d = decode_batch(make_batch(frames, vlan=[NO_VLAN, NO_VLAN, NO_VLAN, 0x2005, 0x2005]))
    expect(row(d, 0), proto=17, ttl=64, sport=1, dport=2, ip_len=31, payload_len=3, vlan=100, **ips(A4, B4), **MACS)
    expect(row(d, 1), proto=6, ttl=9, tcp_flags=2, sport=3, dport=4, ip_len=60, vlan=200, **ips(A6, B6), **MACS)
    expect(row(d, 2), proto=1, ttl=64, sport=5, dport=5, ip_len=28, vlan=7, **ips(A4, B4), **MACS)
    expect(row(d, 3), proto=17, ttl=64, sport=1, dport=2, ip_len=28, vlan=5, **ips(A4, B4), **MACS)
    # a tag inside the frame is the outermost one the decoder sees: it wins
    expect(row(d, 4), proto=17, ttl=64, sport=1, dport=2, ip_len=31, payload_len=3, vlan=100, **ips(A4, B4), **MACS)


# ------------------------------------------------------------------ other link types
def test_linux_cooked_v1():
    srcmac = bytes.fromhex(MAC_S.replace(":", ""))
    v6 = CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=srcmac, proto=0x86DD) / \
        IPv6(src=A6, dst=B6, hlim=3) / UDP(sport=546, dport=547) / b"dhcp"
    lo = CookedLinux(pkttype=0, lladdrtype=772, lladdrlen=0, src=b"", proto=0x0800) / \
        IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=1, dport=2, flags="R")
    tagged = CookedLinux(lladdrtype=1, lladdrlen=6, src=srcmac, proto=0x8100) / Dot1Q(vlan=42) / \
        IP(src=A4, dst=B4) / UDP(sport=9, dport=9)
    arp = CookedLinux(lladdrtype=1, lladdrlen=6, src=srcmac, proto=0x0806) / ARP()
    frames = [bytes(p) for p in (v6, lo, tagged, arp)]
    assert len(bytes(CookedLinux())) == 16
    d = decode_batch(make_batch(frames, 113))
    expect(row(d, 0), proto=17, ttl=3, sport=546, dport=547, ip_len=52, payload_len=4, src_mac=mac(MAC_S),
           **ips(A6, B6))
    expect(row(d, 1), proto=6, ttl=64, tcp_flags=4, sport=1, dport=2, ip_len=40, **ips("127.0.0.1", "127.0.0.1"))
    expect(row(d, 2), proto=17, ttl=64, sport=9, dport=9, ip_len=28, vlan=42, src_mac=mac(MAC_S), **ips(A4, B4))
    expect(row(d, 3), status=STATUS_NOT_IP, src_mac=mac(MAC_S))


def test_linux_cooked_v2():
    srcmac = bytes.fromhex(MAC_S.replace(":", ""))
    v4 = CookedLinuxV2(proto=0x0800, ifindex=3, lladdrtype=1, pkttype=0, lladdrlen=6, src=srcmac) / \
        IP(src=A4, dst=B4, ttl=7) / TCP(sport=80, dport=50000, flags="FA", seq=11, ack=12) / b"bye"
    tun = CookedLinuxV2(proto=0x86DD, ifindex=9, lladdrtype=65534, pkttype=4, lladdrlen=0) / \
        IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=77, seq=1)
    frames = [bytes(v4), bytes(tun)]
    assert len(bytes(CookedLinuxV2())) == 20
    d = decode_batch(make_batch(frames, 276))
    expect(row(d, 0), proto=6, ttl=7, tcp_flags=17, sport=80, dport=50000, ip_len=43, seq=11, ack=12,
           payload_len=3, src_mac=mac(MAC_S), **ips(A4, B4))
    expect(row(d, 1), proto=58, ttl=64, sport=77, dport=77, ip_len=48, **ips(A6, B6))


@pytest.mark.parametrize("linktype", [101, 12, 14, 228])
def test_raw_ipv4(linktype):
    f = IP(src=A4, dst=B4, ttl=99) / UDP(sport=123, dport=123) / (b"n" * 48)
    expect(dec1(bytes(f), linktype), proto=17, ttl=99, sport=123, dport=123, ip_len=76, payload_len=48,
           **ips(A4, B4))


@pytest.mark.parametrize("linktype", [101, 12, 14, 229])
def test_raw_ipv6(linktype):
    f = IPv6(src=A6, dst=B6, hlim=200) / TCP(sport=443, dport=1025, flags="SA", seq=1, ack=2)
    expect(dec1(bytes(f), linktype), proto=6, ttl=200, tcp_flags=18, sport=443, dport=1025, ip_len=60,
           seq=1, ack=2, **ips(A6, B6))


@pytest.mark.parametrize("fmt", ["<I", ">I"])
def test_null_loopback(fmt):
    v4 = IP(src="127.0.0.1", dst="127.0.0.2") / UDP(sport=10, dport=20) / b"q"
    v6 = IPv6(src="::1", dst="::1") / TCP(sport=30, dport=40, flags="S")
    frames = [struct.pack(fmt, 2) + bytes(v4)] + [struct.pack(fmt, fam) + bytes(v6) for fam in (24, 28, 30)]
    frames.append(struct.pack(fmt, 7) + b"\0" * 20)  # some other address family
    d = decode_batch(make_batch(frames, 0))
    expect(row(d, 0), proto=17, ttl=64, sport=10, dport=20, ip_len=29, payload_len=1,
           **ips("127.0.0.1", "127.0.0.2"))
    for i in (1, 2, 3):
        expect(row(d, i), proto=6, ttl=64, tcp_flags=2, sport=30, dport=40, ip_len=60, **ips("::1", "::1"))
    expect(row(d, 4), status=STATUS_NOT_IP)


# ------------------------------------------------------------------ IPv6 extension headers
def test_ipv6_extension_chain_to_tcp():
    chain = (IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::5"])
             / IPv6ExtHdrFragment(offset=0, m=1, id=0xABCD) / IPv6ExtHdrDestOpt())
    f = eth() / IPv6(src=A6, dst=B6, hlim=17) / chain / TCP(sport=8080, dport=60000, flags="PA", seq=5, ack=6) / (b"d" * 33)
    ext = 8 + 24 + 8 + 8
    raw = bytes(f)
    assert raw[14 + 6] == 0  # next header of the fixed header: hop-by-hop
    expect(dec1(raw), proto=6, ttl=17, tcp_flags=24, sport=8080, dport=60000, ip_len=40 + ext + 20 + 33,
           seq=5, ack=6, payload_len=33, **ips(A6, B6), **MACS)


def test_ipv6_ah_mobility_esp_nonext():
    ah = AH(nh=17, payloadlen=4, spi=1, seq=1, icv=b"\0" * 12)  # 12 + 12 bytes = (4 + 2) * 4
    f_ah = eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / ah / UDP(sport=500, dport=4500) / b"ike"
    mob = Raw(bytes([6, 0, 0, 0, 0, 0, 0, 0]))  # mobility header (8 bytes), next header TCP
    f_mob = eth() / IPv6(src=A6, dst=B6, nh=0) / IPv6ExtHdrHopByHop(nh=135) / mob / TCP(sport=1, dport=2, flags="S")
    f_esp = eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / ESP(spi=7, seq=1, data=b"\xee" * 24)
    f_nonext = eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt(nh=59) / Raw(b"zzzz")
    f_esp4 = eth() / IP(src=A4, dst=B4) / ESP(spi=7, seq=1, data=b"\xee" * 24)
    d = decode_batch(make_batch([bytes(p) for p in (f_ah, f_mob, f_esp, f_nonext, f_esp4)]))
    expect(row(d, 0), proto=17, ttl=64, sport=500, dport=4500, ip_len=40 + 8 + 24 + 8 + 3, payload_len=3,
           **ips(A6, B6), **MACS)
    expect(row(d, 1), proto=6, ttl=64, tcp_flags=2, sport=1, dport=2, ip_len=40 + 8 + 8 + 20, **ips(A6, B6), **MACS)
    expect(row(d, 2), proto=50, ttl=64, ip_len=40 + 8 + 32, payload_len=32, **ips(A6, B6), **MACS)
    expect(row(d, 3), proto=59, ttl=64, ip_len=40 + 8 + 4, payload_len=4, **ips(A6, B6), **MACS)
    expect(row(d, 4), proto=50, ttl=64, ip_len=20 + 32, payload_len=32, **ips(A4, B4), **MACS)


def test_icmpv6():
    req = eth() / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=0x4242, seq=1, data=b"abcd")
    rep = eth() / IPv6(src=B6, dst=A6, hlim=60) / ICMPv6EchoReply(id=0x4242, seq=1, data=b"abcd")
    ns = eth() / IPv6(src=A6, dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt=B6)
    d = decode_batch(make_batch([bytes(p) for p in (req, rep, ns)]))
    expect(row(d, 0), proto=58, ttl=64, sport=0x4242, dport=0x4242, ip_len=52, payload_len=4, **ips(A6, B6), **MACS)
    expect(row(d, 1), proto=58, ttl=60, sport=0x4242, dport=0x4242, ip_len=52, payload_len=4, **ips(B6, A6), **MACS)
    expect(row(d, 2), proto=58, ttl=255, sport=135, dport=0, ip_len=64, payload_len=16,
           **ips(A6, "ff02::1:ff00:2"), **MACS)


# ------------------------------------------------------------------ fragments
def test_fragments():
    later4 = eth() / IP(src=A4, dst=B4, proto=17, frag=185, ttl=44) / Raw(b"y" * 40)
    last4 = eth() / IP(src=A4, dst=B4, proto=6, flags="MF", frag=1, ttl=44) / Raw(b"y" * 16)
    # a first fragment decodes; its UDP length covers the whole datagram, more than the fragment holds
    first4 = eth() / IP(src=A4, dst=B4, flags="MF", frag=0) / UDP(sport=1, dport=2, len=1008) / (b"z" * 100)
    later6 = eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=100, m=0, nh=6) / Raw(b"q" * 64)
    first6 = eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=0, m=1) / UDP(sport=3, dport=4, len=3000) / (b"q" * 64)
    atomic6 = eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=0, m=0) / UDP(sport=3, dport=4) / (b"q" * 64)
    d = decode_batch(make_batch([bytes(p) for p in (later4, last4, first4, later6, first6, atomic6)]))
    expect(row(d, 0), status=STATUS_FRAGMENT, proto=17, ttl=44, ip_len=60, payload_len=40, **ips(A4, B4), **MACS)
    expect(row(d, 1), status=STATUS_FRAGMENT, proto=6, ttl=44, ip_len=36, payload_len=16, **ips(A4, B4), **MACS)
    expect(row(d, 2), proto=17, ttl=64, sport=1, dport=2, ip_len=128, payload_len=100, **ips(A4, B4), **MACS)
    expect(row(d, 3), status=STATUS_FRAGMENT, proto=6, ttl=64, ip_len=40 + 8 + 64, payload_len=64, **ips(A6, B6), **MACS)
    expect(row(d, 4), proto=17, ttl=64, sport=3, dport=4, ip_len=40 + 8 + 8 + 64, payload_len=64, **ips(A6, B6), **MACS)
    expect(row(d, 5), proto=17, ttl=64, sport=3, dport=4, ip_len=40 + 8 + 8 + 64, payload_len=64, **ips(A6, B6), **MACS)
    assert status_counts(d)["fragment"] == 3


# ------------------------------------------------------------------ snap length
def test_snaplen_truncated_frames_decode_from_ip_lengths():
    full = bytes(eth() / IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="PA", seq=3, ack=4) / (b"P" * 1000))
    cut = full[:14 + 20 + 20 + 10]
    expect(dec1(cut, wirelen=len(full)), proto=6, ttl=64, tcp_flags=24, sport=1, dport=2, ip_len=1040,
           seq=3, ack=4, payload_len=1000, **ips(A4, B4), **MACS)
    # TCP options cut off by the snap length: the fixed 20 bytes are enough
    opt = bytes(eth() / IPv6(src=A6, dst=B6) / TCP(sport=5, dport=6, flags="S", options=[("MSS", 1400)] * 5) / (b"o" * 200))
    doff = (opt[14 + 40 + 12] >> 4) * 4
    assert doff == 40
    expect(dec1(opt[:14 + 40 + 20], wirelen=len(opt)), proto=6, ttl=64, tcp_flags=2, sport=5, dport=6,
           ip_len=40 + doff + 200, payload_len=200, **ips(A6, B6), **MACS)
    # UDP cut right after its header
    udp = bytes(eth() / IP(src=A4, dst=B4) / UDP(sport=7, dport=8) / (b"u" * 1400))
    expect(dec1(udp[:14 + 28], wirelen=len(udp)), proto=17, ttl=64, sport=7, dport=8, ip_len=1428,
           payload_len=1400, **ips(A4, B4), **MACS)


# ------------------------------------------------------------------ malformed
def _ip4_tcp() -> bytes:
    return bytes(eth() / IP(src=A4, dst=B4) / TCP(sport=1, dport=2) / b"data")


def _ip6_tcp() -> bytes:
    return bytes(eth() / IPv6(src=A6, dst=B6) / TCP(sport=1, dport=2) / b"data")


def _patch(b: bytes, at: int, new: bytes) -> bytes:
    return b[:at] + new + b[at + len(new):]


def _hbh_bad_len() -> bytes:
    f = bytes(eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / TCP(sport=1, dport=2))
    return _patch(f, 14 + 40 + 1, b"\x05")  # HBH claims 48 bytes, the payload holds 28


FULL_HBH = bytes(eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / TCP(sport=1, dport=2) / (b"h" * 100))
FULL_TCP = _ip4_tcp()
FULL_TCP6 = _ip6_tcp()
FULL_UDP = bytes(eth() / IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / (b"u" * 50))
FULL_ICMP = bytes(eth() / IP(src=A4, dst=B4) / ICMP(type=8) / (b"i" * 50))
OPTS_IP = bytes(eth() / IP(src=A4, dst=B4, options=[IPOption_RR(routers=["10.0.0.1"] * 3)]) / UDP())

# (id, frame, linktype, wirelen or None, expected status)
MALFORMED_CASES = [
    ("eth_short", FULL_TCP[:13], 1, None, "link_truncated"),
    ("vlan_tag_cut", bytes(eth() / Dot1Q(vlan=1) / IP())[:16], 1, None, "link_truncated"),
    ("qinq_inner_tag_cut", bytes(eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IP())[:20], 1, None, "link_truncated"),
    ("sll_short", bytes(CookedLinux() / IP())[:15], 113, None, "link_truncated"),
    ("sll2_short", bytes(CookedLinuxV2() / IP())[:19], 276, None, "link_truncated"),
    ("null_short", b"\x02\x00\x00", 0, None, "link_truncated"),
    ("unknown_linktype", FULL_TCP, 147, None, "unknown_linktype"),
    ("eth_no_ip_bytes", FULL_TCP[:14], 1, len(FULL_TCP), "ip_truncated"),
    ("ipv4_19_bytes", FULL_TCP[:14 + 19], 1, len(FULL_TCP), "ip_truncated"),
    ("ipv4_options_cut", OPTS_IP[:14 + 24], 1, len(OPTS_IP), "ip_truncated"),
    ("ipv6_39_bytes", FULL_TCP6[:14 + 39], 1, len(FULL_TCP6), "ip_truncated"),
    ("raw_empty", b"", 101, None, "ip_truncated"),
    ("ethertype4_carries_v6", _patch(FULL_TCP6, 12, b"\x08\x00"), 1, None, "ip_bad_version"),
    ("ethertype6_carries_v4", _patch(FULL_TCP, 12, b"\x86\xdd"), 1, None, "ip_bad_version"),
    ("raw_version5", b"\x55" + bytes(FULL_TCP[15:]), 101, None, "ip_bad_version"),
    ("linktype_ipv6_carries_v4", FULL_TCP[14:], 229, None, "ip_bad_version"),
    ("null_v4_family_v6_packet", b"\x02\0\0\0" + FULL_TCP6[14:], 0, None, "ip_bad_version"),
    ("ihl_4", _patch(FULL_TCP, 14, b"\x44"), 1, None, "ip_bad_ihl"),
    ("ihl_0", _patch(FULL_TCP, 14, b"\x40"), 1, None, "ip_bad_ihl"),
    ("total_length_beyond_frame", _patch(FULL_TCP, 16, struct.pack(">H", 2000)), 1, None, "ip_bad_total_length"),
    ("total_length_below_ihl", _patch(FULL_TCP, 16, struct.pack(">H", 19)), 1, None, "ip_bad_total_length"),
    ("total_length_beyond_wirelen", FULL_TCP[:40], 1, len(FULL_TCP) - 1, "ip_bad_total_length"),
    ("ipv6_plen_beyond_frame", _patch(FULL_TCP6, 18, struct.pack(">H", 500)), 1, None, "ip_bad_total_length"),
    ("ipv6_ext_not_captured", FULL_HBH[:14 + 40 + 2], 1, len(FULL_HBH), "ipv6_ext_truncated"),
    ("ipv6_ext_len_beyond_payload", _hbh_bad_len(), 1, None, "ipv6_bad_ext_length"),
    ("ipv6_ext_in_tiny_payload", bytes(eth() / IPv6(src=A6, dst=B6, nh=60, plen=4) / Raw(b"\x06\0\0\0")), 1, None,
     "ipv6_bad_ext_length"),
    ("ipv6_frag_hdr_beyond_payload", bytes(eth() / IPv6(src=A6, dst=B6, nh=44, plen=6) / Raw(b"\x06\0\0\0\0\0")), 1,
     None, "ipv6_bad_ext_length"),
    ("tcp_header_cut", FULL_TCP[:14 + 20 + 10], 1, len(FULL_TCP), "l4_truncated"),
    ("tcp6_header_cut", FULL_TCP6[:14 + 40 + 19], 1, len(FULL_TCP6), "l4_truncated"),
    ("udp_header_cut", FULL_UDP[:14 + 20 + 6], 1, len(FULL_UDP), "l4_truncated"),
    ("icmp_header_cut", FULL_ICMP[:14 + 20 + 4], 1, len(FULL_ICMP), "l4_truncated"),
    ("tcp_in_10_bytes", bytes(eth() / IP(src=A4, dst=B4, proto=6) / Raw(b"\0" * 10)), 1, None, "l4_short"),
    ("udp_in_4_bytes", bytes(eth() / IP(src=A4, dst=B4, proto=17) / Raw(b"\0" * 4)), 1, None, "l4_short"),
    ("icmp_in_4_bytes", bytes(eth() / IP(src=A4, dst=B4, proto=1) / Raw(b"\x08\0\0\0")), 1, None, "l4_short"),
    ("icmpv6_in_4_bytes", bytes(eth() / IPv6(src=A6, dst=B6, nh=58) / Raw(b"\x80\0\0\0")), 1, None, "l4_short"),
    ("tcp6_in_12_bytes", bytes(eth() / IPv6(src=A6, dst=B6, nh=6) / Raw(b"\0" * 12)), 1, None, "l4_short"),
    ("tcp_doff_4", bytes(eth() / IP(src=A4, dst=B4) / TCP(dataofs=4)), 1, None, "tcp_bad_data_offset"),
    ("tcp_doff_0", bytes(eth() / IP(src=A4, dst=B4) / TCP(dataofs=0) / b"xxxx"), 1, None, "tcp_bad_data_offset"),
    ("tcp_doff_beyond_payload", bytes(eth() / IP(src=A4, dst=B4) / TCP(dataofs=15) / b"12345"), 1, None,
     "tcp_bad_data_offset"),
    ("udp_len_4", bytes(eth() / IP(src=A4, dst=B4) / UDP(len=4) / b"abc"), 1, None, "udp_bad_length"),
    ("udp_len_beyond_ip", bytes(eth() / IP(src=A4, dst=B4) / UDP(len=500) / b"abc"), 1, None, "udp_bad_length"),
    ("udp6_len_beyond_ip", bytes(eth() / IPv6(src=A6, dst=B6) / UDP(len=100) / b"abc"), 1, None, "udp_bad_length"),
]
_CODE = {name: code for code, name in MALFORMED_REASONS.items()}


@pytest.mark.parametrize("frame,linktype,wirelen,reason", [c[1:] for c in MALFORMED_CASES],
                         ids=[c[0] for c in MALFORMED_CASES])
def test_malformed_reason(frame, linktype, wirelen, reason):
    got = dec1(frame, linktype, wirelen)
    assert got["status"] == _CODE[reason], (STATUS_NAMES.get(got["status"]), reason)


def test_every_malformed_reason_has_a_test():
    assert {c[4] for c in MALFORMED_CASES} == set(MALFORMED_REASONS.values())


def test_malformed_fields_keep_what_was_decoded():
    # link addresses and VLAN are known before the IP problem
    bad = bytes(eth() / Dot1Q(vlan=33) / IP(src=A4, dst=B4, ihl=4) / TCP())
    expect(dec1(bad), status=_CODE["ip_bad_ihl"], ip_version=4, ttl=64, proto=6, ip_len=40,
           src_lo=addr(A4)[1], dst_lo=addr(B4)[1], vlan=33, **MACS)


def test_status_counts_on_a_mixed_batch():
    frames = [FULL_TCP, FULL_TCP6, FULL_UDP, bytes(eth(type=0x0806) / ARP()), FULL_TCP[:13],
              bytes(eth() / IP(src=A4, dst=B4, proto=17, frag=10) / Raw(b"f" * 8)),
              _patch(FULL_TCP, 14, b"\x44"), _patch(FULL_TCP, 14, b"\x43")]
    d = decode_batch(make_batch(frames))
    counts = status_counts(d)
    assert set(counts) == {"ok", "not_ip", "fragment", *MALFORMED_REASONS.values()}
    expected = dict.fromkeys(counts, 0)
    expected.update(ok=3, not_ip=1, fragment=1, link_truncated=1, ip_bad_ihl=2)
    assert counts == expected
    assert malformed_count(d) == 3


# ------------------------------------------------------------------ output reuse, bad batch arrays
def test_out_arrays_are_reused():
    frames = [FULL_TCP, FULL_UDP, FULL_TCP6]
    fresh = decode_batch(make_batch(frames))
    big = Decoded.empty(10)
    for f in DEFAULTS:
        getattr(big, f)[:] = 7  # stale values must all be overwritten
    got = decode_batch(make_batch(frames), big)
    for f in DEFAULTS:
        assert getattr(got, f).shape == (3,)
        assert np.shares_memory(getattr(got, f), getattr(big, f)), f
        assert np.array_equal(getattr(got, f), getattr(fresh, f)), f
    same = Decoded.empty(3)
    assert decode_batch(make_batch(frames), same) is same
    small = Decoded.empty(2)
    grown = decode_batch(make_batch(frames), small)
    assert grown.n == 3 and not np.shares_memory(grown.status, small.status)
    # the loop idiom d = decode_batch(b, d): a smaller batch in between keeps the capacity
    d = decode_batch(make_batch(frames[:1]), big)
    d = decode_batch(make_batch(frames), d)
    assert d.n == 3 and np.shares_memory(d.status, big.status)
    assert np.array_equal(d.sport, fresh.sport)
    d = decode_batch(make_batch(frames * 5), d)  # 15 > capacity 10: fresh arrays
    assert d.n == 15 and not np.shares_memory(d.status, big.status)
    assert np.array_equal(d.dport[12:], fresh.dport)


def test_inconsistent_batch_arrays_never_read_outside_the_buffer():
    good = make_batch([FULL_TCP, FULL_UDP])
    n = 6
    batch = PacketBatch(
        buf=good.buf,
        offset=np.array([0, -5, 10**9, good.buf.size - 4, 0, 0], dtype=np.int64),
        caplen=np.array([len(FULL_TCP), 60, 60, 60, -1, 10**8], dtype=np.int32),
        wirelen=np.array([len(FULL_TCP), 60, 60, 0, 0, 10], dtype=np.int32),
        ts_ns=np.zeros(n, dtype=np.int64),
        linktype=np.ones(n, dtype=np.int32),
        vlan=np.full(n, NO_VLAN, dtype=np.int32),
    )
    d = decode_batch(batch)
    assert list(d.status[:5]) == [STATUS_OK] + [_CODE["link_truncated"]] * 4
    # the last one is clamped to the buffer: it sees both frames as one oversized frame
    assert sum(status_counts(d).values()) == n


# ------------------------------------------------------------------ property tests
LINKTYPES = [0, 1, 12, 14, 101, 113, 228, 229, 276]


@functools.lru_cache(maxsize=None)
def real_frames() -> tuple[tuple[bytes, int, int], ...]:
    """(frame, wirelen, linktype) from the real captures, up to 300 per file."""
    out = []
    for path in sorted(PCAPS.glob("*.pcap*")):
        with RawPcapReader(str(path)) as r:
            for k, (data, meta) in enumerate(r):
                if k == 300:
                    break
                lt = getattr(meta, "linktype", None) or r.linktype
                out.append((bytes(data), int(meta.wirelen), int(lt)))
    return tuple(out)


def check_invariants(batch: PacketBatch, d: Decoded) -> None:
    counts = status_counts(d)
    assert sum(counts.values()) == batch.n
    assert set(np.unique(d.status).tolist()) <= set(STATUS_NAMES)
    ok = d.status == STATUS_OK
    ipish = ok | (d.status == STATUS_FRAGMENT)
    assert np.all(np.isin(d.ip_version[ipish], (4, 6)))
    assert np.all(d.ip_version[d.status == STATUS_NOT_IP] == 0)
    assert np.all(d.ip_len[ipish & (d.ip_version == 4)] >= 20)
    assert np.all(d.ip_len[ipish & (d.ip_version == 6)] >= 40)
    assert np.all((d.payload_len[ipish] >= 0) & (d.payload_len[ipish] <= d.ip_len[ipish]))
    assert np.all(d.ip_len[ipish] <= batch.wirelen[ipish])
    noports = ipish & ~np.isin(d.proto, (1, 6, 17, 58)) | (d.status == STATUS_FRAGMENT)
    assert np.all(d.sport[noports] == 0) and np.all(d.dport[noports] == 0)
    not_tcp = (d.status < MALFORMED_MIN) & ~(ok & (d.proto == 6))  # malformed rows keep partial fields
    assert np.all(d.seq[not_tcp] == 0) and np.all(d.ack[not_tcp] == 0) and np.all(d.tcp_flags[not_tcp] == 0)
    assert np.all(d.vlan >= -1) and np.all(d.vlan <= 4095)
    assert np.all(d.src_mac < (1 << 48)) and np.all(d.dst_mac < (1 << 48))


def check_batch_independence(frames, linktypes, wirelens, d: Decoded) -> None:
    """A packet decodes the same alone (at the very end of the buffer) as in a batch, and
    the same whatever bytes follow it in the buffer: nothing past ``caplen`` is read."""
    for i in range(len(frames)):
        alone = decode_batch(make_batch([frames[i]], [linktypes[i]], [wirelens[i]]))
        assert row(alone, 0) == row(d, i)
    for filler in (b"\x00", b"\xff", b"\x45"):
        b = make_batch([f + filler * 64 for f in frames], linktypes, [w + 64 for w in wirelens])
        b = dataclasses.replace(b, caplen=b.caplen - 64, wirelen=np.asarray(wirelens, dtype=np.int32))
        spaced = decode_batch(b)
        for f in DEFAULTS:
            assert np.array_equal(getattr(spaced, f), getattr(d, f)), (f, filler)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from(LINKTYPES + [147]), st.integers(0, 2000)),
                min_size=1, max_size=16))
def test_random_bytes_never_crash(packets):
    frames = [p[0] for p in packets]
    lts = [p[1] for p in packets]
    wl = [len(p[0]) + p[2] for p in packets]
    batch = make_batch(frames, lts, wl)
    d = decode_batch(batch)
    check_invariants(batch, d)
    check_batch_independence(frames, lts, wl, d)


HEADERS = [bytes(eth())[:14], bytes(eth() / Dot1Q())[:18], bytes(CookedLinux())[:16], bytes(CookedLinuxV2())[:20],
           b"\x02\0\0\0", b"\0\0\0\x1e"]
HEADER_LT = [1, 1, 113, 276, 0, 0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(HEADERS) - 1), st.sampled_from([b"\x45", b"\x46", b"\x4f", b"\x60"]),
                          st.binary(min_size=0, max_size=100)), min_size=1, max_size=16))
def test_valid_link_headers_random_ip_never_crash(packets):
    """Random bytes behind a valid link header reach the IP and transport parsers."""
    frames = [HEADERS[h] + v + tail for h, v, tail in packets]
    lts = [HEADER_LT[h] for h, _, _ in packets]
    wl = [len(f) for f in frames]
    batch = make_batch(frames, lts, wl)
    d = decode_batch(batch)
    check_invariants(batch, d)
    check_batch_independence(frames, lts, wl, d)


@st.composite
def mutated_real_frames(draw):
    pool = real_frames()
    out = []
    for _ in range(draw(st.integers(1, 12))):
        frame, wirelen, lt = pool[draw(st.integers(0, len(pool) - 1))]
        b = bytearray(frame)
        for _ in range(draw(st.integers(0, 4))):
            if not b:
                break
            pos = draw(st.integers(0, min(len(b) - 1, 80)))  # flips where the headers are
            b[pos] = draw(st.integers(0, 255))
        cut = draw(st.one_of(st.none(), st.integers(0, len(b))))
        if cut is not None:
            b = b[:cut]
        wl = draw(st.sampled_from([wirelen, len(b), max(len(b), wirelen - 10), wirelen + 100]))
        out.append((bytes(b), max(wl, len(b)), lt))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_real_frames())
def test_mutated_real_frames_never_crash(packets):
    require_data(PCAPS)
    frames = [p[0] for p in packets]
    wl = [p[1] for p in packets]
    lts = [p[2] for p in packets]
    batch = make_batch(frames, lts, wl)
    d = decode_batch(batch)
    check_invariants(batch, d)
    check_batch_independence(frames, lts, wl, d)


def test_project_reader_batches_decode_like_scapy_frames():
    """End to end with the project's capture reader: same decoded fields as frames read by scapy."""
    pcapfile = pytest.importorskip("malsensor.daemon.capture.pcapfile")
    path = require_data(PCAPS / "stratosphere_scanning_host.pcap")
    ref = decode_batch(read_capture(path))
    got = [decode_batch(b) for b in pcapfile.read_capture(path)]
    for f in DEFAULTS:
        assert np.array_equal(np.concatenate([getattr(g, f) for g in got]), getattr(ref, f)), f


def test_real_frames_unmutated_decode_without_malformed():
    require_data(PCAPS)
    pool = real_frames()
    assert len(pool) > 1000
    lts = {lt for _, _, lt in pool}
    assert lts == {1}
    batch = make_batch([p[0] for p in pool], 1, [p[1] for p in pool])
    d = decode_batch(batch)
    counts = status_counts(d)
    assert malformed_count(d) == 0, {k: v for k, v in counts.items() if v}
    assert counts["ok"] + counts["not_ip"] == batch.n


# ------------------------------------------------------------------ tshark cross-check on real captures
TSHARK_FIELDS = ["frame.protocols", "eth.src", "eth.dst", "vlan.id", "ip.ttl", "ip.len", "ip.proto",
                 "ip.src", "ip.dst", "ip.frag_offset", "ipv6.hlim", "ipv6.plen", "ipv6.src", "ipv6.dst",
                 "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.seq_raw", "tcp.ack_raw", "tcp.len",
                 "udp.srcport", "udp.dstport", "udp.length", "icmp.type", "icmp.code", "icmp.ident",
                 "icmpv6.type", "icmpv6.code", "icmpv6.echo.identifier"]
L4_TOKENS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "igmp": 2}


def tshark_rows(path: Path) -> list[dict[str, str]]:
    tshark = require_tool("tshark")
    cmd = [tshark, "-r", str(path), "-n", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [dict(zip(TSHARK_FIELDS, line.split("\t"))) for line in res.stdout.splitlines()]


def read_capture(path: Path) -> PacketBatch:
    frames, wl, lts = [], [], []
    with RawPcapReader(str(path)) as r:
        for data, meta in r:
            frames.append(bytes(data))
            wl.append(int(meta.wirelen))
            lts.append(int(getattr(meta, "linktype", None) or r.linktype))
    return make_batch(frames, lts, wl)


def _i(s: str) -> int:
    return int(s, 0) if s.startswith("0x") else int(s)


@pytest.mark.parametrize("name", [
    "stratosphere_cc_capture1.pcap", "stratosphere_scanning_host.pcap", "ndpi_1kxun.pcap",
    "http_espn.pcapng", "synscan.pcapng", "stratosphere_ssh_bruteforce.pcap", "retina_tls_ciphers.pcap",
    "ndpi_443_firefox.pcap"])
def test_fields_agree_with_tshark(name):
    path = require_data(PCAPS / name)
    rows = tshark_rows(path)
    batch = read_capture(path)
    d = decode_batch(batch)
    assert len(rows) == batch.n
    checked = {"tcp": 0, "udp": 0, "icmp": 0, "icmpv6": 0}
    for i, t in enumerate(rows):
        got = row(d, i)
        where = f"{name} frame {i + 1}"
        assert got["src_mac"] == mac(t["eth.src"]) and got["dst_mac"] == mac(t["eth.dst"]), where
        assert got["vlan"] == (int(t["vlan.id"]) if t["vlan.id"] else -1), where
        tokens = t["frame.protocols"].split(":")
        if "ip" not in tokens and "ipv6" not in tokens:
            assert got["status"] == STATUS_NOT_IP, where
            continue
        v6 = "ipv6" in tokens and ("ip" not in tokens or tokens.index("ipv6") < tokens.index("ip"))
        if v6:
            assert got["ttl"] == int(t["ipv6.hlim"]) and got["ip_len"] == 40 + int(t["ipv6.plen"]), where
            sh, sl = addr(t["ipv6.src"])
            dh, dl = addr(t["ipv6.dst"])
        else:
            assert got["ttl"] == int(t["ip.ttl"]) and got["ip_len"] == int(t["ip.len"]), where
            assert got["proto"] == int(t["ip.proto"]), where
            sh, sl = addr(t["ip.src"])
            dh, dl = addr(t["ip.dst"])
        assert (got["src_hi"], got["src_lo"], got["dst_hi"], got["dst_lo"]) == (sh, sl, dh, dl), where
        assert got["ip_version"] == (6 if v6 else 4), where
        if not v6 and t["ip.frag_offset"] not in ("", "0"):
            assert got["status"] == STATUS_FRAGMENT, where
            continue
        assert got["status"] == STATUS_OK, (where, STATUS_NAMES[got["status"]])
        l4 = next((tok for tok in tokens if tok in L4_TOKENS), None)
        if l4 is not None:
            assert got["proto"] == L4_TOKENS[l4], where
        if l4 == "tcp":
            assert (got["sport"], got["dport"]) == (int(t["tcp.srcport"]), int(t["tcp.dstport"])), where
            assert got["tcp_flags"] == _i(t["tcp.flags"]) & 0xFF, where
            assert (got["seq"], got["ack"]) == (int(t["tcp.seq_raw"]), int(t["tcp.ack_raw"])), where
            assert got["payload_len"] == int(t["tcp.len"]), where
        elif l4 == "udp":
            assert (got["sport"], got["dport"]) == (int(t["udp.srcport"]), int(t["udp.dstport"])), where
            assert got["payload_len"] == int(t["udp.length"]) - 8, where
        elif l4 in ("icmp", "icmpv6"):
            typ, code = int(t[f"{l4}.type"]), int(t[f"{l4}.code"])
            ident = t["icmp.ident"] if l4 == "icmp" else t["icmpv6.echo.identifier"]
            if (l4 == "icmp" and typ in (0, 8)) or (l4 == "icmpv6" and typ in (128, 129)):
                assert got["sport"] == got["dport"] == _i(ident), where
            else:
                assert (got["sport"], got["dport"]) == (typ, code), where
        else:
            assert got["sport"] == got["dport"] == 0, where
        if l4 in checked:
            checked[l4] += 1
    assert sum(checked.values()) > 0
    if name == "stratosphere_cc_capture1.pcap":
        assert checked["tcp"] == batch.n == 7931
        assert status_counts(d)["ok"] == 7931


def test_icmp_error_quotes_agree_with_tshark():
    """The quoted 5-tuple of every IPv4 ICMP message of the captures that have errors, against tshark."""
    tshark = require_tool("tshark")
    paths = [require_data(PCAPS / "stratosphere_scanning_host.pcap")]
    paths += sorted((PCAPS.parent / "iot_sentinel" / "WeMoSwitch").glob("*.pcap"))
    fields = ["frame.number", "icmp.type", "ip.src", "ip.dst", "ip.proto", "ip.len", "ip.hdr_len",
              "ip.frag_offset", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport"]
    errors = 0
    for path in paths:
        cmd = [tshark, "-r", str(path), "-n", "-Y", "icmp && !icmpv6", "-T", "fields", "-E", "separator=\t",
               "-E", "occurrence=a", "-E", "aggregator=,"]
        for f in fields:
            cmd += ["-e", f]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        d = decode_batch(read_capture(path))
        for line in out.splitlines():
            t = dict(zip(fields, line.split("\t")))
            i = int(t["frame.number"]) - 1
            got = row(d, i)
            q = (got["q_src_lo"], got["q_dst_lo"], got["q_sport"], got["q_dport"], got["q_proto"])
            where = f"{path.name} frame {i + 1}"
            typ = int(t["icmp.type"].split(",")[0])
            ips_ = t["ip.src"].split(",")
            if typ in (0, 8, 9, 10, 13, 14, 15, 16, 17, 18) or len(ips_) < 2:
                assert q == (0, 0, 0, 0, 0), where
                continue
            proto = int(t["ip.proto"].split(",")[1])
            room = int(t["ip.len"].split(",")[1]) - int(t["ip.hdr_len"].split(",")[1])
            ports = t["tcp.srcport"] + t["udp.srcport"]
            usable = (t["ip.frag_offset"].split(",")[1] == "0"
                      and (proto not in (6, 17) or (ports and room >= (20 if proto == 6 else 8))))
            if not usable:
                assert q == (0, 0, 0, 0, 0), where
                continue
            sp, dp = ((int(t["tcp.srcport"]), int(t["tcp.dstport"])) if proto == 6 else
                      (int(t["udp.srcport"]), int(t["udp.dstport"])) if proto == 17 else (0, 0))
            assert q == (addr(ips_[1])[1], addr(t["ip.dst"].split(",")[1])[1], sp, dp, proto), where
            errors += proto == 6
    assert errors >= 35   # the TCP quotes Argus maps onto TCP records (docs/argus-semantics.md, R5)
