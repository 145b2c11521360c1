"""Trainer-side reader of the ``pt_tokens@1`` view: processor-trace samples.

It reads the two layouts of daemon/pt/samples.py: a Barnum sample folder (found through its
``info.txt``; the label is its second line) and a libxdc ``TEST_CASES.tsv`` (every present
case; the label is the case, for program identification). Each trace is decoded by the
numba decoder and cut into non-overlapping windows of the view's ``seq_len`` (training
never sees a token twice, and a split by position puts no window on both sides; the
daemon's ``stride`` only says where live windows start).

Each row's ``ts`` is its window's relative position in its trace (0 = first window,
1 = last), so ``split = "time"`` splits every trace by position: the first 60 % of each
trace trains, the next 20 % validates, the last 20 % tests. ``groups`` stay per file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.pt.samples import PtSample, SampleError, read_barnum, read_libxdc
from malsensor.daemon.pt.tokens import trace_windows

from .table import DataStats, Part

log = logging.getLogger("malsensor.train.pt")


def windows_of(sample: PtSample, view: ViewInfo) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, seq_len, 2) float64, relative positions (n,)) of one sample, in chunks."""
    seq_len = int(view.shape[0])
    tip_only = tuple(view.columns) == ("tip_hi", "tip_lo")
    x, _, n_tokens, counters = trace_windows(sample.read_trace(), sample.modules, seq_len, seq_len, tip_only)
    if n_tokens == 0:
        raise SampleError(f"{sample.trace}: no control-flow tokens ({counters.bytes_in} bytes, "
                          f"{counters.n_errors} decode errors)")
    pos = np.arange(x.shape[0], dtype=np.float64) / max(x.shape[0] - 1, 1)
    return x.astype(np.float64), pos


class PtSampleReader:
    description = "processor-trace samples (Barnum folders: info.txt; libxdc: TEST_CASES.tsv)"

    def file_type(self, path: Path) -> str | None:
        if path.name == "info.txt":
            return "barnum"
        if path.name == "TEST_CASES.tsv":
            return "libxdc"
        return None

    def read(self, path: Path, file_type: str, view: ViewInfo, opts, stats: DataStats) -> Part:
        if file_type == "barnum":
            try:
                samples = [read_barnum(path.parent)]
            except (SampleError, OSError) as e:
                stats.bad(str(path.parent), str(e), opts.skip_bad)
                samples = []
        else:
            got = read_libxdc(path)
            for where, why in got.skipped:
                log.info("skipped %s: %s", where, why)
            samples = got.samples
        xs, labels, ts = [], [], []
        for s in samples:
            try:
                x, pos = windows_of(s, view)
            except (SampleError, OSError) as e:
                stats.bad(str(s.where), str(e), opts.skip_bad)
                continue
            xs.append(x)
            labels += [s.label] * x.shape[0]
            ts.append(pos)
        stats.rows_read += len(labels)
        if not xs:
            return Part(str(path), np.zeros((0, *view.shape)), [], ts=np.zeros(0))
        return Part(str(path), np.concatenate(xs), labels, ts=np.concatenate(ts))


READER = PtSampleReader()
