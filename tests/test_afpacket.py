"""AF_PACKET live capture: ring walker, sockets, fanout, BPF, VLAN, lifecycle, drops, bad input.

The root tests build their own namespaces and veth pair (tests/netns.py), inject
frames on the peer from the source namespace and capture on the host end inside the
capture namespace; every frame on that link is one the test sent.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
from collections import Counter

import numpy as np
import pytest
from conftest import require_root, require_tool
from crafted import TcpConn, Traffic, udp
from netns import VethPair, veth  # noqa: F401  (veth is a fixture)
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from malsensor.daemon.capture import bpf
from malsensor.daemon.capture.afpacket import CaptureConfig, LiveCapture
from malsensor.daemon.capture.batch import NO_VLAN, BatchConsumer
from malsensor.daemon.capture.live import capture_connections
from malsensor.daemon.capture.ring import (BLOCK_DESC_LEN, COUNTER_NAMES, N_COUNTERS, TP_STATUS_USER,
                                           TP_STATUS_VLAN_VALID, FanoutSpec, RingConfig,
                                           walk_blocks)
from malsensor.daemon.decode import MALFORMED_REASONS, decode_batch
from malsensor.daemon.capture.batch import PacketBatch

SMALL_RING = RingConfig(block_size=1 << 18, block_count=64, retire_timeout_ms=10)


# ----------------------------------------------------------------------- no root needed
def test_bpf_compile_udp_and_errors():
    prog = bpf.compile_filter("udp", snaplen=1000)
    ins = bpf.instructions(prog)
    assert ins[0] == (0x28, 0, 0, 12)  # ldh [12]: the EtherType
    assert (0x06, 0, 0, 1000) in ins  # ret #snaplen for accepted packets
    assert (0x06, 0, 0, 0) in ins  # ret #0 for the rest
    with pytest.raises(bpf.BpfError, match="not-a-filter"):
        bpf.compile_filter("not-a-filter ((")
    assert bpf.ret_program(0) == struct.pack("HBBI", 6, 0, 0, 0)


def test_ring_config_validation():
    with pytest.raises(ValueError, match="page size"):
        RingConfig(block_size=5000)
    with pytest.raises(ValueError, match="block_count"):
        RingConfig(block_count=1)
    with pytest.raises(ValueError, match="frame_size"):
        RingConfig(block_size=1 << 16, frame_size=3000)
    assert RingConfig().ring_bytes == RingConfig().block_size * RingConfig().block_count
    with pytest.raises(ValueError, match="fanout mode"):
        FanoutSpec("bogus").option()
    # group given: id | (mode | defrag) << 16; no group: the kernel picks a unique id
    assert FanoutSpec("hash", 7).option() == 7 | (0x8000 << 16)
    assert FanoutSpec("lb", 7).option() == 7 | (1 << 16)
    assert FanoutSpec("cpu").option() == (2 | 0x2000) << 16


def _fake_block(ring32: np.ndarray, block: int, block_size: int, packets: list[tuple]) -> None:
    """Write a retired TPACKET_V3 block: packets = (frame bytes, sec, nsec, tp_len, status, tci)."""
    raw = ring32.view(np.uint8)
    base = block * block_size
    off = BLOCK_DESC_LEN
    w = base // 4
    ring32[w + 2] = TP_STATUS_USER
    ring32[w + 3] = len(packets)
    ring32[w + 4] = off
    for i, (frame, sec, nsec, length, status, tci) in enumerate(packets):
        mac = 82
        slot = (mac + len(frame) + 15) & ~15
        h = (base + off) // 4
        ring32[h] = 0 if i == len(packets) - 1 else slot
        ring32[h + 1], ring32[h + 2], ring32[h + 3], ring32[h + 4] = sec, nsec, len(frame), length
        ring32[h + 5] = status
        ring32[h + 6] = mac
        ring32[h + 8] = tci
        raw[base + off + mac: base + off + mac + len(frame)] = np.frombuffer(frame, np.uint8)
        off += slot


def test_walk_blocks_synthetic_ring():
    bs, nblk = 4096, 4
    ring32 = np.zeros(bs * nblk // 4, dtype=np.uint32)
    f1, f2, f3 = b"a" * 60, b"b" * 100, b"c" * 64
    _fake_block(ring32, 1, bs, [(f1, 10, 5, 60, 1, 0), (f2, 10, 7, 1500, 1 | TP_STATUS_VLAN_VALID, 0x6064)])
    _fake_block(ring32, 2, bs, [(f3, 11, 0, 64, 1, 0)])
    cap = 2 * bs // 64
    out = [np.empty(cap, np.int64), np.empty(cap, np.int32), np.empty(cap, np.int32),
           np.empty(cap, np.int64), np.empty(cap, np.int32)]
    ctr = np.zeros(N_COUNTERS, np.int64)
    # block 0 is still the kernel's: nothing to do
    assert walk_blocks(ring32, bs, nblk, 0, 2, *out, ctr) == (0, 0)
    nb, n = walk_blocks(ring32, bs, nblk, 1, 4, *out, ctr)
    assert (nb, n) == (2, 3)  # stops at block 3 (kernel's)
    offset, caplen, wirelen, ts, vlan = (a[:n] for a in out)
    raw = ring32.view(np.uint8)
    assert [bytes(raw[o:o + c]) for o, c in zip(offset, caplen)] == [f1, f2, f3]
    assert wirelen.tolist() == [60, 1504, 64]  # the stripped tag's 4 bytes are counted
    assert ts.tolist() == [10 * 10**9 + 5, 10 * 10**9 + 7, 11 * 10**9]
    assert vlan.tolist() == [NO_VLAN, 0x6064, NO_VLAN]
    c = dict(zip(COUNTER_NAMES, ctr.tolist()))
    assert c["packets"] == 3 and c["vlan"] == 1 and c["truncated"] == 1 and c["blocks"] == 2
    assert c["wire_bytes"] == 60 + 1504 + 64 and c["ring_errors"] == 0
    # a corrupt header (snaplen past the block end) is counted, never read
    _fake_block(ring32, 3, bs, [(f1, 1, 1, 60, 1, 0)])
    ring32[(3 * bs + BLOCK_DESC_LEN) // 4 + 3] = bs
    ctr[:] = 0
    assert walk_blocks(ring32, bs, nblk, 3, 1, *out, ctr) == (1, 0)
    assert ctr[COUNTER_NAMES.index("ring_errors")] == 1


# ----------------------------------------------------------------------- helpers
def rows_of(conn_batches) -> list[dict]:
    """Connection rows (the extractor's JSON objects) of a list of ConnBatch."""
    from malsensor.daemon.outputs.rows import conn_rows

    return [r for cb in conn_batches for r in conn_rows(cb.records, cb.features)]


class Recorder(BatchConsumer):
    """Consumer that copies every packet (bytes, lengths, time, vlan)."""

    def __init__(self, interface: str = "", member: int = 0) -> None:
        self.member = member
        self.frames: list[bytes] = []
        self.wirelen: list[int] = []
        self.ts: list[int] = []
        self.vlan: list[int] = []
        self.batches = 0
        self.lock = threading.Lock()

    def consume(self, b: PacketBatch) -> None:
        buf = b.buf
        frames = [bytes(buf[o:o + c]) for o, c in zip(b.offset.tolist(), b.caplen.tolist())]
        with self.lock:
            self.frames += frames
            self.wirelen += b.wirelen.tolist()
            self.ts += b.ts_ns.tolist()
            self.vlan += b.vlan.tolist()
            self.batches += 1


def _capture(v: VethPair, send, *, config_kw=None, consumer_cls=Recorder, fanout=1,
             settle: float = 0.0):
    """Start a capture on v.host, run send(), stop (draining), return (consumers, stats)."""
    consumers = []

    def factory(name, member):
        c = consumer_cls(name, member)
        consumers.append(c)
        return c

    kw = {"ring": SMALL_RING, "fanout": fanout, **(config_kw or {})}
    cfg = CaptureConfig((v.host,), **kw)
    with v.capture_side():
        cap = LiveCapture(cfg, factory).start()
    try:
        assert cap.wait_bound(1, 10), "capture never bound to the interface"
        send()
        if settle:
            time.sleep(settle)
    finally:
        cap.stop(drain=True)
        cap.join()
    return consumers, cap.stats()


def _frames(n: int) -> list[bytes]:
    """n distinct UDP frames of sizes 60..1514 (a counter in the payload)."""
    out = []
    for i in range(n):
        size = 60 + (i * 97) % (1514 - 60 + 1)
        pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
               / IP(src="10.1.0.1", dst="10.1.0.2", id=i & 0xFFFF) / UDP(sport=4000, dport=5000))
        head = bytes(pkt)
        payload = struct.pack("!I", i) + b"z" * max(0, size - len(head) - 4)
        pkt[UDP].remove_payload()
        out.append(bytes(pkt / payload))
    return out


