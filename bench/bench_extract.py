"""Feature extraction speed: malsensor vs Argus on the same real capture, side by side.

Runs, one after the other on the merged corpus (bench/corpus.py, file in page cache):
  1. malsensor in-process (decode + tracking + 17 features), steady state after warm-up
  2. `malsensor extract CORPUS --semantics argus -o /dev/null` end to end (start-up included)
  3. `argus -X -J -S 3600 -r CORPUS -w OUT`
and prints packets/s, CPU seconds and the ratios (each the best of --runs runs by CPU time; the
in-process runs at least 5 times).

    .venv/bin/python bench/bench_extract.py [--repeat 10]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import build  # noqa: E402

from malsensor.daemon.capture.pcapfile import read_capture  # noqa: E402
from malsensor.daemon.flows.config import TrackerConfig  # noqa: E402
from malsensor.daemon.pipeline import OFFLINE_EMIT_ROWS, ConnPipeline  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def child_cpu(cmd: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s, max RSS KiB) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed:\n{err}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def in_process(corpus: Path, semantics: str) -> tuple[int, int, float, float]:
    pipe = ConnPipeline(TrackerConfig.for_semantics(semantics), semantics, emit_rows=OFFLINE_EMIT_ROWS)
    t0, c0 = time.perf_counter(), time.process_time()
    conns = 0
    for cb in pipe.run(read_capture(corpus, reuse_buffers=True)):
        conns += cb.n
    return pipe.counters.packets, conns, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description="malsensor extract vs argus")
    ap.add_argument("--repeat", type=int, default=10, help="copies of the merged shared captures")
    ap.add_argument("--semantics", default="malsensor,argus", help="comma-separated (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each; the least CPU time counts (%(default)s)")
    a = ap.parse_args()
    corpus = build(a.repeat)
    size = corpus.stat().st_size
    subprocess.run(["cat", str(corpus)], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    in_process(build(1), "malsensor")  # warm-up: numba kernels compiled/loaded from cache
    print(f"corpus {corpus} ({size / 1e6:,.0f} MB)")
    rows = []
    for sem in a.semantics.split(","):
        runs = [in_process(corpus, sem) for _ in range(max(a.runs, 5))]  # ~0.3 s each: more runs, less noise
        pk, conns, wall, cpu = min(runs, key=lambda r: r[3])
        rows.append((f"malsensor in-process ({sem})", pk, wall, cpu, None))
    npk = rows[0][1]
    wall, cpu, rss = child_cpu([str(VENV_BIN / "malsensor"), "extract", str(corpus), "--semantics", a.semantics.split(",")[-1],
                                "-o", os.devnull])
    rows.append((f"malsensor extract CLI ({a.semantics.split(',')[-1]}, with start-up, JSONL)", npk, wall, cpu, rss))
    argus = shutil.which("argus")
    if argus is None:
        sys.exit("argus is not installed (apt-get install argus-server)")
    runs = []
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory() as td:
            runs.append(child_cpu([argus, "-X", "-J", "-S", "3600", "-r", str(corpus), "-w", f"{td}/out.argus"]))
    wall, cpu, rss = min(runs, key=lambda r: r[1])
    rows.append(("argus -X -J -S 3600 -r", npk, wall, cpu, rss))
    print(f"{'what':58s} {'packets':>10s} {'wall s':>8s} {'CPU s':>8s} {'Mpkt/s':>8s} {'Mpkt/CPU-s':>10s} {'maxRSS MB':>9s}")
    for name, pk, wall, cpu, rss in rows:
        print(f"{name:58s} {pk:10,d} {wall:8.2f} {cpu:8.2f} {pk / wall / 1e6:8.2f} {pk / cpu / 1e6:10.2f} "
              f"{'' if rss is None else f'{rss / 1024:9.0f}'}")
    argus_rate = rows[-1][1] / rows[-1][3]
    for name, pk, wall, cpu, _ in rows[:-1]:
        print(f"ratio vs argus (packets per CPU-second): {name}: {pk / cpu / argus_rate:.1f}x")


if __name__ == "__main__":
    main()
