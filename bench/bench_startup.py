"""Start-up of `malsensor extract` on a small capture: CPU and wall time, and what the imports cost.

    .venv/bin/python bench/bench_startup.py [--runs 10] [--capture FILE] [--before DIR]

1. ``malsensor extract CAPTURE -o /dev/null`` (also with ``--semantics argus`` and with
   ``-o FILE.parquet``) as a child, --runs times: min and median of CPU (user + system) and wall
   seconds; with ``--before DIR`` the older tree's the same way (``python -m malsensor.daemon.cli``);
2. the imports and set-up the command does before its first packet (what ``cmd_extract``
   imports, the parser, the tracking config, loading the ahead-of-time kernels), the same way;
   ``--before DIR``: also with DIR first on PYTHONPATH (DIR/malsensor/daemon, e.g. from
   ``git archive COMMIT daemon | tar -x -C DIR/malsensor``), side by side;
3. ``python -X importtime`` of (2): the sum of the self times and the largest top-level items
   (the minimum over the runs, per module).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import byte_compile  # noqa: E402
VENV_BIN = Path(sys.executable).parent
SETUP = """
import malsensor.daemon.cli as c
a = c.build_parser().parse_args(["extract", "x.pcap", "-o", "/dev/null"])
c.setup_logging("warning")
c._tracker_config(a)
from malsensor.daemon.capture.pcapfile import read_capture
from malsensor.daemon.outputs.rows import RowWriter
from malsensor.daemon.pipeline import ConnPipeline
from malsensor.daemon.progress import Progress
from malsensor.daemon import jit
jit._load_aot()
"""


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    cpus, walls = [], []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd="/")
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return sorted(cpus), sorted(walls)


def show(what: str, cpus: list[float], walls: list[float]) -> None:
    m = len(cpus) // 2
    print(f"{what:58s} CPU s min {cpus[0]:.3f} median {cpus[m]:.3f}   wall s min {walls[0]:.3f} median {walls[m]:.3f}")


def importtime(runs: int, env: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    best: dict[str, int] = {}
    sums = []
    for _ in range(runs):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", SETUP], env=env, capture_output=True,
                             text=True, cwd="/").stderr
        total = 0
        for line in err.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                fields = line.split(":", 1)[1].split("|")
                us, name = int(fields[0]), fields[2].rstrip()
                if not name.startswith("  "):  # a top-level import: its cumulative time
                    best[name.strip()] = min(best.get(name.strip(), 1 << 60), int(fields[1]))
                total += us
        sums.append(total / 1000)
    top = sorted(((v / 1000, k) for k, v in best.items()), reverse=True)[:8]
    return min(sums), top


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--capture", default=str(ROOT.parent / "shared/data/pcap/http_espn.pcapng"))
    ap.add_argument("--before", metavar="DIR", help="an older tree to compare the imports with")
    a = ap.parse_args()
    byte_compile()
    env = dict(os.environ)
    print(f"load average {os.getloadavg()[0]:.1f}; {a.runs} runs each")
    with tempfile.TemporaryDirectory() as td:
        variants = {"": ["-o", os.devnull], " --semantics argus": ["--semantics", "argus", "-o", os.devnull],
                    " -o FILE.parquet": ["-o", f"{td}/rows.parquet"]}
        for name, args in variants.items():
            cmd = [str(VENV_BIN / "malsensor"), "extract", a.capture, *args]
            show(f"malsensor extract {Path(a.capture).name}{name}", *timed(cmd, a.runs, env))
            if a.before:
                cmd = [sys.executable, "-m", "malsensor.daemon.cli", "extract", a.capture, *args]
                show(f"  the same, --before tree", *timed(cmd, a.runs, dict(env, PYTHONPATH=a.before)))
    trees = [("this tree", env)]
    if a.before:
        trees.insert(0, ("--before " + a.before, dict(env, PYTHONPATH=a.before)))
    for name, tenv in trees:
        show(f"imports and set-up before the first packet ({name})",
             *timed([sys.executable, "-c", SETUP], a.runs, tenv))
    for name, tenv in trees:
        total, top = importtime(a.runs, tenv)
        print(f"-X importtime ({name}): {total:.0f} ms self time in all (min of {a.runs}); largest top-level: "
              + ", ".join(f"{k} {v:.0f}" for v, k in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
