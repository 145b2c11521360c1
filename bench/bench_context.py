"""What the connection-context columns cost per finished connection: UNSW-NB15's ``ct_*``
counters (conn_ctx@1, daemon/views/context.py), the source-MAC profiles (conn_profile@1,
daemon/views/conn_profile.py) and the device bags (device_bag@1, daemon/views/device_bag.py:
``--bag-packets`` packets of each connection hashed into its source's bag), fed in batches as a
capture thread feeds them.

    .venv/bin/python bench/bench_context.py [--connections 200000] [--sources 2000] [--batch 4096]
                                            [--bag-packets 64]

Synthetic inputs (random keys, features and packet sizes: the cost does not depend on their
values, only on how many sources share the tables and how many packets a connection has; every
connection here has the full ``--bag-packets``, the most a bag reads); best of 5 runs, kernels
compiled before timing.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from malsensor.daemon.views.context import ContextWindow
from malsensor.daemon.views.conn_profile import SourceProfiles
from malsensor.daemon.views.device_bag import DeviceBagOptions, DeviceBags


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
    ap.add_argument("--bag-packets", type=int, default=64)
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
    # device bags: finished connections 10 ms apart (each source: one every 20 s, 30 to a 600 s window)
    from malsensor.daemon.flows import layout as L
    from malsensor.daemon.flows.seq import SEQ_COLUMNS

    rec = np.zeros((n, L.N_COLS), np.int64)
    rec[:, L.SRC_MAC] = macs
    rec[:, L.FIRST_TS] = np.arange(n, dtype=np.int64) * 10_000_000
    rec[:, L.LAST_TS] = rec[:, L.FIRST_TS] + 500_000_000
    c = {name: i for i, name in enumerate(SEQ_COLUMNS)}
    seq = np.zeros((n, a.bag_packets, len(SEQ_COLUMNS)), np.float32)
    seq[:, :, c["size"]] = rng.integers(40, 1500, (n, a.bag_packets))
    seq[:, :, c["direction"]] = rng.choice([-1.0, 1.0], (n, a.bag_packets))
    seq[:, :, c["proto"]] = 6
    seq[:, :, c["mask"]] = 1
    opts = DeviceBagOptions(bag_packets=a.bag_packets)
    DeviceBags(opts).feed(rec[:8], seq[:8])   # compile

    def bags(d):
        for i in range(0, n, b):
            d.feed(rec[i:i + b], seq[i:i + b])

    bag = best_ns(lambda: DeviceBags(opts), bags, n)
    print(f"{n:,} connections, {a.sources:,} sources, batches of {b}")
    print(f"ct_* counters (last 100 connections)   {ct:6.0f} ns a connection")
    print(f"source profiles (17 features, EW)      {prof:6.0f} ns a connection  ({prof / ct:.2f}x the counters)")
    print(f"device bags ({a.bag_packets} packets, 1024 bits)   {bag:6.0f} ns a connection  ({bag / ct:.2f}x the counters; "
          f"{bag / a.bag_packets:.1f} ns a packet)")


if __name__ == "__main__":
    main()
