"""Speed of the ct_* connection-context counters (daemon/views/context.py).

    .venv/bin/python bench/bench_context.py [--n 1000000] [--ids 50]

Random connections (``--ids`` distinct values per field, so the ring holds many matches),
counted over the default window of 100 connections; best of 3 runs, wall clock.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--ids", type=int, default=50)
    a = ap.parse_args()
    from malsensor.daemon.views import context as C

    rng = np.random.default_rng(0)
    cols = [rng.integers(0, a.ids, a.n) for _ in range(5)]
    cols += [rng.integers(0, len(C.STATE_NAMES), a.n).astype(np.int8), rng.integers(0, 256, a.n),
             rng.integers(0, 256, a.n)]
    C.context_counters(*[c[:200] for c in cols])          # compile / load the cached kernels
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        C.context_counters(*cols)
        best = min(best, time.perf_counter() - t0)
    print(f"ct_* counters, window {C.WINDOW}: {a.n} connections in {best:.3f} s: "
          f"{a.n / best / 1e6:.2f} M connections/s, {best / a.n * 1e9:.0f} ns per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
