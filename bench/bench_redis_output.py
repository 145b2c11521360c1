"""The redis output (daemon/outputs/redis.py) against the client library alone and the file output.

Real EVE lines (``malsensord --replay`` of a shared capture with the default model, repeated to
--events lines) go, in batches of 256 as the event writer hands them, to a ``redis-server``
started here on loopback (no persistence), one after the other in one run:

  ref   redis-py alone: variadic LPUSH of 256 lines per round trip (the library's ceiling)
  list  RedisOutput, mode list: write() per batch, until the server holds every line
  stream RedisOutput, mode stream (XADD in MULTI/EXEC blocks of 256)
  spool the server down: every batch to the spool on disk; then the server back: the drain
  file  EventFile (the file output), the same batches

For each: events/s end to end and the writer thread's cost per event (what the pipeline waits
for: the queue put, or the file write). Best of --repeat.

    .venv/bin/python bench/bench_redis_output.py [--events 200000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from redis_server import RedisServer  # noqa: E402

from malsensor.daemon.outputs.eve import EventFile  # noqa: E402
from malsensor.daemon.outputs.redis import RedisOutput  # noqa: E402
from malsensor.daemon.runtime.config import OutputSection  # noqa: E402

CAPTURE = REPO.parent / "shared" / "data" / "pcap" / "stratosphere_cc_capture1.pcap"
BATCH = 256


def eve_lines(work: Path, n: int) -> list[bytes]:
    logs = work / "logs"
    logs.mkdir()
    r = subprocess.run([sys.executable, "-m", "malsensor.daemon.runtime.main", "-c", str(REPO / "etc/malsensor.toml"),
                        "--models-dir", str(REPO / "contrib/models"), "--log-dir", str(logs), "--user", "",
                        "--metrics-port", "0", "--replay", str(CAPTURE)], capture_output=True, text=True, timeout=600)
    if r.returncode:
        sys.exit(f"replay failed: {r.stderr[-2000:]}")
    base = (logs / "eve.json").read_bytes().splitlines()
    return (base * (n // len(base) + 1))[:n]


def batches(lines: list[bytes]) -> list[tuple[bytes, int]]:
    out = []
    for i in range(0, len(lines), BATCH):
        b = lines[i:i + BATCH]
        out.append((b"\n".join(b) + b"\n", len(b)))
    return out


def wait(cond, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError
        time.sleep(0.001)


def run_ref(srv: RedisServer, lines: list[bytes]) -> tuple[float, float]:
    c = srv.client()
    c.delete("ref")
    t0 = time.perf_counter()
    for i in range(0, len(lines), BATCH):
        c.lpush("ref", *lines[i:i + BATCH])
    dt = time.perf_counter() - t0
    assert c.llen("ref") == len(lines)
    return dt, dt


def run_output(srv: RedisServer, work: Path, bs, n: int, mode: str) -> tuple[float, float]:
    c = srv.client()
    c.delete(mode)
    spool = work / f"spool-{mode}"
    shutil.rmtree(spool, ignore_errors=True)
    out = RedisOutput(OutputSection(kind="redis", port=srv.port, key=mode, mode=mode, stream_maxlen=0,
                                    spool_dir=str(spool), queue_max_bytes=1 << 30))
    out.open()
    t0 = time.perf_counter()
    put = 0.0
    for data, k in bs:
        t = time.perf_counter()
        assert out.write(data, k)
        put += time.perf_counter() - t
    wait(lambda: out.lines == n)
    dt = time.perf_counter() - t0
    out.close()
    assert (c.llen(mode) if mode == "list" else c.xlen(mode)) == n and out.lost_lines == 0
    return dt, put


def run_spool(srv: RedisServer, work: Path, bs, n: int) -> tuple[float, float, float]:
    srv.stop()
    spool = work / "spool-down"
    shutil.rmtree(spool, ignore_errors=True)
    out = RedisOutput(OutputSection(kind="redis", port=srv.port, key="down", spool_dir=str(spool),
                                    queue_max_bytes=1 << 30, spool_max_bytes=8 << 30))
    out.open()
    t0 = time.perf_counter()
    for data, k in bs:
        out.write(data, k)
    wait(lambda: out.counters()["spooled"] == n)
    t_in = time.perf_counter() - t0
    srv.start()
    wait(lambda: out.lines > 0)  # the output tries the server once a second: time the drain itself
    t1, done = time.perf_counter(), out.lines
    wait(lambda: out.lines == n)
    t_out = (time.perf_counter() - t1) * n / (n - done)
    out.close()
    assert srv.client().llen("down") == n and out.lost_lines == 0, (srv.client().llen("down"), out.counters())
    return t_in, t_out, t_in


def run_file(work: Path, bs) -> tuple[float, float]:
    p = work / "eve-bench.json"
    p.unlink(missing_ok=True)
    f = EventFile(str(p))
    f.open()
    t0 = time.perf_counter()
    for data, k in bs:
        f.write(data, k)
    dt = time.perf_counter() - t0
    f.close()
    return dt, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        work = Path(tmp)
        lines = eve_lines(work, a.events)
        n = len(lines)
        bs = batches(lines)
        mb = sum(map(len, lines)) / 1e6
        print(f"{n:,} EVE lines ({mb:.1f} MB, {mb * 1e6 / n:.0f} bytes each) in batches of {BATCH}")
        srv = RedisServer(work / "redis")
        srv.start()
        best: dict[str, tuple] = {}
        try:
            for _ in range(a.repeat):
                for name, fn in (("ref", lambda: run_ref(srv, lines)),
                                 ("list", lambda: run_output(srv, work, bs, n, "list")),
                                 ("stream", lambda: run_output(srv, work, bs, n, "stream")),
                                 ("spool", lambda: run_spool(srv, work, bs, n)),
                                 ("file", lambda: run_file(work, bs))):
                    r = fn()
                    if name not in best or r[0] < best[name][0]:
                        best[name] = r
                    srv.client().flushall()
        finally:
            srv.stop()
        ref = n / best["ref"][0]
        print(f"{'what':<58} {'events/s':>12} {'vs redis-py':>11} {'writer µs/event':>16}")
        rows = [("redis-py alone, LPUSH x256 per round trip (reference)", best["ref"][0], None),
                ("redis output, mode list (queue -> thread -> LPUSH x256)", best["list"][0], best["list"][1]),
                ("redis output, mode stream (MULTI/EXEC of 256 XADD)", best["stream"][0], best["stream"][1]),
                ("redis output, server down: into the spool", best["spool"][0], None),
                ("redis output, server back: spool drained (LPUSH x256)", best["spool"][1], None),
                ("file output (EventFile, one write per batch)", best["file"][0], best["file"][1])]
        for what, dt, put in rows:
            eps = n / dt
            print(f"{what:<58} {eps:>12,.0f} {eps / ref:>10.2f}x "
                  f"{(put / n * 1e6 if put is not None else float('nan')):>16.3f}")


if __name__ == "__main__":
    main()
