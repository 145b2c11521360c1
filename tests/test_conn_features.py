"""Exact feature values and lifecycle rules on crafted traffic at known timestamps."""
from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.flows.table import FlowTracker, bytes_per_flow
from malsensor.daemon.outputs.rows import conn_rows
from malsensor.daemon.pipeline import ConnPipeline
from malsensor.daemon.views.conn import CONN_COLUMNS

from crafted import EPOCH, TcpConn, Traffic, full_tcp_conn, icmp_echo, udp

T0 = 0.0


def run(traffic: Traffic, **cfg) -> list[dict]:
    pipe = ConnPipeline(TrackerConfig(**cfg))
    rows = []
    for cb in pipe.run([traffic.batch()]):
        rows.extend(conn_rows(cb.records, cb.features))
    return rows


def feats(row: dict) -> dict:
    return {k: row[k] for k in CONN_COLUMNS}


def test_complete_tcp_connection_exact_values():
    tr = Traffic()
    full_tcp_conn(tr)
    (row,) = run(tr)
    assert row["src_ip"] == "10.0.0.1" and row["dest_ip"] == "10.0.0.2"
    assert (row["src_port"], row["dest_port"], row["proto"]) == (40000, 80, 6)
    assert type(row["proto"]) is int
    assert row["src_mac"] == "02:00:00:00:00:01" and row["dest_mac"] == "02:00:00:00:00:02"
    assert row["end_reason"] == "fin"
    assert row["ts"] == EPOCH
    f = feats(row)
    expected = {
        "dur": 0.060, "proto": 6.0, "s_bytes_sum": 300.0, "d_bytes_sum": 320.0,
        "s_ttl_mean": 64.0, "d_ttl_mean": 128.0,
        "s_load": 300 * 8 / 0.060, "d_load": 320 * 8 / 0.060,
        "s_pkt_cnt": 5.0, "d_pkt_cnt": 3.0, "s_bytes_mean": 60.0, "d_bytes_mean": 320 / 3,
        "s_iat_mean": 0.060 / 4, "d_iat_mean": 0.040 / 2,
        "tcp_rtt": 0.012, "syn_ack": 0.010, "ack_dat": 0.002,
    }
    assert f == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert row["fts"] == [f[k] for k in CONN_COLUMNS]


def test_ttl_mean_is_a_mean_not_a_difference():
    tr = Traffic()
    c = TcpConn(tr)
    c.c(T0, "S")
    c.s(T0 + 0.1, "SA")
    c.cttl = 60
    c.c(T0 + 0.2, "A")  # ttls 64, 60 -> mean 62
    (row,) = run(tr)
    assert row["s_ttl_mean"] == 62.0
    assert row["d_ttl_mean"] == 128.0
    assert row["end_reason"] == "eof"


def test_retransmitted_syn_moves_syn_time():
    tr = Traffic()
    c = TcpConn(tr)
    c.c(T0, "S")
    c.cseq -= 1
    c.c(T0 + 1.0, "S")  # retransmission, same seq
    c.s(T0 + 1.004, "SA")
    c.c(T0 + 1.005, "A")
    (row,) = run(tr)
    assert row["syn_ack"] == pytest.approx(0.004, abs=1e-12)
    assert row["ack_dat"] == pytest.approx(0.001, abs=1e-12)
    assert row["tcp_rtt"] == pytest.approx(0.005, abs=1e-12)
    assert row["s_pkt_cnt"] == 3 and row["dur"] == pytest.approx(1.005)


def test_incomplete_handshake_has_no_rtt_and_ends_by_handshake_timeout():
    tr = Traffic()
    c = TcpConn(tr)
    c.c(T0, "S")
    c.s(T0 + 0.5, "SA")  # never acknowledged
    udp(T0 + 31.0, tr)   # later traffic drives the clock past the deadline
    rows = run(tr, handshake_timeout=30.0)
    tcp = [r for r in rows if r["proto"] == 6]
    assert len(tcp) == 1
    assert tcp[0]["end_reason"] == "handshake"
    assert tcp[0]["syn_ack"] == pytest.approx(0.5)
    assert tcp[0]["ack_dat"] == 0.0 and tcp[0]["tcp_rtt"] == 0.0


