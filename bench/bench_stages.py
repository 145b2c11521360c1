"""Where the engine's time goes per packet: decoding, tracking, and the rest (reading the file,
the pcap record walk, the views, Python), in-process on the merged shared captures.

    .venv/bin/python bench/bench_stages.py [--repeat 4] [--runs 5]
    MALSENSOR_KERNELS=jit .venv/bin/python bench/bench_stages.py   # the kernels threads call

Each stage is timed around its call for every batch (``decode_batch`` and the tracker's
``update``), read straight after the batch was read (its bytes in cache, as in the
pipeline); the best of --runs passes per stage. Stage figures are steadier than the total on
a shared VM (the total includes the kernel's copy of the file, which varies most), so this is
the benchmark for a change to one stage: run it on both trees, alternating.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import build  # noqa: E402

from malsensor.daemon import pipeline as P  # noqa: E402
from malsensor.daemon.capture.pcapfile import read_capture  # noqa: E402
from malsensor.daemon.flows.config import TrackerConfig  # noqa: E402


def one_pass(corpus: Path, semantics: str) -> dict[str, float]:
    """ns per packet of each stage over one pass of ``corpus``."""
    spent = {"decode": 0.0, "track": 0.0}
    decode = P.decode_batch

    def timed_decode(*a, **k):
        t = time.perf_counter()
        r = decode(*a, **k)
        spent["decode"] += time.perf_counter() - t
        return r

    pipe = P.ConnPipeline(TrackerConfig.for_semantics(semantics), semantics, emit_rows=P.OFFLINE_EMIT_ROWS)
    update = pipe.tracker.update

    def timed_update(*a, **k):
        t = time.perf_counter()
        out = list(update(*a, **k))
        spent["track"] += time.perf_counter() - t
        return iter(out)

    pipe.tracker.update = timed_update
    P.decode_batch = timed_decode
    try:
        n = 0
        t0 = time.perf_counter()
        for cb in pipe.run(read_capture(corpus, reuse_buffers=True)):
            pass
        total = time.perf_counter() - t0
        n = pipe.counters.packets
    finally:
        P.decode_batch = decode
    out = {k: v / n * 1e9 for k, v in spent.items()}
    out["rest"] = (total - spent["decode"] - spent["track"]) / n * 1e9
    out["total"] = total / n * 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4, help="corpus copies (bench/corpus.py)")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    corpus = build(a.repeat)
    print(f"corpus {corpus}; ns per packet, best of {a.runs} passes per stage")
    for semantics in ("malsensor", "argus"):
        one_pass(corpus, semantics)   # kernels compiled or loaded, file in the page cache
        passes = [one_pass(corpus, semantics) for _ in range(a.runs)]
        best = {k: min(p[k] for p in passes) for k in passes[0]}
        print(f"{semantics:9}  decode {best['decode']:6.1f}  track {best['track']:6.1f}  "
              f"rest {best['rest']:6.1f}  total {best['total']:6.1f}")


if __name__ == "__main__":
    main()
