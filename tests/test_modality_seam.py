"""The modality seam, end to end: a source kind, a view, a model kind and an event formatter
that exist only in the test tree (tests/synth_modality.py), registered as a plugin, are
trained with ``malsensor-train fit`` and served by ``malsensord`` with no change to the
product. Any stage that bypassed its registry (a hard-coded connection view, source, kind or
formatter) would fail here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
MALSENSORD = [sys.executable, "-m", "malsensor.daemon.runtime.main"]
TRAIN = [sys.executable, "-m", "malsensor.models.cli"]


def _env(plugin: bool = True) -> dict:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    if plugin:
        env["MALSENSOR_PLUGINS"] = "synth_modality"
    else:
        env.pop("MALSENSOR_PLUGINS", None)
    return env


def _samples(path: Path, n: int, seed: int) -> list[dict]:
    """Class "up": feature a rises over the 3 steps, "down": it falls; b..d are noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        up = bool(rng.integers(2))
        v = rng.normal(0.0, 0.3, (4, 3))
        v[0] += [0.0, 1.0, 2.0] if up else [2.0, 1.0, 0.0]
        rows.append({"id": seed * 100000 + i, "label": "up" if up else "down", "values": v.round(6).tolist()})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_a_modality_from_the_test_tree_trains_and_serves(tmp_path):
    train_rows = _samples(tmp_path / "train.synth", 400, 1)
    test_rows = _samples(tmp_path / "live.synth", 120, 2)
    spec = tmp_path / "synthlin.toml"
    spec.write_text('kind = "synthlin"\n[model]\nridge = 0.01\n')
    fit = subprocess.run([*TRAIN, "fit", "--model", str(spec), "--data", str(tmp_path / "train.synth"),
                          "--label", "label", "--out", str(tmp_path / "models"), "--name", "synth",
                          "--reports", str(tmp_path / "reports")],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    meta = json.loads((tmp_path / "models" / "synth" / "current" / "meta.json").read_text())
    assert meta["kind"] == "synthlin"
    assert meta["view"]["name"] == "synth" and meta["view"]["shape"] == [4, 3] and meta["view"]["feature_axis"] == 0
    assert meta["metrics"]["test"]["accuracy"] >= 0.95
    assert meta["data"]["rows"] == len(train_rows)

    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "synth.toml"
    cfg.write_text('[service]\nuser = ""\n[metrics]\nenabled = false\n'
                   f'[[source]]\nkind = "synthdir"\nfile = "{tmp_path / "live.synth"}"\nbatch = 7\n'
                   f'[[model]]\nname = "s"\nview = "synth@1"\nmodels_dir = "{tmp_path / "models"}"\n'
                   'artifact = "synth"\nmin_first = 0.5\n'  # the view's own key, checked by the one schema
                   f'[[output]]\npath = "{logs / "eve.json"}"\n'
                   f'[stats]\npath = "{logs / "stats.jsonl"}"\n')
    check = subprocess.run([*MALSENSORD, "-c", str(cfg), "--check-config"], env=_env(), capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "(1 synthdir source, 1 model(s), 1 output(s))" in check.stdout
    run = subprocess.run([*MALSENSORD, "-c", str(cfg)], env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith(f"{len(test_rows)} samples processed (")
    events = [json.loads(x) for x in (logs / "eve.json").read_text().splitlines()]
    routed = [r for r in test_rows if r["values"][0][0] > 0.5]  # the view's router: min_first
    assert 0 < len(routed) < len(test_rows)
    assert sorted(e["sample"]["id"] for e in events) == sorted(r["id"] for r in routed)
    truth = {r["id"]: r["label"] for r in routed}
    for e in events:
        assert e["event_type"] == "sample" and e["host"]
        p = e["prediction"]
        assert p["model"] == "s" and p["version"] == meta["version"] and p["label"] in ("up", "down")
        assert [lab for lab, _ in p["topk"]][0] == p["label"]
        assert len(e["sample"]["values"]) == 4
    right = sum(e["prediction"]["label"] == truth[e["sample"]["id"]] for e in events)
    assert right >= 0.95 * len(events)
    stats = [json.loads(x) for x in (logs / "stats.jsonl").read_text().splitlines()][-1]
    assert stats["entities"] == {"samples": len(test_rows)}
    assert stats["models"]["s"]["predictions"] == len(routed)
    assert stats["sources"]["synth_samples_sent"] == len(test_rows)


def test_without_the_plugin_the_configuration_names_what_is_unknown(tmp_path):
    cfg = tmp_path / "synth.toml"
    cfg.write_text('[[source]]\nkind = "synthdir"\nfile = "x.synth"\n[[model]]\nname = "s"\nview = "synth@1"\n')
    r = subprocess.run([*MALSENSORD, "-c", str(cfg), "--check-config"], env=_env(plugin=False),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert f"{cfg}:2: source[0].kind: unknown source kind 'synthdir' (known: afpacket, pcap, procfs, pt_spool)" in r.stderr
    assert (f"{cfg}:6: model[0].view: unknown view 'synth@1' (known: conn@1, conn_ctx@1, conn_profile@1, conn_series@1, device_bag@1, host_volume@1, pkt_seq@1, proc_volume@1, pt_tokens@1)"
            in r.stderr)
