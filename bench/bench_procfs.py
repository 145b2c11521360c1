"""Cost of the /proc sampler (source kind ``procfs``) and of ``cnn3d`` inference.

Sampler: with 100, 1,000 and 5,000 extra sleeping processes (``sleep`` children of one process
group, killed at the end), the CPU time (user + system, ``time.process_time``) of one
``ProcSampler.sample()`` - every process: stat, status, io, every fd link, the socket tables -
side by side, in the same run, with the sampler reading everything every time (``refresh=1``)
and with psutil reading comparable fields of every process
(``process_iter`` with cpu_times, memory_info, num_threads, num_ctx_switches, io_counters,
num_fds, status, nice, ppid, create_time, name; plus ``net_connections`` once per sample for the
sockets). psutil lists fds without reading their links, so it does less work than the sampler.
At a 1 s interval, the CPU per sample in ms / 10 is the % of one core (target: < 2 % at 1,000);
the ratio is psutil's CPU over the sampler's.

cnn3d: the network of etc/models/cnn3d.toml (8 x 120 x 45 volumes, random weights), jitted,
time per volume at batch 1 and 64 (best of ``--repeat``).

    .venv/bin/python bench/bench_procfs.py [--counts 100,1000,5000] [--samples 10] [--repeat 20]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np


def spawn_sleepers(n: int, cgroup: Path | None = None) -> subprocess.Popen:
    """A process group of ``n`` sleeping children of one bash (moved into ``cgroup`` first when
    given); returns once all are there."""
    join = f'echo $$ > "{cgroup}/cgroup.procs"; ' if cgroup else ""
    p = subprocess.Popen(["bash", "-c", f"{join}for i in $(seq {n}); do sleep 600 & done; wait"],
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _count_group(p.pid) < n + 1:
        time.sleep(0.2)
    return p


def _count_group(pgrp: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    if int(f.read().rpartition(b")")[2].split()[2]) == pgrp:
                        n += 1
            except (OSError, ValueError, IndexError):
                pass
    return n


def cpu_ms(fn, k: int) -> float:
    fn()  # warm (numba compile, caches)
    best = float("inf")
    for _ in range(k):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1e3


def psutil_pass() -> int:
    import psutil

    attrs = ["cpu_times", "memory_info", "num_threads", "num_ctx_switches", "io_counters", "num_fds", "status",
             "nice", "ppid", "create_time", "name"]
    n = 0
    for p in psutil.process_iter(attrs=attrs, ad_value=None):
        n += 1
    psutil.net_connections(kind="all")
    return n


def bench_sampler(counts: list[int], samples: int) -> None:
    from malsensor.daemon.proc.sampler import ProcSampler

    print(f"{'extra sleepers':>14} {'processes':>9} {'sampler ms':>10} {'refresh=1 ms':>12} {'psutil ms':>9} "
          f"{'ratio':>6} {'% core @1s':>10}  (CPU per sample, best of {samples})")
    for n in counts:
        p = spawn_sleepers(n) if n else None
        try:
            s = ProcSampler()
            procs = s.sample().n
            ours = cpu_ms(s.sample, samples)
            s.close()  # the two samplers share the process's budget of open files
            every = ProcSampler(refresh=1)
            full = cpu_ms(every.sample, samples)
            every.close()
            ref = cpu_ms(psutil_pass, samples)
            print(f"{n:>14} {procs:>9} {ours:>10.1f} {full:>12.1f} {ref:>9.1f} {ref / ours:>5.2f}x {ours / 10:>9.2f}%",
                  flush=True)
        finally:
            if p is not None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def bench_cnn3d(repeat: int) -> None:
    import jax

    from malsensor.models.zoo.cnn3d import CNN3DConfig, _module

    cfg = CNN3DConfig()
    m = _module(cfg, 2)
    x1 = np.random.default_rng(0).normal(size=(1, cfg.steps, cfg.processes, 45)).astype(np.float32)
    params = m.init({"params": jax.random.PRNGKey(0)}, x1, train=False)["params"]
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(params))
    f = jax.jit(lambda p, x: jax.nn.softmax(m.apply({"params": p}, x, train=False)))
    print(f"cnn3d {cfg.steps}x{cfg.processes}x45, {n_params / 1e6:.1f} M parameters, {jax.devices()[0].platform}:")
    for b in (1, 64):
        x = np.repeat(x1, b, axis=0)
        f(params, x).block_until_ready()
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            f(params, x).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        print(f"  batch {b:>3}: {best * 1e3:8.2f} ms a batch, {best / b * 1e3:7.3f} ms a volume", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="100,1000,5000")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--skip-model", action="store_true")
    a = ap.parse_args()
    bench_sampler([int(c) for c in a.counts.split(",")], a.samples)
    if not a.skip_model:
        bench_cnn3d(a.repeat)


if __name__ == "__main__":
    main()
