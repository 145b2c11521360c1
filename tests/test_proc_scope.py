"""The ``cgroup`` scope of the /proc sampler (daemon/proc/scope.py): a real cgroup v2 the test
makes, sleeping processes inside it, in a cgroup below it and outside it; the sampler and the
volumes hold exactly the processes inside, follow processes entering and leaving, and an absent
cgroup gives empty samples and no volume. Config errors name file, line and key."""
from __future__ import annotations

import numpy as np
import pytest

from cgroups import kill_all, new_cgroup, sleepers_in
from malsensor.daemon.proc.sampler import ProcSampler
from malsensor.daemon.proc.scope import CgroupScope, cgroup2_mounts, cgroup_problem, hierarchy_path, pids_by_proc
from malsensor.daemon.proc.volume import build_volume
from malsensor.daemon.runtime import config as C
from malsensor.daemon.sources.procfs import ProcfsConfig
from malsensor.daemon.views.proc_volume import ProcVolumeRouter


def _pids(ps) -> set[int]:
    return {p.pid for p in ps}


def test_the_sampler_reads_exactly_the_processes_of_the_cgroup_and_below():
    with new_cgroup() as cg:
        sub = cg / "sub"
        sub.mkdir()
        inside = sleepers_in(cg, 3) + sleepers_in(sub, 2)
        outside = sleepers_in(None, 3)
        try:
            want = _pids(inside)
            scope = CgroupScope(str(cg))
            assert set(scope.pids()) == want
            # the other way of finding them (/proc/PID/cgroup of every process) agrees
            assert set(pids_by_proc(hierarchy_path(str(cg)))) == want
            assert set(CgroupScope(str(sub)).pids()) == _pids(inside[3:])
            sampler = ProcSampler(scope=scope)
            s1 = sampler.sample()
            assert set(s1.pid.tolist()) == want and s1.n == 5
            assert s1.counts["scope_missing"] == 0
            assert all(c == "sleep" for c in s1.comm)
            # one leaves (moved to the parent of the scope), one enters the sub-cgroup
            left = inside[0]
            (cg.parent / "cgroup.procs").write_text(str(left.pid))
            entered = sleepers_in(sub, 1)
            inside += entered
            s2 = sampler.sample()
            assert set(s2.pid.tolist()) == want - {left.pid} | _pids(entered)
            assert not set(s2.pid.tolist()) & _pids(outside)
            # the volume: the union of the window's processes, ranked by the row rule (idle
            # sleepers: newest start first, then lowest pid), padded with pid -1
            union = want | _pids(entered)
            v = build_volume([s1, s2], 8)
            assert v.processes == 6
            assert set(v.pid[:6].tolist()) == union and v.pid[6:].tolist() == [-1, -1]
            assert not v.x[:, 6:].any()
            cand = sorted(((-int(st), int(p)) for s in (s1, s2) for p, st in zip(s.pid, s.start)))
            ranked = list(dict.fromkeys(p for _, p in cand))
            v3 = build_volume([s1, s2], 3)
            assert v3.pid.tolist() == ranked[:3] and v3.processes == 6
            # present: the one that left is absent from step 2, the one that entered from step 1
            row = {int(p): r for r, p in enumerate(v.pid.tolist()) if p >= 0}
            present = v.x[:, :, -1]
            assert present[:, row[left.pid]].tolist() == [1.0, 0.0]
            assert present[:, row[entered[0].pid]].tolist() == [0.0, 1.0]
        finally:
            kill_all(inside + outside)
        # emptied: samples without processes, and a window of them gives no volume
        router = ProcVolumeRouter(2, 8, 0)
        assert router.push(sampler.sample()) is None
        assert sampler.sample().n == 0
    # removed: an empty sample that says so, no error
    gone = sampler.sample()
    assert gone.n == 0 and gone.counts["scope_missing"] == 1
    assert router.push(gone) is None and router.empty == 1
    assert sampler.totals["scope_missing"] == 1
    sampler.close()


def test_a_cgroup_that_does_not_exist_yet_is_sampled_once_it_does():
    with new_cgroup() as cg:
        later = cg / "unit"
        sampler = ProcSampler(scope=CgroupScope(str(later)))
        assert sampler.sample().counts["scope_missing"] == 1
        later.mkdir()
        ps = sleepers_in(later, 2)
        try:
            s = sampler.sample()
            assert s.counts["scope_missing"] == 0 and set(s.pid.tolist()) == _pids(ps)
        finally:
            kill_all(ps)
        sampler.close()


