"""What the connection-context columns cost per finished connection: UNSW-NB15's ``ct_*``
counters (conn_ctx@1, daemon/views/context.py) and the source-MAC profiles (conn_profile@1,
daemon/views/conn_profile.py), fed in batches as a capture thread feeds them.

    .venv/bin/python bench/bench_context.py [--connections 200000] [--sources 2000] [--batch 4096]

Synthetic inputs (random keys and features: the cost does not depend on their values, only on
how many sources share the tables); best of 5 runs, kernels compiled before timing.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from malsensor.daemon.views.context import ContextWindow
from malsensor.daemon.views.conn_profile import SourceProfiles


def best_ns(make, feed, n: int, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        state = make()
        t0 = time.perf_counter()
        feed(state)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=200_000)
    ap.add_argument("--sources", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=4096)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n, b = a.connections, a.batch
    macs = rng.integers(0, a.sources, n)
    conn = rng.normal(size=(n, 17))
    ct_in = rng.integers(0, a.sources, (8, n))
    SourceProfiles().update(macs[:8], conn[:8])      # compile
    ContextWindow().update(*ct_in[:, :8])

    def profiles(p):
        for i in range(0, n, b):
            p.update(macs[i:i + b], conn[i:i + b])

    def window(w):
        for i in range(0, n, b):
            w.update(*ct_in[:, i:i + b])

    ct = best_ns(ContextWindow, window, n)
    prof = best_ns(SourceProfiles, profiles, n)
    print(f"{n:,} connections, {a.sources:,} sources, batches of {b}")
    print(f"ct_* counters (last 100 connections)   {ct:6.0f} ns a connection")
    print(f"source profiles (17 features, EW)      {prof:6.0f} ns a connection  ({prof / ct:.2f}x the counters)")


if __name__ == "__main__":
    main()
