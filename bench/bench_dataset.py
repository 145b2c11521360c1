"""Dataset building (captures -> Parquet shards) on N local worker processes vs 1 process.

    .venv/bin/python bench/bench_dataset.py [--data ../shared/data/iot_sentinel] [--workers 2] [--repeat 2]

Builds the same dataset folder (``malsensor-train dataset``, labels from the IoT Sentinel
MAC table) with ``--workers 1`` (in this process) and ``--workers N`` (spawned processes),
each run with ``--rebuild`` so every capture is extracted again, alternating the two so
that load on a shared machine hits both alike; then a run without ``--rebuild`` (every
shard reused: hashing only). Prints wall seconds per run, the best of each and the ratio.
Each build runs in a fresh interpreter, as the command does (worker start-up included).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IOT = REPO.parent / "shared" / "data" / "iot_sentinel"


def build(data: Path, out: Path, workers: int, rebuild: bool) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "malsensor.models.cli", "dataset", "--data", str(data), "--out", str(out),
           "--workers", str(workers), "--macs", str(data / "device_macs.csv"), "-l", "warning"]
    if rebuild:
        cmd.append("--rebuild")
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if p.returncode not in (0, 1):
        sys.exit(f"dataset failed: {p.stderr[-2000:]}")
    return dt, p.stdout.strip().splitlines()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=IOT)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    if not (a.data / "device_macs.csv").exists():
        sys.exit(f"{a.data}: no device_macs.csv (IoT Sentinel captures expected)")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    times: dict[int, list[float]] = {1: [], a.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        build(a.data, out, a.workers, False)         # warm the page cache
        for r in range(a.repeat):
            for w in (1, a.workers):
                dt, line = build(a.data, out, w, True)
                times[w].append(dt)
                print(f"run {r + 1}  workers {w}: {dt:6.1f} s   {line}")
        dt, line = build(a.data, out, a.workers, False)
        print(f"unchanged inputs, workers {a.workers}: {dt:.1f} s   {line}")
    b1, bn = min(times[1]), min(times[a.workers])
    print(f"best: 1 process {b1:.1f} s, {a.workers} processes {bn:.1f} s, speed-up {b1 / bn:.2f}x "
          f"(load average now {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
