"""Intel PT decoding speed: malsensor's numba decoder vs libipt's packet decoder in C, side by side.

Inputs: (1) the real recordings of ../shared/data/pt/libxdc concatenated (repeated to
--min-mb), (2) a stream of --encoder-mb (default 512) MB from the test encoder
(tests/pt_encoder.py: random branch sequences with every IP form, PSB and OVF; one
~4 MB program tiled, each copy starting at a PSB). For each input, in one run:

  libipt      bench/c/pt_libipt_walk.c, compiled here against libipt-dev: pt_pkt_sync_forward /
              pt_pkt_next over the buffer (packets only, no tokens)
  decode      malsensor, packets counted by type (no output arrays)
  +tokens     malsensor, decode + the token output (TIP/TIP.PGE/FUP IPs, TNT bits in order)
  +packets    malsensor, decode + the full structure-of-arrays + tokens

MB/s of raw trace on one core (CPU time, best of --runs), and the ratio to libipt.

    .venv/bin/python bench/bench_pt.py [--runs 3] [--encoder-mb 512]
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from pt_data import recordings  # noqa: E402
from pt_encoder import random_program  # noqa: E402

from malsensor.daemon.pt.decoder import decode_chunks  # noqa: E402


def build_walker(tmp: Path) -> Path:
    exe = tmp / "pt_libipt_walk"
    src = HERE / "c" / "pt_libipt_walk.c"         # the loop itself: tests/c/pt_libipt_loop.h
    subprocess.run(["gcc", "-O2", "-I", str(REPO / "tests" / "c"), "-o", str(exe), str(src), "-lipt"], check=True)
    return exe


def libipt_mbps(exe: Path, path: Path, repeat: int) -> tuple[float, int]:
    out = subprocess.run([str(exe), str(path), str(repeat)], check=True, capture_output=True, text=True)
    nbytes, packets, seconds = out.stdout.split()
    return int(nbytes) / float(seconds) / 1e6, int(packets) // repeat


def ours_mbps(data: np.ndarray, packets: bool, tokens: bool) -> tuple[float, int, int]:
    t0 = time.process_time()
    ntok = 0
    counters = None
    for _pk, tk, counters in decode_chunks(data, packets=packets, tokens=tokens):
        ntok += len(tk) if tk is not None else 0
    dt = time.process_time() - t0
    return data.size / dt / 1e6, counters.n_packets + counters.n_errors, ntok


def encoder_stream(mb: int) -> np.ndarray:
    rng = random.Random(2024)
    pieces, size = [], 0
    while size < 4 << 20:
        data, _tokens, _forms = random_program(rng, 20_000, psb_every=2_000)
        pieces.append(np.frombuffer(data, np.uint8))
        size += len(data)
    one = np.concatenate(pieces)
    return np.tile(one, -(-(mb << 20) // one.size))


def run(name: str, data: np.ndarray, exe: Path, tmp: Path, runs: int, repeat: int) -> None:
    path = tmp / f"{name}.pt"
    data.tofile(path)
    for _ in decode_chunks(data[:100_000], tokens=True):  # compile outside the clock
        pass
    best: dict[str, float] = {}
    info = {}
    for _ in range(runs):
        mbps, pk = libipt_mbps(exe, path, repeat)
        best["libipt"] = max(best.get("libipt", 0), mbps)
        info["libipt"] = f"{pk:,} packets"
        for label, packets, tokens in (("decode", False, False), ("+tokens", False, True),
                                       ("+packets", True, True)):
            mbps, n, ntok = ours_mbps(data, packets, tokens)
            best[label] = max(best.get(label, 0), mbps)
            info[label] = f"{n:,} packets" + (f", {ntok:,} tokens" if tokens else "")
    print(f"\n{name}: {data.size / 1e6:.1f} MB")
    for label, mbps in best.items():
        ratio = mbps / best["libipt"]
        print(f"  {label:9s} {mbps:8.0f} MB/s   {ratio:5.2f} x libipt   ({info[label]})")
    path.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--encoder-mb", type=int, default=512)
    ap.add_argument("--min-mb", type=int, default=64, help="repeat the real recordings to this size")
    a = ap.parse_args()
    if not shutil.which("gcc") or not Path("/usr/include/intel-pt.h").exists():
        print("needs gcc and libipt-dev (make debs)")
        return 2
    real = np.concatenate([np.fromfile(p, np.uint8) for p in recordings()])
    print(f"real recordings: {len(recordings())} traces, {real.size:,} bytes")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_walker(tmp)
        real_big = np.tile(real, -(-(a.min_mb << 20) // real.size))
        run("real recordings (concatenated, tiled)", real_big, exe, tmp, a.runs, 1)
        run(f"encoder stream ({a.encoder_mb} MB)", encoder_stream(a.encoder_mb), exe, tmp, a.runs, 1)
    print("\nshared machine: figures are noisy; the ratios are measured side by side in one run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