# ----------------------------------------------------------------------- root: the ring
def test_ring_exact_packets_bytes_timestamps(veth):
    frames = _frames(3000)
    t0 = time.clock_gettime_ns(time.CLOCK_REALTIME)
    (rec,), stats = _capture(veth, lambda: veth.send_frames(frames))
    t1 = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert rec.frames == frames  # every frame, in order, byte for byte
    assert rec.wirelen == [len(f) for f in frames]
    ts = np.array(rec.ts)
    assert (np.diff(ts) >= 0).all(), "timestamps go backwards within one ring"
    assert t0 <= ts[0] and ts[-1] <= t1
    assert set(rec.vlan) == {NO_VLAN}
    s = stats.summary()
    assert s["kernel_packets"] == 3000 and s["kernel_drops"] == 0
    assert s["captured_packets"] == 3000 and s["captured_wire_bytes"] == sum(map(len, frames))
    assert s["ring_errors"] == 0 and s["truncated"] == 0


def test_vlan_tag_comes_from_ring_header(veth):
    base = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    inner = IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=1, dport=2) / (b"v" * 30)
    tagged = [bytes(base / Dot1Q(vlan=100, prio=3) / inner), bytes(base / Dot1Q(vlan=7) / inner)]
    plain = bytes(base / inner)
    (rec,), stats = _capture(veth, lambda: veth.send_frames(tagged + [plain]))
    # the kernel strips the tag from the frame and reports it in tp_vlan_tci
    assert rec.vlan == [(3 << 13) | 100, 7, NO_VLAN]
    assert rec.frames == [plain, plain, plain]
    assert rec.wirelen == [len(tagged[0]), len(tagged[1]), len(plain)]  # tag bytes counted
    assert stats.summary()["vlan_tagged"] == 2
    # and the decoder takes the VLAN id from the batch column
    d = decode_batch(PacketBatch(
        buf=np.frombuffer(b"".join(rec.frames), np.uint8).copy(),
        offset=np.array([0, len(plain), 2 * len(plain)], np.int64),
        caplen=np.array([len(plain)] * 3, np.int32), wirelen=np.array(rec.wirelen, np.int32),
        ts_ns=np.array(rec.ts, np.int64), linktype=np.ones(3, np.int32),
        vlan=np.array(rec.vlan, np.int32)))
    assert d.vlan[:3].tolist() == [100, 7, -1]
    assert d.status[:3].tolist() == [0, 0, 0]


