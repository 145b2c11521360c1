"""conn_series@1 assembly (daemon/views/conn_series.py): exact series on crafted traffic."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.pipeline import ConnPipeline, extract_file
from malsensor.daemon.views.conn_series import SERIES_POINTS, SeriesAssembler, series_snapshot_points

from crafted import Traffic, full_tcp_conn, udp

PCAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pcap" / "stratosphere_ssh_bruteforce.pcap"


# features after 2 packets (SYN, SYN-ACK) and after 4 (+ ACK, 100-byte push)
AT2 = [0.010, 6, 40, 40, 64, 128, 32000.0, 32000.0, 1, 1, 40, 40, 0, 0, 0, 0.010, 0]
AT4 = [0.020, 6, 220, 40, 64, 128, 88000.0, 16000.0, 3, 1, 220 / 3, 40, 0.010, 0, 0.012, 0.010, 0.002]


def rows(tr: Traffic, points: tuple[int, ...]) -> list:
    pipe = ConnPipeline(TrackerConfig(snapshot_packets=points))
    return list(pipe.run([tr.batch()]))


def assemble(cbs, lookback, points, one_row_at_a_time=False, source=0, asm=None):
    asm = asm or SeriesAssembler(lookback, points)
    recs, xs = [], []
    for cb in cbs:
        parts = [(cb.records[i:i + 1], cb.features[i:i + 1]) for i in range(cb.n)] if one_row_at_a_time \
            else [(cb.records, cb.features)]
        for r, f in parts:
            got_r, got_x = asm.feed(r, f, source)
            assert got_x.shape == (got_r.shape[0], lookback, 17)
            recs.append(got_r)
            xs.append(got_x)
    return asm, np.concatenate(recs), np.concatenate(xs)


@pytest.mark.parametrize("split", [False, True])
def test_emitted_at_the_last_series_point_and_not_again_at_the_end(split):
    tr = Traffic()
    full_tcp_conn(tr)
    cbs = rows(tr, (2, 4))
    asm, rec, x = assemble(cbs, 2, (2, 4), one_row_at_a_time=split)
    assert rec.shape[0] == 1
    assert rec[0, L.END] & 0xFF == L.END_SNAPSHOT and rec[0, L.END] >> 8 == 1
    assert rec[0, L.S_PKTS] + rec[0, L.D_PKTS] == 4
    np.testing.assert_allclose(x[0], [AT2, AT4], rtol=1e-12, atol=0)
    assert len(asm) == 0  # the final row dropped the marker


def test_connection_ending_early_fills_the_rest_with_its_final_features():
    tr = Traffic()
    full_tcp_conn(tr)
    udp(1.0, tr, payload=20)  # one packet: IP length 48
    cbs = rows(tr, (2, 4, 8, 16))
    asm, rec, x = assemble(cbs, 4, (2, 4, 8, 16))
    assert len(asm) == 0
    by_proto = {int(L.proto_of(rec[i:i + 1])[0]): i for i in range(rec.shape[0])}
    assert sorted(by_proto) == [6, 17]
    t = x[by_proto[6]]
    np.testing.assert_allclose(t[0], AT2, rtol=1e-12)
    np.testing.assert_allclose(t[1], AT4, rtol=1e-12)
    # the 8-packet snapshot and the final row (FIN 8 packets) hold the same counters
    assert t[2, 8] == 5 and t[2, 9] == 3 and t[2, 2] == 300 and t[2, 3] == 320
    np.testing.assert_array_equal(t[3], t[2])
    assert rec[by_proto[6], L.END] & 0xFF == L.END_FIN
    u = x[by_proto[17]]
    expect = [0, 17, 48, 0, 64, 0, 0, 0, 1, 0, 48, 0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(u, [expect] * 4)


def test_other_models_snapshot_points_are_ignored_and_sources_are_kept_apart():
    tr = Traffic()
    full_tcp_conn(tr)
    points = (2, 3, 4)  # 3 is some early-triggered model's point
    cbs = rows(tr, points)
    asm = SeriesAssembler(2, points)
    # the same serials from two capture threads: two connections, each emitted once
    _, r0, x0 = assemble(cbs, 2, points, asm=asm, source=0)
    _, r1, x1 = assemble(cbs, 2, points, asm=asm, source=1)
    assert r0.shape[0] == r1.shape[0] == 1
    np.testing.assert_allclose(x0[0], [AT2, AT4], rtol=1e-12)
    np.testing.assert_array_equal(x0, x1)
    assert len(asm) == 0


def test_half_fed_connections_are_held_until_their_final_row():
    tr = Traffic()
    full_tcp_conn(tr)
    cbs = rows(tr, (2, 4, 8))
    recs = np.concatenate([cb.records for cb in cbs])
    feats = np.concatenate([cb.features for cb in cbs])
    asm = SeriesAssembler(3, (2, 4, 8))
    r, x = asm.feed(recs[:2], feats[:2])
    assert r.shape == (0, L.N_COLS) and x.shape == (0, 3, 17) and len(asm) == 1
    r, x = asm.feed(recs[2:], feats[2:])  # 8-packet snapshot emits, then the FIN row is swallowed
    assert r.shape[0] == 1 and r[0, L.END] >> 8 == 2 and len(asm) == 0


def test_validation():
    with pytest.raises(ValueError, match="lack the conn_series points \\[4\\]"):
        SeriesAssembler(2, (2,))
    with pytest.raises(ValueError, match="lookback 11 must be 1..10"):
        SeriesAssembler(11, SERIES_POINTS)
    assert series_snapshot_points(3) == (2, 4, 8)


def test_matches_a_direct_join_on_a_real_capture():
    """Every connection of a real capture appears once, with snapshots where it reached them."""
    if not PCAP.exists():
        pytest.skip(f"{PCAP} missing")
    lb = 4
    cfg = replace(TrackerConfig(), snapshot_packets=SERIES_POINTS[:lb])
    cbs = list(extract_file(PCAP, tracking=cfg, include_snapshots=True))
    rec = np.concatenate([cb.records for cb in cbs])
    feat = np.concatenate([cb.features for cb in cbs])
    final = (rec[:, L.END] & 0xFF) != L.END_SNAPSHOT
    ends = rec[final]
    ref = np.repeat(feat[final][:, None, :], lb, axis=1)
    pos = {int(s): i for i, s in enumerate(ends[:, L.SERIAL])}
    for r, f in zip(rec[~final], feat[~final]):
        ref[pos[int(r[L.SERIAL])], int(r[L.END]) >> 8] = f
    asm = SeriesAssembler(lb, cfg.snapshot_packets)
    got_r, got_x = [], []
    for cb in cbs:
        r, x = asm.feed(cb.records, cb.features)
        got_r.append(r)
        got_x.append(x)
    got_r, got_x = np.concatenate(got_r), np.concatenate(got_x)
    assert len(asm) == 0
    order = [pos[int(s)] for s in got_r[:, L.SERIAL]]
    assert sorted(order) == list(range(ends.shape[0]))
    np.testing.assert_array_equal(got_x, ref[order])
    early = (got_r[:, L.END] & 0xFF) == L.END_SNAPSHOT
    assert early.any() and (~early).any()
    assert ((got_r[early, L.S_PKTS] + got_r[early, L.D_PKTS]) == SERIES_POINTS[lb - 1]).all()


def test_several_connections_completed_by_snapshots_in_one_batch():
    tr = Traffic()
    for i in range(3):
        full_tcp_conn(tr, t0=i * 0.1, cport=42000 + i)
    cbs = rows(tr, (2, 4))
    snaps = [cb.select(cb.is_snapshot) for cb in cbs if cb.is_snapshot.any()]
    asm = SeriesAssembler(2, (2, 4))
    r, x = asm.feed(np.concatenate([c.records for c in snaps]), np.concatenate([c.features for c in snaps]))
    assert r.shape[0] == 3 and x.shape == (3, 2, 17) and len(asm) == 3
    for k in range(3):
        np.testing.assert_allclose(x[k], [AT2, AT4], rtol=1e-12)
    finals = [cb.select(~cb.is_snapshot) for cb in cbs]
    r, x = asm.feed(np.concatenate([c.records for c in finals]), np.concatenate([c.features for c in finals]))
    assert r.shape[0] == 0 and len(asm) == 0
