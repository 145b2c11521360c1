"""How well can any classifier tell the IoT Sentinel devices apart? The ceiling that the captures
themselves put on per-device-capture accuracy (issue 14's 0.90 target), from the packets alone.

    .venv/bin/python bench/iot_separability.py [--pairs A/B,C/D] [--no-split]

Each capture is reduced to its device's *behaviour*: the ordered sequence of the IP packets to
and from the device's MAC, each as (direction, IP protocol, frame length, the device's TTL, TCP
flags, the well-known port (< 1024) on each side or -1). That is everything a flow-feature or
packet-sequence model sees except timing, the addresses DHCP hands out, ephemeral ports and
payload bytes. Two captures with the same sequence differ only in those: nothing in the sensor's
views (conn, conn_ctx, conn_profile, pkt_seq) separates them but timing jitter. The best any
classifier can do on a group of identical captures is to give all of them to the device with
the most captures in the group, so the sum of those maxima over all groups bounds the accuracy
(a Bayes bound on identical inputs; timing could in principle lift it, but on this data set a
model that leans on timing does worse than chance on these captures, see docs/devices.md).

Printed: the bound over all captures, over the trainer's validation and test splits
(bench_quality's seeded split, captures grouped; ``--no-split`` skips loading the rows), the
groups that mix devices, and for each ``--pairs`` pair the "marker" packets: those in at least
half of one device's captures and in none of the other's (what a model would have to find).
Packets are read by tshark (the reference decoder, installed by ``make test``), two at a time.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq  # noqa: E402

FIELDS = ("eth.src", "eth.dst", "ip.proto", "frame.len", "ip.ttl", "tcp.flags",
          "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport")
Packet = tuple  # (from the device, proto, frame length, TTL if from the device, TCP flags, port, port)


def well_known(port: str) -> int:
    return int(port) if port and int(port) < 1024 else -1


def behaviour(pcap: Path, mac: str) -> tuple[Packet, ...]:
    """The device's packets in ``pcap`` as the module docstring defines them, in capture order."""
    cmd = ["tshark", "-r", str(pcap), "-Y", "ip", "-T", "fields", "-E", "separator=/t"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    seq = []
    for line in out.splitlines():
        src, dst, proto, length, ttl, flags, tsp, tdp, usp, udp = (line.split("\t") + [""] * 10)[:10]
        if mac not in (src, dst):
            continue
        sent = src == mac
        seq.append((sent, proto, int(length), ttl if sent else "", flags,
                    well_known(tsp or usp), well_known(tdp or udp)))
    return tuple(seq)


def read_all(root: Path, labels: dict[str, str]) -> dict[Path, tuple[str, tuple[Packet, ...]]]:
    """Every capture of every device folder under ``root``: path -> (label, behaviour)."""
    mac_of = {name: mac for mac, label in labels.items() for name in label.split("+")}
    jobs = [(p, mac_of[d.name]) for d in sorted(root.iterdir()) if d.is_dir() and d.name in mac_of
            for p in sorted(d.glob("*.pcap"))]
    out = {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as ex:  # tshark processes; two cores on the reference VM
        for i, (job, seq) in enumerate(zip(jobs, ex.map(lambda j: behaviour(*j), jobs)), 1):
            out[job[0]] = (labels[job[1]], seq)
            if i % 100 == 0 or i == len(jobs):
                print(f"  read {i}/{len(jobs)} captures ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


def bound(captures: list[tuple[str, tuple]]) -> tuple[int, list[Counter]]:
    """(the most captures any classifier can get right, the groups of identical behaviour that
    hold more than one label) for (label, behaviour) pairs."""
    groups: dict[tuple, Counter] = defaultdict(Counter)
    for label, seq in captures:
        groups[seq][label] += 1
    return sum(max(c.values()) for c in groups.values()), [c for c in groups.values() if len(c) > 1]


def markers(by_label: dict[str, list[set]], a: str, b: str) -> list[tuple[Packet, int]]:
    """Packets in at least half of ``a``'s captures and in none of ``b``'s, most frequent first."""
    ca = Counter(p for s in by_label[a] for p in s)
    cb = Counter(p for s in by_label[b] for p in s)
    found = [(p, n) for p, n in ca.items() if cb[p] == 0 and 2 * n >= len(by_label[a])]
    return sorted(found, key=lambda t: (-t[1], t[0]))


def report(name: str, captures: list[tuple[str, tuple]]) -> None:
    best, mixed = bound(captures)
    print(f"{name}: {len(captures)} device captures, at most {best} separable: accuracy <= {best / len(captures):.4f}")
    for c in sorted(mixed, key=lambda c: -sum(c.values())):
        print(f"    identical behaviour: {', '.join(f'{k} x{v}' for k, v in sorted(c.items()))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default="SmarterCoffee/iKettle2,EdnetCam1/EdnetCam2,TP-LinkPlugHS100/TP-LinkPlugHS110,"
                    "EdimaxCam1/EdimaxCam2,D-LinkSiren/D-LinkWaterSensor,WeMoSwitch2/WeMoLink",
                    help="label pairs A/B whose marker packets to print")
    ap.add_argument("--no-split", action="store_true", help="only the bound over all captures")
    a = ap.parse_args()
    from malsensor.models.data.labels import read_mac_table
    from malsensor.models.data.table import DataStats

    task = bq.TASKS["iot-ctx"]
    data = read_all(bq.IOT, read_mac_table(Path(task["macs"]), DataStats()))  # the trainer's labels, shared MACs merged
    report("all captures", list(data.values()))
    if not a.no_split:
        ds, sp = bq.task_rows(task)
        for name, idx in (("validation split", sp.val), ("test split", sp.test)):
            caps = sorted(set(zip(ds.groups[idx].tolist(), ds.y[idx].tolist())))
            report(name, [(y, data[Path(ds.group_names[g])][1]) for g, y in caps])
    by_label: dict[str, list[set]] = defaultdict(list)
    for label, seq in data.values():
        by_label[label].append(set(seq))
    for pair in filter(None, a.pairs.split(",")):
        x, y = pair.split("/")
        for p, q in ((x, y), (y, x)):
            found = markers(by_label, p, q)
            shown = "; ".join(f"{'sent' if m[0] else 'received'} proto {m[1]} {m[2]} B ttl {m[3] or '-'} "
                              f"flags {m[4] or '-'} ports {m[5]}/{m[6]} in {n}" for m, n in found[:4])
            print(f"{p} ({len(by_label[p])} captures) not {q}: {shown or 'no marker packet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
