"""The single event writer: every output file is written by this one thread.

Model workers hand it :class:`PredictionBatch` objects through a bounded queue (they wait
when it is full; their own queues absorb bursts and count drops). Control requests -
reopen the files (SIGHUP, logrotate), replace the output list (configuration reload) -
travel through the same queue, so they happen between batches, never inside one.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from ..outputs.eve import EventFile, PredictionBatch, label_lines
from ..outputs.events import FORMATTERS
from .config import OutputSection
from .stats import LatencyStats

log = logging.getLogger("malsensor.output")

_STOP = object()
REPORT_EVERY_S = 60.0


def open_output(cfg: OutputSection):
    """The object that takes an output's lines: a file, or a redis sender (imported only when used)."""
    if cfg.kind == "redis":
        from ..outputs.redis import RedisOutput

        return RedisOutput(cfg)
    return EventFile(cfg.path)


@dataclass
class Output:
    cfg: OutputSection
    file: EventFile  # or a RedisOutput: the same open/write/close and counters
    reported: str | None = None
    reported_at: float = 0.0

    def wants(self, model: str) -> bool:
        return not self.cfg.models or model in self.cfg.models


class EventWriter(threading.Thread):
    def __init__(self, outputs: Sequence[OutputSection], latency: LatencyStats, maxsize: int = 256) -> None:
        super().__init__(name="malsensor-writer", daemon=True)
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.latency = latency
        self.outputs: list[Output] = [Output(o, open_output(o)) for o in outputs]
        self.heartbeat = time.monotonic()
        self.events = 0          # predictions handled (written to every output that wants them)
        self.busy_since: float | None = None
        self.retired: dict[str, dict] = {}  # counters of outputs removed by a reload

    # ---------------------------------------------------------------- other threads

    def submit(self, pb: PredictionBatch) -> None:
        self.q.put(pb)

    def open_all(self) -> list[str]:
        """Open every file now (before the daemon reports ready); returns the errors."""
        errs = []
        for o in self.outputs:
            if not o.file.open():
                errs.append(o.file.last_error or o.cfg.target)
                o.reported = o.file.last_error
        return errs

    def reopen(self) -> threading.Event:
        done = threading.Event()
        self.q.put(("reopen", None, done))
        return done

    def reconfigure(self, outputs: Sequence[OutputSection]) -> threading.Event:
        done = threading.Event()
        self.q.put(("reconfigure", tuple(outputs), done))
        return done

    def stop(self, timeout: float = 30.0) -> None:
        self.q.put(_STOP)
        self.join(timeout)

    def counters(self) -> dict[str, dict]:
        out = dict(self.retired)
        for o in self.outputs:
            out[o.cfg.target] = _counters(o)
        return out

    def line_totals(self) -> tuple[int, int]:
        """(event lines that reached their files, event lines lost to output errors), over
        every output, retired ones included: what the shutdown line reports."""
        c = self.counters().values()
        return sum(v["lines"] for v in c), sum(v["lost"] for v in c)

    # ---------------------------------------------------------------- writer thread

    def run(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            try:
                item = self.q.get(timeout=0.5)
            except queue.Empty:
                continue
            self.heartbeat = time.monotonic()
            if item is _STOP:
                for o in self.outputs:
                    o.file.close()
                return
            if isinstance(item, tuple):
                self._control(*item)
                continue
            self.busy_since = self.heartbeat
            try:
                self._write(item)
            except Exception:  # formatting bugs must not kill the writer
                log.exception("writing events of model %s failed", item.model)
            finally:
                self.busy_since = None

    def _control(self, what: str, arg, done: threading.Event) -> None:
        try:
            if what == "reopen":
                for o in self.outputs:
                    self._open(o)
                log.info("reopened %d output file(s)", len(self.outputs))
            elif what == "reconfigure":
                for o in self.outputs:
                    o.file.close()
                    self.retired[o.cfg.target] = _counters(o)
                new = []
                for cfg in arg:
                    prev = self.retired.pop(cfg.target, None)
                    f = open_output(cfg)
                    if prev:  # the same file again: keep counting where it was
                        f.lines, f.bytes, f.errors, f.lost_lines = (prev["lines"], prev["bytes"], prev["errors"],
                                                                    prev["lost"])
                    o = Output(cfg, f)
                    self._open(o)
                    new.append(o)
                self.outputs = new
        finally:
            done.set()

    def _open(self, o: Output) -> None:
        if o.file.open():
            if o.reported:
                log.info("output %s: open again", o.cfg.target)
            o.reported = None
        elif o.reported != o.file.last_error:
            o.reported = o.file.last_error
            log.error("output %s: %s; its events are counted as lost until it works", o.cfg.target,
                      o.file.last_error)

    def _write(self, pb: PredictionBatch) -> None:
        cache: dict[tuple, tuple[str, int]] = {}
        for o in self.outputs:
            if not o.wants(pb.model):
                continue
            c = o.cfg
            key = (c.format, c.features and c.format == "eve", c.alerts_only, c.community_id_seed)
            if key not in cache:
                sel = pb.alert if c.alerts_only else None
                n = int(pb.alert.sum()) if c.alerts_only else pb.n
                text = (FORMATTERS.get(pb.entity).eve_lines(pb, features=c.features, select=sel,
                                                            community_id_seed=c.community_id_seed)
                        if c.format == "eve" else label_lines(pb, select=sel))
                cache[key] = (text, n)
            text, n = cache[key]
            ok = o.file.write(text, n)
            now = time.monotonic()
            if not ok and (o.reported != o.file.last_error or now - o.reported_at >= REPORT_EVERY_S):
                # a nearly full disk alternates between failing and working: say it once a minute
                o.reported, o.reported_at = o.file.last_error, now
                log.error("output %s: %s; %d event(s) lost (lines already written are kept; %d lost in all)",
                          c.target, o.file.last_error, n, o.file.lost_lines)
            elif ok and o.reported is not None and now - o.reported_at >= REPORT_EVERY_S:
                log.info("output %s: writing again (%d events lost in all)", c.target, o.file.lost_lines)
                o.reported = None
        written = getattr(FORMATTERS.find(pb.entity), "written", None)
        if written is not None:  # every output has the batch now (the trace spool moves its sample to done/)
            written(pb)
        self.events += pb.n
        self.latency.record(time.monotonic_ns() - pb.t_ns)


def _counters(o: Output) -> dict:
    f = o.file
    c = {"lines": f.lines, "bytes": f.bytes, "errors": f.errors, "lost": f.lost_lines, "format": o.cfg.format,
         "error": f.last_error}
    extra = getattr(f, "counters", None)  # a redis output: its queue, spool and drops by reason
    if extra is not None:
        c.update(extra())
    return c
