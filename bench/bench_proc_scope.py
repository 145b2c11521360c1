"""Cost of the ``cgroup`` scope of the /proc sampler (daemon/proc/scope.py), side by side.

With ``--inside`` sleeping processes in a cgroup v2 the benchmark makes (and removes) and each
of ``--outside`` counts of sleepers elsewhere on the machine (``sleep`` children of one process
group, killed at the end), the CPU time (``time.process_time``, best of ``--samples``) of:

* listing the cgroup's processes from ``cgroup.procs`` of it and the cgroups below it (what the
  sampler does), against reading ``/proc/PID/cgroup`` of every process of the machine and
  keeping those at or below the cgroup (the other way; one open per process of the machine);
* one scoped ``ProcSampler.sample()`` against one sample of the whole machine.

Needs root and a writable cgroup v2 hierarchy.

    .venv/bin/python bench/bench_proc_scope.py [--inside 20] [--outside 100,1000] [--samples 10]
"""
from __future__ import annotations

import argparse
import os
import signal

from bench_procfs import cpu_ms, spawn_sleepers  # (bench/ is on sys.path when run as a script)


def main() -> None:
    from malsensor.daemon.proc.sampler import ProcSampler
    from malsensor.daemon.proc.scope import CgroupScope, cgroup2_mounts, hierarchy_path, pids_by_proc
    from malsensor.models.proc_cgroup import WorkCgroup, writable_parent

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inside", type=int, default=20)
    ap.add_argument("--outside", default="100,1000")
    ap.add_argument("--samples", type=int, default=10)
    a = ap.parse_args()
    if not cgroup2_mounts():
        raise SystemExit("no cgroup v2 hierarchy is mounted")
    cg = WorkCgroup.make(writable_parent() / f"malsensor-bench-{os.getpid()}")
    procs = []
    try:
        procs.append(spawn_sleepers(a.inside, cg.path))
        scope = CgroupScope(str(cg.path))
        name = hierarchy_path(str(cg.path))
        print(f"{'outside':>8} {'processes':>9} {'in cgroup':>9} {'cgroup.procs ms':>15} {'/proc/PID/cgroup ms':>19} "
              f"{'ratio':>6} {'scoped sample ms':>16} {'machine sample ms':>17} {'ratio':>6}  "
              f"(CPU, best of {a.samples})")
        for n in [int(x) for x in a.outside.split(",") if x]:
            out = spawn_sleepers(n)
            try:
                total = sum(1 for d in os.listdir("/proc") if d.isdigit())
                inside = scope.pids()
                assert inside == pids_by_proc(name), "the two ways disagree"
                t_procs = cpu_ms(scope.pids, a.samples)
                t_scan = cpu_ms(lambda: pids_by_proc(name), a.samples)
                scoped, machine = ProcSampler(scope=scope), ProcSampler()
                t_scoped = cpu_ms(scoped.sample, a.samples)
                t_machine = cpu_ms(machine.sample, a.samples)
                scoped.close()
                machine.close()
                print(f"{n:>8} {total:>9} {len(inside):>9} {t_procs:>15.3f} {t_scan:>19.3f} {t_scan / t_procs:>5.1f}x "
                      f"{t_scoped:>16.2f} {t_machine:>17.2f} {t_machine / t_scoped:>5.1f}x", flush=True)
            finally:
                os.killpg(out.pid, signal.SIGKILL)
                out.wait()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        cg.remove()


if __name__ == "__main__":
    main()