def test_rst_ends_connection():
    tr = Traffic()
    c = TcpConn(tr)
    c.c(T0, "S")
    c.s(T0 + 0.001, "RA")
    udp(T0 + 10, tr)
    rows = run(tr)
    tcp = [r for r in rows if r["proto"] == 6]
    assert [r["end_reason"] for r in tcp] == ["rst"]
    assert tcp[0]["syn_ack"] == 0.0 and tcp[0]["d_pkt_cnt"] == 1


def test_packets_after_close_linger_do_not_join_the_connection():
    tr = Traffic()
    full_tcp_conn(tr)
    TcpConn(tr, cseq=2000).c(T0 + 5.0, "A")  # stray ACK 5 s later: midstream, ignored
    rows = run(tr, close_linger=2.0)
    assert len(rows) == 1 and rows[0]["s_pkt_cnt"] == 5 and rows[0]["end_reason"] == "fin"
    rows = run(tr, close_linger=2.0, midstream=True)
    assert [r["end_reason"] for r in rows] == ["fin", "eof"]
    assert rows[1]["s_pkt_cnt"] == 1 and rows[1]["syn_ack"] == 0.0


def test_port_reuse_after_close_starts_a_new_connection():
    tr = Traffic()
    full_tcp_conn(tr)
    full_tcp_conn(tr, t0=T0 + 0.5)  # same 5-tuple, new SYN while the first still lingers
    rows = run(tr)
    assert [r["end_reason"] for r in rows] == ["fin", "fin"]
    assert [r["ts"] for r in rows] == [EPOCH, EPOCH + 0.5]
    assert all(r["s_pkt_cnt"] == 5 and r["d_pkt_cnt"] == 3 for r in rows)


def test_midstream_off_ignores_and_on_tracks_with_synack_orientation():
    tr = Traffic()
    c = TcpConn(tr)
    c.s(T0, "SA")       # the SYN was missed: the SYN-ACK's receiver opened the connection
    c.c(T0 + 0.002, "A")
    c.c(T0 + 0.003, "PA", payload=10)
    pipe = ConnPipeline(TrackerConfig())
    assert sum(cb.n for cb in pipe.run([tr.batch()])) == 0
    assert pipe.tracker.stats()["tcp_midstream_ignored"] == 3
    (row,) = run(tr, midstream=True)
    assert row["src_ip"] == "10.0.0.1" and row["src_port"] == 40000
    assert (row["s_pkt_cnt"], row["d_pkt_cnt"]) == (2, 1)
    assert row["syn_ack"] == 0.0


def test_udp_idle_timeout_splits_and_first_sender_is_originator():
    tr = Traffic()
    udp(T0, tr, src="10.0.0.9", dst="10.0.0.1", sport=53, dport=5353)
    udp(T0 + 1, tr, src="10.0.0.1", dst="10.0.0.9", sport=5353, dport=53, payload=40, ttl=60)
    udp(T0 + 62, tr, src="10.0.0.9", dst="10.0.0.1", sport=53, dport=5353)
    rows = run(tr, udp_idle_timeout=60.0)
    assert [r["end_reason"] for r in rows] == ["idle", "eof"]
    r = rows[0]
    assert (r["src_ip"], r["src_port"], r["proto"]) == ("10.0.0.9", 53, 17)
    assert (r["s_pkt_cnt"], r["d_pkt_cnt"], r["s_bytes_sum"], r["d_bytes_sum"]) == (1, 1, 48, 68)
    assert r["d_ttl_mean"] == 60 and r["dur"] == 1.0
    assert r["s_load"] == pytest.approx(48 * 8 / 1.0)


def test_sweeps_wait_for_the_earliest_deadline():
    """Timeout sweeps run only once some connection can have timed out: a lingering close
    ends on time among long-lived flows, and the sweeps before and after it are skipped."""
    tr = Traffic()
    udp(T0, tr, sport=1111)
    full_tcp_conn(tr, t0=T0 + 1.0)        # closed at 1.060 s: lingers until 3.060 s
    for i in range(19):                   # another flow drives the clock to 10.5 s
        udp(T0 + 1.5 + 0.5 * i, tr, sport=2222)
    pipe = ConnPipeline(TrackerConfig(close_linger=2.0, udp_idle_timeout=3600.0, sweep_interval=1.0))
    emitted = [r["end_reason"] for cb in pipe.feed(tr.batch()) for r in conn_rows(cb.records, cb.features)]
    assert emitted == ["fin"]             # ended by the sweep at the first packet after 3.060 s
    stats = pipe.tracker.stats()
    assert stats["sweeps"] == 1 and stats["flows_active"] == 2
    now = int((EPOCH + 11.0) * 1e9)
    assert list(pipe.expire(now)) == [] and pipe.tracker.stats()["sweeps"] == 1
    rows = [r for cb in pipe.expire(int((EPOCH + 3611.0) * 1e9)) for r in conn_rows(cb.records, cb.features)]
    assert sorted((r["src_port"], r["end_reason"]) for r in rows) == [(1111, "idle"), (2222, "idle")]
    assert pipe.tracker.stats()["sweeps"] == 2


