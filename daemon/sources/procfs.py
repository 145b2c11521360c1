"""Source kind ``procfs``: samples /proc every ``interval`` seconds (one :class:`ProcBatch`
of every process a sample); the view ``proc_volume@1`` windows the samples into volumes."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar

from ..proc.sampler import ProcSample, ProcSampler
from ..proc.scope import CgroupScope, cgroup_problem
from ..schema import opt
from . import Heartbeat, SourceContext, ThreadSource, register_source

log = logging.getLogger("malsensor.procfs")
PRODUCT = "proc_samples"


@dataclass
class ProcBatch:
    """One sample of every process (the product ``proc_samples``)."""

    sample: ProcSample
    product: ClassVar[str] = PRODUCT

    def counts(self) -> dict[str, int]:
        return {"proc_samples": 1}


@dataclass(frozen=True)
class ProcfsConfig:
    """[[source]] kind = "procfs": per-process metrics of this machine (docs/proc.md)."""

    kind: ClassVar[str] = "procfs"
    interval: float = opt(1.0, "seconds between two samples of /proc", min=0.05, max=3600.0)
    root: str = opt("/proc", "where procfs is mounted")
    refresh: int = opt(10, "re-read status, io and fds of a process that did not run at least every this many "
                           "samples (1 = every sample; docs/proc.md)", min=1, max=100000)
    cgroup: str = opt("", "only the processes of this cgroup v2 and of the cgroups below it (a folder of the "
                          "cgroup2 mount: a systemd unit or slice, a container; docs/proc.md); \"\" = every "
                          "process of the machine")


@register_source
class ProcfsSource(ThreadSource):
    kind = "procfs"
    produces = PRODUCT
    config = ProcfsConfig
    finite = False
    thread_name = "malsensor-procfs"
    description = "per-process metrics sampled from /proc"

    def __init__(self, cfg: ProcfsConfig, ctx: SourceContext) -> None:
        super().__init__(cfg, ctx)
        self.sampler = ProcSampler(cfg.root, cfg.refresh, CgroupScope(cfg.cgroup) if cfg.cgroup else None)
        self.beat_at = time.monotonic()
        self.cpu_s = 0.0
        self.late = 0
        self.scope_missing = 0
        self.scope_was_missing = False

    @classmethod
    def check(cls, cfgs, ck) -> None:
        for c, path in cfgs:
            if c.cgroup:
                why = cgroup_problem(c.cgroup)
                if why:
                    ck.problem((*path, "cgroup"), why)

    def describe(self) -> str:
        scope = f" cgroup {self.cfg.cgroup}" if self.cfg.cgroup else ""
        return f"procfs {self.cfg.root}{scope} every {self.cfg.interval:g}s"

    def _scope_seen(self, s: ProcSample) -> None:
        """Logs when the cgroup disappears or (re)appears (a unit stopped or started)."""
        missing = bool(s.counts.get("scope_missing"))
        self.scope_missing += missing
        if missing != self.scope_was_missing:
            if missing:
                log.warning("procfs: cgroup %s does not exist (yet): no volumes until it does", self.cfg.cgroup)
            else:
                log.info("procfs: cgroup %s exists: %d process(es)", self.cfg.cgroup, s.n)
        self.scope_was_missing = missing

    def _beat(self) -> None:
        self.beat_at = time.monotonic()

    def run(self) -> None:
        nxt = time.monotonic()
        try:
            while not self.stop_event.is_set():
                c0 = time.thread_time()
                s = self.sampler.sample()
                self.cpu_s += time.thread_time() - c0
                if self.cfg.cgroup:
                    self._scope_seen(s)
                self._beat()
                self.ctx.dispatch(ProcBatch(s), self._beat)
                nxt += self.cfg.interval
                wait = nxt - time.monotonic()
                if wait < 0:  # a sample took longer than the interval: keep the pace, count it
                    self.late += 1
                    nxt = time.monotonic()
                    wait = 0
                self.stop_event.wait(wait)
        finally:
            self.sampler.close()

    def failed(self) -> str | None:
        return f"{self.describe()}: {self.error}" if self.error else None

    def heartbeats(self) -> list[Heartbeat]:
        return [Heartbeat("malsensor-procfs", self.beat_at, self.done.is_set())]

    def health(self, now: float, stall: float) -> str | None:
        return super().health(now, max(stall, 3 * self.cfg.interval))

    def stats(self) -> dict:
        t = self.sampler.totals
        return {"procfs_samples": self.sampler.samples, "procfs_vanished": t["vanished"],
                "procfs_io_unreadable": t["io_unreadable"], "procfs_fd_unreadable": t["fd_unreadable"],
                "procfs_full_reads": t.get("full_reads", 0), "procfs_stat_reused": t.get("stat_reused", 0),
                "procfs_late": self.late, "procfs_cpu_s": round(self.cpu_s, 3),
                "procfs_scope_missing": self.scope_missing}
