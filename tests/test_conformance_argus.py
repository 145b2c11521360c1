"""Conformance of ``--semantics argus`` with the Argus flow meter on the real captures (issue 2, §6).

For every capture in ../shared/data/pcap and ../shared/data/iot_sentinel, Argus 3.0.8 is run as
``argus -X -J -S 3600 -r FILE -w OUT`` and read back with ``ra -n -u -p 6 -c , ... - tcp``; malsensor
extracts the same file in-process with ``TrackerConfig.for_semantics("argus")``. TCP connections are
matched on (start time in µs, saddr, sport, daddr, dport) and compared on all 17 features: relative
1e-3, or 1 µs absolute for the time features (dur, tcprtt, synack, ackdat). Packet and byte counts of
the matched connections are checked against tshark. Every remaining kind of disagreement is explained
with counts in docs/argus-semantics.md; ``python tests/test_conformance_argus.py`` prints the table.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.outputs.rows import format_ip
from malsensor.daemon.pipeline import extract_file
from malsensor.daemon.views.conn import CONN_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import DATA, PCAPS, require_data, require_tool  # noqa: E402

IOT = DATA / "iot_sentinel"
RA_FIELDS = ("stime saddr sport daddr dport dur proto sbytes dbytes sttl dttl sload dload spkts dpkts "
             "smeansz dmeansz sintpkt dintpkt tcprtt synack ackdat").split()
TIME_FEATURES = frozenset({"dur", "tcp_rtt", "syn_ack", "ack_dat"})
REL_TOL = 1e-3
ABS_TOL_TIME = 1e-6 + 1e-9   # 1 µs (+ the last printed digit's rounding)
MIN_AGREE = 0.99
Key = tuple  # (stime µs, saddr, sport, daddr, dport)


def _us_of(text: str) -> int:
    """'1270661369.794785' -> 1270661369794785 without going through a float."""
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000 + int((frac + "000000")[:6])


def argus_tcp(pcap: Path) -> dict[Key, np.ndarray]:
    """Argus's TCP records of a capture: key -> the 17 values in CONN_COLUMNS order."""
    with tempfile.TemporaryDirectory(prefix="argus-") as tmp:
        out = os.path.join(tmp, "out.argus")   # fresh: argus appends to an existing file
        subprocess.run(["argus", "-X", "-J", "-S", "3600", "-r", str(pcap), "-w", out],
                       check=True, capture_output=True, timeout=300)
        if not os.path.exists(out):
            return {}
        ra = subprocess.run(["ra", "-n", "-u", "-p", "6", "-c", ",", "-r", out, "-s", *RA_FIELDS, "-", "tcp"],
                            capture_output=True, text=True, timeout=300)
        text = ra.stdout
        if ra.returncode != 0 and text.strip():   # ra exits 1 when the filter matched nothing
            raise RuntimeError(f"ra failed on {pcap}: {ra.stderr.strip()}")
    rows: dict[Key, np.ndarray] = {}
    for line in text.splitlines()[1:]:
        v = line.split(",")
        key = (_us_of(v[0]), v[1], int(v[2]), v[3], int(v[4]))
        vals = [float(x) if x not in ("", "tcp") else (6.0 if x == "tcp" else 0.0) for x in v[5:]]
        rows[key] = np.array(vals, dtype=np.float64)
    return rows


def malsensor_tcp(pcap: Path) -> tuple[dict[Key, np.ndarray], dict[Key, np.ndarray]]:
    """malsensor's TCP connections in argus semantics: key -> features, key -> flow record."""
    feats: dict[Key, np.ndarray] = {}
    recs: dict[Key, np.ndarray] = {}
    cfg = TrackerConfig.for_semantics("argus")
    for cb in extract_file(pcap, cfg, "argus", frozenset({6})):
        r = cb.records
        first_us = r[:, L.FIRST_TS] // 1000
        sport, dport = L.sport_of(r), L.dport_of(r)
        for i in range(cb.n):
            key = (int(first_us[i]), format_ip(int(r[i, L.SRC_HI]), int(r[i, L.SRC_LO])), int(sport[i]),
                   format_ip(int(r[i, L.DST_HI]), int(r[i, L.DST_LO])), int(dport[i]))
            feats[key] = cb.features[i]
            recs[key] = r[i]
    return feats, recs


