"""Live capture speed: malsensor vs tcpdump vs argus, side by side on the same veth traffic.

For each tool and each offered rate, one trial on a fresh capture process:

  [ns src] tcpreplay x N (real capture, looped, preloaded) --veth--> [ns cap] tool on host end

* offered rate: ``tcpreplay --pps`` split over the senders, or ``top1``/``top2`` (one or
  two ``--topspeed`` senders: the most this machine's senders reach);
* arrived: the host end's rx_packets counter (what the kernel delivered to the taps);
* captured: what the tool reports having processed (malsensor: packets through
  decode + tracking + features; tcpdump: "packets captured"; argus: racount total_pkts);
* drops = arrived - captured (the tools' own kernel-drop counters are printed too);
* CPU µs/packet: the tool process's user + system CPU time (all threads, /proc/PID/stat)
  from just before the traffic to the end of its processing, divided by captured packets.
  The kernel's copy of each packet into the capture ring happens in the sender's softirq
  and is not in anybody's figure (all three tools use a TPACKET_V3 ring).

malsensor runs as ``malsensor extract --interface`` (rows to /dev/null), i.e. capture +
decode + tracking + the 17 features; tcpdump as ``tcpdump -w /dev/null -B <ring KiB>``
(same ring memory as malsensor); argus as ``argus -X -J -S 3600 -i``.

    .venv/bin/python bench/bench_live.py                      # the side-by-side table
    .venv/bin/python bench/bench_live.py --ring-sweep         # malsensor ring geometry
    .venv/bin/python bench/bench_live.py --tools malsensor --rates 100000,top2 --fanout 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from netns import VethPair  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pcap"
VENV_BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Trial:
    tool: str
    offered: str
    seconds: float
    sent: int = 0
    arrived: int = 0
    captured: int = 0
    tool_drops: int | None = None
    cpu_s: float = 0.0
    note: str = ""

    @property
    def drops(self) -> int:
        return max(0, self.arrived - self.captured)

    @property
    def pps(self) -> float:
        return self.arrived / self.seconds if self.seconds else 0.0

    @property
    def us_per_packet(self) -> float:
        return 1e6 * self.cpu_s / self.captured if self.captured else float("nan")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rx_packets(v: VethPair) -> int:
    out = v.run_cap(["cat", f"/sys/class/net/{v.host}/statistics/rx_packets"]).stdout
    return int(out)


def wait_for(path: Path, pattern: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text(errors="replace")):
            return
        if proc.poll() is not None:
            sys.exit(f"capture process exited early:\n{path.read_text(errors='replace')}")
        time.sleep(0.05)
    sys.exit(f"capture process not ready after {timeout}s:\n{path.read_text(errors='replace')}")


class Tool:
    name = ""
    ready = ""

    def __init__(self, v: VethPair, work: Path, args: argparse.Namespace) -> None:
        self.v, self.work, self.args = v, work, args
        self.log = work / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> subprocess.Popen:
        self.log.unlink(missing_ok=True)
        f = open(self.log, "w")
        p = self.v.popen(self.v.cap_ns, self.argv(), stdout=f, stderr=subprocess.STDOUT)
        wait_for(self.log, self.ready, p)
        time.sleep(0.3)
        return p

    def result(self, trial: Trial) -> None:
        raise NotImplementedError


class Malsensor(Tool):
    name = "malsensor"
    ready = "capturing on"

    def argv(self) -> list[str]:
        a = self.args
        self.summary = self.work / "summary.json"
        self.summary.unlink(missing_ok=True)
        return [str(VENV_BIN / "malsensor"), "extract", "-i", self.v.host, "-o", os.devnull,
                "--summary-json", str(self.summary), "--fanout", str(a.fanout),
                "--block-size", str(a.block_size), "--block-count", str(a.block_count),
                "--retire-timeout", str(a.retire_timeout), "--semantics", a.semantics]

    def result(self, trial: Trial) -> None:
        s = json.loads(self.summary.read_text())
        trial.captured = s["packets"]
        trial.tool_drops = s["kernel"]["drops"]


class MalsensorFeatures(Malsensor):
    """capture + decode + tracking + the 17 features, rows counted but not formatted: the
    figure the issue's 0.5 us/packet target is about (JSON formatting is the writer's cost,
    measured by the ``malsensor`` tool, which runs the real CLI)."""

    name = "malsensor-features"

    def argv(self) -> list[str]:
        a = self.args
        self.summary = self.work / "summary.json"
        self.summary.unlink(missing_ok=True)
        return [sys.executable, str(Path(__file__).resolve()), "--run-capture", self.v.host,
                "--summary-out", str(self.summary), "--fanout", str(a.fanout),
                "--block-size", str(a.block_size), "--block-count", str(a.block_count),
                "--retire-timeout", str(a.retire_timeout), "--semantics", a.semantics]


def run_capture(a: argparse.Namespace) -> None:
    """The ``malsensor-features`` process: live capture_connections until SIGINT."""
    import logging

    from malsensor.daemon.capture.afpacket import CaptureConfig
    from malsensor.daemon.capture.live import capture_connections
    from malsensor.daemon.capture.ring import RingConfig

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = [0]

    def on_rows(cb) -> None:
        rows[0] += cb.n

    cfg = CaptureConfig((a.run_capture,), fanout=a.fanout, ring=RingConfig(
        block_size=a.block_size, block_count=a.block_count, retire_timeout_ms=a.retire_timeout))
    s = capture_connections(cfg, on_rows, semantics=a.semantics)
    s["rows"] = rows[0]
    Path(a.summary_out).write_text(json.dumps(s))


class Tcpdump(Tool):
    name = "tcpdump"
    ready = "listening on"

    def argv(self) -> list[str]:
        kib = self.args.block_size * self.args.block_count // 1024
        return ["tcpdump", "-i", self.v.host, "-n", "-w", os.devnull, "-B", str(kib)]

    def result(self, trial: Trial) -> None:
        text = self.log.read_text()
        trial.captured = int(re.search(r"(\d+) packets captured", text).group(1))
        trial.tool_drops = int(re.search(r"(\d+) packets dropped by kernel", text).group(1))


class Argus(Tool):
    name = "argus"
    ready = "is up"

    def argv(self) -> list[str]:
        self.out = self.work / "out.argus"
        self.out.unlink(missing_ok=True)
        return ["argus", "-X", "-J", "-S", "3600", "-i", self.v.host, "-w", str(self.out)]

    def result(self, trial: Trial) -> None:
        out = subprocess.run(["racount", "-r", str(self.out)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == "sum":
                trial.captured = int(parts[2])
                return
        trial.note = "racount gave no total"


TOOLS = {"malsensor-features": MalsensorFeatures, "malsensor": Malsensor, "tcpdump": Tcpdump,
         "argus": Argus}


def send(v: VethPair, pcap: Path, offered: str, seconds: float) -> int:
    if offered.startswith("top"):
        n = int(offered[3:] or 1)
        rate = ["--topspeed"]
    else:
        n = 1 if int(offered) <= 300_000 else 2
        rate = [f"--pps={int(offered) / n:.0f}"]
    procs = [v.popen(v.src_ns, ["tcpreplay", "-q", "-K", "--loop=0", f"--duration={seconds:g}",
                                *rate, "-i", v.peer, str(pcap)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(n)]
    sent = 0
    for p in procs:
        out = p.communicate()[0].decode(errors="replace")
        m = re.search(r"Actual: (\d+) packets", out)
        if m is None:
            sys.exit(f"tcpreplay failed:\n{out}")
        sent += int(m.group(1))
    return sent


def trial(v: VethPair, tool: Tool, pcap: Path, offered: str, seconds: float, settle: float) -> Trial:
    t = Trial(tool.name, offered, seconds)
    p = tool.start()
    try:
        rx0, cpu0 = rx_packets(v), proc_cpu(p.pid)
        t0 = time.monotonic()
        t.sent = send(v, pcap, offered, seconds)
        t.seconds = time.monotonic() - t0
        time.sleep(settle)  # the last ring blocks are handed over (tcpdump: 1 s buffer timeout)
        t.arrived = rx_packets(v) - rx0
        t.cpu_s = proc_cpu(p.pid) - cpu0
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    tool.result(t)
    return t


def table(trials: list[Trial]) -> str:
    head = (f"{'tool':18s} {'offered':>8s} {'arrived pps':>12s} {'arrived':>10s} {'captured':>10s} "
            f"{'drops':>8s} {'tool drops':>10s} {'CPU s':>6s} {'CPU us/pkt':>10s}")
    lines = [head, "-" * len(head)]
    for t in trials:
        lines.append(f"{t.tool:18s} {t.offered:>8s} {t.pps:12,.0f} {t.arrived:10,d} {t.captured:10,d} "
                     f"{t.drops:8,d} {'' if t.tool_drops is None else f'{t.tool_drops:,d}':>10s} "
                     f"{t.cpu_s:6.2f} {t.us_per_packet:10.3f} {t.note}")
    return "\n".join(lines)


def summary(trials: list[Trial]) -> str:
    out = ["", "per tool: highest arrived rate with zero drops, and CPU per packet there"]
    for tool in dict.fromkeys(t.tool for t in trials):
        ok = [t for t in trials if t.tool == tool and t.drops == 0 and t.captured]
        if ok:
            best = max(ok, key=lambda t: t.pps)
            out.append(f"  {tool:18s} {best.pps:12,.0f} pps at 0 drops ({best.offered}), "
                       f"{best.us_per_packet:.3f} CPU us/packet")
        else:
            out.append(f"  {tool:18s} drops at every rate tried")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", type=Path, default=DATA / "stratosphere_cc_capture1.pcap")
    ap.add_argument("--tools", default="malsensor-features,malsensor,tcpdump,argus")
    ap.add_argument("--rates", default="50000,100000,200000,300000,top1,top2",
                    help="offered packets/s, or topN = N --topspeed senders")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--settle", type=float, default=1.5)
    ap.add_argument("--fanout", type=int, default=1)
    ap.add_argument("--semantics", default="malsensor")
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--block-count", type=int, default=None)
    ap.add_argument("--retire-timeout", type=int, default=None)
    ap.add_argument("--ring-sweep", action="store_true",
                    help="malsensor only: block size x count at the given rates")
    ap.add_argument("--json", type=Path, help="write the trials as JSON here")
    ap.add_argument("--run-capture", metavar="IF", help=argparse.SUPPRESS)
    ap.add_argument("--summary-out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_capture:
        return run_capture(a)
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    for tool in ("tcpreplay", "racount"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    from malsensor.daemon.capture.ring import RingConfig

    d = RingConfig()
    a.block_size = a.block_size or d.block_size
    a.block_count = a.block_count or d.block_count
    a.retire_timeout = a.retire_timeout or d.retire_timeout_ms
    rates = a.rates.split(",")
    trials: list[Trial] = []
    print(f"traffic: {a.pcap.name} looped by tcpreplay -K; {a.seconds:g} s per trial; "
          f"{os.cpu_count()} CPUs", flush=True)
    with VethPair(mtu=65000) as v, tempfile.TemporaryDirectory() as td:
        work = Path(td)
        if a.ring_sweep:
            geometries = [(1 << 16, 1024), (1 << 18, 256), (1 << 20, 64), (1 << 22, 16),
                          (1 << 20, 16), (1 << 20, 256)]
            for bs, bc in geometries:
                a.block_size, a.block_count = bs, bc
                for r in rates:
                    t = trial(v, MalsensorFeatures(v, work, a), a.pcap, r, a.seconds, a.settle)
                    t.tool = f"{bs >> 10}Kx{bc}"
                    trials.append(t)
                    print(table([t]).splitlines()[-1], flush=True)
        else:
            for name in a.tools.split(","):
                for r in rates:
                    t = trial(v, TOOLS[name](v, work, a), a.pcap, r, a.seconds, a.settle)
                    trials.append(t)
                    print(table([t]).splitlines()[-1], flush=True)
    print()
    print(table(trials))
    if not a.ring_sweep:
        print(summary(trials))
    if a.json:
        a.json.write_text(json.dumps([{**asdict(t), "drops": t.drops, "pps": t.pps,
                                       "us_per_packet": t.us_per_packet} for t in trials], indent=1))


if __name__ == "__main__":
    main()
