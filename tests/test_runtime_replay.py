"""``malsensord --replay``: the real pipeline over real captures, events from a real artifact.

Parity: every connection ``malsensor extract`` finds in a capture gets exactly one
``prediction`` event whose 5-tuple, start time and 17 features equal the extractor's row,
and whose label/probabilities equal what the artifact computes for that row (loaded on its
own, outside the daemon; and, when the trainer is installed, what ``malsensor-train
predict`` prints for the extractor's rows).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from runtime_artifacts import LABELS, params_of, publish, reference_predict

from malsensor.daemon.views.conn import CONN_COLUMNS

MALSENSORD = [sys.executable, "-m", "malsensor.daemon.runtime.main"]
MALSENSOR = [sys.executable, "-m", "malsensor.daemon.cli"]
CAPTURES = ("stratosphere_cc_capture1.pcap", "http_espn.pcapng")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    publish(d, "m1", "v1", seed=1)
    return d


def write_config(path: Path, models_dir: Path, logs: Path, *, extra: str = "", outputs: str | None = None) -> Path:
    if outputs is None:
        outputs = (f'[[output]]\npath = "{logs}/eve.json"\n'
                   f'[[output]]\npath = "{logs}/labels.jsonl"\nformat = "label"\n')
    path.write_text(
        '[service]\nuser = ""\n[metrics]\nenabled = false\n'
        f'[stats]\npath = "{logs}/stats.jsonl"\n'
        '[inference]\nbatch_sizes = [1, 16, 256]\n'
        f'[[model]]\nname = "m1"\nmodels_dir = "{models_dir}"\ntopk = 3\n'
        + outputs + extra)
    return path


def run_replay(cfg: Path, capture: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MALSENSORD, "-c", str(cfg), "--replay", str(capture), *args],
                          capture_output=True, text=True, timeout=timeout)


def extract_rows(capture: Path) -> list[dict]:
    r = subprocess.run([*MALSENSOR, "extract", str(capture)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _key_from_row(r: dict) -> tuple:
    return (r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"], r["proto"], round(r["ts"] * 1e6))


def _key_from_event(e: dict) -> tuple:
    start = datetime.strptime(e["flow"]["start"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    proto = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPv6-ICMP": 58}.get(e["proto"]) or int(e["proto"])
    return (e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"], proto, round(start * 1e6))


@pytest.mark.parametrize("capture_name", CAPTURES)
def test_replay_parity_with_extract(tmp_path, models_dir, capture_name):
    capture = require_data(f"pcap/{capture_name}")
    logs = tmp_path / "logs"
    logs.mkdir()
    seeded = f'[[output]]\npath = "{logs}/seeded.json"\nfeatures = false\ncommunity_id_seed = 7\n'
    cfg = write_config(tmp_path / "m.toml", models_dir, logs, outputs=(
        f'[[output]]\npath = "{logs}/eve.json"\n[[output]]\npath = "{logs}/labels.jsonl"\nformat = "label"\n'
        + seeded))
    r = run_replay(cfg, capture)
    assert r.returncode == 0, r.stderr
    rows = extract_rows(capture)
    n = len(rows)
    assert n > 0
    assert r.stdout.startswith(f"{n} connections processed (")
    events = [json.loads(line) for line in (logs / "eve.json").read_text().splitlines()]
    labels = [json.loads(line) for line in (logs / "labels.jsonl").read_text().splitlines()]
    assert len(events) == n and len(labels) == n
    # one event per connection, no duplicates
    by_key = {_key_from_event(e): e for e in events}
    assert len(by_key) == n
    assert set(by_key) == {_key_from_row(r) for r in rows}
    # the label stream is the eve stream's labels, in the same order
    assert labels == [e["prediction"]["label"] for e in events]
    # the Community ID of the output seeded 7 (the same connections, in the same order)
    from malsensor.daemon.outputs.community_id import community_id

    other = [json.loads(line) for line in (logs / "seeded.json").read_text().splitlines()]
    assert [e["flow_id"] for e in other] == [e["flow_id"] for e in events] and "conn" not in other[0]
    assert [e["community_id"] for e in other] == [
        community_id(e["src_ip"], e["dest_ip"], _key_from_event(e)[4], e["src_port"], e["dest_port"], seed=7)
        for e in events]
    params = params_of(1)
    x = np.asarray([row["fts"] for row in rows], dtype=np.float64)
    ref = reference_predict(params, x)
    from malsensor.daemon.artifact import load_artifact

    art = load_artifact(models_dir / "m1")
    direct = art.predict_proba(x.astype(np.float32))
    for i, row in enumerate(rows):
        e = by_key[_key_from_row(row)]
        assert e["event_type"] == "prediction"
        assert [e["conn"][c] for c in CONN_COLUMNS] == row["fts"]
        assert e["flow"]["end_reason"] == row["end_reason"]
        assert e["community_id"] == row["community_id"] and e["community_id"].startswith("1:")
        assert e["src_mac"] == row["src_mac"] and e["dest_mac"] == row["dest_mac"]
        p = e["prediction"]
        assert p["model"] == "m1" and p["version"] == "v1" and p["trigger"] == "end"
        cid = int(np.argmax(direct[i]))
        assert p["class_id"] == cid and p["label"] == LABELS[cid]
        assert p["probability"] == pytest.approx(float(direct[i, cid]), abs=1e-6)
        assert p["probability"] == pytest.approx(ref[i, cid], abs=1e-5)
        assert [t[0] for t in p["topk"]] == [LABELS[j] for j in np.argsort(-direct[i], kind="stable")]
        assert p["alert"] == (LABELS[cid] != "benign" and p["probability"] >= 0.5)
    stats = [json.loads(line) for line in (logs / "stats.jsonl").read_text().splitlines()]
    last = stats[-1]
    assert last["connections"] == n
    assert last["models"]["m1"]["predictions"] == n
    assert last["models"]["m1"]["queue_dropped"] == 0
    assert last["outputs"][str(logs / "eve.json")]["lines"] == n


def test_replay_parity_with_trainer_predict(tmp_path, models_dir):
    """``malsensor-train predict ARTIFACT ROWS`` on the extractor's rows gives the daemon's labels."""
    from conftest import _unavailable

    if shutil.which("malsensor-train") is None and not (Path(sys.executable).parent / "malsensor-train").exists():
        _unavailable("malsensor-train is not installed")
    train = str(Path(sys.executable).parent / "malsensor-train")
    capture = require_data("pcap/stratosphere_cc_capture1.pcap")
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "m.toml", models_dir, logs)
    r = run_replay(cfg, capture)
    assert r.returncode == 0, r.stderr
    rows_file = tmp_path / "rows.jsonl"
    x = subprocess.run([*MALSENSOR, "extract", str(capture), "-o", str(rows_file)], capture_output=True, text=True,
                       timeout=300)
    assert x.returncode == 0, x.stderr
    p = subprocess.run([train, "predict", str(models_dir / "m1"), str(rows_file), "--topk", "3"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    preds = [json.loads(line) for line in p.stdout.splitlines()]
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert len(preds) == len(rows)
    events = {_key_from_event(e): e for e in map(json.loads, (logs / "eve.json").read_text().splitlines())}
    for row, pr in zip(rows, preds):
        e = events[_key_from_row(row)]["prediction"]
        assert pr["pred"] == e["label"]
        assert [t[0] for t in pr["topk"]] == [t[0] for t in e["topk"]]
        for (_, pa), (_, pb) in zip(pr["topk"], e["topk"]):
            assert pa == pytest.approx(pb, abs=1e-6)


def test_replay_repeat_and_filters(tmp_path, models_dir):
    capture = require_data("pcap/stratosphere_scanning_host.pcap")
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "m.toml", models_dir, logs, extra='[tracking]\nprotocols = ["udp"]\n',
                       outputs=f'[[output]]\npath = "{logs}/alerts.json"\nalerts_only = true\nfeatures = false\n')
    rows = [r for r in extract_rows(capture) if r["proto"] == 17]
    r = run_replay(cfg, capture, "--repeat", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{2 * len(rows)} connections processed (")
    assert "2 passes" in r.stdout
    events = [json.loads(line) for line in (logs / "alerts.json").read_text().splitlines()]
    assert all(e["prediction"]["alert"] and "conn" not in e and e["proto"] == "UDP" for e in events)


def test_replay_bad_capture_and_missing_model(tmp_path, models_dir):
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "m.toml", models_dir, logs)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture file at all")
    r = run_replay(cfg, bad)
    assert r.returncode == 1
    assert r.stdout.startswith("0 connections processed (")
    assert f"replay: {bad}: offset 0: not a pcap or pcapng file" in r.stderr or "not a pcap or pcapng" in r.stderr
    cfg2 = write_config(tmp_path / "m2.toml", tmp_path / "no-models", logs)
    r = run_replay(cfg2, require_data("pcap/synscan.pcapng"))
    assert r.returncode == 1
    assert f"cannot start: model m1: {tmp_path / 'no-models' / 'm1'}: no such artifact or model directory" in r.stderr


def test_replay_as_unprivileged_user(models_dir):
    """Started as root with [service] user = "nobody": the events are written as nobody."""
    import os
    import tempfile

    from conftest import require_root

    require_root()
    capture = require_data("pcap/stratosphere_cc_capture1.pcap")
    work = Path(tempfile.mkdtemp(prefix="malsensord-user-"))
    try:
        work.chmod(0o777)
        shutil.copytree(models_dir, work / "models", symlinks=True)
        for p in [work / "models", *(work / "models").rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
        cfg = work / "m.toml"
        cfg.write_text('[service]\nuser = "nobody"\n[metrics]\nenabled = false\n[stats]\npath = ""\n'
                       f'[[model]]\nname = "m1"\nmodels_dir = "{work / "models"}"\n'
                       f'[[output]]\npath = "{work}/eve.json"\n')
        r = run_replay(cfg, capture)
        assert r.returncode == 0, r.stderr
        assert "switched to user nobody (uid 65534, gid 65534), keeping CAP_NET_RAW and CAP_NET_ADMIN" in r.stderr
        st = os.stat(work / "eve.json")
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        assert len((work / "eve.json").read_text().splitlines()) == int(r.stdout.split()[0]) == 299
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_replay_early_trigger_one_prediction_per_connection(tmp_path, models_dir):
    capture = require_data("pcap/stratosphere_cc_capture1.pcap")
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "m.toml", models_dir, logs,
                       outputs=f'[[output]]\npath = "{logs}/eve.json"\n')
    cfg.write_text(cfg.read_text().replace('topk = 3\n', 'topk = 3\ntrigger = "early"\nearly_packets = 5\n'))
    r = run_replay(cfg, capture)
    assert r.returncode == 0, r.stderr
    rows = extract_rows(capture)
    events = [json.loads(line) for line in (logs / "eve.json").read_text().splitlines()]
    assert len(events) == len(rows) and r.stdout.startswith(f"{len(rows)} connections processed (")
    assert {_key_from_event(e) for e in events} == {_key_from_row(r) for r in rows}
    n_early = 0
    for e in events:
        f = e["flow"]
        pkts = f["pkts_toserver"] + f["pkts_toclient"]
        assert e["prediction"]["trigger"] == "early"
        if f["end_reason"] == "snapshot":
            n_early += 1
            assert pkts == 5
        else:
            assert pkts < 5
    assert n_early == sum(1 for r in rows if r["s_pkt_cnt"] + r["d_pkt_cnt"] >= 5) > 0


def test_shipped_config_and_default_model(tmp_path):
    """What `make run` starts: etc/malsensor.toml with the model in contrib/models (a real
    malsensor-train forest artifact)."""
    repo = Path(__file__).resolve().parents[1]
    capture = require_data("pcap/stratosphere_scanning_host.pcap")
    r = subprocess.run([*MALSENSORD, "-c", str(repo / "etc" / "malsensor.toml"), "--models-dir",
                        str(repo / "contrib" / "models"), "--log-dir", str(tmp_path), "--user", "",
                        "--metrics-port", "0", "--replay", str(capture)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n = int(r.stdout.split()[0])
    events = [json.loads(line) for line in (tmp_path / "eve.json").read_text().splitlines()]
    assert len(events) == n > 0
    assert {e["prediction"]["model"] for e in events} == {"default"}
    labels = {e["prediction"]["label"] for e in events}
    assert labels <= {"benign", "malicious"} and "malicious" in labels
    assert (tmp_path / "stats.jsonl").exists()
