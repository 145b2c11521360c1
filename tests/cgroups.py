"""Real cgroups v2 for the tests: made under the machine's cgroup2 mount (or a cgroup2 mount the
test makes itself when none is mounted), processes put in them by their own shell, everything
killed and removed at the end, also when the test fails."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from malsensor.daemon.proc.scope import cgroup2_mounts
from malsensor.models.proc_cgroup import WorkCgroup

from conftest import _unavailable, require_root


@contextmanager
def cgroup2_root():
    """A folder of a cgroup v2 hierarchy this test may make cgroups in."""
    require_root()
    for m in cgroup2_mounts():
        probe = Path(m.mount_point) / f"malsensor-test-probe-{os.getpid()}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            continue
        yield Path(m.mount_point)
        return
    mnt = Path(tempfile.mkdtemp(prefix="malsensor-cgroup2-"))
    r = subprocess.run(["mount", "-t", "cgroup2", "none", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        _unavailable(f"no writable cgroup v2 hierarchy and mount -t cgroup2 failed: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        mnt.rmdir()


_made = 0


@contextmanager
def new_cgroup(parent: Path | None = None):
    """A fresh empty cgroup (under ``parent``, or a writable cgroup2 mount), removed at the end
    with every process in it and below it."""
    global _made
    with (cgroup2_root() if parent is None else _same(parent)) as root:
        _made += 1
        cg = WorkCgroup.make(root / f"malsensor-test-{os.getpid()}-{_made}")
        try:
            yield cg.path
        finally:
            cg.remove()


@contextmanager
def _same(p: Path):
    yield p


def sleepers_in(cgroup: Path | None, n: int, seconds: int = 120) -> list[subprocess.Popen]:
    """``n`` sleep processes, each moved into ``cgroup`` by its shell before exec (None: left
    where the test runs), each in its own process group. Returns once every one has exec'd."""
    join = f'echo $$ > "{cgroup}/cgroup.procs" && ' if cgroup is not None else ""
    ps = [subprocess.Popen(["sh", "-c", f"{join}exec sleep {seconds}"], start_new_session=True) for _ in range(n)]
    deadline = time.monotonic() + 30
    for p in ps:
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{p.pid}/comm").read_text().strip() == "sleep":
                    break
            except OSError:
                pass
            time.sleep(0.01)
    return ps


def kill_all(ps: list[subprocess.Popen]) -> None:
    for p in ps:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def kill_if_running(p: subprocess.Popen) -> None:
    """The cleanup after a process that should have ended on its own: its group is killed only
    if it is still running (a test that checks what the process cleaned up must not do it)."""
    if p.poll() is None:
        kill_all([p])


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