def test_bpf_filter_selects_packets(veth):
    t = Traffic()
    for i in range(50):
        udp(0, t, sport=1000 + i, dport=53)
        udp(0, t, sport=1000 + i, dport=123)
    TcpConn(t, cport=40000, sport=443).c(0, "S").s(0, "SA").c(0, "A")
    (rec,), stats = _capture(veth, lambda: veth.send_frames(t.frames),
                             config_kw={"bpf": "udp dst port 53 or tcp"})
    want = [f for f in t.frames if (Ether(f).haslayer(UDP) and Ether(f)[UDP].dport == 53)
            or Ether(f).haslayer(TCP)]
    assert len(want) == 53
    assert rec.frames == want
    assert stats.summary()["kernel_packets"] == 53  # the filter runs before the ring


def test_snaplen_truncates_but_keeps_wire_length(veth):
    frames = _frames(200)
    cfg = RingConfig(block_size=1 << 16, block_count=16, retire_timeout_ms=10, snaplen=96)
    (rec,), stats = _capture(veth, lambda: veth.send_frames(frames), config_kw={"ring": cfg})
    assert rec.frames == [f[:96] for f in frames]
    assert rec.wirelen == [len(f) for f in frames]
    assert stats.summary()["truncated"] == sum(len(f) > 96 for f in frames)


