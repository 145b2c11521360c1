"""Samples /proc: one :class:`ProcSample` (every process, the 45 columns of columns.py) a call.

Cost: per process, Python only makes the system calls (``os.open``/``os.readv`` of
``stat``, ``status`` and ``io`` into one preallocated buffer; ``fd`` listed and its links read
through a directory fd); one numba kernel parses every buffer of the sample, another the
socket tables. Measured by bench/bench_procfs.py.

Processes that exit while /proc is read are normal: a process whose ``stat``/``status``
cannot be read entirely is left out of that sample (counted in ``vanished``), never half
filled, so every row of a sample comes from one consistent pass. ``io`` or ``fd`` that are not
readable (another user's process when not root) give zeros (counted).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..jit import njit
from .columns import INDEX as C, W
from .scope import CgroupScope

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SLOT = 4096          # bytes reserved for one file of one process (status is ~1.4 KB on Linux 6.x)
STATUS_KEYS = (b"VmSwap", b"RssFile", b"RssShmem", b"VmHWM", b"voluntary_ctxt_switches",
               b"nonvoluntary_ctxt_switches", b"VmData", b"VmExe",
               b"rchar", b"wchar", b"syscr", b"syscw", b"read_bytes", b"write_bytes")  # the last 6: io
N_STAT = 15           # raw fields parsed from stat (see _parse_stat)
N_RAW = N_STAT + len(STATUS_KEYS)
R_STATE, R_PPID, R_MINFLT, R_MAJFLT, R_UTIME, R_STIME, R_CUTIME, R_CSTIME, R_PRIO, R_NICE, R_THREADS, \
    R_START, R_VSIZE, R_RSS, R_PROCESSOR = range(N_STAT)
R_SWAP, R_RSSFILE, R_RSSSHMEM, R_HWM, R_VOL, R_INVOL, R_DATA, R_EXE, R_RCHAR, R_WCHAR, R_SYSCR, R_SYSCW, \
    R_RBYTES, R_WBYTES = range(N_STAT, N_RAW)
# the stat fields (1-based, as proc(5) numbers them) behind R_STATE..R_PROCESSOR
STAT_FIELDS = np.array([3, 4, 10, 12, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 39], dtype=np.int64)
_KEYBUF = np.frombuffer(b"".join(STATUS_KEYS), dtype=np.uint8).copy()
_KEYOFF = np.cumsum([0] + [len(k) for k in STATUS_KEYS]).astype(np.int64)

# socket classes of the per-process socket columns
S_ESTABLISHED, S_LISTEN, S_SYN_SENT, S_TCP_OTHER, S_UDP, S_UNIX = range(6)
NET_TABLES = (("tcp", False), ("tcp6", True), ("udp", False), ("udp6", True), ("unix", False))


@njit(cache=True)
def _parse_number(buf, i, end):
    """(value, next index) of the signed decimal number at or after i (spaces skipped)."""
    while i < end and (buf[i] == 32 or buf[i] == 9):
        i += 1
    neg = False
    if i < end and buf[i] == 45:
        neg = True
        i += 1
    v = 0
    while i < end and 48 <= buf[i] <= 57:
        v = v * 10 + (buf[i] - 48)
        i += 1
    return (-v if neg else v), i


@njit(cache=True)
def _parse_stat(buf, s, e, fields, raw, r, comm):
    """One /proc/PID/stat into ``raw[r, :len(fields)]``; False if truncated or malformed."""
    lp = s
    while lp < e and buf[lp] != 40:  # '('
        lp += 1
    rp = e - 1
    while rp > lp and buf[rp] != 41:  # ')': the last one (a name may hold ')')
        rp -= 1
    if rp <= lp or rp + 2 >= e:
        return False
    comm[r, 0] = lp + 1
    comm[r, 1] = rp
    i = rp + 2                # field 3 (state) starts here; walk the space-separated fields
    raw[r, 0] = buf[i]
    k = 1
    while i < e and buf[i] != 32:
        i += 1
    fno = 4
    while k < fields.shape[0] and i < e:
        if fields[k] == fno:
            v, i = _parse_number(buf, i, e)
            raw[r, k] = v
            k += 1
        else:
            i += 1
            while i < e and buf[i] != 32:
                i += 1
        fno += 1
    return k == fields.shape[0]


@njit(cache=True)
def _parse_keyvals(buf, s, e, keybuf, keyoff, raw, r, col0):
    """``Key:  value`` lines (status, io): the value of key q into ``raw[r, col0 + q]``."""
    nkeys = keyoff.shape[0] - 1
    i = s
    while i < e:
        ls = i
        while i < e and buf[i] != 58 and buf[i] != 10:  # ':' or newline
            i += 1
        if i < e and buf[i] == 58:
            klen = i - ls
            for q in range(nkeys):
                if keyoff[q + 1] - keyoff[q] != klen:
                    continue
                same = True
                for c in range(klen):
                    if buf[ls + c] != keybuf[keyoff[q] + c]:
                        same = False
                        break
                if same:
                    v, i = _parse_number(buf, i + 1, e)
                    raw[r, col0 + q] = v
                    break
        while i < e and buf[i] != 10:
            i += 1
        i += 1


@njit(cache=True)
def parse_records(buf, stat_off, stat_len, status_off, status_len, io_off, io_len, fields, keybuf, keyoff,
                  raw, comm):
    """Fills ``raw[i]`` (N_RAW int64 fields) and ``comm[i]`` (start, end of the name in ``buf``)
    from the files of record i that were read (length > 0); returns a bool array: False where
    stat was read but malformed (a truncated read)."""
    n = stat_off.shape[0]
    ok = np.ones(n, dtype=np.bool_)
    for r in range(n):
        if stat_len[r] > 0 and not _parse_stat(buf, stat_off[r], stat_off[r] + stat_len[r], fields, raw, r, comm):
            ok[r] = False
            continue
        if status_len[r] > 0:
            _parse_keyvals(buf, status_off[r], status_off[r] + status_len[r], keybuf, keyoff, raw, r,
                           fields.shape[0])
        if io_len[r] > 0:
            _parse_keyvals(buf, io_off[r], io_off[r] + io_len[r], keybuf, keyoff, raw, r, fields.shape[0])
    return ok


@njit(cache=True)
def parse_timeslices(buf, off, length, out):
    """The third number of /proc/PID/schedstat (times the task ran on a CPU) of every record
    (-1 where it was not read)."""
    for r in range(off.shape[0]):
        if length[r] <= 0:
            out[r] = -1
            continue
        i = off[r]
        e = i + length[r]
        v = 0
        for _ in range(3):
            v, i = _parse_number(buf, i, e)
        out[r] = v


@njit(cache=True)
def parse_net_table(buf, n, inode_token, state_token):
    """(inodes, states) of a /proc/net table: token ``inode_token`` (decimal) and
    ``state_token`` (hex; -1: none) of every line after the header."""
    cap = 16
    for i in range(n):
        if buf[i] == 10:
            cap += 1
    inodes = np.empty(cap, dtype=np.int64)
    states = np.zeros(cap, dtype=np.int64)
    m = 0
    i = 0
    while i < n and buf[i] != 10:  # header
        i += 1
    i += 1
    while i < n:
        tok = 0
        ino = -1
        st = 0
        while i < n and buf[i] != 10:
            while i < n and buf[i] == 32:
                i += 1
            if i >= n or buf[i] == 10:
                break
            ts = i
            while i < n and buf[i] != 32 and buf[i] != 10:
                i += 1
            if tok == inode_token:
                v = 0
                for c in range(ts, i):
                    v = v * 10 + (buf[c] - 48)
                ino = v
            elif tok == state_token:
                v = 0
                for c in range(ts, i):
                    d = buf[c]
                    v = v * 16 + (d - 48 if d <= 57 else (d | 32) - 87)
                st = v
            tok += 1
        if ino >= 0:
            inodes[m] = ino
            states[m] = st
            m += 1
        i += 1
    return inodes[:m], states[:m]


@dataclass
class ProcSample:
    """One pass over /proc. Row i is process ``pid[i]`` (started at ``start[i]``, clock ticks
    after boot: (pid, start) names a process even when pids are reused)."""

    wall_ns: int                 # time.time_ns() at the start of the pass
    mono_ns: int                 # time.monotonic_ns() at the start of the pass
    pid: np.ndarray              # int64 (n,)
    start: np.ndarray            # int64 (n,)
    comm: list[str]
    x: np.ndarray                # float32 (n, W)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.pid.shape[0])

    @property
    def keys(self) -> np.ndarray:
        return process_keys(self.pid, self.start)


def process_keys(pid: np.ndarray, start: np.ndarray) -> np.ndarray:
    """One int64 per process (pid < 2**22, start ticks < 2**40: about 348 years at 100 Hz)."""
    return (pid.astype(np.int64) << 40) | start.astype(np.int64)


def _read_into(path_fd_dir: int, name: str, mv: memoryview) -> int:
    """Bytes of file ``name`` (relative to the open directory) read into ``mv``; -1 if gone."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=path_fd_dir)
    except OSError:
        return -1
    try:
        return os.readv(fd, [mv])
    except OSError:
        return -1
    finally:
        os.close(fd)


