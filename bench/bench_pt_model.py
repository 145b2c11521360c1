"""Processor-trace model costs: the whole ``malsensor-train fit`` of an ``lstm`` on the
Barnum-layout folder built from the real recordings, and the artifact's inference per window
and per trace at batch 1 and batch 64.

Steps, in one run:

  build    tests/pt_barnum.py: each of five libxdc recordings cut at a PSB near 70 % of its
           bytes into a head sample (training) and a tail sample (held out), Barnum layout
  fit      ``malsensor-train fit`` on the heads in a subprocess (wall time, the child's CPU
           time and its peak RSS), with the spec of tests/test_pt_seam.py (seq_len 32, one
           LSTM layer of 32 units, 4 epochs) or --spec
  infer    the published artifact, loaded as the daemon loads it (``load_artifact``):
           per window = the windows of the tails scored one call per window (batch 1) and in
           calls of 64; per trace = every window of one tail (chunked windows, as
           ``windowing = "chunk"``) scored at batch 1 and at batch 64. Best of --runs, after
           one warm-up call per batch shape (XLA compiles per shape).

    .venv/bin/python bench/bench_pt_model.py [--runs 3] [--epochs 4] [--spec SPEC.toml]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from pt_barnum import build  # noqa: E402

from malsensor.daemon.artifact import load_artifact  # noqa: E402
from malsensor.daemon.pt.samples import read_barnum  # noqa: E402
from malsensor.daemon.pt.tokens import trace_windows  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "pt" / "libxdc"


def fit(tmp: Path, spec: Path, epochs: int | None) -> tuple[float, float, int, dict]:
    """(wall s, CPU s of the child, its peak RSS in bytes, the report's training section)."""
    cmd = [sys.executable, "-m", "malsensor.models.cli", "-l", "warning", "fit", "--model", str(spec),
           "--data", str(tmp / "train"), "--label", "label", "--out", str(tmp / "models"), "--name", "pt",
           "--reports", str(tmp / "reports")]
    if epochs:
        cmd += ["-e", str(epochs)]
    env = {k: v for k, v in os.environ.items() if k not in ("MALSENSOR_PLUGINS", "NOTIFY_SOCKET")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((tmp / "models" / "pt" / "current" / "meta.json").read_text())
    return wall, cpu, after.ru_maxrss * 1024, meta


def timed(fn, runs: int) -> tuple[float, float]:
    """Best (wall s, CPU s of this process) of ``runs``: CPU time is the steadier figure on a
    shared machine (XLA may use more than one thread, so it can exceed wall time)."""
    wall = cpu = float("inf")
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def score(art, x: np.ndarray, batch: int) -> None:
    for i in range(0, x.shape[0], batch):
        art.predict_proba(x[i:i + batch])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, help="override the spec's epochs")
    ap.add_argument("--spec", type=Path, help="lstm spec (default: tests/test_pt_seam.py's)")
    ap.add_argument("--windows", type=int, default=2048, help="windows scored for the per-window figures")
    a = ap.parse_args()
    if not (DATA / "TEST_CASES.tsv").is_file():
        print(f"needs the libxdc recordings in {DATA}")
        return 2
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sizes = build(DATA, tmp / "train", tmp / "tail")
        spec = a.spec
        if spec is None:
            import test_pt_seam

            spec = tmp / "lstm.toml"
            spec.write_text(test_pt_seam.SPEC)
        print(f"samples: {len(sizes)} heads ({sum(h for h, _ in sizes.values()) / 1e6:.1f} MB) and "
              f"{len(sizes)} tails ({sum(t for _, t in sizes.values()) / 1e6:.1f} MB) of trace")
        wall, cpu, rss, meta = fit(tmp, spec, a.epochs)
        tr = meta["training"]
        print(f"\nfit: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss / 2**20:.0f} MB; "
              f"{meta['data']['rows']:,} windows, {tr['epochs_run']} epochs; stages (s): load "
              f"{tr['seconds']['load']:.1f}, fit {tr['seconds']['fit']:.1f}, export {tr['seconds']['export']:.1f}; "
              f"test window accuracy {meta['metrics'].get('test', {}).get('accuracy', float('nan')):.4f}")
        hyper = meta["hyper"]["model"]
        print(f"model: seq_len {hyper['seq_len']}, embed {hyper['embed']}, {hyper['hidden_layers']} x LSTM "
              f"{hyper['units']}, vocabulary {meta['normalisation'].get('vocabulary')}")

        art = load_artifact(tmp / "models" / "pt")
        seq_len = int(art.view.shape[0])
        tails = [read_barnum(p) for p in sorted((tmp / "tail").iterdir())]
        per_trace = {s.name: trace_windows(s.read_trace(), s.modules, seq_len, seq_len)[0] for s in tails}
        pool = np.concatenate(list(per_trace.values()))
        x = pool[:a.windows]
        for b in (1, 64):                              # compile each batch shape outside the clock
            art.predict_proba(x[:b])
        print(f"\ninference ({x.shape[0]} windows of {seq_len} tokens; one core shared with other work):")
        (t1, c1), (t64, c64) = timed(lambda: score(art, x, 1), a.runs), timed(lambda: score(art, x, 64), a.runs)
        n = x.shape[0]
        print(f"  per window, batch 1   {t1 / n * 1e6:9.1f} us wall  {c1 / n * 1e6:9.1f} us CPU   "
              f"{n / t1:9,.0f} windows/s")
        print(f"  per window, batch 64  {t64 / n * 1e6:9.1f} us wall  {c64 / n * 1e6:9.1f} us CPU   "
              f"{n / t64:9,.0f} windows/s   (batch 64 / batch 1: {t1 / t64:.1f}x wall, {c1 / c64:.1f}x CPU)")
        print("  per trace (every chunked window of one tail), wall / CPU:")
        for name, w in sorted(per_trace.items(), key=lambda kv: kv[1].shape[0]):
            (s1, d1), (s64, d64) = timed(lambda: score(art, w, 1), a.runs), timed(lambda: score(art, w, 64), a.runs)
            print(f"    {name:18s} {w.shape[0]:6d} windows   batch 1 {s1 * 1e3:8.1f} / {d1 * 1e3:8.1f} ms   "
                  f"batch 64 {s64 * 1e3:7.1f} / {d64 * 1e3:7.1f} ms")
    print("\nshared machine: figures are noisy; batch-1/batch-64 ratios are measured side by side in one run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
