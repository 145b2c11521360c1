"""Reading processor-trace samples in parallel worker processes.

Decoding a trace and cutting its windows is CPU-bound Python + numba per sample file (a
Barnum ``info.txt`` or a libxdc ``TEST_CASES.tsv``), so the trainer reads them in ``workers``
processes (``spawn``: the trainer has JAX's threads running, and a forked copy of them can
deadlock). The processes run the serial reader (:class:`PtSampleReader`) unchanged, so rows
and tokens are the serial reader's exactly, and the trainer gets the parts back **in file
order** (whichever worker finishes first).

Bounded queues: at most ``2 * workers`` files are handed out ahead of the one the trainer is
waiting for (``tasks``), and finished parts wait in a queue of ``workers`` slots
(``results``), so memory stays a few samples' windows whatever the number of files.

Logs: a worker never writes to stderr itself (lines of several processes would interleave);
it captures its log records and ships them with its part, and the trainer writes them, each
as one whole line ``worker K: ...`` (one per sample, errors naming the sample and the byte
offset). A sample that cannot be read is counted and skipped (``--skip-bad``) or stops the
load with its reason, as with the serial reader; a worker that dies (a crash in native code,
the OOM killer) loses only its sample, which is reported as bad and replaced by a new worker.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError
from .table import DataStats, Part

log = logging.getLogger("malsensor.train.pt")
POLL_S = 0.5            # how often the trainer checks that its workers are alive while it waits


def auto_workers(n_files: int) -> int:
    """One worker per core (the trainer itself waits), never more than there are files."""
    return max(1, min(os.cpu_count() or 1, n_files))


class _AllBad(DataStats):
    """A worker's stats: every bad sample kept (the trainer replays them in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_all: list[tuple[str, str]] = []

    def bad(self, where: str, problem: str, skip: bool) -> None:
        self.bad_all.append((where, problem))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def _worker(wid: int, tasks, results, view: ViewInfo, opts, level: int) -> None:
    """Read files until the ``None`` task: ("start", wid, idx) then ("part", wid, idx, part,
    rows_read, bad, lines, seconds) per file."""
    from .pt_samples import READER

    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    collect = _Collect()
    root.addHandler(collect)
    root.setLevel(level)
    opts = replace(opts, skip_bad=True)      # the trainer decides, replaying the bad samples in order
    while True:
        task = tasks.get()
        if task is None:
            return
        idx, path, file_type = task
        results.put(("start", wid, idx))
        stats = _AllBad()
        collect.lines = []
        t0 = time.perf_counter()
        try:
            part = READER.read(Path(path), file_type, view, opts, stats)
        except Exception as e:   # noqa: BLE001 - a bug must name the sample, not kill the load
            stats.bad_all.append((str(path), f"{type(e).__name__}: {e}"))
            part = None
        results.put(("part", wid, idx, part, stats.rows_read, stats.bad_all, collect.lines,
                     time.perf_counter() - t0))


class ParallelRead:
    """An iterator of the parts of ``files`` in order, read by ``workers`` processes."""

    def __init__(self, files: Sequence[tuple[Path, str]], view: ViewInfo, opts, stats: DataStats,
                 workers: int) -> None:
        self.files = list(files)
        self.view, self.opts, self.stats = view, opts, stats
        self.n_workers = max(1, min(workers, len(self.files)))
        self.ctx = mp.get_context("spawn")
        self.window = 2 * self.n_workers
        self.tasks = self.ctx.Queue(maxsize=self.window)
        self.results = self.ctx.Queue(maxsize=self.n_workers)
        self.level = log.getEffectiveLevel()
        self.procs: dict[int, mp.process.BaseProcess] = {}
        self.holding: dict[int, int] = {}      # worker -> file index it is reading
        self.next_id = 0
        self.deaths = 0

    def _start_worker(self) -> None:
        wid = self.next_id
        self.next_id += 1
        p = self.ctx.Process(target=_worker, name=f"pt-reader-{wid}", daemon=True,
                             args=(wid, self.tasks, self.results, self.view, self.opts, self.level))
        p.start()
        self.procs[wid] = p

    def __iter__(self) -> Iterator[Part]:
        n = len(self.files)
        t0 = time.perf_counter()
        log.info("reading %d sample file(s) with %d worker process(es)", n, self.n_workers)
        for _ in range(self.n_workers):
            self._start_worker()
        done: dict[int, tuple] = {}
        sent = given = 0
        finished = False
        try:
            while given < n:
                while sent < n and sent - given < self.window:
                    f, t = self.files[sent]
                    self.tasks.put((sent, str(f), t))
                    sent += 1
                if given in done:
                    part = self._deliver(done.pop(given))
                    given += 1
                    yield part if part is not None else self._empty(self.files[given - 1][0])
                    continue
                try:
                    msg = self.results.get(timeout=POLL_S)
                except queue.Empty:
                    self._check_alive(done)
                    continue
                self._take(msg, done)
            finished = True
        finally:
            self._stop(finished)
        log.info("read %d sample file(s) with %d worker process(es) in %.1f s", n, self.n_workers,
                 time.perf_counter() - t0)

    def _take(self, msg: tuple, done: dict) -> None:
        if msg[0] == "start":
            self.holding[msg[1]] = msg[2]
            return
        self.holding.pop(msg[1], None)
        done[msg[2]] = msg

    def _deliver(self, msg: tuple) -> Part | None:
        """A file's part, its log lines and its bad samples, in file order (so counts, messages
        and the error that stops a load without --skip-bad are the serial reader's)."""
        _, wid, idx, part, rows_read, bad, lines, seconds = msg
        for level, line in lines:                       # whole lines, written by this process only
            log.log(level, "worker %d: %s", wid, line)
        self.stats.rows_read += rows_read
        for where, problem in bad:
            self.stats.bad(where, problem, self.opts.skip_bad)   # raises unless --skip-bad, as serially
            log.warning("worker %d: skipped %s: %s", wid, where, problem)
        return part

    def _check_alive(self, done: dict) -> None:
        for wid, p in list(self.procs.items()):
            if p.is_alive():
                continue
            del self.procs[wid]
            idx = self.holding.pop(wid, None)
            self.deaths += 1
            if self.deaths > self.n_workers + len(self.files):   # not one sample's fault: they cannot start
                raise TrainError(f"the sample reader processes keep dying (the last, worker {wid}, with exit "
                                 f"code {p.exitcode}): read with one process (--workers 1) to see why")
            if idx is not None:
                where = str(self.files[idx][0])
                done[idx] = ("part", wid, idx, None, 0, [(where, f"the worker reading it died (exit code "
                                                               f"{p.exitcode})")], [], 0.0)
            self._start_worker()

    def _empty(self, path: Path) -> Part:
        import numpy as np

        return Part(str(path), np.zeros((0, *self.view.shape)), [], ts=np.zeros(0))

    def _stop(self, finished: bool) -> None:
        """Every task was taken when the load finished: the workers get their ``None`` and exit;
        after an error they may still be reading files nobody waits for, and are terminated."""
        if finished:
            for _ in self.procs:
                self.tasks.put(None)
            deadline = time.monotonic() + 10.0
            for p in self.procs.values():
                p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()
                p.join(2.0)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        self.procs.clear()