def test_fanout_two_threads_split_by_flow(veth):
    """hash fanout: both directions of each flow land on the same thread; totals exact."""
    t = Traffic()
    n_flows = 64
    for i in range(n_flows):
        c = TcpConn(t, client=f"10.3.{i // 200}.{i % 200 + 1}", server="10.3.9.9", cport=30000 + i)
        c.c(0, "S").s(0, "SA").c(0, "A").c(0, "PA", 100).s(0, "PA", 300).c(0, "FA").s(0, "FA").c(0, "A")
    cons, stats = _capture(veth, lambda: veth.send_frames(t.frames), fanout=2)
    assert len(cons) == 2
    assert all(len(c.frames) > 0 for c in cons), "hash fanout left one thread idle"
    flows_of = []
    for c in cons:
        keys = set()
        for f in c.frames:
            p = Ether(f)
            keys.add(frozenset([(p[IP].src, p[TCP].sport), (p[IP].dst, p[TCP].dport)]))
        flows_of.append(keys)
    assert not flows_of[0] & flows_of[1], "a connection was split between fanout threads"
    assert len(flows_of[0] | flows_of[1]) == n_flows
    assert Counter(f for c in cons for f in c.frames) == Counter(t.frames)
    s = stats.summary()
    assert s["kernel_packets"] == len(t.frames) and s["kernel_drops"] == 0
    assert sorted(w["captured_packets"] for w in s["per_worker"]) == sorted(len(c.frames) for c in cons)


def test_fanout_two_threads_each_connection_once(veth, pcaps_dir):
    """Same traffic, 1 and 2 capture threads: identical connection rows, none twice."""
    require_tool("tcpreplay")
    pcap = pcaps_dir / "stratosphere_scanning_host.pcap"
    results = []
    for fanout in (1, 2):
        rows = []
        cfg = CaptureConfig((veth.host,), ring=SMALL_RING, fanout=fanout)
        stop = threading.Event()

        def started(cap):
            assert cap.wait_bound(1, 10)
            threading.Thread(target=lambda: (veth.replay(pcap, "--pps=4000"), time.sleep(0.3),
                                             stop.set()), daemon=True).start()

        with veth.capture_side():
            summary = capture_connections(cfg, rows.append, stop=stop, started=started)
        assert summary["kernel"]["drops"] == 0
        assert summary["packets"] == 2000
        results.append((rows_of(rows), summary))

    def keyed(rows):
        # 5-tuple + everything that does not depend on timing
        return Counter((r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"], r["proto"],
                        r["s_bytes_sum"], r["d_bytes_sum"], r["s_ttl_mean"], r["d_ttl_mean"],
                        r["s_pkt_cnt"], r["d_pkt_cnt"]) for r in rows)

    one, two = keyed(results[0][0]), keyed(results[1][0])
    assert one == two
    assert max(two.values()) == 1 or max(two.values()) == max(one.values())
    assert results[1][1]["connections"] == results[0][1]["connections"] == sum(one.values())
    per = results[1][1]["capture"]["per_worker"]
    assert all(w["captured_packets"] > 0 for w in per)


def test_overload_drops_are_counted(veth):
    """A consumer slower than the sender: the ring fills, the kernel drops, stats say so."""

    class Slow(Recorder):
        def consume(self, b):
            super().consume(b)
            time.sleep(0.05)

    frames = _frames(6000)
    ring = RingConfig(block_size=1 << 14, block_count=4, retire_timeout_ms=5)
    (rec,), stats = _capture(veth, lambda: veth.send_frames(frames), consumer_cls=Slow,
                             config_kw={"ring": ring}, settle=0.5)
    s = stats.summary()
    assert s["kernel_drops"] > 0
    assert s["kernel_packets"] == 6000  # the kernel counts drops in tp_packets
    assert s["captured_packets"] == len(rec.frames) == 6000 - s["kernel_drops"]
    assert s["kernel_freeze_q"] > 0
    # what did arrive is intact and in order
    idx = [struct.unpack("!I", f[42:46])[0] for f in rec.frames]
    assert idx == sorted(idx) and all(rec.frames[k] == frames[i] for k, i in enumerate(idx))


