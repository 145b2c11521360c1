"""A cgroup v2 made for the workloads of one ``dataset-proc`` recording: the workloads start
inside it, the recorder samples it (``CgroupScope``), and it is always killed and removed.

A process cannot leave a cgroup by forking, daemonising or ``setsid()`` (a process group can
be left that way), so killing the cgroup (``cgroup.kill``, Linux >= 5.14; SIGKILL to every
listed pid until it is empty on older kernels) ends every process a workload started.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from malsensor.daemon.proc.scope import cgroup2_mounts, cgroup_problem

from .errors import TrainError

log = logging.getLogger("malsensor.train")
PREFIX = "malsensor-dataset-"


def writable_parent(parent: Path | None = None) -> Path:
    """Where the recordings' cgroups are made: ``parent`` or the first cgroup v2 mount that can
    hold a new cgroup (one is made and removed to find out). Raises TrainError naming why not."""
    if parent is not None:
        bad = cgroup_problem(str(parent))
        if bad:
            raise TrainError(f"dataset-proc: --cgroup-parent {bad}")
        candidates = [parent]
    else:
        candidates = [Path(m.mount_point) for m in cgroup2_mounts()]
    if not candidates:
        raise TrainError("dataset-proc: no cgroup v2 hierarchy is mounted (mount -t cgroup2 none DIR), or give "
                         "--scope machine to record every process of the machine")
    why = []
    for c in candidates:
        probe = c / f"{PREFIX}probe-{os.getpid()}"
        try:
            probe.mkdir()
            try:
                (probe / "cgroup.procs").stat()
            finally:
                probe.rmdir()
            return c
        except OSError as e:
            why.append(f"{c}: {e.strerror or e}")
    raise TrainError(f"dataset-proc: cannot make a cgroup ({'; '.join(why)}): run as root, or give --scope machine "
                     f"to record every process of the machine")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkCgroup:
    """One cgroup v2 folder; :meth:`join` is a ``preexec_fn`` that moves the child into it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._procs = os.fsencode(path / "cgroup.procs")

    @classmethod
    def make(cls, path: Path) -> WorkCgroup:
        path.mkdir(parents=False, exist_ok=False)
        return cls(path)

    def join(self) -> None:
        """Runs in the forked child before exec: writing 0 moves the writer itself."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        """Processes of this cgroup and of every cgroup below it ([] once it is gone)."""
        out: list[int] = []
        for d, _, _ in os.walk(self.path):
            try:
                out.extend(int(x) for x in Path(d, "cgroup.procs").read_bytes().split())
            except OSError:
                pass
        return sorted(set(out))

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILLs every process of the cgroup and its descendants; waits until none is left.
        Returns how many processes were there."""
        left = self.pids()
        n = len(left)
        kill_file = self.path / "cgroup.kill"
        deadline = time.monotonic() + timeout
        while left:
            try:
                kill_file.write_bytes(b"1")
            except OSError:  # no cgroup.kill (Linux < 5.14), or gone
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)
            left = [p for p in self.pids() if _alive(p)]
            if time.monotonic() > deadline:
                raise TrainError(f"dataset-proc: processes {left} of {self.path} survived SIGKILL for {timeout:.0f}s")
        return n

    def remove(self, timeout: float = 10.0) -> None:
        """Kills what is left and removes the folder and every folder below it (deepest first)."""
        if not self.path.exists():
            return
        self.kill(timeout)
        deadline = time.monotonic() + timeout
        for d, _, _ in sorted(os.walk(self.path), key=lambda t: -len(t[0])):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:  # EBUSY while the last exits are accounted
                    if time.monotonic() > deadline:
                        raise TrainError(f"dataset-proc: cannot remove cgroup {d}: {e.strerror or e}") from None
                    time.sleep(0.02)


def remove_stale(parent: Path) -> int:
    """Removes the cgroups earlier ``dataset-proc`` runs left under ``parent`` (a run killed by
    SIGKILL cannot clean up): those whose owner pid (in the name) is not alive. Returns how many."""
    n = 0
    try:
        names = [p for p in parent.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except OSError:
        return 0
    for p in names:
        owner = p.name[len(PREFIX):]
        if owner.isdigit() and not _alive(int(owner)):
            log.warning("dataset-proc: removing %s, left by a run that did not clean up", p)
            WorkCgroup(p).remove()
            n += 1
    return n
