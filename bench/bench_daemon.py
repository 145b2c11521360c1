"""malsensord end to end: replay of real traffic through the daemon with two models.

One run, one after the other, on the merged corpus of ../shared/data (bench/corpus.py):

  0. the extractor alone (decode + tracking + 17 features, in process): connections/s, packets/s
     and CPU per connection; every daemon run prints the same, plus its share of that rate
  1. the daemon as fast as it goes, two models (the default forest and an MLP), every
     prediction written as an EVE event, with each model compiled for one batch size
     B in 1, 16, 128, 1024: connections/s
  2. the same with only alerts written (the usual high-rate set-up), and with the forest alone
  3. paced at --rate connections/s (10,000 by default), batch sizes 1,16,128,1024:
     p50/p99/max latency from a connection leaving the tracker to its event written
  4. 3 again with a new forest version published half way: the swap time, latency,
     and that no connection was lost or predicted twice (events per version)

    .venv/bin/python bench/bench_daemon.py [--repeat 4] [--rate 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from corpus import CACHE, DATA, build  # noqa: E402

BIN = Path(sys.executable).parent
WORK = CACHE / "daemon"


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{r.stderr[-3000:]}")
    return r


def point_current(model_dir: Path, version: str) -> None:
    tmp = model_dir / ".current.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(version, tmp)
    os.replace(tmp, model_dir / "current")


def models() -> Path:
    """models/forest (the shipped default model, plus a second version v2 not yet current) and
    models/mlp, trained once on the shared captures (labelled by capture) and cached."""
    mdir = WORK / "models"
    if (mdir / "forest" / "v2").is_dir() and (mdir / "mlp" / "current").exists():
        point_current(mdir / "forest", os.readlink(mdir / "forest" / "first"))
        return mdir
    shutil.rmtree(WORK, ignore_errors=True)
    data = WORK / "train-data"
    for label, names in (("malicious", ("stratosphere_cc_capture1.pcap", "stratosphere_scanning_host.pcap",
                                        "stratosphere_ssh_bruteforce.pcap", "synscan.pcapng")),
                         ("benign", ("http_espn.pcapng", "ndpi_1kxun.pcap", "ndpi_443_firefox.pcap",
                                     "retina_tls_ciphers.pcap"))):
        (data / label).mkdir(parents=True)
        for n in names:
            os.symlink(DATA / "pcap" / n, data / label / n)
    shutil.copytree(REPO / "contrib/models/default", mdir / "forest", symlinks=True)
    os.symlink(os.readlink(mdir / "forest" / "current"), mdir / "forest" / "first")
    train = [str(BIN / "malsensor-train"), "fit", "--data", str(data), "--label-from", "folder", "--split", "random",
             "--reports", str(WORK / "reports"), "-l", "warning"]
    sh([*train, "--model", "mlp", "-e", "3", "--out", str(mdir), "--name", "mlp"])
    # a second forest version (another seed), published into forest/v2 without touching current
    sh([*train, "--model", str(REPO / "contrib/models/forest-default.toml"), "--seed", "1", "--out",
        str(WORK / "v2"), "--name", "forest"])
    src = (WORK / "v2" / "forest" / "current").resolve()
    shutil.copytree(src, mdir / "forest" / "v2")
    meta = json.loads((mdir / "forest" / "v2" / "meta.json").read_text())
    assert meta["version"] != "v2"  # events name the version inside meta.json
    return mdir


def config(path: Path, mdir: Path, out: Path, sizes: list[int], alerts_only: bool = False,
           model_names: tuple[str, ...] = ("forest", "mlp")) -> Path:
    path.write_text(
        '[service]\nuser = ""\n[metrics]\nenabled = false\n'
        f'[stats]\npath = "{out}/stats.jsonl"\ninterval = 3600.0\nlog = false\n'
        f'[inference]\nbatch_sizes = {sizes}\nwatch_interval = 0.5\n'
        + "".join(f'[[model]]\nname = "{m}"\nmodels_dir = "{mdir}"\n' for m in model_names)
        + f'[[output]]\npath = "{out}/eve.json"\nalerts_only = {str(alerts_only).lower()}\n')
    return path


def run(mdir: Path, corpus: Path, sizes: list[int], *, rate: float = 0, alerts_only: bool = False,
        swap_after: float | None = None, model_names: tuple[str, ...] = ("forest", "mlp")) -> dict:
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = config(WORK / "bench.toml", mdir, out, sizes, alerts_only, model_names)
    argv = [str(BIN / "malsensord"), "-c", str(cfg), "--replay", str(corpus)]
    if rate:
        argv += ["--rate", str(rate)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    ready = threading.Event()

    def read_err():
        for line in proc.stderr:
            log.append(line)
            if "malsensord ready" in line:
                ready.set()

    t = threading.Thread(target=read_err, daemon=True)
    t.start()
    if swap_after is not None:
        ready.wait(300)
        time.sleep(swap_after)
        point_current(mdir / "forest", "v2")
    stdout = proc.stdout.read()  # (not communicate(): it would take stderr lines from the reader thread)
    proc.wait()
    t.join(5)
    if proc.returncode != 0:
        sys.exit(f"malsensord failed:\n{''.join(log[-30:])}")
    m = re.match(r"(\d+) connections processed \((\d+) packets, .*?, ([0-9.]+) s, ([0-9.]+) CPU s;", stdout)
    conns, packets, secs, cpu = int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))
    stats = json.loads((out / "stats.jsonl").read_text().splitlines()[-1])
    res = {"connections": conns, "packets": packets, "seconds": secs, "conn_per_s": conns / secs, "cpu_s": cpu,
           "latency": stats["latency_ms"], "events": stats["events"],
           "drops": sum(m["queue_dropped"] for m in stats["models"].values()),
           "predictions": {n: m["predictions"] for n, m in stats["models"].items()}}
    if swap_after is not None:
        swap = next((ln for ln in log if "swapped version" in ln), "")
        sm = re.search(r"swapped version (\S+) -> (\S+) .* in ([0-9.]+)s", swap)
        res["swap_s"] = float(sm.group(3)) if sm else None
        versions: dict[str, int] = {}
        with open(out / "eve.json") as f:
            for line in f:
                ev = json.loads(line)["prediction"]
                if ev["model"] == "forest":
                    versions[ev["version"]] = versions.get(ev["version"], 0) + 1
        res["forest_versions"] = versions
    return res


def extractor(corpus: Path) -> float:
    from malsensor.daemon.capture.pcapfile import read_capture
    from malsensor.daemon.pipeline import OFFLINE_EMIT_ROWS, ConnPipeline

    best = None
    for _ in range(3):
        pipe = ConnPipeline(emit_rows=OFFLINE_EMIT_ROWS)
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(cb.n for cb in pipe.run(read_capture(corpus)))
        r = {"connections": n, "packets": pipe.counters.packets, "seconds": time.perf_counter() - t0,
             "cpu_s": time.process_time() - c0}
        r["conn_per_s"] = n / r["seconds"]
        if best is None or r["cpu_s"] < best["cpu_s"]:
            best = r
    return best


def rates(r: dict, ex: dict | None = None) -> str:
    """connections/s, packets/s, CPU per connection (all threads), and the share of the extractor's rate."""
    txt = (f"{r['conn_per_s']:10,.0f} conn/s {r['packets'] / r['seconds'] / 1e6:5.2f} Mpkt/s "
           f"{r['cpu_s'] / r['connections'] * 1e6:6.2f} CPU-us/conn")
    return txt + (f"  = {r['conn_per_s'] / ex['conn_per_s']:4.0%} of the extractor" if ex else "")


