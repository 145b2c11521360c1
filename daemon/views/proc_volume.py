"""View ``proc_volume@1``: D consecutive /proc samples -> one volume (D steps, H processes, the
45 metrics of daemon/proc/columns.py); the metric axis is the feature axis. Rows follow the
rule of daemon/proc/volume.py, the same code in the daemon and in ``record-proc``."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..proc.columns import COLUMNS, W
from ..proc.volume import D_DEFAULT, H_DEFAULT, Volume, build_volume
from ..schema import Checker, opt
from .base import EntityRows, Router, View, register_view

COMM_LEN = 15  # the kernel's TASK_COMM_LEN - 1


def key_dtype(h: int) -> np.dtype:
    """What identifies a volume in its event: its time span and the processes of its rows."""
    return np.dtype([("start_ns", np.int64), ("end_ns", np.int64), ("processes", np.int64),
                     ("pid", np.int64, (h,)), ("comm", f"U{COMM_LEN}", (h,))])


def volume_keys(vols) -> np.ndarray:
    h = vols[0].pid.shape[0]
    k = np.zeros(len(vols), dtype=key_dtype(h))
    for i, v in enumerate(vols):
        k[i] = (v.wall_ns, v.end_ns, v.processes, v.pid, v.comm)
    return k


@dataclass(frozen=True)
class ProcVolumeOptions:
    """The keys ``proc_volume@1`` adds to a ``[[model]]`` table."""

    steps: int = opt(D_DEFAULT, "view = \"proc_volume@1\": samples per volume (D)", min=1, max=1024)
    processes: int = opt(H_DEFAULT, "view = \"proc_volume@1\": process rows per volume (H; fewer are "
                                    "padded, more are cut by the row rule of docs/proc.md)", min=1,
                                max=65536)
    stride: int = opt(0, "view = \"proc_volume@1\": samples between two volumes (0 = steps: windows "
                         "do not overlap)", min=0, max=1024)


class ProcVolumeRouter(Router):
    """Keeps the last D samples; every ``stride`` samples, once D are there, one volume."""

    trigger = "window"

    def __init__(self, steps: int, processes: int, stride: int) -> None:
        self.steps, self.processes, self.stride = steps, processes, stride or steps
        self.window: deque = deque(maxlen=steps)
        self.since = 0
        self.empty = 0          # windows without any process (no volume)
        self._lock = threading.Lock()

    def pending(self) -> int:
        return len(self.window)

    def push(self, sample) -> Volume | None:
        """Adds a sample; the volume it completes, if any (also what record-proc records). A
        window without any process (a ``cgroup`` scope whose unit is stopped or empty) gives
        none: there is nothing to classify."""
        with self._lock:
            self.window.append(sample)
            self.since += 1
            if len(self.window) < self.steps or self.since < self.stride:
                return None
            self.since = 0
            samples = list(self.window)
        if not any(s.n for s in samples):
            self.empty += 1
            return None
        return build_volume(samples, self.processes)

    def route(self, batch) -> EntityRows | None:
        v = self.push(batch.sample)
        return None if v is None else EntityRows(volume_keys([v]), v.x[None])


class ProcVolumeView(View):
    name = "proc_volume"
    version = 1
    entity = "host"
    consumes = "proc_samples"
    axes = ("step", "process", "metric")
    feature_axis = 2
    columns = COLUMNS
    options = ProcVolumeOptions
    reader = "malsensor.models.data.procshards:READER"
    description = "D samples x H processes x 45 per-process metrics from /proc"

    def shape(self, o: ProcVolumeOptions) -> tuple[int, ...]:
        return (o.steps, o.processes, W)

    def options_for(self, info) -> ProcVolumeOptions:
        steps, processes = self.sized_axes(info, ("steps", "processes"), W)
        return ProcVolumeOptions(steps=steps, processes=processes)

    def check(self, o: ProcVolumeOptions, ck: Checker, path) -> None:
        if o.stride > o.steps:
            ck.problem((*path, "stride"), f"stride {o.stride} > steps {o.steps} would skip samples")

    def router(self, o: ProcVolumeOptions, facts) -> ProcVolumeRouter:
        return ProcVolumeRouter(o.steps, o.processes, o.stride)


PROC_VOLUME = register_view(ProcVolumeView())
