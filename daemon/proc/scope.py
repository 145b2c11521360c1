"""Which processes the /proc sampler reads: the whole machine, or one cgroup v2 and its
descendants (``[[source]] kind = "procfs"``, ``cgroup = "/sys/fs/cgroup/PATH"``).

Why a cgroup: it is the unit an operator already names. systemd puts every service, scope
and slice in one (``/sys/fs/cgroup/system.slice/nginx.service``), Docker, Podman and
Kubernetes put every container or pod in one, and a process cannot leave it by forking,
daemonising or starting a new session - unlike a process group or a session, which any
process can leave with ``setsid()`` (the dataset's own workloads do).

How the processes are found: the ``cgroup.procs`` file of the cgroup and of every cgroup below
it (one ``scandir`` and one read per cgroup). The other way, reading ``/proc/PID/cgroup`` of
every process of the machine and keeping those whose v2 path is at or below the cgroup's
(:func:`pids_by_proc`, kept for the benchmark and the tests), costs one open and read per
process of the whole machine; bench/bench_proc_scope.py measures both side by side.

Processes entering or leaving the cgroup between samples are normal: a sample holds those
listed when it starts. A cgroup that does not exist (a unit not started yet, a container
that stopped) gives an empty sample (``scope_missing``), not an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are written as octal escapes."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Cgroup2Mount:
    mount_point: str     # where it is mounted, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified
    root: str            # the cgroup of the hierarchy shown at the mount point ("/" unless bind-mounted)


def cgroup2_mounts(proc: str = "/proc") -> list[Cgroup2Mount]:
    """The cgroup v2 mounts this process sees (``PROC/self/mountinfo``), longest mount point first."""
    out = []
    try:
        with open(f"{proc}/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        pre, sep, post = line.partition(" - ")
        a, b = pre.split(), post.split()
        if sep and len(a) >= 5 and b and b[0] == "cgroup2":
            out.append(Cgroup2Mount(_unescape(a[4]), _unescape(a[3])))
    return sorted(out, key=lambda m: -len(m.mount_point))


def mount_of(path: str, proc: str = "/proc") -> Cgroup2Mount | None:
    """The cgroup v2 mount ``path`` lies in (or is), or None."""
    for m in cgroup2_mounts(proc):
        if path == m.mount_point or path.startswith(m.mount_point.rstrip("/") + "/"):
            return m
    return None


def cgroup_problem(path: str, proc: str = "/proc") -> str | None:
    """Why ``path`` cannot name a cgroup v2 (None when it can). A cgroup that does not exist yet
    is fine: a unit or a container makes it when it starts."""
    if not os.path.isabs(path):
        return f"{path!r} is not an absolute path (a cgroup v2 folder, e.g. /sys/fs/cgroup/system.slice/NAME.service)"
    if os.path.normpath(path) != path.rstrip("/") and path != "/":
        return f"{path!r}: write it without '.', '..' or repeated '/' ({os.path.normpath(path)!r})"
    if mount_of(path.rstrip("/") or "/", proc) is None:
        mounts = cgroup2_mounts(proc)
        where = ("cgroup2 is mounted at " + ", ".join(m.mount_point for m in mounts)) if mounts else \
            "no cgroup2 filesystem is mounted"
        return f"{path} is not inside a cgroup v2 hierarchy ({where})"
    return None


def hierarchy_path(path: str, proc: str = "/proc") -> str | None:
    """The cgroup's name as ``/proc/PID/cgroup`` writes it (``0::/system.slice/x.service``)."""
    m = mount_of(path, proc)
    if m is None:
        return None
    rel = os.path.relpath(path, m.mount_point)
    name = os.path.normpath(os.path.join(m.root, "" if rel == "." else rel))
    return name


class CgroupScope:
    """The processes of cgroup ``path`` and of the cgroups below it."""

    def __init__(self, path: str) -> None:
        self.path = path.rstrip("/") or "/"

    def describe(self) -> str:
        return f"cgroup {self.path}"

    def pids(self) -> list[int] | None:
        """Sorted pids, or None when the cgroup does not exist. A cgroup below it removed while
        it is walked is skipped (its processes have left it)."""
        out: list[int] = []
        stack = [self.path]
        while stack:
            d = stack.pop()
            try:
                with open(os.path.join(d, "cgroup.procs"), "rb") as f:
                    data = f.read()
            except OSError:
                if d == self.path:
                    return None
                continue
            if data:
                out.extend(map(int, data.split()))
            try:
                with os.scandir(d) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        return sorted(set(out))


def pids_by_proc(name: str, proc: str = "/proc") -> list[int]:
    """The same set the other way: every process whose ``/proc/PID/cgroup`` v2 line (``0::PATH``)
    is ``name`` (see :func:`hierarchy_path`) or below it. One open per process of the machine."""
    below = name.rstrip("/") + "/"
    out = []
    for d in os.listdir(proc):
        if not d.isdigit():
            continue
        try:
            with open(f"{proc}/{d}/cgroup", "rb") as f:
                data = f.read()
        except OSError:
            continue
        for line in data.decode("utf-8", "replace").splitlines():
            if line.startswith("0::"):
                p = line[3:]
                if p == name or p.startswith(below) or name == "/":
                    out.append(int(d))
                break
    return sorted(out)
