"""The /proc sampler and the volume row rule, on real processes this test starts (and kills)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from malsensor.daemon.proc.columns import COLUMNS, INDEX as C, W
from malsensor.daemon.proc.sampler import ProcSampler, ProcSample, process_keys
from malsensor.daemon.proc.volume import build_volume, top_processes

# A child that: renames itself, sets nice 5, listens on loopback, connects to itself (one
# established pair), opens a pipe, starts 3 sleeping children, then writes 1 MiB a second
# and burns CPU; it prints "ready" once everything is in place.
WORKER = textwrap.dedent("""
    import os, socket, subprocess, sys, time, hashlib
    os.nice(5)
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen()
    c = socket.create_connection(ls.getsockname()); a, _ = ls.accept()
    r, w = os.pipe()
    kids = [subprocess.Popen(["sleep", "600"]) for _ in range(3)]
    f = open(sys.argv[1], "wb", buffering=0)
    print("ready", flush=True)
    block = b"x" * (1 << 16)
    t = time.monotonic()
    while True:  # 64 KiB every 1/16 s (1 MiB/s), busy half of each step
        t += 1 / 16
        f.write(block)
        while time.monotonic() < t - 1 / 32:
            hashlib.sha256(block).digest()
        time.sleep(max(t - time.monotonic(), 0))
