"""What classifying first payloads (``service`` by signature, daemon/flows/signature.py) costs
decode + tracking: the same packet batches (held in memory) decoded and tracked with the frames
handed to the tracker (the daemon's way: each direction's first TCP/UDP payload classified,
its bytes still in cache from the decoder) and without (``frames=None``: no classification),
taking turns in one process so that a busy moment of a shared machine hits both alike; the
least CPU time of each counts.

    .venv/bin/python bench/bench_service_sig.py [--repeat 4] [--runs 5] [--iot]

Prints packets, connections, first payloads classified, CPU seconds per pass, ns per packet and
per classification (the difference over the classified payloads).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import build  # noqa: E402

from malsensor.daemon.capture.pcapfile import read_capture  # noqa: E402
from malsensor.daemon.decode import decode_batch  # noqa: E402
from malsensor.daemon.flows import layout as L  # noqa: E402
from malsensor.daemon.flows.config import TrackerConfig  # noqa: E402
from malsensor.daemon.flows.table import FlowTracker  # noqa: E402


def one_pass(batches, with_frames: bool) -> tuple[float, int, int]:
    """(CPU s, connections, directions classified) of decoding and tracking every batch once."""
    tk = FlowTracker(TrackerConfig())
    conns = classified = 0
    d = None
    c0 = time.process_time()
    for b in batches:
        d = decode_batch(b, d)
        for rec in tk.update(b.ts_ns, b.wirelen, d, copy=False, frames=b if with_frames else None):
            conns += rec.shape[0]
            classified += int((L.s_payload_class(rec) > 0).sum() + (L.d_payload_class(rec) > 0).sum())
    for rec in tk.flush():
        conns += rec.shape[0]
        classified += int((L.s_payload_class(rec) > 0).sum() + (L.d_payload_class(rec) > 0).sum())
    return time.process_time() - c0, conns, classified


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4, help="copies of the merged shared captures")
    ap.add_argument("--runs", type=int, default=5, help="passes of each; the least CPU time counts")
    ap.add_argument("--iot", action="store_true", help="the IoT Sentinel captures instead")
    a = ap.parse_args()
    corpus = build(a.repeat, "iot" if a.iot else "all")
    batches = list(read_capture(corpus))   # in memory: no file reading in the passes
    packets = sum(b.n for b in batches)
    best = {True: float("inf"), False: float("inf")}
    counts = {}
    one_pass(batches[:4], True)   # compile / load the kernels
    one_pass(batches[:4], False)
    for _ in range(a.runs):
        for with_frames in (False, True):
            cpu, conns, classified = one_pass(batches, with_frames)
            best[with_frames] = min(best[with_frames], cpu)
            counts[with_frames] = (conns, classified)
    conns, classified = counts[True]
    extra = best[True] - best[False]
    print(f"corpus {corpus.name}: {packets:,} packets, {conns:,} connections, {classified:,} first payloads classified")
    print(f"decode + tracking without classification: {best[False]:.3f} CPU-s ({best[False] / packets * 1e9:.1f} ns/packet)")
    print(f"decode + tracking with classification:    {best[True]:.3f} CPU-s ({best[True] / packets * 1e9:.1f} ns/packet)")
    print(f"ratio {best[True] / best[False]:.3f}x; {extra / max(classified, 1) * 1e9:.0f} ns per classified payload "
          f"(best of {a.runs}, alternating)")
    assert counts[False][1] == 0 and counts[False][0] == conns


if __name__ == "__main__":
    main()