def agree(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per feature: equal within relative 1e-3, or within 1 µs for the time features."""
    diff = np.abs(ours - theirs)
    ok = diff <= REL_TOL * np.maximum(np.abs(ours), np.abs(theirs))
    for j, name in enumerate(CONN_COLUMNS):
        if name in TIME_FEATURES:
            ok[j] |= diff[j] <= ABS_TOL_TIME
    return ok


@dataclass
class FileResult:
    path: Path
    argus: int = 0
    ours: int = 0
    both: int = 0
    agreeing: int = 0
    bad_features: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    keys: list = field(default_factory=list)          # matched keys
    records: dict = field(default_factory=dict)       # matched key -> our flow record

    @property
    def fraction(self) -> float:
        return self.agreeing / self.both if self.both else 1.0


def compare_file(pcap: Path, theirs: dict[Key, np.ndarray]) -> FileResult:
    feats, recs = malsensor_tcp(pcap)
    res = FileResult(pcap, argus=len(theirs), ours=len(feats))
    for key, ref in theirs.items():
        if key not in feats:
            continue
        res.both += 1
        res.keys.append(key)
        res.records[key] = recs[key]
        ok = agree(feats[key], ref)
        if ok.all():
            res.agreeing += 1
        else:
            bad = [CONN_COLUMNS[j] for j in np.flatnonzero(~ok)]
            res.bad_features.update(bad)
            if len(res.examples) < 5:
                res.examples.append((key, {b: (float(feats[key][CONN_COLUMNS.index(b)]),
                                               float(ref[CONN_COLUMNS.index(b)])) for b in bad}))
    return res


def _captures() -> tuple[list[Path], list[Path]]:
    shared = sorted(p for p in PCAPS.iterdir() if p.is_file()) if PCAPS.is_dir() else []
    iot = sorted(IOT.glob("*/*.pcap*")) if IOT.is_dir() else []
    return shared, iot


@functools.lru_cache(maxsize=1)
def _results() -> dict[Path, FileResult]:
    """Compare every capture once per session (Argus runs in parallel: it idles ~1 s per file)."""
    shared, iot = _captures()
    files = shared + iot
    with ThreadPoolExecutor(max_workers=12) as pool:
        argus_rows = dict(zip(files, pool.map(argus_tcp, files)))
    return {p: compare_file(p, argus_rows[p]) for p in files}


def _need_tools() -> None:
    for tool in ("argus", "ra"):
        require_tool(tool)


def _report(res: FileResult) -> str:
    name = res.path.name if res.path.parent == PCAPS else f"{res.path.parent.name}/{res.path.name}"
    return (f"{name}: argus {res.argus} ours {res.ours} both {res.both} agree {res.agreeing} "
            f"({100 * res.fraction:.2f}%) bad {dict(res.bad_features)} e.g. {res.examples[:3]}")


@pytest.mark.parametrize("name", ["http_espn.pcapng", "ndpi_1kxun.pcap", "ndpi_443_firefox.pcap",
                                  "retina_tls_ciphers.pcap", "stratosphere_cc_capture1.pcap",
                                  "stratosphere_scanning_host.pcap", "stratosphere_ssh_bruteforce.pcap",
                                  "synscan.pcapng"])
def test_shared_capture_agrees_with_argus(name: str) -> None:
    _need_tools()
    pcap = require_data(PCAPS / name)
    res = _results()[pcap]
    assert res.argus > 0, f"argus reported no TCP connection in {name}"
    # nearly every Argus TCP record has its malsensor counterpart (the rest: docs/argus-semantics.md)
    assert res.both >= 0.95 * res.argus, _report(res)
    assert res.fraction >= MIN_AGREE, _report(res)


def test_iot_captures_agree_with_argus() -> None:
    _need_tools()
    require_data(IOT)
    results = [r for p, r in _results().items() if p.is_relative_to(IOT)]
    assert len(results) >= 400
    both = sum(r.both for r in results)
    agreeing = sum(r.agreeing for r in results)
    n_argus = sum(r.argus for r in results)
    worst = sorted(results, key=lambda r: r.fraction)[:5]
    detail = "\n".join(_report(r) for r in worst)
    assert both >= 0.95 * n_argus, f"matched {both} of {n_argus}\n{detail}"
    assert agreeing >= MIN_AGREE * both, f"{agreeing}/{both} agree\n{detail}"


def _tshark_counts(pcap: Path) -> dict[tuple, list[int]]:
    """Per TCP 5-tuple (as sent by the A side): [A->B frames, A->B bytes, B->A frames, B->A bytes]."""
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", "tcp && !icmp && !icmpv6", "-T", "fields",
                          "-E", "separator=,", "-E", "occurrence=f", "-e", "ip.src", "-e", "ipv6.src",
                          "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport",
                          "-e", "frame.len"], check=True, capture_output=True, text=True, timeout=300).stdout
    conv: dict[tuple, list[int]] = {}
    for line in out.splitlines():
        sip4, sip6, sport, dip4, dip6, dport, flen = line.split(",")
        a = (sip4 or sip6, int(sport))
        b = (dip4 or dip6, int(dport))
        k = (a, b) if (a, b) in conv or (b, a) not in conv else (b, a)
        c = conv.setdefault(k, [0, 0, 0, 0])
        j = 0 if k[0] == a else 2
        c[j] += 1
        c[j + 1] += int(flen)
    return conv


def test_counts_agree_with_tshark() -> None:
    """Packets and whole-frame bytes per side of the matched connections equal tshark's."""
    _need_tools()
    require_tool("tshark")
    shared, iot = _captures()
    if not shared:
        require_data(PCAPS)
    files = shared + iot[::8]   # every capture of the shared set, a spread of the IoT ones
    with ThreadPoolExecutor(max_workers=2) as pool:
        convs = dict(zip(files, pool.map(_tshark_counts, files)))
    checked = mismatched = 0
    problems = []
    for pcap in files:
        res = _results()[pcap]
        per_tuple = Counter((k[1], k[2], k[3], k[4]) for k in res.keys)
        for key in res.keys:
            if per_tuple[key[1:]] != 1:
                continue   # the 5-tuple was reused (several records): tshark counts the sum
            s, d = (key[1], key[2]), (key[3], key[4])
            if (s, d) in convs[pcap]:
                c = convs[pcap][(s, d)]
            elif (d, s) in convs[pcap]:
                c = convs[pcap][(d, s)]
                c = [c[2], c[3], c[0], c[1]]
            else:
                problems.append((pcap.name, key, "not in tshark"))
                continue
            rec = res.records[key]
            ours = [int(rec[L.S_PKTS]), int(rec[L.S_WIRE_BYTES]), int(rec[L.D_PKTS]), int(rec[L.D_WIRE_BYTES])]
            checked += 1
            if ours != c:
                mismatched += 1
                problems.append((pcap.name, key, ours, c))
    assert checked > 1000
    assert mismatched <= 0.01 * checked, f"{mismatched}/{checked} differ from tshark: {problems[:10]}"


if __name__ == "__main__":   # a per-file table for docs/argus-semantics.md
    tot = Counter()
    for p, r in _results().items():
        print(_report(r))
        tot.update(argus=r.argus, ours=r.ours, both=r.both, agreeing=r.agreeing)
        tot.update({"bad_" + k: v for k, v in r.bad_features.items()})
    print(dict(tot))
