"""``malsensor-train dataset-proc``: every behaviour runs, is recorded under its label, and
leaves no process and no scratch file behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from malsensor.models.proc_dataset import WORKLOADS

TRAIN = [sys.executable, "-m", "malsensor.models.cli"]


def _cmdlines_with(text: str) -> list[str]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                c = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in c:
                out.append(c)
    return out


def test_every_behaviour_is_recorded_and_cleaned_up(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "data"
    r = subprocess.run([*TRAIN, "-l", "warning", "dataset-proc", "--out", str(out), "--runs", "1", "--duration", "0.6",
                        "--interval", "0.1", "--steps", "2", "--processes", "16", "--scratch", str(scratch),
                        "--by-behaviour"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert [x.split(" run ")[0] for x in lines] == list(WORKLOADS)
    idx = json.loads((out / "index.json").read_text())
    assert [s["label"] for s in idx["shards"]] == list(WORKLOADS)
    assert all(s["volumes"] >= 1 for s in idx["shards"])
    assert list(scratch.iterdir()) == []          # every scratch folder removed
    assert _cmdlines_with(str(scratch)) == []     # every workload's process group killed


def test_unknown_behaviour_is_named(tmp_path):
    r = subprocess.run([*TRAIN, "dataset-proc", "--out", str(tmp_path), "--behaviours", "idle,rootkit"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "dataset-proc: unknown behaviour(s) rootkit (known: compile, compress, web, churn, idle, miner, " \
           "ransom, spawn, portscan, upload)" in r.stderr
