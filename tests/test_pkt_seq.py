"""``pkt_seq@1``: the first N packets of each connection (daemon/flows/seq.py, views/pkt_seq.py).

Exact values on crafted traffic (sizes, directions, gaps, flags known), the trainer's reader
equal to the daemon's pipeline on the same capture, the record kept only when asked for (the
flow table's bytes per flow unchanged by default), and the view's configuration keys.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scapy.utils import wrpcap
from scapy.layers.l2 import Ether

from crafted import EPOCH, Traffic, full_tcp_conn, udp

from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.seq import SEQ_COLUMNS, SeqRecorder, seq_bytes_per_flow
from malsensor.daemon.flows.table import FlowTracker, bytes_per_flow
from malsensor.daemon.pipeline import ConnPipeline

SIZE, DIR, IAT, FLAGS, PROTO, PORT, MASK = range(7)
F, S, R, P, A = 1, 2, 4, 8, 16


def crafted() -> Traffic:
    tr = Traffic()
    full_tcp_conn(tr, 0.0)                      # 8 packets, 10.0.0.1:40000 -> 10.0.0.2:80
    udp(0.5, tr, payload=20)                    # a DNS-like query and its answer
    udp(0.5013, tr, src="10.0.0.2", dst="10.0.0.1", sport=53, dport=5353, payload=100)
    return tr


def run(tr: Traffic, n: int) -> tuple[np.ndarray, np.ndarray]:
    pipe = ConnPipeline(TrackerConfig(seq_packets=n))
    cbs = list(pipe.run([tr.batch()]))
    return np.concatenate([c.records for c in cbs]), np.concatenate([c.seq for c in cbs])


def test_columns():
    assert SEQ_COLUMNS == ("size", "direction", "iat", "tcp_flags", "proto", "service_port", "mask")


def test_crafted_exact_values():
    rec, x = run(crafted(), 16)
    assert x.shape == (2, 16, 7) and x.dtype == np.float32
    tcp = int(np.flatnonzero(L.proto_of(rec) == 6)[0])
    u = 1 - tcp
    t = x[tcp]
    # full_tcp_conn: client 40, 40, 140, 40, 40 at 0, 12, 20, 40, 60 ms; server 40, 240, 40 at 10, 30, 50 ms
    assert t[:8, SIZE].tolist() == [40, 40, 40, 140, 240, 40, 40, 40]
    assert t[:8, DIR].tolist() == [1, -1, 1, 1, -1, 1, -1, 1]
    gaps = [0, 0.010, 0.002, 0.008, 0.010, 0.010, 0.010, 0.010]
    assert t[:8, IAT].tolist() == [np.float32(g) for g in gaps]
    assert t[:8, FLAGS].tolist() == [S, S | A, A, P | A, P | A, F | A, F | A, A]
    assert (t[:8, PROTO] == 6).all() and (t[:8, PORT] == 80).all() and (t[:8, MASK] == 1).all()
    assert (t[8:] == 0).all()  # padding: every column 0
    v = x[u]
    assert v[:2, SIZE].tolist() == [48, 128]   # IP 20 + UDP 8 + payload
    assert v[:2, DIR].tolist() == [1, -1]
    assert v[:2, IAT].tolist() == [0, np.float32(0.0013)]
    assert v[:2, FLAGS].tolist() == [0, 0]
    assert v[:2, PROTO].tolist() == [17, 17] and v[:2, PORT].tolist() == [53, 53]
    assert v[:2, MASK].tolist() == [1, 1] and (v[2:] == 0).all()


def test_fewer_packets_kept_is_a_prefix():
    _, x16 = run(crafted(), 16)
    _, x3 = run(crafted(), 3)
    assert x3.shape == (2, 3, 7)
    np.testing.assert_array_equal(x3, x16[:, :3])


def test_trainer_reader_equals_pipeline(tmp_path):
    """The trainer's capture reader (models/data/pkt_seq.py) on a written capture gives the
    pipeline's rows."""
    from malsensor.daemon.views.pkt_seq import PKT_SEQ, PktSeqOptions
    from malsensor.models.data.load import DataOptions, view_reader
    from malsensor.models.data.table import DataStats

    tr = crafted()
    pkts = [Ether(f) for f in tr.frames]
    for p, t in zip(pkts, tr.times):
        p.time = t / 1e9
    cap = tmp_path / "c.pcap"
    wrpcap(str(cap), pkts)
    view = PKT_SEQ.info(PktSeqOptions(n_packets=8))
    reader = view_reader(view)
    part = reader.read(cap, reader.file_type(cap), view, DataOptions(), DataStats())
    _, want = run(crafted(), 8)
    assert part.x.shape == (2, 8, 7)
    np.testing.assert_allclose(part.x, want, rtol=1e-6, atol=1e-9)  # pcap keeps µs: the gaps are µs here


def test_recorder_only_when_asked():
    default = FlowTracker(TrackerConfig())
    assert default.seq is None and default.tags.shape == (0,)
    assert default.stats()["bytes_per_flow"] == bytes_per_flow(TrackerConfig().max_flows)
    assert 252 <= bytes_per_flow(TrackerConfig().max_flows) <= 253  # README's memory table
    tk = FlowTracker(TrackerConfig(max_flows=1000, seq_packets=16))
    rec = tk.seq
    assert rec is not None and rec.n_packets == 16
    # 30 + 7N bytes per row of capacity, and the index: a power of two >= 2 * capacity
    per_row = (rec.nbytes - rec.index.nbytes) / rec.capacity + 8
    assert per_row == seq_bytes_per_flow(16) == 142