def test_active_timeout_cuts_long_connections():
    tr = Traffic()
    for i in range(7):
        udp(T0 + 10 * i, tr)  # t = 0, 10, ..., 60
    rows = run(tr, active_timeout=25.0)
    assert [r["end_reason"] for r in rows] == ["active", "active", "eof"]
    assert [r["s_pkt_cnt"] for r in rows] == [3, 3, 1]
    assert rows[0]["dur"] == 20.0 and rows[0]["s_iat_mean"] == 10.0


def test_icmp_echo_request_and_reply_are_one_connection():
    tr = Traffic()
    icmp_echo(T0, tr, "10.0.0.1", "10.0.0.2", 8)
    icmp_echo(T0 + 0.25, tr, "10.0.0.2", "10.0.0.1", 0, ttl=255)
    (row,) = run(tr)
    assert (row["proto"], row["s_pkt_cnt"], row["d_pkt_cnt"]) == (1, 1, 1)
    assert (row["src_port"], row["dest_port"]) == (7, 7)  # echo identifier on both sides
    assert row["s_bytes_sum"] == row["d_bytes_sum"] == 84
    assert row["d_ttl_mean"] == 255


def test_ipv6_tcp_connection():
    tr = Traffic()
    c = TcpConn(tr, client="2001:db8::1", server="2001:db8::2", v6=True)
    c.c(T0, "S")
    c.s(T0 + 0.003, "SA")
    c.c(T0 + 0.004, "A")
    (row,) = run(tr)
    assert (row["src_ip"], row["dest_ip"]) == ("2001:db8::1", "2001:db8::2")
    assert row["s_bytes_sum"] == 120 and row["d_bytes_sum"] == 60  # 40 + 20 per packet
    assert row["tcp_rtt"] == pytest.approx(0.004)


def test_eviction_when_table_is_full():
    tr = Traffic()
    for i in range(5):
        udp(T0 + i, tr, sport=1000 + i)
    pipe = ConnPipeline(TrackerConfig(max_flows=2, evict_candidates=2))
    rows = [r for cb in pipe.run([tr.batch()]) for r in conn_rows(cb.records, cb.features)]
    assert sorted(r["src_port"] for r in rows) == [1000, 1001, 1002, 1003, 1004]
    ev = sorted(r["src_port"] for r in rows if r["end_reason"] == "evicted")
    assert ev == [1000, 1001, 1002]  # least recently active goes first
    assert pipe.tracker.stats()["flows_evicted"] == 3


def test_snapshots_are_emitted_at_packet_counts():
    tr = Traffic()
    full_tcp_conn(tr)
    pipe = ConnPipeline(TrackerConfig(snapshot_packets=(2, 4)))
    cbs = list(pipe.run([tr.batch()]))
    rec = np.concatenate([cb.records for cb in cbs])
    ends = [(int(e) & 0xFF, int(e) >> 8) for e in rec[:, L.END]]
    assert ends == [(L.END_SNAPSHOT, 0), (L.END_SNAPSHOT, 1), (L.END_FIN, 0)]
    assert len(set(rec[:, L.SERIAL].tolist())) == 1
    assert (rec[:, L.S_PKTS] + rec[:, L.D_PKTS]).tolist() == [2, 4, 8]