""")


@pytest.fixture
def worker(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "out")], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        yield p
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _row(s: ProcSample, pid: int) -> np.ndarray:
    return s.x[list(s.pid).index(pid)]


def test_columns_are_the_documented_45():
    assert W == 45 == len(set(COLUMNS))
    assert COLUMNS[-1] == "present"


def test_a_known_process_reads_as_what_it_does(worker):
    s = ProcSampler()
    first = s.sample()
    v0 = _row(first, worker.pid)
    assert v0[C["cpu_user"]] == 0.0  # no previous sample: no rates
    time.sleep(2.0)
    second = s.sample()
    v = _row(second, worker.pid)
    assert second.comm[list(second.pid).index(worker.pid)] == os.path.basename(sys.executable)[:15]
    assert v[C["nice"]] == 5 and v[C["priority"]] == 25
    assert v[C["threads"]] == 1
    assert v[C["children"]] == 3
    assert v[C["tcp_listen"]] == 1 and v[C["tcp_established"]] == 2  # both ends live in the worker
    assert v[C["fds_socket"]] == 3 and v[C["udp"]] == 0 and v[C["sockets_ipv6"]] == 0
    assert v[C["fds_pipe"]] >= 2  # its own pipe (stdout is a pipe too)
    assert v[C["fds_file"]] >= 1  # the output file
    assert v[C["fds_total"]] == v[C["fds_file"]:C["fds_other"] + 1].sum()
    # ~1 MiB written a second, ~half a core burnt (loose: the machine is shared)
    assert 0.6 * (1 << 20) <= v[C["io_write_chars_per_s"]] <= 1.2 * (1 << 20), v[C["io_write_chars_per_s"]]
    assert 0.1 <= v[C["cpu_user"]] + v[C["cpu_system"]] <= 1.0
    assert v[C["rss_bytes"]] > 1 << 20 and v[C["vms_bytes"]] > v[C["rss_bytes"]]
    assert 2.0 <= v[C["age_s"]] <= 60.0
    assert v[C["present"]] == 1.0
    assert v[C["state_running"]] + v[C["state_sleeping"]] + v[C["state_disk"]] == 1.0
    # a sleeping child: asleep, no CPU
    kids = [second.x[i] for i, p in enumerate(second.pid.tolist())
            if second.comm[i] == "sleep" and open(f"/proc/{p}/stat").read().split()[3] == str(worker.pid)]
    assert len(kids) == 3
    for k in kids:
        assert k[C["state_sleeping"]] == 1 and k[C["cpu_user"]] == 0 and k[C["children"]] == 0


@pytest.mark.parametrize("hold", [True, False])
def test_processes_that_exit_between_samples_are_left_out_not_errors(hold):
    s = ProcSampler()
    if not hold:
        s.hold_max = 0  # open, read, close every file (what happens past the fd budget)
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(20)]
    try:
        a = s.sample()
        assert all(p.pid in set(a.pid.tolist()) for p in procs)
        for p in procs[:10]:
            p.kill()
            p.wait()
        b = s.sample()
        alive = set(b.pid.tolist())
        assert not any(p.pid in alive for p in procs[:10])
        assert all(p.pid in alive for p in procs[10:])
        assert not any(p.pid in s.held for p in procs[:10])
        assert all((p.pid in s.held) == hold for p in procs[10:])
        s.close()
        assert not s.held
        assert b.x.shape == (b.n, W) and np.isfinite(b.x).all()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _sample(pids, starts, cpu, wall=0) -> ProcSample:
    x = np.zeros((len(pids), W), np.float32)
    x[:, C["cpu_user"]] = cpu
    x[:, C["present"]] = 1
    return ProcSample(wall, wall, np.asarray(pids, np.int64), np.asarray(starts, np.int64),
                      [f"p{p}" for p in pids], x)


def test_volume_rows_follow_the_rule_and_pad():
    # pid 7 busy in both steps, 5 busy only in step 1, 9 new and idle, 3 old and idle; 11 only in step 0
    s0 = _sample([3, 5, 7, 11], [10, 20, 30, 5], [0.0, 0.0, 0.5, 0.0], wall=1)
    s1 = _sample([3, 5, 7, 9], [10, 20, 30, 99], [0.0, 0.3, 0.5, 0.0], wall=2)
    v = build_volume([s0, s1], h=6)
    assert v.x.shape == (2, 6, W)
    assert v.pid.tolist() == [7, 5, 9, 3, 11, -1]   # cpu, then newest start, then pid
    assert v.comm == ["p7", "p5", "p9", "p3", "p11", ""]
    assert v.x[:, :, C["present"]].tolist() == [[1, 1, 0, 1, 1, 0], [1, 1, 1, 1, 0, 0]]
    assert v.x[1, 1, C["cpu_user"]] == np.float32(0.3) and v.x[0, 1, C["cpu_user"]] == 0
    assert v.processes == 5 and (v.wall_ns, v.end_ns) == (1, 2)
    capped = build_volume([s0, s1], h=2)
    assert capped.pid.tolist() == [7, 5] and capped.x.shape == (2, 2, W)
    top = top_processes(v.x, k=2, metrics=1)
    assert [r for r, _ in top] == [0, 1] and top[0][1][0][0] == "cpu_user"


def test_same_pid_reused_is_another_process():
    s0 = _sample([5], [10], [0.1])
    s1 = _sample([5], [20], [0.1])
    v = build_volume([s0, s1], h=3)
    assert v.pid.tolist() == [5, 5, -1] and v.start.tolist() == [20, 10, 0]
    assert process_keys(np.array([5]), np.array([10]))[0] != process_keys(np.array([5]), np.array([20]))[0]


def _voluntary_switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("voluntary_ctxt_switches:")).split()[1])


def _send_and_wait_blocked(p: subprocess.Popen, line: str, timeout: float = 10.0) -> None:
    """Send `line`, read its 'ok', and wait until `p` has blocked on its next read: only then is
    its voluntary switch counted (CI stop 16 sampled between the 'ok' and the block: 0 switches)."""
    before = _voluntary_switches(p.pid)
    p.stdin.write(line)
    p.stdin.flush()
    assert p.stdout.readline() == "ok\n"
    deadline = time.monotonic() + timeout
    while _voluntary_switches(p.pid) <= before:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {p.pid} did not block on its next read in {timeout} s")
        time.sleep(0.005)


def test_an_idle_process_is_reused_and_one_that_ran_is_read_again(tmp_path):
    # waits for a line, then opens one more file and says so
    code = ("import sys\nheld = []\nfor line in sys.stdin:\n"
            f"    if line == 'x\\n': held.append(open({str(tmp_path / 'f')!r}, 'w'))\n    sum(range(3_000_000))\n"
            "    print('ok', flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        s = ProcSampler(refresh=1000)
        time.sleep(0.5)
        first = s.sample()
        time.sleep(0.2)
        second = s.sample()
        assert second.counts["full_reads"] < first.counts["full_reads"] == first.n
        # its stat too: schedstat unchanged -> the bytes read in the first sample
        assert first.counts["stat_reused"] == 0 < second.counts["stat_reused"]
        assert np.array_equal(_row(first, p.pid)[C["fds_total"]:C["fds_other"] + 1],
                              _row(second, p.pid)[C["fds_total"]:C["fds_other"] + 1])
        _send_and_wait_blocked(p, "x\n")
        third = s.sample()
        assert _row(third, p.pid)[C["fds_file"]] == _row(second, p.pid)[C["fds_file"]] + 1
        assert _row(third, p.pid)[C["ctx_voluntary_per_s"]] > 0
        assert _row(second, p.pid)[C["cpu_user"]] == 0 < _row(third, p.pid)[C["cpu_user"]]  # stat read again
        # it runs again without opening or closing anything: as many fds, the links are not read again
        _send_and_wait_blocked(p, "y\n")
        fourth = s.sample()
        assert fourth.counts["fds_reused"] >= 1 and _row(fourth, p.pid)[C["cpu_user"]] > 0
        assert np.array_equal(_row(fourth, p.pid)[C["fds_total"]:C["fds_other"] + 1],
                              _row(third, p.pid)[C["fds_total"]:C["fds_other"] + 1])
        every = ProcSampler(refresh=1)
        every.sample()
        again = every.sample()
        assert again.counts["full_reads"] == again.n and again.counts["stat_reused"] == 0
    finally:
        p.kill()
        p.wait()
