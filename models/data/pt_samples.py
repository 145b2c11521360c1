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
import time
from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.pt.decoder import decode
from malsensor.daemon.pt.packets import ERROR, ERROR_NAMES
from malsensor.daemon.pt.samples import PtSample, SampleError, read_barnum, read_libxdc
from malsensor.daemon.pt.tokens import trace_windows

from .table import DataStats, Part

log = logging.getLogger("malsensor.train.pt")


def first_error(data: bytes) -> str:
    """Where decoding first fails, for messages: ``the first at byte N (kind)`` (decodes again
    with the packet rows, so only on the error path)."""
    r = decode(data, packets=True)
    bad = np.flatnonzero(r.packets.type == ERROR)
    if bad.size == 0:
        return ""
    k = int(bad[0])
    return f", the first at byte {int(r.packets.offset[k])} ({ERROR_NAMES.get(int(r.packets.aux[k]), '?')})"


def windows_of(sample: PtSample, view: ViewInfo) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, seq_len, 2) float64, relative positions (n,)) of one sample; logs one line."""
    t0 = time.perf_counter()
    seq_len = int(view.shape[0])
    tip_only = tuple(view.columns) == ("tip_hi", "tip_lo")
    data = sample.read_trace()
    x, _, n_tokens, counters = trace_windows(data, sample.modules, seq_len, seq_len, tip_only)
    errors = f"{counters.n_errors} decode errors{first_error(data) if counters.n_errors else ''}"
    if n_tokens == 0:
        raise SampleError(f"{sample.trace}: no control-flow tokens in {counters.bytes_in} bytes ({errors})")
    log.info("%s (%s): %d windows from %d tokens, %d bytes, %s, %.2f s", sample.name, sample.label,
             x.shape[0], n_tokens, counters.bytes_in, errors, time.perf_counter() - t0)
    pos = np.arange(x.shape[0], dtype=np.float64) / max(x.shape[0] - 1, 1)
    return x.astype(np.float64), pos


# Below this much sample data one process reads faster than starting workers: a spawned worker
# took 3-8 s to import numpy/numba and load the decoder's kernels before its first sample, while
# one process decoded and cut the 0.9 MB of the real recordings' ten samples (22,144 windows) in
# 2.7 s, mostly that same loading (measured on the shared 2-core machine).
PARALLEL_MIN_BYTES = 64 << 20


def _size(files) -> int:
    """Bytes of sample data behind ``files`` (a Barnum folder's files, a libxdc table's tree)."""
    total = 0
    for f, t in files:
        folder = Path(f).parent
        for p in (folder.iterdir() if t == "barnum" else folder.rglob("*")):
            try:
                total += p.stat().st_size if p.is_file() else 0
            except OSError:
                pass
    return total


class PtSampleReader:
    description = "processor-trace samples (Barnum folders: info.txt; libxdc: TEST_CASES.tsv)"

    def read_all(self, files, view: ViewInfo, opts, stats: DataStats):
        """The parts of ``files`` in order: read by worker processes (models/data/pt_workers.py)
        unless ``opts.workers`` is 1 or there is a single file."""
        from .pt_workers import ParallelRead, auto_workers

        n = opts.workers or (auto_workers(len(files)) if _size(files) >= PARALLEL_MIN_BYTES else 1)
        if n <= 1 or len(files) <= 1:
            return (self.read(f, t, view, opts, stats) for f, t in files)
        return iter(ParallelRead(files, view, opts, stats, n))

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
                log.info("skipped %s", why)
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
