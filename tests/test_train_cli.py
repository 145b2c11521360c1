"""``malsensor-train`` end to end: fit, evaluate, predict, inspect, resume after kill -9,
and every kind of bad input as a one-line message (no traceback)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from train_data import assert_clean_error, cli, resumed_and_whole, unsw_subset, write_spec

from malsensor.daemon import artifact as A


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = unsw_subset(tmp, per_class=50)
    spec = write_spec(tmp, "forest", {"n_estimators": 6, "trees_per_chunk": 3, "n_jobs": 1})
    proc = cli("fit", "--model", spec, "--data", data, "--label", "attack_cat", "--out", tmp / "models",
               "--name", "cats", "--reports", tmp / "reports", "--seed", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "data": data, "spec": spec, "models": tmp / "models", "fit": proc}


def test_fit_output_and_report(env):
    out = env["fit"].stdout
    assert "published" in out and "test: n" in out
    art = A.resolve(env["models"] / "cats")
    reports = list((env["tmp"] / "reports" / "cats").iterdir())
    assert [r.name for r in reports] == [art.name]
    rep = reports[0]
    for f in ("metrics.json", "confusion.png", "learning_curves.png"):
        assert (rep / f).stat().st_size > 0
    assert list((rep / "tensorboard").glob("events.out.tfevents.*"))
    m = json.loads((rep / "metrics.json").read_text())
    assert m["history"][-1]["trees"] == 6 and len(m["history"]) == 2
    assert set(m["metrics"]) == {"val", "test"}
    # no checkpoint left behind after a successful publish
    assert not (env["models"] / "cats" / ".work").exists()
    # progress goes to periodic log lines when stderr is not a terminal (no tqdm bar codes)
    assert "\r" not in env["fit"].stderr


def test_evaluate_json(env):
    proc = cli("evaluate", env["models"] / "cats", env["data"], "--label", "attack_cat", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(proc.stdout)
    for k in ("n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion"):
        assert k in rep
    assert rep["n"] == 486
    assert set(rep["per_class"]["DoS"]) == {"precision", "recall", "f1", "support"}
    assert rep["per_class"]["Worms"]["support"] == 36
    assert len(rep["confusion"]["matrix"]) == 10 and rep["confusion"]["labels"][0] == "Analysis"
    assert sum(map(sum, rep["confusion"]["matrix"])) == 486
    # cross-check against scikit-learn's metrics on the same predictions
    from sklearn.metrics import accuracy_score, f1_score

    pred = [json.loads(ln) for ln in cli("predict", env["models"] / "cats", env["data"], "--label", "attack_cat",
                                          "--topk", "1").stdout.splitlines()]
    yt = [p["true"] for p in pred]
    yp = [p["pred"] for p in pred]
    assert rep["accuracy"] == pytest.approx(accuracy_score(yt, yp), abs=1e-12)
    assert rep["macro_f1"] == pytest.approx(f1_score(yt, yp, average="macro"), abs=1e-12)
    assert rep["weighted_f1"] == pytest.approx(f1_score(yt, yp, average="weighted"), abs=1e-12)


def test_evaluate_binary_counts(env, tmp_path):
    proc = cli("fit", "--model", env["spec"], "--data", env["data"], "--out", tmp_path / "m", "--name", "bin",
               "--reports", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(cli("evaluate", tmp_path / "m" / "bin", env["data"], "--json").stdout)
    assert rep["positive"] == "1"
    assert rep["tp"] + rep["fn"] == 436 and rep["tn"] + rep["fp"] == 50
    assert rep["tp"] + rep["tn"] == round(rep["accuracy"] * 486)


def test_predict_topk(env):
    proc = cli("predict", env["models"] / "cats", env["data"], "--topk", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert len(rows) == 486
    r = rows[0]
    # the label column defaults to the one the model was trained on (attack_cat here)
    assert set(r) == {"pred", "true", "topk"} and r["true"] == "Normal"
    assert len(r["topk"]) == 3 and r["topk"][0][0] == r["pred"]
    ps = [p for _, p in r["topk"]]
    assert ps == sorted(ps, reverse=True)
    other = cli("predict", env["models"] / "cats", env["data"], "--label", "label", "--topk", "1")
    assert json.loads(other.stdout.splitlines()[0])["true"] == "0"


def test_inspect(env):
    proc = cli("inspect", env["models"] / "cats")
    assert proc.returncode == 0
    assert "kind forest" in proc.stdout and "conn@1 shape [17]" in proc.stdout and "Worms" in proc.stdout
    doc = json.loads(cli("inspect", env["models"] / "cats", "--json").stdout)
    assert doc["kind"] == "forest" and len(doc["labels"]) == 10 and "jax" in doc["versions"]


# --------------------------------------------------------------------------- bad input

def test_malformed_row_and_skip_bad(env, tmp_path):
    lines = env["data"].read_text().splitlines()
    lines.insert(5, "1,2,3")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    args = ["fit", "--model", env["spec"], "--data", bad, "--out", tmp_path / "m", "--name", "b",
            "--reports", tmp_path / "r"]
    assert_clean_error(cli(*args), f"{bad}:6:", "3 fields, the header has 45", "--skip-bad")
    ok = cli(*args, "--skip-bad")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "malformed skipped 1" in ok.stderr


def test_wrong_feature_count(env, tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"label": "0", "fts": [1.0] * 16}) + "\n")
    assert_clean_error(cli("evaluate", env["models"] / "cats", p), f"{p}:1:", "'fts' has 16 values, expected 17")


def test_empty_dataset(env, tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n")
    assert_clean_error(cli("fit", "--model", "forest", "--data", p, "--out", tmp_path, "--name", "x"),
                       "empty dataset")


def test_single_class(env, tmp_path):
    lines = env["data"].read_text().splitlines()
    one = tmp_path / "normal.csv"
    one.write_text("\n".join(lines[:30]) + "\n")
    assert_clean_error(cli("fit", "--model", env["spec"], "--data", one, "--out", tmp_path, "--name", "x"),
                       "single class", "'0'")


def test_unseen_labels_at_evaluation(env, tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"attack_cat": "Ransomware", "fts": [1.0] * 17}) + "\n")
    assert_clean_error(cli("evaluate", env["models"] / "cats", p, "--label", "attack_cat"),
                       "labels the model never saw", "'Ransomware' (1 rows)")


def test_view_mismatch(env, tmp_path):
    # an iTransformer over conn_series (lookback 2) cannot be evaluated on per-connection CSV rows
    rows = tmp_path / "series.jsonl"
    rng = np.random.default_rng(0)
    with rows.open("w") as f:
        for i in range(40):
            f.write(json.dumps({"label": "ab"[i % 2], "series": (rng.random((2, 17)) + i % 2).tolist()}) + "\n")
    spec = write_spec(tmp_path, "itransformer", {"lookback_len": 2, "use_reversible_instance_norm": True,
                                                 "dim": 8, "depth": 1, "heads": 2, "dim_head": 4},
                      {"epochs": 1, "batch_size": 16})
    proc = cli("fit", "--model", spec, "--data", rows, "--out", tmp_path / "m", "--name", "s",
               "--reports", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "conn_series@1 shape [2, 17]" in cli("inspect", tmp_path / "m" / "s").stdout
    assert_clean_error(cli("evaluate", tmp_path / "m" / "s", env["data"]),
                       "conn_series@1 shape [2, 17]", "a CSV table holds one row per connection")


def test_revin_with_lookback_one_is_refused(tmp_path):
    spec = write_spec(tmp_path, "itransformer", {"use_reversible_instance_norm": True})
    assert_clean_error(cli("fit", "--model", spec, "--data", tmp_path, "--out", tmp_path, "--name", "x"),
                       "use_reversible_instance_norm = true needs lookback_len > 1")


def test_bad_spec(tmp_path):
    p = tmp_path / "typo.toml"
    p.write_text('kind = "forest"\n[model]\nn_estimator = 5\n')
    assert_clean_error(cli("fit", "--model", p, "--data", tmp_path, "--out", tmp_path, "--name", "x"),
                       "typo.toml:3: model.n_estimator: unknown key; did you mean 'n_estimators'?")
    p.write_text('kind = "forest"\n[model\n')
    assert_clean_error(cli("fit", "--model", p, "--data", tmp_path, "--out", tmp_path, "--name", "x"),
                       "invalid TOML")
    assert_clean_error(cli("fit", "--model", "gbm", "--data", tmp_path, "--out", tmp_path, "--name", "x"),
                       "unknown model kind 'gbm'")


def test_bad_artifact(tmp_path):
    (tmp_path / "a").mkdir()
    assert_clean_error(cli("inspect", tmp_path / "a"), "meta.json: missing")
    assert_clean_error(cli("inspect", tmp_path / "nope"), "no such artifact")


# --------------------------------------------------------------------------- crash and resume

def _fit_args(data: Path, out: Path, reports: Path, spec: Path) -> list:
    return ["fit", "--model", spec, "--data", data, "--label", "attack_cat", "--out", out, "--name", "m",
            "--reports", reports, "--checkpoint", "0"]


def test_kill_9_then_resume_gives_the_uninterrupted_result(env, tmp_path):
    data = unsw_subset(tmp_path, per_class=200)
    spec = write_spec(tmp_path, "mlp", {"hidden": [16], "dropout": 0.1},
                      {"epochs": 8, "batch_size": 32, "patience": 0})
    # reference: the same run, uninterrupted
    ref = cli(*_fit_args(data, tmp_path / "ref", tmp_path / "rr", spec))
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "models"
    ckpt = out / "m" / ".work" / "checkpoint.msgpack"
    proc = subprocess.Popen([sys.executable, "-m", "malsensor.models.cli",
                             *map(str, _fit_args(data, out, tmp_path / "r", spec))],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists() and b"epoch 3" in _log_so_far(proc):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # nothing was published, and no partial artifact is visible
    assert not (out / "m" / A.CURRENT_LINK).exists()
    assert [p.name for p in (out / "m").iterdir() if not p.name.startswith(".")] == []
    res = cli(*_fit_args(data, out, tmp_path / "r", spec), "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming from checkpoint: epoch" in res.stderr
    a = A.load_artifact(out / "m")
    b = A.load_artifact(tmp_path / "ref" / "m")
    x = np.concatenate([a.canary_x, b.canary_x])
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    assert a.meta["metrics"]["test"] == b.meta["metrics"]["test"]


_stderr_buf: dict[int, bytes] = {}


def _log_so_far(proc: subprocess.Popen) -> bytes:
    """Non-blocking read of what the child logged so far."""
    import fcntl

    fd = proc.stderr.fileno()
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        chunk = b""
    _stderr_buf[proc.pid] = _stderr_buf.get(proc.pid, b"") + chunk
    return _stderr_buf[proc.pid]


def test_forest_resume_in_process(tmp_path):
    data = unsw_subset(tmp_path, per_class=40)
    spec = write_spec(tmp_path, "forest", {"n_estimators": 6, "trees_per_chunk": 2, "n_jobs": 1})
    resumed, _ = resumed_and_whole(tmp_path, spec, data, "f")
    assert len(resumed.result.history) == 3