def _malformed_frames() -> tuple[list[bytes], dict[str, int]]:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    good_ip = IP(src="10.4.0.1", dst="10.4.0.2")
    frames: list[bytes] = []
    want: Counter = Counter()

    def add(reason, frame, k=3):
        for _ in range(k):
            frames.append(bytes(frame))
        want[reason] += k

    add("ip_truncated", bytes(eth / b"")[:12] + b"\x08\x00" + b"\x45\x00\x00")
    add("ip_bad_version", bytes(eth)[:12] + b"\x08\x00" + b"\x65" + b"\x00" * 39)
    add("ip_bad_ihl", bytes(eth / IP(src="10.4.0.1", dst="10.4.0.2", ihl=3) / UDP() / (b"x" * 10)), 4)
    add("ip_bad_total_length", eth / IP(src="10.4.0.1", dst="10.4.0.2", len=3000) / UDP() / b"x")
    add("tcp_bad_data_offset", eth / good_ip / TCP(dataofs=3) / (b"x" * 8), 2)
    add("udp_bad_length", eth / good_ip / UDP(len=4) / (b"x" * 8), 5)
    add("l4_short", eth / IP(src="10.4.0.1", dst="10.4.0.2", proto=6) / b"abcd", 2)
    add("ok", eth / good_ip / UDP(sport=1, dport=2) / b"fine", 7)
    add("not_ip", bytes(eth)[:12] + b"\x88\xcc" + b"\x00" * 46)  # LLDP: valid, not IP
    return frames, dict(want)


def test_malformed_frames_counted_by_reason(veth):
    frames, want = _malformed_frames()
    rows = []
    stop = threading.Event()
    cfg = CaptureConfig((veth.host,), ring=SMALL_RING)

    def started(cap):
        assert cap.wait_bound(1, 10)
        veth.send_frames(frames)
        stop.set()

    with veth.capture_side():
        summary = capture_connections(cfg, rows.append, stop=stop, started=started)
    got = dict(summary["malformed_by_reason"])
    got["ok"] = summary["ok"]
    got["not_ip"] = summary["not_ip"]
    assert got == want
    assert summary["malformed"] == sum(v for k, v in want.items() if k in MALFORMED_REASONS.values())
    assert summary["packets"] == len(frames)
    # and exactly what the offline decoder says about the same frames
    d = decode_batch(PacketBatch.from_packets(frames, list(range(len(frames)))))
    offline = Counter(d.status[:len(frames)].tolist())
    names = {0: "ok", 1: "not_ip", **MALFORMED_REASONS}
    assert {names[k]: v for k, v in offline.items()} == want


def test_random_garbage_never_crashes(veth):
    """500 random frames (random EtherTypes, IPv4/IPv6 headers with random bytes): all
    counted, each with exactly one status, nothing raises."""
    rng = np.random.default_rng(7)
    frames = []
    for i in range(500):
        # >= 18 bytes: a VLAN-typed frame shorter than its tag is freed by the kernel's
        # untagging (skb_vlan_untag) before any packet socket sees it
        n = int(rng.integers(18, 300))
        f = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        f[12:14] = [b"\x08\x00", b"\x86\xdd", b"\x81\x00", bytes(f[12:14])][i % 4]
        if i % 4 == 0 and n > 14:
            f[14] = 0x40 | (f[14] & 0x0F)  # IPv4 version nibble, random IHL
        frames.append(bytes(f))
    rows = []
    stop = threading.Event()

    def started(cap):
        assert cap.wait_bound(1, 10)
        veth.send_frames(frames)
        stop.set()

    with veth.capture_side():
        summary = capture_connections(CaptureConfig((veth.host,), ring=SMALL_RING), rows.append,
                                      stop=stop, started=started)
    assert summary["packets"] == 500 and summary["kernel"]["drops"] == 0
    assert summary["ok"] + summary["not_ip"] + summary["fragment"] + summary["malformed"] == 500
    d = decode_batch(PacketBatch.from_packets(frames, list(range(500))))
    assert summary["malformed"] == int((d.status[:500] >= 16).sum())