def test_many_flows_stay_inside_the_bound_and_table_stays_consistent():
    rng = np.random.default_rng(1)
    tr = Traffic()
    ports = rng.permutation(20_000)[:3000] + 1024
    for i, p in enumerate(ports):
        udp(T0 + i * 1e-3, tr, sport=int(p))
    for i, p in enumerate(ports[::2]):  # second packet of every other flow, reversed direction
        udp(T0 + 3 + i * 1e-3, tr, src="10.0.0.2", dst="10.0.0.1", sport=53, dport=int(p))
    pipe = ConnPipeline(TrackerConfig(max_flows=1000))
    recs = np.concatenate([cb.records for cb in pipe.run([tr.batch()])])
    assert pipe.tracker.stats()["flows_active"] == 0
    # every packet is accounted exactly once
    assert int(recs[:, L.S_PKTS].sum() + recs[:, L.D_PKTS].sum()) == 3000 + 1500
    assert pipe.tracker.stats()["flows_created"] == len(recs)


def test_bytes_per_flow_is_within_target():
    assert bytes_per_flow(1_000_000) <= 256
    assert FlowTracker(TrackerConfig(max_flows=1000)).table.shape == (1000, L.N_COLS)


def test_record_key_accessors_and_microsecond_gap_counts():
    tr = Traffic()
    udp(T0, tr)
    udp(T0 + 400e-9, tr)  # same microsecond as the first: opens no gap
    udp(T0 + 0.001, tr)
    udp(T0 + 0.0015, tr, src="10.0.0.2", dst="10.0.0.1", sport=53, dport=5353)
    pipe = ConnPipeline(TrackerConfig())
    (rec,) = np.concatenate([cb.records for cb in pipe.run([tr.batch()])])
    assert (L.sport_of(rec), L.dport_of(rec), L.proto_of(rec), L.ip_version_of(rec)) == (5353, 53, 17, 4)
    assert (L.s_iat_n(rec), L.d_iat_n(rec)) == (1, 0)
    assert (L.s_last_ttl(rec), L.d_last_ttl(rec)) == (64, 64)
    assert rec[L.S_LAST_TS] - rec[L.S_FIRST_TS] == 1_000_000


def _icmp_error(tr: Traffic, t: float, quoted, type_: int = 3, code: int = 3) -> None:
    """A router's ICMP error to 10.0.0.1 quoting ``quoted`` (IP header + 8 bytes, as routers do)."""
    tr.add(t, Ether() / IP(src="10.0.0.254", dst="10.0.0.1", ttl=255) / ICMP(type=type_, code=code)
           / bytes(quoted)[:28])