def lat(r: dict) -> str:
    la = r["latency"]
    return f"p50 {la['p50']:7.1f} ms  p99 {la['p99']:7.1f} ms  max {la['max']:7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description="malsensord end to end")
    ap.add_argument("--repeat", type=int, default=4, help="copies of the merged shared captures")
    ap.add_argument("--rate", type=float, default=10_000, help="paced runs: connections/s")
    a = ap.parse_args()
    corpus = build(a.repeat)
    mdir = models()
    print(f"corpus {corpus} ({corpus.stat().st_size / 1e6:.0f} MB); models forest (32 trees) + mlp")
    ex = extractor(corpus)
    print(f"{'extractor alone (in process, one thread)':52s} {rates(ex)}")
    for b in (1, 16, 128, 1024):
        r = run(mdir, corpus, [b])
        print(f"{f'daemon, 2 models, every event (EVE), batch {b}':52s} {rates(r, ex)}  "
              f"({r['connections']:,} connections, {r['events']:,} events, drops {r['drops']})")
    r = run(mdir, corpus, [1, 16, 128, 1024], alerts_only=True)
    print(f"{'daemon, 2 models, alerts only, batches 1..1024':52s} {rates(r, ex)}  ({r['events']:,} predictions)")
    r = run(mdir, corpus, [1, 16, 128, 1024], alerts_only=True, model_names=("forest",))
    print(f"{'daemon, forest only (as shipped), alerts only':52s} {rates(r, ex)}  ({r['events']:,} predictions)")
    for sizes in ([1, 16, 128, 1024], [1024]):
        r = run(mdir, corpus, sizes, rate=a.rate)
        print(f"paced {a.rate:,.0f} conn/s, batches {','.join(map(str, sizes)):>13}: {r['conn_per_s']:9,.0f} conn/s  "
              f"{lat(r)}  drops {r['drops']}")
    r = run(mdir, corpus, [1, 16, 128, 1024], rate=a.rate, swap_after=1.0)
    print(f"paced {a.rate:,.0f} conn/s + hot swap of forest after 1 s: {r['conn_per_s']:9,.0f} conn/s  {lat(r)}  "
          f"drops {r['drops']}; swap loaded+warmed in {r['swap_s'] if r['swap_s'] is not None else '?'} s; forest events per version "
          f"{r['forest_versions']} (sum {sum(r['forest_versions'].values()):,} = connections {r['connections']:,})")


if __name__ == "__main__":
    main()