# ----------------------------------------------------------------------- root: lifecycle
def test_link_flap_and_recreate_keep_capturing(veth, caplog):
    """down/up and delete/re-create during a capture: capture resumes on the new index, the
    flow table survives, a UDP flow spanning both gaps stays one connection."""
    caplog.set_level(logging.INFO, logger="malsensor.capture")
    frames = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                    / IP(src="10.5.0.1", dst="10.5.0.2", ttl=50) / UDP(sport=777, dport=888)
                    / (b"%05d" % i)) for i in range(300)]
    rows = []
    stop = threading.Event()
    cfg = CaptureConfig((veth.host,), ring=SMALL_RING)
    old_index = veth.host_index()

    def scenario(cap):
        assert cap.wait_bound(1, 10)
        veth.send_frames(frames[:100])
        veth.link("down")
        time.sleep(0.3)
        veth.link("up")
        veth.wait_carrier()
        assert cap.wait_bound(2, 10), "no re-bind after link up"
        veth.send_frames(frames[100:200])
        veth.delete_link()
        time.sleep(0.3)
        veth.recreate_link()
        assert cap.wait_bound(3, 10), "no re-bind after re-creation"
        assert cap.bind_events[-1][1] != old_index
        veth.send_frames(frames[200:])
        stop.set()

    with veth.capture_side():
        summary = capture_connections(cfg, rows.append, stop=stop, started=scenario)
    conns = rows_of(rows)
    assert summary["packets"] == 300 and summary["kernel"]["drops"] == 0
    assert len(conns) == 1, "the flow was split across the gaps"
    assert conns[0]["s_pkt_cnt"] == 300 and conns[0]["s_ttl_mean"] == 50.0
    assert conns[0]["end_reason"] == "shutdown"
    msgs = " | ".join(r.getMessage() for r in caplog.records)
    assert "went down" in msgs and "re-created" in msgs


def test_waits_for_missing_interface(caplog):
    require_root()
    caplog.set_level(logging.INFO, logger="malsensor.capture")
    with VethPair() as v:
        v.delete_link()
        rec = Recorder()
        cfg = CaptureConfig((v.host,), ring=SMALL_RING)
        with v.capture_side():
            cap = LiveCapture(cfg, lambda n, m: rec).start()
        try:
            time.sleep(0.3)
            assert cap.bind_events == []
            assert any("does not exist (yet)" in r.getMessage() for r in caplog.records)
            v.recreate_link()
            assert cap.wait_bound(1, 10)
            frames = _frames(50)
            v.send_frames(frames)
        finally:
            cap.stop()
            cap.join()
        assert rec.frames == frames


def test_wait_for_interfaces_false_fails_fast():
    require_root()
    with VethPair() as v, v.capture_side():
        cfg = CaptureConfig(("msnonexistent0",), wait_for_interfaces=False)
        with pytest.raises(OSError, match="msnonexistent0"):
            LiveCapture(cfg, lambda n, m: Recorder()).start()


def test_gso_superframes_counted_as_one_packet():
    """With TSO on the sender side, the veth carries 64 KiB super-frames: one ring entry each,
    wire length = the whole super-frame (documented in docs/capture.md)."""
    require_root()
    with VethPair(offloads=True, mtu=1500) as v:
        v.run_cap(["ip", "addr", "add", "10.9.0.1/24", "dev", v.host])
        v.run_src(["ip", "addr", "add", "10.9.0.2/24", "dev", v.peer])
        import socket
        import sys

        total = 4 << 20
        with v.capture_side():
            srv = socket.socket()
            srv.bind(("10.9.0.1", 5001))
            srv.listen(1)
        got = []

        def serve():
            c, _ = srv.accept()
            n = 0
            while (d := c.recv(1 << 20)):
                n += len(d)
            got.append(n)
            c.close()

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        sender = (f"import socket; s=socket.create_connection(('10.9.0.1',5001)); "
                  f"s.sendall(b'x'*{total}); s.close()")
        (rec,), stats = _capture(v, lambda: v.run_src([sys.executable, "-c", sender]), settle=0.2)
        th.join(5)
        srv.close()
    assert got == [total]
    s = stats.summary()
    assert s["gso_superframes"] > 0
    big = [w for w in rec.wirelen if w > 1514]
    assert big and max(big) > 9000
    # the payload seen in the ring covers exactly what was sent (retransmissions, which a loaded
    # box makes now and then, cover nothing new), in fewer "packets" than segments
    spans = []
    for f in rec.frames:
        p = Ether(f)
        if p.haslayer(TCP) and p[IP].dst == "10.9.0.1":
            n = p[IP].len - p[IP].ihl * 4 - p[TCP].dataofs * 4
            if n:
                spans.append((p[TCP].seq, n))
    first = spans[0][0]
    covered, end = 0, 0
    for start, n in sorted(((seq - first) % 2**32, n) for seq, n in spans):
        covered += max(0, start + n - max(start, end))
        end = max(end, start + n)
    assert (covered, end) == (total, total)
    assert len(rec.frames) < total // 1448


