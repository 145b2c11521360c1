"""``malsensor-train record-proc``: samples /proc for a while and writes the volumes (the
daemon's own sampler and ``proc_volume@1`` router) into a dataset shard (data/procshards.py)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from malsensor.daemon.proc.sampler import ProcSampler
from malsensor.daemon.proc.scope import CgroupScope, cgroup_problem
from malsensor.daemon.proc.volume import D_DEFAULT, H_DEFAULT
from malsensor.daemon.views.proc_volume import ProcVolumeRouter

from .data.procshards import write_shard
from .errors import TrainError

log = logging.getLogger("malsensor.train")


@dataclass
class RecordOptions:
    label: str
    duration: float
    out: Path
    interval: float = 1.0
    steps: int = D_DEFAULT
    processes: int = H_DEFAULT
    stride: int = 0
    root: str = "/proc"
    cgroup: str = ""     # only the processes of this cgroup v2 and its descendants ("" = every process)


def record(o: RecordOptions, stop=None) -> tuple[Path | None, int]:
    """(shard written or None when the duration gave no whole window, volumes). ``stop``: an
    optional threading.Event that ends the recording early (what was recorded is kept)."""
    if not o.label:
        raise TrainError("record-proc: --label must not be empty")
    if o.duration <= 0 or o.interval <= 0 or o.steps < 1 or o.processes < 1 or o.stride < 0:
        raise TrainError("record-proc: --duration and --interval must be > 0, --steps and --processes >= 1")
    try:  # now, not after the recording: a folder that cannot be made would lose it
        Path(o.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"record-proc: --out {o.out}: {e.strerror or e}") from None
    scope = None
    if o.cgroup:
        why = cgroup_problem(o.cgroup)
        if why:
            raise TrainError(f"record-proc: --cgroup {why}")
        scope = CgroupScope(o.cgroup)
    sampler = ProcSampler(o.root, scope=scope)
    try:
        return _record(o, sampler, stop)
    finally:
        sampler.close()


def _record(o: RecordOptions, sampler: ProcSampler, stop) -> tuple[Path | None, int]:
    router = ProcVolumeRouter(o.steps, o.processes, o.stride)
    vols = []
    router.push(sampler.sample())  # the first sample compiles the parsers: the clock starts after it
    t0 = nxt = time.monotonic()
    nxt += o.interval
    time.sleep(o.interval)
    shown = t0
    while time.monotonic() - t0 < o.duration and not (stop is not None and stop.is_set()):
        v = router.push(sampler.sample())
        if v is not None:
            vols.append(v)
        now = time.monotonic()
        if now - shown >= 10:
            log.info("record-proc: %.0f of %.0f s, %d volumes", now - t0, o.duration, len(vols))
            shown = now
        nxt += o.interval
        wait = nxt - time.monotonic()
        if wait > 0:
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
        else:
            nxt = time.monotonic()
    if not vols:
        empty = f" ({router.empty} window(s) without any process of cgroup {o.cgroup})" if router.empty else ""
        log.warning("record-proc: %.1f s gave no whole window of %d samples%s: nothing written", o.duration, o.steps,
                    empty)
        return None, 0
    path = write_shard(Path(o.out), o.label, vols, o.interval)
    t = sampler.totals
    log.info("record-proc: %d volumes (%d samples, %d processes exited mid-read) -> %s", len(vols),
             sampler.samples, t["vanished"], path)
    return path, len(vols)