def test_icmp_error_extends_the_quoted_tcp_connection_in_argus_mode():
    """Argus (R5): an ICMP error quoting a tracked TCP connection moves its end time, nothing else."""
    tr = Traffic()
    c = TcpConn(tr)
    c.c(T0, "S")
    c.s(T0 + 0.010, "SA")
    c.c(T0 + 0.012, "A")
    c.c(T0 + 0.020, "PA", payload=100)
    _icmp_error(tr, T0 + 2.5, IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="PA"))
    # quoted the other way round (the server's packet), as a time-exceeded: same connection
    _icmp_error(tr, T0 + 4.25, IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=40000, flags="A"),
                type_=11, code=0)
    # an error about another port, and one quoting UDP on the same ports: not this connection
    _icmp_error(tr, T0 + 6.0, IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40001, dport=80))
    tr.add(T0 + 7.0, Ether() / IP(src="10.0.0.254", dst="10.0.0.1") / ICMP(type=3, code=3)
           / bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=80))[:28])

    def tcp_and_icmp(cfg: TrackerConfig, semantics: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pipe = ConnPipeline(cfg, semantics)
        cbs = list(pipe.run([tr.batch()]))
        recs = np.concatenate([cb.records for cb in cbs])
        feats_ = np.concatenate([cb.features for cb in cbs])
        tcp = L.proto_of(recs) == 6
        assert tcp.sum() == 1
        return recs[tcp][0], feats_[tcp][0], recs[~tcp]

    argus_cfg = TrackerConfig.for_semantics("argus")
    assert argus_cfg.icmp_errors_extend_tcp and not TrackerConfig().icmp_errors_extend_tcp
    rec, f, icmp = tcp_and_icmp(argus_cfg, "argus")
    f = dict(zip(CONN_COLUMNS, f))
    assert rec[L.LAST_TS] - rec[L.FIRST_TS] == 4_250_000_000
    assert f["dur"] == np.float32(4.25)
    # nothing but the end time: packets, bytes, side times and the handshake stay the TCP packets'
    assert (rec[L.S_PKTS], rec[L.D_PKTS], rec[L.S_LAST_TS] - rec[L.FIRST_TS]) == (3, 1, 20_000_000)
    assert (f["s_bytes_sum"], f["d_bytes_sum"]) == (54 + 54 + 154, 54)
    assert f["s_load"] == np.float32(8 * (262 - 262 // 3)) / np.float32(4.25)
    assert (f["syn_ack"], f["ack_dat"]) == pytest.approx((0.010, 0.002), abs=1e-9)
    # the errors are still ICMP flows of their own: (3, 3) x3 incl. the UDP one, (11, 0) x1
    assert sorted((int(L.sport_of(r)), int(L.dport_of(r)), int(r[L.S_PKTS])) for r in icmp) == [(3, 3, 3), (11, 0, 1)]
    # the default configuration leaves the TCP connection alone
    for cfg in (TrackerConfig(), TrackerConfig(midstream=True, close_linger=3600.0)):
        rec, f, icmp = tcp_and_icmp(cfg, "malsensor")
        assert rec[L.LAST_TS] - rec[L.FIRST_TS] == 20_000_000
        assert dict(zip(CONN_COLUMNS, f))["dur"] == pytest.approx(0.020)
    # and an error after the record's status interval (3600 s) does not reach back into it
    late = TrackerConfig.for_semantics("argus", active_timeout=3.0)
    rec = [r for r in np.concatenate([cb.records for cb in ConnPipeline(late, "argus").run([tr.batch()])])
           if L.proto_of(r) == 6]
    assert [r[L.LAST_TS] - r[L.FIRST_TS] for r in rec] == [2_500_000_000]


def test_argus_handshake_rules_in_argus_mode_only():
    """Argus (R6): synack needs a SYN-ACK with flags exactly SYN|ACK acking the first SYN; ackdat needs
    a pure ACK without payload as the first packet after it and runs from the last SYN-ACK. The
    malsensor semantics keep their definitions (first SYN-ACK, any ACK) with the default tracker."""
    tr = Traffic()
    a = TcpConn(tr, cport=41000)            # SYN-ACK retransmitted after 1 s
    a.c(T0, "S")
    a.s(T0 + 0.010, "SA")
    a.sseq -= 1
    a.s(T0 + 1.010, "SA")
    a.c(T0 + 1.012, "A")
    b = TcpConn(tr, cport=41001)            # ECN: SYN|ECE|CWR, SYN-ACK|ECE (flags 0x52)
    b.c(T0 + 2, "SEC")
    b.s(T0 + 2.010, "SAE")
    b.c(T0 + 2.012, "A")
    c = TcpConn(tr, cport=41002)            # the third packet carries data
    c.c(T0 + 3, "S")
    c.s(T0 + 3.010, "SA")
    c.c(T0 + 3.012, "PA", payload=10)
    d = TcpConn(tr, cport=41003)            # SYN retried with a new ISN; the SYN-ACK acks the first one
    d.c(T0 + 4, "S")
    d.cseq = 7000
    d.c(T0 + 5, "S")
    d.s(T0 + 5.010, "SA", ack=1001)
    d.c(T0 + 5.012, "A", seq=1001)

    def hs(cfg: TrackerConfig, semantics: str) -> dict[int, tuple]:
        out = {}
        for cb in ConnPipeline(cfg, semantics).run([tr.batch()]):
            for r, f in zip(cb.records, cb.features):
                out[int(L.sport_of(r))] = tuple(round(float(x), 9) for x in f[[15, 16, 14]])
        return out

    assert hs(TrackerConfig.for_semantics("argus"), "argus") == {
        41000: (0.010, 0.002, 0.012), 41001: (0.0, 0.0, 0.0), 41002: (0.010, 0.0, 0.010),
        41003: (0.010, 0.002, 0.012)}
    assert hs(TrackerConfig(), "malsensor") == {
        41000: (0.010, 1.002, 1.012), 41001: (0.010, 0.002, 0.012), 41002: (0.010, 0.002, 0.012),
        41003: (0.010, 0.002, 0.012)}
    # the state bits alone (no argus_tcp): the argus view still applies the flag and payload rules
    assert hs(TrackerConfig.for_semantics("argus", argus_tcp=False), "argus") == {
        41000: (0.010, 1.002, 1.012), 41001: (0.0, 0.0, 0.0), 41002: (0.010, 0.0, 0.010),
        41003: (0.0, 0.0, 0.0)}