# ----------------------------------------------------------------------- root: options
def test_several_interfaces_at_once(veth):
    host2, peer2 = veth.add_pair("b")
    f1, f2 = _frames(300), _frames(200)[::-1]
    recs = {}

    def factory(name, member):
        recs[name] = Recorder(name, member)
        return recs[name]

    cfg = CaptureConfig((veth.host, host2), ring=SMALL_RING)
    with veth.capture_side():
        cap = LiveCapture(cfg, factory).start()
    try:
        assert cap.wait_bound(2, 10)
        veth.send_frames(f1)
        veth.send_frames_on(peer2, f2)
    finally:
        cap.stop()
        cap.join()
    assert recs[veth.host].frames == f1 and recs[host2].frames == f2
    s = cap.stats().summary()
    assert s["kernel_packets"] == 500 and s["kernel_drops"] == 0
    assert {w["interface"]: w["captured_packets"] for w in s["per_worker"]} == {veth.host: 300, host2: 200}


def test_lb_fanout_spreads_one_flow(veth):
    frames = _frames(1000)  # one UDP flow: hash mode would keep it on one thread
    cons, stats = _capture(veth, lambda: veth.send_frames(frames), fanout=2,
                           config_kw={"fanout_mode": "lb"})
    assert sorted(len(c.frames) for c in cons) == [500, 500]  # round robin
    assert Counter(f for c in cons for f in c.frames) == Counter(frames)


def test_promiscuous_and_ignore_outgoing(veth):
    import socket

    IFF_PROMISC = 0x100

    def flags():
        return int(veth.run_cap(["cat", f"/sys/class/net/{veth.host}/flags"]).stdout, 16)

    own = [bytes(Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:08") / IP(src="10.6.0.1", dst="10.6.0.2")
                 / UDP(sport=9, dport=9) / (b"o%03d" % i)) for i in range(20)]
    incoming = _frames(30)

    def send_both():
        veth.send_frames(incoming)
        with veth.capture_side():  # frames this host sends out of the captured interface
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.bind((veth.host, 0))
            for f in own:
                s.send(f)
            s.close()

    assert not flags() & IFF_PROMISC
    seen = []
    for ignore in (False, True):
        cons = []

        def factory(n, m):
            cons.append(Recorder())
            return cons[-1]

        cfg = CaptureConfig((veth.host,), ring=SMALL_RING, ignore_outgoing=ignore)
        with veth.capture_side():
            cap = LiveCapture(cfg, factory).start()
        try:
            assert cap.wait_bound(1, 10)
            seen.append(flags() & IFF_PROMISC)
            send_both()
        finally:
            cap.stop()
            cap.join()
        if ignore:
            assert cons[0].frames == incoming
        else:
            assert Counter(cons[0].frames) == Counter(incoming + own)
    assert seen == [IFF_PROMISC, IFF_PROMISC]  # promiscuous while capturing
    assert not flags() & IFF_PROMISC  # and back to normal once the sockets are closed


def test_cli_extract_interface_count(veth, tmp_path):
    """``malsensor extract --interface IF --count N`` stops after exactly N packets."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "malsensor")
    summary = tmp_path / "s.json"
    out = tmp_path / "rows.jsonl"
    log = open(tmp_path / "log", "w")
    p = veth.popen(veth.cap_ns, [exe, "extract", "--interface", veth.host, "--count", "250",
                                 "-o", str(out), "--summary-json", str(summary)],
                   stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "capturing on" not in (tmp_path / "log").read_text():
        assert p.poll() is None, (tmp_path / "log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t = Traffic()
    for i in range(100):
        udp(0, t, sport=2000 + i, dport=53)
    veth.send_frames(t.frames * 3)  # 300 packets, 100 connections
    assert p.wait(30) == 0, (tmp_path / "log").read_text()
    s = json.loads(summary.read_text())
    assert s["packets"] == 250 and s["kernel"]["drops"] == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == s["connections"] == 100
    assert sum(r["s_pkt_cnt"] for r in rows) == 250
    assert {r["end_reason"] for r in rows} == {"shutdown"}
    text = (tmp_path / "log").read_text()
    assert "kernel packets" in text and "kernel drops 0" in text


def test_ring_that_cannot_be_allocated_fails_clearly(veth):
    huge = RingConfig(block_size=1 << 22, block_count=1 << 20)  # 4 TiB
    cfg = CaptureConfig((veth.host,), ring=huge)
    with veth.capture_side(), pytest.raises(OSError, match=r"PACKET_RX_RING \(1048576 x 4194304"):
        capture_connections(cfg, lambda cb: None, duration=5)
