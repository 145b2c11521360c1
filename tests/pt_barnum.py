"""Barnum-layout sample folders built from the real libxdc recordings (program identification).

Each recording's trace is cut at a PSB by position: the head (about ``head`` of the bytes)
and the tail become two samples of the same program, so a model trained on heads is tested
on tails and no window is on both sides. The label (info.txt's second line) is the
recorded program; mapping.txt lists the page runs of its page image as ``START END PATH``.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from malsensor.daemon.pt.samples import read_libxdc

PSB = bytes([0x02, 0x82] * 8)
CASES = ("Unzip", "foo", "mruby", "dyn_test", "avscript_32")   # icelake_tip: 10 tokens, nothing to split


def psb_offsets(data: bytes) -> list[int]:
    out, i = [], data.find(PSB)
    while i >= 0:
        out.append(i)
        i = data.find(PSB, i + len(PSB))
    return out


def write_sample(folder: Path, name: str, label: str, modules, trace: bytes, gz: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "info.txt").write_text(f"{name}\n{label}\n")
    lines = "".join(f"{int(s):#x} {int(e):#x} /traced/{n}\n" for s, e, n in
                    zip(modules.start, modules.end, modules.names))
    if gz:
        (folder / "mapping.txt.gz").write_bytes(gzip.compress(lines.encode()))
        (folder / "trace_0.gz").write_bytes(gzip.compress(trace))
    else:
        (folder / "mapping.txt").write_text(lines)
        (folder / "trace_0").write_bytes(trace)
    return folder


def build(libxdc: Path, train_dir: Path, tail_dir: Path, head: float = 0.7) -> dict[str, tuple[int, int]]:
    """Head samples under ``train_dir``, tail samples under ``tail_dir``; returns case -> (head
    bytes, tail bytes). Every other sample is gzip-compressed (both layouts are read)."""
    got = read_libxdc(libxdc / "TEST_CASES.tsv")
    sizes = {}
    for k, s in enumerate(x for x in got.samples if x.name in CASES):
        data = s.read_trace()
        psbs = [p for p in psb_offsets(data) if p > 0]
        cut = min(psbs, key=lambda p: abs(p - head * len(data)))
        write_sample(train_dir / f"{s.name}-head", f"{s.name}-head", s.name, s.modules, data[:cut], gz=k % 2 == 1)
        write_sample(tail_dir / f"{s.name}-tail", f"{s.name}-tail", s.name, s.modules, data[cut:], gz=k % 2 == 0)
        sizes[s.name] = (cut, len(data) - cut)
    return sizes


def rng_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
