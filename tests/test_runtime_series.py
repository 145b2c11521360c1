"""``malsensord --replay`` serving a conn_series@1 model (an iTransformer with lookback 3).

The model is trained by ``malsensor-train`` (1 epoch on random series, so its answers vary
with the input), published, and served by the daemon on a real capture. Every connection
must get exactly one prediction, equal to the artifact's ``predict_proba`` on the series the
trainer's extraction builds for the same capture (no train/serve skew), and each event's
``conn`` object holds the series' latest row.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from runtime_daemon import jsonl, replay, trainer_part
from train_data import cli, write_spec

from malsensor.daemon.views.conn import CONN_COLUMNS
from malsensor.daemon.views.conn_series import SERIES_POINTS

LOOKBACK = 3


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("series")
    rows = tmp / "series.jsonl"
    rng = np.random.default_rng(0)
    with rows.open("w") as f:
        for i in range(64):
            s = rng.random((LOOKBACK, 17)) * (1 + 100 * (i % 2))
            f.write(json.dumps({"label": ["benign", "scan"][i % 2], "series": s.tolist()}) + "\n")
    spec = write_spec(tmp, "itransformer", {"lookback_len": LOOKBACK, "use_reversible_instance_norm": True,
                                            "dim": 8, "depth": 1, "heads": 2, "dim_head": 4},
                      {"epochs": 1, "batch_size": 16})
    out = tmp / "models"
    proc = cli("fit", "--model", spec, "--data", rows, "--out", out, "--name", "s1", "--reports", tmp / "r")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _key(e: dict) -> tuple:
    start = datetime.strptime(e["flow"]["start"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    return (e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"], round(start * 1e6))


def test_replay_series_model_matches_trainer_extraction(tmp_path, models_dir):
    capture = require_data("pcap/stratosphere_ssh_bruteforce.pcap")
    run = replay(tmp_path, capture, f'[[model]]\nname = "s1"\nmodels_dir = "{models_dir}"\nview = "conn_series@1"\n'
                                    f'lookback = {LOOKBACK}\n')
    events = run.events

    # the trainer's extraction of the same capture
    from malsensor.daemon.artifact import load_artifact
    from malsensor.daemon.views.conn_series import CONN_SERIES, SeriesOptions

    part = trainer_part(CONN_SERIES.info(SeriesOptions(lookback=LOOKBACK)), capture)
    n = len(part.src_ip)
    assert n > 0 and len(events) == n
    assert run.proc.stdout.startswith(f"{n} connections processed (")
    x = np.asarray(part.x)
    assert x.shape == (n, LOOKBACK, 17)
    by_key = {_key(e): e for e in events}
    assert len(by_key) == n  # one prediction per connection
    art = load_artifact(models_dir / "s1")
    probs = art.predict_proba(x.astype(np.float32))
    labels = list(art.labels)
    assert np.unique(probs[:, 0].round(6)).size > 10  # the answers depend on the series
    early = 0
    by_conn = {(k[0], k[2], k[4]): ev for k, ev in by_key.items()}
    assert len(by_conn) == n  # addresses + start time identify a connection here (a Part has no ports)
    for i in range(n):
        e = by_conn[(part.src_ip[i], part.dest_ip[i], round(part.ts[i] * 1e6))]
        p = e["prediction"]
        assert p["model"] == "s1" and p["trigger"] == "end"
        cid = int(np.argmax(probs[i]))
        assert p["class_id"] == cid and p["label"] == labels[cid]
        assert p["probability"] == pytest.approx(float(probs[i, cid]), abs=1e-5)
        # the event's conn object: the latest row of the series
        assert [e["conn"][c] for c in CONN_COLUMNS] == pytest.approx(x[i, -1].tolist(), rel=1e-12, abs=1e-12)
        if e["conn"]["s_pkt_cnt"] + e["conn"]["d_pkt_cnt"] == SERIES_POINTS[LOOKBACK - 1] \
                and e["flow"]["end_reason"] == "snapshot":
            early += 1
    print(f"{n} connections, {early} classified at {SERIES_POINTS[LOOKBACK - 1]} packets")
    assert early > 0  # some connections were classified at 8 packets, before they ended
    stats = jsonl(run.logs / "stats.jsonl")
    assert stats[-1]["models"]["s1"]["predictions"] == n
    assert stats[-1]["models"]["s1"]["pending"] == 0  # every partial series was completed and dropped


def test_series_config_keys():
    from malsensor.daemon.runtime import config as C

    cfg = C.parse_config(
        '[[model]]\nname = "s"\nview = "conn_series@1"\nlookback = 4\n'
        '[[model]]\nname = "e"\ntrigger = "early"\nearly_packets = 5\n'
        '[[model]]\nname = "c"\n', "cfg.toml", "/etc/ms")
    assert cfg.tracker_config().snapshot_packets == (2, 4, 5, 8, 16)
    assert [m.input_shape() for m in cfg.models] == [(4, 17), (17,), (17,)]
    text = ('[[model]]\nname = "a"\nview = "conn_series@1"\n'
            '[[model]]\nname = "b"\nview = "conn_series@1"\nlookback = 11\ntrigger = "early"\nearly_packets = 4\n'
            '[[model]]\nname = "c"\nlookback = 2\n')
    with pytest.raises(C.ConfigError) as e:
        C.parse_config(text, "t.toml", "/base")
    assert [str(p) for p in e.value.problems] == [
        't.toml:1: model[0].lookback: view = "conn_series@1" needs lookback = 2..10 (the series points are '
        '[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])',
        't.toml:7: model[1].lookback: view = "conn_series@1" needs lookback = 2..10 (the series points are '
        '[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])',
        't.toml:8: model[1].trigger: a conn_series@1 model classifies at its last series point or at the '
        'connection\'s end: trigger must be "end"',
        't.toml:12: model[2].lookback: lookback is only used with view = "conn_series@1"',
    ]


def test_series_route_keeps_capture_threads_apart():
    """Two capture threads whose trackers hand out the same serials: each connection once."""
    import threading

    from crafted import TcpConn, Traffic

    from malsensor.daemon.flows import layout as L
    from malsensor.daemon.flows.config import TrackerConfig
    from malsensor.daemon.pipeline import ConnPipeline
    from malsensor.daemon.views.conn_series import SeriesRouter

    tr = Traffic()
    for i in range(20):
        c = TcpConn(tr, cport=41000 + i)
        t0 = i * 0.1
        c.c(t0, "S").s(t0 + 0.01, "SA").c(t0 + 0.02, "A").c(t0 + 0.03, "PA", payload=10)
        c.s(t0 + 0.04, "PA", payload=20).c(t0 + 0.05, "FA").s(t0 + 0.06, "FA").c(t0 + 0.07, "A")
    points = (2, 4, 8)
    route = SeriesRouter(3, points)
    got: dict[str, list] = {}

    def capture(name: str) -> None:
        pipe = ConnPipeline(TrackerConfig(snapshot_packets=points))
        out = got[name] = []
        for cb in pipe.run([tr.batch()]):
            rows = route.route(cb)
            if rows is not None:
                out.extend(zip(rows.keys[:, L.SERIAL].tolist(), rows.x))

    threads = [threading.Thread(target=capture, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert route.pending() == 0
    assert [len(got[n]) for n in "ab"] == [20, 20]
    assert sorted(s for s, _ in got["a"]) == sorted(s for s, _ in got["b"])  # the same serials
    for (_, xa), (_, xb) in zip(sorted(got["a"], key=lambda p: p[0]), sorted(got["b"], key=lambda p: p[0])):
        np.testing.assert_array_equal(xa, xb)
        assert xa[:, 8].tolist() == [1, 3, 5] and xa[:, 9].tolist() == [1, 1, 3]  # s/d packets at 2, 4, 8