def test_recorder_frees_final_rows_and_counts_full():
    tr = Traffic()
    for i in range(6):
        udp(i * 0.001, tr, sport=1000 + i)
    pipe = ConnPipeline(TrackerConfig(seq_packets=2))
    pipe.tracker.seq = SeqRecorder(2, 0, slack=4)  # room for 4 connections
    cbs = list(pipe.run([tr.batch()]))
    x = np.concatenate([c.seq for c in cbs])
    assert x.shape == (6, 2, 7)
    assert int(x[:, 0, MASK].sum()) == 4                 # two found the recorder full: empty, mask 0
    assert pipe.tracker.seq.stats() == {"seq_rows_used": 0, "seq_full": 2}


def test_snapshot_keeps_row_until_the_end():
    tr = crafted()
    pipe = ConnPipeline(TrackerConfig(seq_packets=4, snapshot_packets=(4,)))
    cbs = list(pipe.run([tr.batch()]))
    rec = np.concatenate([c.records for c in cbs])
    x = np.concatenate([c.seq for c in cbs])
    snap = (rec[:, L.END] & 0xFF) == L.END_SNAPSHOT
    assert snap.sum() == 1
    final_tcp = ~snap & (L.proto_of(rec) == 6)
    np.testing.assert_array_equal(x[snap], x[final_tcp])   # the first 4 packets, both times
    assert pipe.tracker.seq.stats()["seq_rows_used"] == 0


@pytest.mark.parametrize("value,ok", [(0, False), (1, True), (16, True), (256, True), (257, False)])
def test_n_packets_bounds(tmp_path, value, ok):
    from malsensor.daemon.runtime.config import ConfigError, load_config

    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[[model]]\nname = "d"\nview = "pkt_seq@1"\nn_packets = {value}\n')
    if ok:
        c = load_config(cfg)
        assert c.tracker_config().seq_packets == value
        assert c.models[0].input_shape() == (value, 7)
    else:
        with pytest.raises(ConfigError) as e:
            load_config(cfg)
        assert f"{cfg}:4: model[0].n_packets" in str(e.value) or "n_packets" in str(e.value)


def test_default_config_keeps_no_packets(tmp_path):
    from malsensor.daemon.runtime.config import load_config

    cfg = tmp_path / "m.toml"
    cfg.write_text('[[model]]\nname = "c"\n')
    assert load_config(cfg).tracker_config().seq_packets == 0


def test_gbdt_reads_pkt_seq_through_its_spec():
    from pathlib import Path

    from malsensor.models.errors import TrainError
    from malsensor.models.spec import load_spec
    from malsensor.models.zoo.base import get_kind
    from malsensor.models.zoo.gbdt import GBDTConfig, check_config

    spec = load_spec(Path(__file__).resolve().parents[1] / "etc" / "models" / "gbdt-pkt-seq.toml")
    view = get_kind("gbdt").view(spec.model)
    assert (view.ref, tuple(view.shape), view.columns) == ("pkt_seq@1", (16, 7), SEQ_COLUMNS)
    with pytest.raises(TrainError, match="view must be one of conn@1, conn_ctx@1, conn_profile@1, pkt_seq@1"):
        check_config(GBDTConfig(view="conn_series@1"))
    with pytest.raises(TrainError, match="n_packets must be in 1..256"):
        check_config(GBDTConfig(view="pkt_seq@1", n_packets=0))


def test_router_classifies_at_the_end_or_early_at_n_packets():
    """``trigger = "end"``: each connection once, at its end, with its first n_packets packets;
    ``"early"``: the TCP connection (8 packets) at the tracker's snapshot at n_packets (its rows
    only: the other snapshot point is another model's), the UDP one (2 packets) at its end."""
    from malsensor.daemon.views.pkt_seq import PKT_SEQ, PktSeqOptions

    tracking = TrackerConfig(seq_packets=6, snapshot_packets=(4, 6))
    cbs = list(ConnPipeline(tracking).run([crafted().batch()]))
    facts = {"snapshot_points": tracking.snapshot_packets}

    def routed(o: PktSeqOptions) -> tuple[str, list]:
        router = PKT_SEQ.router(o, facts)
        got = [rows for rows in (router.route(cb) for cb in cbs) if rows is not None]
        rec = np.concatenate([g.keys for g in got])
        x = np.concatenate([g.x for g in got])
        assert x.shape == (len(rec), o.n_packets, 7)
        assert all(g.detail.shape == (g.n, 17) for g in got)  # events show the conn features
        return router.trigger, sorted((int(L.proto_of(r)), L.END_REASONS[int(r[L.END]) & 0xFF],
                                       int(r[L.S_PKTS] + r[L.D_PKTS]), int(s[:, MASK].sum()))
                                      for r, s in zip(rec, x))

    assert routed(PktSeqOptions(n_packets=4)) == ("end", [(6, "fin", 8, 4), (17, "eof", 2, 2)])
    assert routed(PktSeqOptions(n_packets=4, trigger="early")) == ("early", [(6, "snapshot", 4, 4),
                                                                            (17, "eof", 2, 2)])
    assert routed(PktSeqOptions(n_packets=6, trigger="early")) == ("early", [(6, "snapshot", 6, 6),
                                                                            (17, "eof", 2, 2)])
