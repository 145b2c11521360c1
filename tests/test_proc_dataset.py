"""``malsensor-train dataset-proc``: every behaviour runs, is recorded under its label, and
leaves no process and no scratch file behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgroups import alive, kill_all, kill_if_running, new_cgroup, sleepers_in
from malsensor.models.data.procshards import load_shard
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


def test_every_behaviour_is_recorded_alone_in_its_cgroup_and_cleaned_up(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "data"
    with new_cgroup() as parent:
        r = subprocess.run([*TRAIN, "-l", "warning", "dataset-proc", "--out", str(out), "--runs", "1", "--duration",
                            "0.6", "--interval", "0.1", "--steps", "2", "--processes", "16", "--scratch", str(scratch),
                            "--by-behaviour", "--cgroup-parent", str(parent)], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _children(parent) == []  # every recording's cgroup removed
    lines = r.stdout.splitlines()
    assert [x.split(" run ")[0] for x in lines] == list(WORKLOADS)
    idx = json.loads((out / "index.json").read_text())
    assert [s["label"] for s in idx["shards"]] == list(WORKLOADS)
    assert all(s["volumes"] >= 1 for s in idx["shards"])
    for s in idx["shards"]:
        a = load_shard(out / s["file"])
        # the behaviour and its two benign backgrounds, nothing else of the machine; spawn adds its
        # short-lived children (bursts of 20 sleeps)
        if s["label"] == "spawn":
            assert (a["processes"] >= 3).all() and (a["processes"] <= 3 + 40).all(), a["processes"]
            assert {c for row in a["comm"] for c in row} - {""} <= {"sleep", Path(sys.executable).name[:15],
                                                                    "python3", "python"}
        else:
            assert a["processes"].tolist() == [3] * s["volumes"], (s["label"], a["processes"])
            assert (a["pid"][:, 3:] == -1).all()
    assert list(scratch.iterdir()) == []          # every scratch folder removed
    assert _cmdlines_with(str(scratch)) == []     # every workload's process group killed


def _children(cg: Path) -> list[str]:
    return sorted(p.name for p in cg.iterdir() if p.is_dir())


def _recording_pids(parent: Path, at_least: int, timeout: float = 120) -> list[int]:
    """The processes of the first recording cgroup under ``parent`` once it holds ``at_least``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for top in parent.glob("malsensor-dataset-*"):
            for rec in top.iterdir():
                if rec.is_dir():
                    try:
                        pids = [int(x) for x in (rec / "cgroup.procs").read_text().split()]
                    except OSError:
                        continue
                    if len(pids) >= at_least:
                        return pids
        time.sleep(0.05)
    raise AssertionError(f"no recording cgroup with {at_least} processes under {parent}")


def test_sigterm_kills_the_recordings_cgroup_and_removes_it(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with new_cgroup() as parent:
        p = subprocess.Popen([*TRAIN, "-l", "warning", "dataset-proc", "--out", str(tmp_path / "data"), "--runs", "1",
                              "--duration", "60", "--interval", "0.1", "--steps", "2", "--processes", "16",
                              "--behaviours", "spawn", "--scratch", str(scratch), "--cgroup-parent", str(parent)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            pids = _recording_pids(parent, 5)   # spawn, two backgrounds and spawn's first children
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=60)
        finally:
            kill_if_running(p)
        assert p.returncode == 130 and "interrupted" in err, err[-3000:]
        assert _children(parent) == []
    assert [q for q in pids if alive(q)] == []
    assert list(scratch.iterdir()) == []


def test_a_failed_recording_and_a_stale_cgroup_are_cleaned_up(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with new_cgroup() as parent:
        # what a run killed by SIGKILL leaves: its cgroup (owner pid above pid_max: never alive), a process in it
        stale = parent / "malsensor-dataset-4194400"
        stale.mkdir()
        left = sleepers_in(stale, 1)
        try:
            r = subprocess.run([*TRAIN, "-l", "warning", "dataset-proc", "--out", str(not_a_folder / "data"), "--runs",
                                "1", "--duration", "0.5", "--interval", "0.1", "--steps", "2", "--processes", "16",
                                "--behaviours", "miner", "--scratch", str(scratch), "--cgroup-parent", str(parent)],
                               capture_output=True, text=True, timeout=300)
            left[0].wait(timeout=10)            # SIGKILLed by dataset-proc, reaped here
        finally:
            kill_all(left)
        assert r.returncode != 0 and str(not_a_folder) in r.stderr, r.stderr[-3000:]
        assert "removing " + str(stale) in r.stderr
        assert _children(parent) == []
    assert list(scratch.iterdir()) == []
    assert _cmdlines_with(str(scratch)) == []


def test_a_cgroup_parent_outside_cgroup2_is_refused_before_anything_runs(tmp_path):
    r = subprocess.run([*TRAIN, "dataset-proc", "--out", str(tmp_path / "d"), "--cgroup-parent", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert f"malsensor-train: dataset-proc: --cgroup-parent {tmp_path} is not inside a cgroup v2 hierarchy (" \
        in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


def test_unknown_behaviour_is_named(tmp_path):
    r = subprocess.run([*TRAIN, "dataset-proc", "--out", str(tmp_path), "--behaviours", "idle,rootkit"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "dataset-proc: unknown behaviour(s) rootkit (known: compile, compress, web, churn, idle, miner, " \
           "ransom, spawn, portscan, upload)" in r.stderr