def _mount() -> str:
    mounts = cgroup2_mounts()
    if not mounts:
        pytest.skip("no cgroup v2 mount to name in the config")  # the error messages are checked below anyway
    return mounts[0].mount_point


def test_config_cgroup_is_checked_with_file_line_and_key():
    def problems(value: str) -> list[str]:
        text = f'[[source]]\nkind = "procfs"\ninterval = 0.5\ncgroup = "{value}"\n'
        with pytest.raises(C.ConfigError) as ei:
            C.parse_config(text, "t.toml", "/base")
        return [str(p) for p in ei.value.problems]

    assert problems("system.slice/x.service") == [
        "t.toml:4: source[0].cgroup: 'system.slice/x.service' is not an absolute path (a cgroup v2 folder, "
        "e.g. /sys/fs/cgroup/system.slice/NAME.service)"]
    got = problems("/tmp/not-a-cgroup")
    assert len(got) == 1 and got[0].startswith("t.toml:4: source[0].cgroup: /tmp/not-a-cgroup is not inside a "
                                               "cgroup v2 hierarchy (")
    root = _mount()
    assert problems(f"{root}/a/../b") == [
        f"t.toml:4: source[0].cgroup: '{root}/a/../b': write it without '.', '..' or repeated '/' ('{root}/b')"]
    # a unit that is not started yet: valid (its cgroup appears when it starts)
    cfg = C.parse_config(f'[[source]]\nkind = "procfs"\ncgroup = "{root}/system.slice/not-started.service"\n',
                         "t.toml", "/base")
    assert cfg.sources == (ProcfsConfig(cgroup=f"{root}/system.slice/not-started.service"),)
    assert C.parse_config('[[source]]\nkind = "procfs"\n', "t.toml", "/base").sources == (ProcfsConfig(),)
    # a key of procfs on another kind
    with pytest.raises(C.ConfigError) as ei:
        C.parse_config('[[source]]\nkind = "pcap"\nfile = "x.pcap"\ncgroup = "/x"\n', "t.toml", "/base")
    assert str(ei.value.problems[0]).startswith("t.toml:4: source[0].cgroup: unknown key")


def test_cgroup_problem_without_any_cgroup2_mount(tmp_path):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        "41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n")
    assert cgroup_problem("/sys/fs/cgroup/uni fied/x", str(proc)) is None
    assert hierarchy_path("/sys/fs/cgroup/uni fied/x/y", str(proc)) == "/x/y"
    assert cgroup_problem("/sys/fs/cgroup/x", str(proc)) == (
        "/sys/fs/cgroup/x is not inside a cgroup v2 hierarchy (cgroup2 is mounted at /sys/fs/cgroup/uni fied)")
    (proc / "self" / "mountinfo").write_text("22 1 0:21 / /proc rw,nosuid - proc proc rw\n")
    assert cgroup_problem("/sys/fs/cgroup/x", str(proc)) == (
        "/sys/fs/cgroup/x is not inside a cgroup v2 hierarchy (no cgroup2 filesystem is mounted)")


def test_record_proc_refuses_a_bad_cgroup(tmp_path):
    from malsensor.models.errors import TrainError
    from malsensor.models.record_proc import RecordOptions, record

    with pytest.raises(TrainError, match=r"record-proc: --cgroup 'x' is not an absolute path"):
        record(RecordOptions("benign", 1.0, tmp_path, cgroup="x"))


def test_record_proc_records_only_the_cgroup(tmp_path):
    from malsensor.models.data.procshards import load_shard
    from malsensor.models.record_proc import RecordOptions, record

    with new_cgroup() as cg:
        inside = sleepers_in(cg, 4)
        outside = sleepers_in(None, 2)
        try:
            path, n = record(RecordOptions("benign", 0.45, tmp_path, interval=0.1, steps=2, processes=8,
                                           cgroup=str(cg)))
        finally:
            kill_all(inside + outside)
    assert n >= 1
    a = load_shard(path)
    assert a["processes"].tolist() == [4] * n
    for row in a["pid"]:
        assert set(row[:4].tolist()) == _pids(inside) and row[4:].tolist() == [-1] * 4
    assert np.all(a["x"][:, :, 4:] == 0)
