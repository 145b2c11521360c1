"""The processor-trace modality end to end on the real libxdc recordings: Barnum-layout sample
folders (program identification; each recording's head trains, its tail is held out), an
``lstm`` fitted by ``malsensor-train fit``, ``evaluate`` with the trace-level verdict, and
``malsensord`` on a ``pt_spool`` directory writing one ``trace`` event per sample, with a
broken sample quarantined and a sample left half processed by a "crash" processed again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import DATA, require_data
from pt_barnum import CASES, build, rng_bytes, write_sample
from test_pt_events import assert_png
from malsensor.daemon.pt.samples import read_barnum
from malsensor.daemon.pt.tokens import trace_windows
from malsensor.models.pt_eval import HIST_JSON, HIST_PNG

TESTS = Path(__file__).resolve().parent
MALSENSORD = [sys.executable, "-m", "malsensor.daemon.runtime.main"]
TRAIN = [sys.executable, "-m", "malsensor.models.cli"]
SEQ_LEN = 32
SPEC = f"""kind = "lstm"
[model]
seq_len = {SEQ_LEN}
max_vocab = 4096
embed = 16
units = 32
hidden_layers = 1
[train]
batch_size = 64
epochs = 4
eval_batch_size = 512
canary_rows = 8
[data]
split = "time"
"""


def _env() -> dict:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("MALSENSOR_PLUGINS", None)
    return env


def _run(cmd, timeout=600):
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_pt_modality_fit_evaluate_and_serve_a_spool(tmp_path):
    libxdc = require_data(DATA / "pt" / "libxdc" / "TEST_CASES.tsv").parent
    sizes = build(libxdc, tmp_path / "train", tmp_path / "tail")
    assert sorted(sizes) == sorted(CASES)

    spec = tmp_path / "lstm.toml"
    spec.write_text(SPEC)
    fit = _run([*TRAIN, "fit", "--model", str(spec), "--data", str(tmp_path / "train"), "--label", "label",
                "--out", str(tmp_path / "models"), "--name", "pt", "--reports", str(tmp_path / "reports")])
    assert fit.returncode == 0, fit.stderr[-3000:]
    meta = json.loads((tmp_path / "models" / "pt" / "current" / "meta.json").read_text())
    assert meta["kind"] == "lstm" and meta["view"]["name"] == "pt_tokens"
    assert meta["view"]["shape"] == [SEQ_LEN, 2] and meta["view"]["columns"] == ["token_hi", "token_lo"]
    assert meta["normalisation"]["transform"] == "token_vocabulary"
    assert 100 < meta["normalisation"]["vocabulary"] <= 4094
    # rows: non-overlapping windows of every head trace
    heads = [read_barnum(p) for p in sorted((tmp_path / "train").iterdir())]
    n_windows = {s.label: trace_windows(s.read_trace(), s.modules, SEQ_LEN, SEQ_LEN)[0].shape[0] for s in heads}
    assert meta["data"]["rows"] == sum(n_windows.values())
    assert meta["metrics"]["test"]["accuracy"] >= 0.9   # the last 20 % of each head (by position)
    # the eval stage of fit: trace-level verdict on the test split, histograms beside metrics.json
    report_dir = tmp_path / "reports" / "pt" / meta["version"]
    test_m = json.loads((report_dir / "metrics.json").read_text())["metrics"]["test"]
    tt = test_m["traces"]
    assert tt["traces"] == 5 and tt["threshold"] == 0.95 and set(tt["one_vs_rest"]) == set(CASES)
    assert sum(map(sum, tt["confusion"]["matrix"])) == 5 and 0 <= tt["macro_f1"] <= 1
    hist = json.loads((report_dir / HIST_JSON).read_text())
    assert hist == tt["histograms"] and hist["windows"] == test_m["n"] == meta["data"]["split"]["sizes"]["test"]
    assert all(sum(h["own"]) + sum(h["rest"]) == test_m["n"] for h in hist["classes"].values())
    assert_png(report_dir / HIST_PNG)

    ev = _run([*TRAIN, "evaluate", str(tmp_path / "models" / "pt" / "current"), str(tmp_path / "tail"),
               "--label", "label", "--json", "--report", str(tmp_path / "eval")])
    assert ev.returncode == 0, ev.stderr[-3000:]
    rep = json.loads(ev.stdout)
    tails = {s.label: s for s in (read_barnum(p) for p in sorted((tmp_path / "tail").iterdir()))}
    tail_windows = {lab: trace_windows(s.read_trace(), s.modules, SEQ_LEN, SEQ_LEN)[0].shape[0]
                    for lab, s in tails.items()}
    assert rep["n"] == sum(tail_windows.values())
    assert rep["accuracy"] >= 0.8                          # windows of held-out tails
    t = rep["traces"]
    assert t["traces"] == 5 and t["threshold"] == 0.95
    assert sum(sum(r) for r in t["confusion"]["matrix"]) == 5
    assert set(t["one_vs_rest"]) == set(CASES)
    assert t["one_vs_rest"]["mruby"]["tp"] == 1            # the longest recordings are told apart
    assert t["one_vs_rest"]["avscript_32"]["tp"] == 1
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text()) == rep
    assert t["histograms"]["windows"] == rep["n"]
    for lab, h in t["histograms"]["classes"].items():
        assert sum(h["own"]) == tail_windows[lab] and sum(h["own"]) + sum(h["rest"]) == rep["n"]
    assert_png(tmp_path / "eval" / HIST_PNG)

    # ---- the daemon on a spool: every tail, a broken sample, one left half processed by a crash
    spool = tmp_path / "spool"
    (spool / ".processing").mkdir(parents=True)
    for lab, s in tails.items():
        if lab == "foo":
            os.rename(s.where, spool / ".processing" / s.where.name)   # taken, then the daemon died
        else:
            os.rename(s.where, spool / s.where.name)
    write_sample(spool / ".incoming-broken", "broken", "benign", heads[0].modules, rng_bytes(5000, 7))
    os.rename(spool / ".incoming-broken", spool / "broken")          # renamed in when complete
    (spool / ".incoming-half").mkdir()                                # still being written: not taken
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "pt.toml"
    cfg.write_text('[service]\nuser = ""\n[metrics]\nenabled = false\n'
                   f'[[source]]\nkind = "pt_spool"\ndirectory = "{spool}"\nonce = true\n'
                   f'[[model]]\nname = "pt"\nview = "pt_tokens@1"\nmodels_dir = "{tmp_path / "models"}"\n'
                   f'artifact = "pt"\nseq_len = {SEQ_LEN}\nwindowing = "chunk"\ntop_windows = 3\n'
                   f'[[output]]\npath = "{logs / "eve.json"}"\n'
                   f'[stats]\npath = "{logs / "stats.jsonl"}"\n')
    check = _run([*MALSENSORD, "-c", str(cfg), "--check-config"], timeout=120)
    assert check.returncode == 0, check.stderr
    assert "(1 pt_spool source, 1 model(s), 1 output(s))" in check.stdout
    run = _run([*MALSENSORD, "-c", str(cfg)], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("5 traces processed (")
    assert "foo-tail was being processed at the last stop; processing it again" in run.stderr

    events = [json.loads(x) for x in (logs / "eve.json").read_text().splitlines()]
    assert sorted(e["trace"]["name"] for e in events) == sorted(f"{c}-tail" for c in CASES)  # one each
    for e in events:
        assert e["event_type"] == "trace" and e["host"]
        p = e["prediction"]
        assert p["model"] == "pt" and p["version"] == meta["version"] and p["trigger"] == "trace"
        tr = e["trace"]
        assert tr["windows"] == tail_windows[tr["label"]]
        assert 0 <= tr["alerting_windows"] <= tr["windows"] and p["alert"] == (tr["alerting_windows"] > 0)
        tops = tr["top_windows"]
        assert len(tops) == min(3, tr["windows"])
        assert [w["probability"] for w in tops] == sorted((w["probability"] for w in tops), reverse=True)
        assert all(0 <= w["offset"] < sizes[tr["label"]][1] for w in tops)
    by_name = {e["trace"]["name"]: e for e in events}
    assert by_name["mruby-tail"]["prediction"]["label"] == "mruby"
    assert by_name["avscript_32-tail"]["prediction"]["label"] == "avscript_32"
    assert sum(e["prediction"]["label"] == e["trace"]["label"] for e in events) >= 3

    assert sorted(p.name for p in (spool / "done").iterdir()) == sorted(f"{c}-tail" for c in CASES)
    assert sorted(p.name for p in (spool / "quarantine").iterdir()) == ["broken", "broken.reason"]
    assert (spool / "quarantine" / "broken.reason").read_text() == \
        f"{spool / 'broken' / 'trace_0'}: no control-flow tokens in 5000 bytes of trace (0 resyncs)\n"
    assert not list((spool / ".processing").iterdir()) and (spool / ".incoming-half").is_dir()
    stats = [json.loads(x) for x in (logs / "stats.jsonl").read_text().splitlines()][-1]
    src = stats["sources"]
    assert src["pt_samples_taken"] == 6 and src["pt_samples_done"] == 5
    assert src["pt_samples_quarantined"] == 1 and src["pt_samples_requeued"] == 1
    assert stats["models"]["pt"]["predictions"] == sum(tail_windows.values())
    assert np.isfinite([e["prediction"]["probability"] for e in events]).all()
