"""Cost of the extract row formats per connection: RowWriter (JSONL, CSV, Parquet) to a file.

The connections of the IoT Sentinel captures merged x2 (bench/corpus.py; Argus semantics, ~24 k
rows) are extracted once; each format then writes all of them --repeat times into a temporary
file, and the best run counts (µs of CPU per row). ``--before DIR`` runs the same in a child
with an older tree first on PYTHONPATH (DIR/malsensor/daemon, with its ahead-of-time kernels:
see bench_extract.py --before), side by side.

    .venv/bin/python bench/bench_rows.py [--repeat 7] [--before DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FORMATS = ("jsonl", "csv", "parquet")


def measure(repeat: int) -> dict[str, float]:
    """µs of CPU per row of each format, in this process (whatever malsensor it imports)."""
    import numpy as np

    from corpus import build

    from malsensor.daemon.flows.config import TrackerConfig
    from malsensor.daemon.outputs.rows import RowWriter
    from malsensor.daemon.pipeline import extract_file

    cbs = list(extract_file(build(2, "iot"), TrackerConfig.for_semantics("argus"), "argus"))
    rec = np.concatenate([cb.records for cb in cbs])
    ftr = np.concatenate([cb.features for cb in cbs])
    n = rec.shape[0]
    out = {"rows": n}
    with tempfile.TemporaryDirectory() as td:
        for fmt in FORMATS:
            best = None
            for _ in range(repeat):
                with open(f"{td}/rows.{fmt}", "wb") as f:
                    t = time.process_time()
                    w = RowWriter(f, fmt)
                    for a in range(0, n, 16_384):  # the CLI's batches (OFFLINE_EMIT_ROWS)
                        w.write_batch(rec[a:a + 16_384], ftr[a:a + 16_384])
                    w.close()
                    f.flush()
                    dt = time.process_time() - t
                best = dt if best is None else min(best, dt)
            out[fmt] = best / n * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--before", metavar="DIR")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the child's answer
    a = ap.parse_args()
    if a.json:
        print(json.dumps(measure(a.repeat)))
        return 0
    trees = [("this tree", dict(os.environ))]
    if a.before:
        trees.insert(0, ("--before " + a.before, dict(os.environ, PYTHONPATH=a.before)))
    print(f"load average {os.getloadavg()[0]:.1f}; µs of CPU per row, best of {a.repeat}")
    for name, env in trees:
        got = json.loads(subprocess.run([sys.executable, __file__, "--json", "--repeat", str(a.repeat)], env=env,
                                        capture_output=True, text=True, check=True, cwd="/").stdout)
        print(f"{name:40s} {got['rows']:,} rows  " + "  ".join(f"{f} {got[f]:.2f}" for f in FORMATS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
