"""Flow-table memory: 1,000,000 concurrent connections inside the configured bound.

Feeds 1.2 million distinct UDP connections (crafted frames, one packet each,
built with numpy) through decode + tracking with max_flows = 1,000,000 and
reports the table's bytes per flow, the process's RSS growth, the peak of
tracked connections and the evictions (the 200,000 beyond the bound).

    .venv/bin/python bench/bench_memory.py [--flows 1200000] [--max-flows 1000000]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from malsensor.daemon.capture.batch import LINKTYPE_ETHERNET, NO_VLAN, PacketBatch
from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.pipeline import ConnPipeline


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def udp_batch(first: int, n: int, t0_ns: int) -> PacketBatch:
    tpl = np.frombuffer(bytes(Ether() / IP(src="10.0.0.0", dst="192.0.2.1") / UDP(sport=1, dport=53) / b"12345678"),
                        dtype=np.uint8)
    size = tpl.shape[0]
    buf = np.tile(tpl, n)
    k = np.arange(first, first + n, dtype=np.uint32)
    rows = buf.reshape(n, size)
    src = (np.uint32(10 << 24) | (k >> 8)).astype(">u4").view(np.uint8).reshape(n, 4)
    rows[:, 26:30] = src
    rows[:, 34:36] = ((k & 0xFF) + 1024).astype(">u2").view(np.uint8).reshape(n, 2)
    caplen = np.full(n, size, dtype=np.int32)
    return PacketBatch(buf=buf, offset=np.arange(n, dtype=np.int64) * size, caplen=caplen, wirelen=caplen.copy(),
                       ts_ns=t0_ns + np.arange(first, first + n, dtype=np.int64) * 1000,
                       linktype=np.full(n, LINKTYPE_ETHERNET, dtype=np.int32), vlan=np.full(n, NO_VLAN, dtype=np.int32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=1_200_000)
    ap.add_argument("--max-flows", type=int, default=1_000_000)
    a = ap.parse_args()
    list(ConnPipeline(TrackerConfig(max_flows=16)).run([udp_batch(0, 64, 0)]))  # load compiled kernels
    before = rss_mb()
    pipe = ConnPipeline(TrackerConfig(max_flows=a.max_flows, udp_idle_timeout=3600))
    table_mb = (pipe.tracker.table.nbytes + pipe.tracker.index.nbytes + pipe.tracker.perm.nbytes) / 2**20
    peak = emitted = 0
    t0 = time.perf_counter()
    chunk = 65_536
    for first in range(0, a.flows, chunk):
        b = udp_batch(first, min(chunk, a.flows - first), 1_700_000_000 * 10**9)
        for cb in pipe.feed(b):
            emitted += cb.n
        peak = max(peak, pipe.tracker.active)
    el = time.perf_counter() - t0
    st = pipe.tracker.stats()
    after = rss_mb()
    print(f"connections fed            {a.flows:,} (one packet each, {a.flows / el / 1e6:.2f} M new flows/s)")
    print(f"max_flows                  {a.max_flows:,}")
    print(f"peak tracked connections   {peak:,}  (bound respected: {peak <= a.max_flows})")
    print(f"evicted                    {st['flows_evicted']:,}  emitted while feeding {emitted:,}")
    print(f"table memory               {table_mb:,.1f} MiB = {st['bytes_per_flow']:.1f} bytes/flow (target <= 256)")
    print(f"process RSS                {before:,.0f} -> {after:,.0f} MiB (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB)")
    assert peak <= a.max_flows and st["flows_evicted"] == max(0, a.flows - a.max_flows)


if __name__ == "__main__":
    main()
