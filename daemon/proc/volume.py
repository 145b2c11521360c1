"""A window of D consecutive samples -> one volume ``(D, H, W)`` (steps x processes x metrics).

The row rule (the same in the daemon's router and in ``malsensor-train record-proc``):
every process alive in any sample of the window is a candidate, named by (pid, start time);
candidates are ranked by

1. CPU over the window (sum of cpu_user + cpu_system over its steps), most first;
2. then I/O (sum of io_read_chars_per_s + io_write_chars_per_s), most first;
3. then start time, newest first (a new process outranks an old idle one);
4. then pid, lowest first;

the first H take rows 0..H-1 in that order; each keeps its row in every step of the window
(zeros, present = 0, in steps where it was not alive). Rows after the last process are
padding: zeros, pid -1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .columns import INDEX as C, W
from .sampler import ProcSample

H_DEFAULT = 120
D_DEFAULT = 8


@dataclass
class Volume:
    x: np.ndarray          # float32 (D, H, W)
    pid: np.ndarray        # int64 (H,), -1 in padding rows
    start: np.ndarray      # int64 (H,) start time (clock ticks after boot)
    comm: list[str]        # H names ("" in padding rows)
    wall_ns: int           # the first sample's time
    end_ns: int            # the last sample's time
    processes: int         # candidates in the window (before the cap)


def build_volume(samples: Sequence[ProcSample], h: int = H_DEFAULT) -> Volume:
    d = len(samples)
    keys = np.concatenate([s.keys for s in samples]) if d else np.zeros(0, np.int64)
    uniq, inv = np.unique(keys, return_inverse=True)
    m = uniq.size
    cpu = np.zeros(m)
    io = np.zeros(m)
    pid = np.zeros(m, np.int64)
    start = np.zeros(m, np.int64)
    comm = [""] * m
    at = 0
    for s in samples:
        idx = inv[at:at + s.n]
        at += s.n
        np.add.at(cpu, idx, s.x[:, C["cpu_user"]].astype(np.float64) + s.x[:, C["cpu_system"]])
        np.add.at(io, idx, s.x[:, C["io_read_chars_per_s"]].astype(np.float64) + s.x[:, C["io_write_chars_per_s"]])
        pid[idx] = s.pid
        start[idx] = s.start
        for j, name in zip(idx.tolist(), s.comm):
            comm[j] = name
    order = np.lexsort((pid, -start, -io, -cpu))[:h]
    row_of = np.full(m, -1, np.int64)
    row_of[order] = np.arange(order.size)
    x = np.zeros((d, h, W), dtype=np.float32)
    at = 0
    for t, s in enumerate(samples):
        rows = row_of[inv[at:at + s.n]]
        at += s.n
        sel = rows >= 0
        x[t, rows[sel]] = s.x[sel]
    out_pid = np.full(h, -1, np.int64)
    out_start = np.zeros(h, np.int64)
    out_pid[:order.size] = pid[order]
    out_start[:order.size] = start[order]
    names = [comm[j] for j in order.tolist()] + [""] * (h - order.size)
    return Volume(x, out_pid, out_start, names, samples[0].wall_ns if d else 0, samples[-1].wall_ns if d else 0, m)


def top_processes(x: np.ndarray, k: int = 3, metrics: int = 3) -> list[tuple[int, list[tuple[str, float]]]]:
    """The ``k`` rows of a volume ``(D, H, W)`` that weigh most - by the same rank as the row rule
    (rows are in rank order, so the first rows that are present) - each with its ``metrics``
    largest columns relative to the volume's mean over processes (what stands out)."""
    from .columns import COLUMNS

    present = x[:, :, C["present"]].max(axis=0) > 0
    rows = np.flatnonzero(present)[:k]
    mean = x[:, present].mean(axis=(0, 1)) if present.any() else np.zeros(W)
    out = []
    for r in rows.tolist():
        v = x[:, r].mean(axis=0)
        ratio = (v + 1e-9) / (np.abs(mean) + 1e-9)
        ratio[C["present"]] = 0.0
        top = np.argsort(-ratio, kind="stable")[:metrics]
        out.append((r, [(COLUMNS[i], float(v[i])) for i in top.tolist() if v[i] != 0]))
    return out