def _fd_budget() -> int:
    """Processes whose stat and schedstat may stay open: two fds each, within the soft limit on
    open files (raised to the hard limit), leaving 512 for the rest of the process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, (soft - 512) // 2)


_BUDGET = _fd_budget()   # processes held open, by all samplers of this process together
_held_total = 0


def warm() -> None:
    """Runs every kernel once on a tiny input (numba compiles or loads them)."""
    buf = np.frombuffer(b"1 (x) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
                        b"Threads:\t1\n", dtype=np.uint8).copy()
    one = np.array([0], np.int64)
    parse_records(buf, one, np.array([80], np.int64), np.array([80], np.int64), np.array([11], np.int64), one,
                  np.array([0], np.int64), STAT_FIELDS, _KEYBUF, _KEYOFF, np.zeros((1, N_RAW), np.int64),
                  np.zeros((1, 2), np.int64))
    parse_timeslices(buf, one, np.array([5], np.int64), np.zeros(1, np.int64))
    parse_net_table(buf, buf.shape[0], 9, 3)


def _fd_count(pfd: int) -> int:
    """Open fds of a process: the size of its fd directory (Linux >= 6.2; -1 where it reads 0,
    as on older kernels, so the links are always read there)."""
    try:
        n = os.stat("fd", dir_fd=pfd).st_size
    except OSError:
        return -1
    return n if n > 0 else -1


@dataclass
class _Seen:
    """What the last full read of a process gave (reused while it has not run since)."""

    raw: np.ndarray          # int64 (N_RAW - N_STAT,): status and io fields
    fds: np.ndarray          # int64 (6,)
    sockets: list[int]       # socket inodes of its fds
    timeslices: int          # schedstat's run count at that read
    at: int                  # the sample number of that read
    fds_at: int = -1         # the sample number of the last read of the fd links


class ProcSampler:
    """Reads /proc (``root``: another mount of procfs for tests) into :class:`ProcSample` s,
    keeping the previous sample's counters for the rates.

    Every sample reads every process's ``stat`` and ``schedstat``. ``status``, ``io`` and the
    fd links are read again only for a process that ran since they were last read (schedstat's
    run count changed), that has more than one thread (schedstat counts the main thread only),
    or whose last full read is ``refresh`` samples old: a process that did not run cannot have
    switched context, done I/O or changed its fd table, so its values are the same; what the
    kernel changes on its own (RssFile, swap) is at most ``refresh`` samples old. ``refresh =
    1`` reads everything every time. ``scope``: read only the processes of one cgroup v2 and its
    descendants (scope.py), listed afresh every sample. Measured (bench/bench_procfs.py, 2-core shared VM): with
    1,000 sleeping processes, 59 ms of CPU a sample reading everything, ~20 ms with this."""

    def __init__(self, root: str = "/proc", refresh: int = 10, scope: CgroupScope | None = None) -> None:
        self.root = root
        self.refresh = max(1, refresh)
        self.scope = scope   # None: every process of the machine; else only those it lists (scope.py)
        self.held: dict[int, tuple[int, int]] = {}   # pid -> open stat and schedstat
        # pid -> (schedstat bytes, stat bytes, sample of that stat read): a single-threaded process
        # whose schedstat did not change did not run, so its stat is the one read then (only
        # through held files: a held file of an exited process fails, so a reused pid never hits)
        self.stat_cache: dict[int, tuple[bytes, bytes, int]] = {}
        self.hold_max = _BUDGET
        warm()  # compile/load the kernels now: a first sample's files must be read close together
        self.seen: dict[int, _Seen] = {}
        self.cap = 0
        self.buf = np.zeros(0, dtype=np.uint8)
        self.prev_keys = np.zeros(0, dtype=np.int64)
        self.prev_cum = np.zeros((0, 14), dtype=np.int64)
        self.prev_mono = 0
        self.samples = 0
        self.totals = {"vanished": 0, "io_unreadable": 0, "fd_unreadable": 0}

    def _hold(self, root_fd: int, pid: int) -> tuple[int, int] | None:
        global _held_total
        if len(self.held) >= self.hold_max or _held_total >= _BUDGET:
            return None
        try:
            a = os.open(f"{pid}/stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=root_fd)
        except OSError:
            return None
        try:
            b = os.open(f"{pid}/schedstat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=root_fd)
        except OSError:
            os.close(a)
            return None
        self.held[pid] = (a, b)
        _held_total += 1
        return a, b

    def _release(self, pid: int) -> None:
        global _held_total
        fds = self.held.pop(pid, ())
        self.stat_cache.pop(pid, None)
        if fds:
            _held_total -= 1
        for fd in fds:
            os.close(fd)

    def close(self) -> None:
        """Closes the files held open between samples."""
        for pid in list(self.held):
            self._release(pid)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _grow(self, n: int) -> None:
        if n > self.cap:
            self.cap = max(n, int(self.cap * 1.5), 256)
            self.buf = np.zeros(self.cap * 4 * SLOT, dtype=np.uint8)

    def _socket_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted socket inodes of this network namespace and their class (S_*), +8 for IPv6."""
        inos, cls = [], []
        for name, v6 in NET_TABLES:
            try:
                with open(f"{self.root}/net/{name}", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            arr = np.frombuffer(data, dtype=np.uint8)
            if name == "unix":
                ino, st = parse_net_table(arr, arr.shape[0], 6, -1)
                c = np.full(ino.shape[0], S_UNIX, dtype=np.int64)
            else:
                ino, st = parse_net_table(arr, arr.shape[0], 9, 3)
                if name.startswith("udp"):
                    c = np.full(ino.shape[0], S_UDP, dtype=np.int64)
                else:  # tcp states: 01 ESTABLISHED, 02 SYN_SENT, 0A LISTEN
                    c = np.where(st == 1, S_ESTABLISHED, np.where(st == 10, S_LISTEN,
                                                                 np.where(st == 2, S_SYN_SENT, S_TCP_OTHER)))
            inos.append(ino)
            cls.append(c + (8 if v6 else 0))
        if not inos:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ino = np.concatenate(inos)
        c = np.concatenate(cls)
        order = np.argsort(ino, kind="stable")
        return ino[order], c[order]

    def sample(self) -> ProcSample:
        wall, mono = time.time_ns(), time.monotonic_ns()
        counts = {"vanished": 0, "io_unreadable": 0, "fd_unreadable": 0, "full_reads": 0, "stat_reused": 0,
                  "fds_reused": 0, "scope_missing": 0}
        try:
            with open(f"{self.root}/uptime", "rb") as f:
                uptime = float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            uptime = 0.0
        if self.scope is None:
            pids = [int(d) for d in os.listdir(self.root) if d.isdigit()]
        else:
            listed = self.scope.pids()
            counts["scope_missing"] = int(listed is None)
            pids = listed or []
        n = len(pids)
        self._grow(n)
        mv = memoryview(self.buf)
        offs = np.zeros((4, n), dtype=np.int64)   # stat, schedstat, status, io
        lens = np.zeros((4, n), dtype=np.int64)
        for k in range(4):
            offs[k] = np.arange(n, dtype=np.int64) * (4 * SLOT) + k * SLOT
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # pass 1: stat and schedstat of every process, through files kept open between samples
            held = self.held
            preadv = os.preadv
            cache, now_at, refresh = self.stat_cache, self.samples, self.refresh
            reused_stat = 0
            fresh_stat: list[int] = []
            for r, pid in enumerate(pids):
                base = r * 4 * SLOT
                fds = held.get(pid)
                got = -1
                if fds is not None:
                    try:  # schedstat first: if it did not change, the process did not run
                        ns = preadv(fds[1], [mv[base + SLOT:base + 2 * SLOT]], 0)
                        lens[1, r] = max(ns, 0)
                        c = cache.get(pid)
                        if (c is not None and ns > 0 and now_at - c[2] < refresh
                                and mv[base + SLOT:base + SLOT + ns] == c[0]):
                            got = len(c[1])
                            mv[base:base + got] = c[1]
                            reused_stat += 1
                        else:
                            got = preadv(fds[0], [mv[base:base + SLOT]], 0)
                            fresh_stat.append(r)
                    except OSError:  # the process is gone (a reused pid is another process): reopen
                        self._release(pid)
                        got = -1
                if got <= 0:
                    fds = self._hold(root_fd, pid)
                    if fds is None:  # no fd budget left (or gone): open, read, close
                        got = _read_into(root_fd, f"{pid}/stat", mv[base:base + SLOT])
                        if got > 0:
                            lens[1, r] = max(_read_into(root_fd, f"{pid}/schedstat", mv[base + SLOT:base + 2 * SLOT]), 0)
                    else:
                        try:
                            lens[1, r] = max(preadv(fds[1], [mv[base + SLOT:base + 2 * SLOT]], 0), 0)
                            got = preadv(fds[0], [mv[base:base + SLOT]], 0)
                            fresh_stat.append(r)
                        except OSError:
                            self._release(pid)
                            got = -1
                if got <= 0:
                    counts["vanished"] += 1
                    continue
                lens[0, r] = got
            if len(held) > len(pids):
                for pid in set(held) - set(pids):
                    self._release(pid)
            raw = np.zeros((n, N_RAW), dtype=np.int64)
            comm_at = np.zeros((n, 2), dtype=np.int64)
            nothing = np.zeros(n, dtype=np.int64)
            ok = parse_records(self.buf, offs[0], lens[0], offs[2], nothing, offs[3], nothing, STAT_FIELDS,
                               _KEYBUF, _KEYOFF, raw, comm_at)
            slices = np.zeros(n, dtype=np.int64)
            parse_timeslices(self.buf, offs[1], lens[1], slices)
            keep = (lens[0] > 0) & ok
            counts["vanished"] += int(((lens[0] > 0) & ~ok).sum())
            counts["stat_reused"] = reused_stat
            buf = self.buf
            for r in fresh_stat:  # what the next samples may reuse (one thread: schedstat covers it)
                pid = pids[r]
                if keep[r] and raw[r, R_THREADS] == 1 and lens[1, r] > 0 and pid in held:
                    base = r * 4 * SLOT
                    cache[pid] = (buf[base + SLOT:base + SLOT + lens[1, r]].tobytes(),
                                  buf[base:base + lens[0, r]].tobytes(), now_at)
                else:
                    cache.pop(pid, None)
            keys = process_keys(np.asarray(pids, dtype=np.int64), raw[:, R_START])
            # pass 2: status, io and fds of the processes that ran (or are due)
            fd_counts = np.zeros((n, 6), dtype=np.int64)  # total, file, socket, pipe, anon_inode, other
            sock_rows: list[int] = []
            sock_inodes: list[int] = []
            reused: list[tuple[int, _Seen]] = []
            full: list[int] = []
            seen = self.seen
            for r in np.flatnonzero(keep).tolist():
                old = seen.get(int(keys[r]))
                if (old is not None and raw[r, R_THREADS] == 1 and slices[r] >= 0 and slices[r] == old.timeslices
                        and now_at - old.at < refresh):
                    reused.append((r, old))
                    continue
                pid = pids[r]
                base = r * 4 * SLOT
                try:
                    pfd = os.open(str(pid), os.O_RDONLY | os.O_DIRECTORY, dir_fd=root_fd)
                except OSError:
                    keep[r] = False
                    counts["vanished"] += 1
                    continue
                try:
                    got = _read_into(pfd, "status", mv[base + 2 * SLOT:base + 3 * SLOT])
                    if got <= 0:
                        keep[r] = False
                        counts["vanished"] += 1
                        continue
                    lens[2, r] = got
                    got = _read_into(pfd, "io", mv[base + 3 * SLOT:base + 4 * SLOT])
                    if got < 0:
                        counts["io_unreadable"] += 1
                    lens[3, r] = max(got, 0)
                    at = len(sock_inodes)
                    fds_at = now_at
                    if old is not None and now_at - old.fds_at < refresh and _fd_count(pfd) == old.fds[0]:
                        # as many fds as at the last read of the links: reuse what they were
                        # (reading every link of a busy process was ~45 % of a sample here)
                        fd_counts[r] = old.fds
                        sock_rows.extend([r] * len(old.sockets))
                        sock_inodes.extend(old.sockets)
                        fds_at = old.fds_at
                        counts["fds_reused"] += 1
                    else:
                        self._fds(pfd, r, fd_counts, sock_rows, sock_inodes, counts)
                    full.append(r)
                    seen[int(keys[r])] = _Seen(raw[r, N_STAT:], fd_counts[r].copy(), sock_inodes[at:],
                                               int(slices[r]), now_at, fds_at)
                finally:
                    os.close(pfd)
        finally:
            os.close(root_fd)
        counts["full_reads"] = len(full)
        if full:
            f = np.asarray(full, dtype=np.int64)
            no = np.zeros(f.size, dtype=np.int64)
            sub = np.zeros((f.size, N_RAW), dtype=np.int64)
            parse_records(self.buf, offs[0][f], no, offs[2][f], lens[2][f], offs[3][f], lens[3][f], STAT_FIELDS,
                          _KEYBUF, _KEYOFF, sub, np.zeros((f.size, 2), dtype=np.int64))
            raw[f, N_STAT:] = sub[:, N_STAT:]
            for r in full:
                seen[int(keys[r])].raw = raw[r, N_STAT:].copy()
        for r, old in reused:
            raw[r, N_STAT:] = old.raw
            fd_counts[r] = old.fds
            sock_rows.extend([r] * len(old.sockets))
            sock_inodes.extend(old.sockets)
        rows = np.flatnonzero(keep)
        if len(seen) > 2 * rows.size + 64:  # forget processes that are gone
            alive = set(keys[rows].tolist())
            self.seen = {k: v for k, v in seen.items() if k in alive}
        sock = self._sockets(n, np.asarray(sock_rows, dtype=np.int64), np.asarray(sock_inodes, dtype=np.int64))
        pid = np.asarray(pids, dtype=np.int64)[rows]
        x = self._columns(pid, raw[rows], fd_counts[rows], sock[rows], mono, uptime)
        buf = self.buf
        comm = [bytes(buf[comm_at[r, 0]:comm_at[r, 1]]).decode("utf-8", "replace") for r in rows.tolist()]
        for k, v in counts.items():
            self.totals[k] = self.totals.get(k, 0) + v
        self.samples += 1
        return ProcSample(wall, mono, pid, raw[rows, R_START].copy(), comm, x, counts)

    def _fds(self, pfd: int, r: int, fd_counts: np.ndarray, sock_rows: list, sock_inodes: list,
             counts: dict) -> None:
        try:
            dfd = os.open("fd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=pfd)
        except OSError:
            counts["fd_unreadable"] += 1
            return
        try:
            names = os.listdir(dfd)
            total = file = socket = pipe = anon = other = 0
            for name in names:
                try:
                    t = os.readlink(name, dir_fd=dfd)
                except OSError:  # closed meanwhile
                    continue
                total += 1
                if t.startswith("socket:["):
                    socket += 1
                    sock_rows.append(r)
                    sock_inodes.append(int(t[8:-1]))
                elif t.startswith("/dev/"):
                    other += 1
                elif t.startswith("/"):
                    file += 1
                elif t.startswith("pipe:"):
                    pipe += 1
                elif t.startswith("anon_inode:"):
                    anon += 1
                else:
                    other += 1
            fd_counts[r] = (total, file, socket, pipe, anon, other)
        except OSError:
            counts["fd_unreadable"] += 1
        finally:
            os.close(dfd)

    def _sockets(self, n: int, rows: np.ndarray, inodes: np.ndarray) -> np.ndarray:
        """(n, 8): the socket columns tcp_established .. sockets_other per record."""
        out = np.zeros((n, 8), dtype=np.float32)
        if rows.size == 0:
            return out
        table_ino, table_cls = self._socket_table()
        at = np.searchsorted(table_ino, inodes)
        at_c = np.minimum(at, max(table_ino.size - 1, 0))
        found = (at < table_ino.size) & (table_ino[at_c] == inodes) if table_ino.size else np.zeros(rows.size, bool)
        cls = np.where(found, table_cls[at_c] if table_ino.size else 0, -1)
        base = np.where(cls >= 0, cls & 7, 7)  # 7: sockets_other
        np.add.at(out, (rows, base), 1.0)
        np.add.at(out, (rows[cls >= 8], 6), 1.0)  # sockets_ipv6
        return out

    def _columns(self, pid: np.ndarray, raw: np.ndarray, fds: np.ndarray, sock: np.ndarray, mono: int,
                 uptime: float) -> np.ndarray:
        x = np.zeros((raw.shape[0], W), dtype=np.float32)
        cum = raw[:, [R_UTIME, R_STIME, R_CUTIME, R_CSTIME, R_VOL, R_INVOL, R_RCHAR, R_WCHAR, R_SYSCR, R_SYSCW,
                      R_RBYTES, R_WBYTES, R_MINFLT, R_MAJFLT]]
        # rates against the previous sample (see columns.py for processes seen the first time)
        keys = process_keys(pid, raw[:, R_START])
        dt = (mono - self.prev_mono) / 1e9 if self.samples else 0.0
        delta = np.zeros(cum.shape, dtype=np.float64)
        if self.samples and dt > 0:
            at = np.searchsorted(self.prev_keys, keys)
            at_c = np.minimum(at, max(self.prev_keys.size - 1, 0))
            seen = (at < self.prev_keys.size) & (self.prev_keys[at_c] == keys) if self.prev_keys.size else \
                np.zeros(keys.size, bool)
            before = np.where(seen[:, None], self.prev_cum[at_c] if self.prev_keys.size else 0, 0)
            delta = np.maximum(cum - before, 0) / dt
        order = np.argsort(keys)
        self.prev_keys, self.prev_cum, self.prev_mono = keys[order], cum[order], mono
        delta[:, :4] /= HZ
        x[:, C["cpu_user"]:C["cpu_children_system"] + 1] = delta[:, 0:4]
        x[:, C["rss_bytes"]] = raw[:, R_RSS] * PAGE
        x[:, C["vms_bytes"]] = raw[:, R_VSIZE]
        x[:, C["shared_bytes"]] = (raw[:, R_RSSFILE] + raw[:, R_RSSSHMEM]) * 1024
        x[:, C["swap_bytes"]] = raw[:, R_SWAP] * 1024
        x[:, C["data_bytes"]] = raw[:, R_DATA] * 1024
        x[:, C["text_bytes"]] = raw[:, R_EXE] * 1024
        x[:, C["peak_rss_bytes"]] = raw[:, R_HWM] * 1024
        x[:, C["threads"]] = raw[:, R_THREADS]
        x[:, C["fds_total"]:C["fds_other"] + 1] = fds
        x[:, C["ctx_voluntary_per_s"]:C["io_write_bytes_per_s"] + 1] = delta[:, 4:12]
        x[:, C["faults_minor_per_s"]:C["faults_major_per_s"] + 1] = delta[:, 12:14]
        x[:, C["tcp_established"]:C["sockets_other"] + 1] = sock
        pid_sorted = np.sort(pid)
        ppid = raw[:, R_PPID]
        # children: how many rows name this row's pid as their parent
        kids = np.bincount(np.searchsorted(pid_sorted, ppid[np.isin(ppid, pid_sorted)]), minlength=pid_sorted.size)
        x[:, C["children"]] = kids[np.searchsorted(pid_sorted, pid)]
        x[:, C["priority"]] = raw[:, R_PRIO]
        x[:, C["nice"]] = raw[:, R_NICE]
        st = raw[:, R_STATE]
        x[:, C["state_running"]] = st == ord("R")
        x[:, C["state_sleeping"]] = (st == ord("S")) | (st == ord("I"))
        x[:, C["state_disk"]] = st == ord("D")
        x[:, C["state_stopped_zombie"]] = np.isin(st, [ord("T"), ord("t"), ord("Z"), ord("X")])
        x[:, C["age_s"]] = np.maximum(uptime - raw[:, R_START] / HZ, 0.0)
        x[:, C["present"]] = 1.0
        return x
