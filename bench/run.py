"""Run the benchmarks under bench/ one after the other and print their figures.

    .venv/bin/python bench/run.py                 # all of them
    .venv/bin/python bench/run.py extract memory  # bench_extract.py and bench_memory.py only
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if wanted:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
        missing = wanted - {s.stem.removeprefix("bench_") for s in scripts}
        if missing:
            print(f"no such benchmark: {', '.join(sorted(missing))} "
                  f"(have: {', '.join(s.stem.removeprefix('bench_') for s in sorted(HERE.glob('bench_*.py')))})")
            return 2
    failed = []
    for s in scripts:
        print(f"\n=== {s.name} ===", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, str(s)])
        print(f"--- {s.name}: exit {rc}, {time.monotonic() - t0:.0f} s", flush=True)
        if rc:
            failed.append(s.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
