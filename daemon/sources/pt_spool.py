"""Source kind ``pt_spool``: processor-trace samples dropped into a directory.

A producer writes a Barnum-layout sample folder (info.txt, mapping.txt[.gz], trace_0[.gz];
daemon/pt/samples.py) under a name starting with ``.`` and renames it into the spool
directory when complete; the source takes every folder not starting with ``.``:

    SPOOL/NAME/          waiting          SPOOL/.processing/NAME/   being scored
    SPOOL/done/NAME/     its events written (daemon/outputs/trace.py, one per model)
    SPOOL/quarantine/NAME/ + NAME.reason  unreadable (the reason, one line)

Restart-safe: at start, samples left in ``.processing`` (a crash mid-way) go back to the
spool and are processed again; a sample moves to done/ only after its events were
formatted, so each sample gives one event per model.

``finite`` is declared so that full model queues make the spool wait (back-pressure)
rather than drop windows of a trace; the source ends only with ``once = true`` (process what
is there, then stop: replays and tests).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..pt import pending
from ..pt.samples import SampleError, read_barnum
from ..schema import opt
from . import SourceContext, ThreadSource, register_source

log = logging.getLogger("malsensor.pt_spool")

PROCESSING = ".processing"
DONE = "done"
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class PtSpoolConfig:
    """[[source]] kind = "pt_spool": classify processor traces dropped into a directory."""

    kind: ClassVar[str] = "pt_spool"
    directory: str = opt(MISSING, "the spool directory (samples are renamed into it when complete)", path=True)
    poll: float = opt(0.5, "seconds between scans of the directory", min=0.01, max=3600.0)
    once: bool = opt(False, "process the samples present at start (and any arriving meanwhile), then stop")


@register_source
class PtSpoolSource(ThreadSource):
    kind = "pt_spool"
    produces = "pt_samples"
    config = PtSpoolConfig
    finite = True
    thread_name = "malsensor-pt-spool"
    description = "processor-trace samples renamed into a spool directory"

    def __init__(self, cfg: PtSpoolConfig, ctx: SourceContext) -> None:
        super().__init__(cfg, ctx)
        self.root = Path(cfg.directory)
        self.beat_at = time.monotonic()
        self.counters = {"pt_samples_taken": 0, "pt_samples_done": 0, "pt_samples_quarantined": 0,
                         "pt_samples_requeued": 0, "pt_tokens": 0, "pt_bytes": 0, "pt_decode_errors": 0}
        self._lock = threading.Lock()
        self._mine: set[int] = set()   # its traces (pending.py) not finished yet

    @classmethod
    def preload(cls) -> None:
        from ..pt import decoder, tokens  # noqa: F401
        from ..views import pt_tokens  # noqa: F401

    def describe(self) -> str:
        return f"processor-trace spool {self.root}"

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for sub in (PROCESSING, DONE, QUARANTINE):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for left in sorted((self.root / PROCESSING).iterdir()):   # a crash mid-way: process again
            os.replace(left, self._free(self.root / left.name))
            self.counters["pt_samples_requeued"] += 1
            log.warning("pt_spool: %s was being processed at the last stop; processing it again", left.name)
        super().start()

    def stats(self) -> dict:
        with self._lock:
            mine = sum(pending.get(seq) is not None for seq in self._mine)
        return dict(self.counters, pt_samples_in_flight=mine)

    # ------------------------------------------------------------ work
    def _waiting(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.iterdir()
                          if p.is_dir() and not p.name.startswith(".") and p.name not in (DONE, QUARANTINE))
        except OSError as e:
            log.error("pt_spool: cannot list %s: %s", self.root, e)
            return []

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.beat_at = time.monotonic()
            waiting = self._waiting()
            for folder in waiting:
                if self.stop_event.is_set():
                    break
                self._take(folder)
            if not waiting and self.cfg.once:
                while self._in_flight() and not self.stop_event.is_set():   # wait for its events
                    self.stop_event.wait(0.05)
                break
            if not waiting:
                self.stop_event.wait(self.cfg.poll)

    def _take(self, folder: Path) -> None:
        from ..pt.decoder import decode
        from ..pt.tokens import module_hash
        from ..views.pt_tokens import PtTraceBatch

        work = self.root / PROCESSING / folder.name
        try:
            os.replace(folder, work)
        except OSError as e:
            log.error("pt_spool: cannot take %s: %s", folder, e)
            return
        with self._lock:
            self.counters["pt_samples_taken"] += 1
        try:
            sample = read_barnum(work)
            data = sample.read_trace()
            r = decode(data, packets=False, tokens=True)
            if len(r.tokens) == 0:
                raise SampleError(f"{sample.trace}: no control-flow tokens in {len(data)} bytes of trace "
                                  f"({r.counters.resyncs} resyncs)")
        except (SampleError, OSError) as e:
            self._quarantine(work, str(e).replace(str(work), str(folder)))
            return
        except Exception as e:  # bad input never stops the spool: say what and where, keep going
            self._quarantine(work, f"{folder}: {type(e).__name__}: {e}".replace(str(work), str(folder)))
            return
        with self._lock:
            self.counters["pt_tokens"] += len(r.tokens)
            self.counters["pt_bytes"] += len(data)
            self.counters["pt_decode_errors"] += r.counters.n_errors
        t = pending.register(sample.name, sample.label, str(folder), self._finished)
        with self._lock:
            self._mine.add(t.seq)
        hashes = np.asarray([module_hash(m) for m in sample.modules.names], np.int64)
        batch = PtTraceBatch(t.seq, r.tokens.kind, r.tokens.ip, r.tokens.offset, sample.modules, hashes)
        self.ctx.dispatch(batch, self._beat)
        pending.mark_dispatched(t.seq)

    def _in_flight(self) -> int:
        with self._lock:
            self._mine = {seq for seq in self._mine if pending.get(seq) is not None}
            return len(self._mine)

    def _beat(self) -> None:
        self.beat_at = time.monotonic()

    def _finished(self, t: pending.TraceInFlight) -> None:
        name = Path(t.source).name
        src = self.root / PROCESSING / name
        try:
            os.replace(src, self._free(self.root / DONE / name))
        except OSError as e:
            log.error("pt_spool: cannot move %s to done/: %s", src, e)
            return
        with self._lock:
            self.counters["pt_samples_done"] += 1

    def _quarantine(self, work: Path, reason: str) -> None:
        dest = self._free(self.root / QUARANTINE / work.name)
        log.warning("pt_spool: quarantined %s: %s", work.name, reason)
        try:
            os.replace(work, dest)
            dest.with_name(dest.name + ".reason").write_text(reason.replace("\n", " ") + "\n")
        except OSError as e:
            log.error("pt_spool: cannot quarantine %s: %s", work, e)
        with self._lock:
            self.counters["pt_samples_quarantined"] += 1

    @staticmethod
    def _free(path: Path) -> Path:
        """``path``, or ``path.1``, ``path.2``... when it exists (a sample sent twice)."""
        if not path.exists():
            return path
        k = 1
        while path.with_name(f"{path.name}.{k}").exists():
            k += 1
        return path.with_name(f"{path.name}.{k}")
