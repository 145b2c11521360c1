#!/usr/bin/env python3
"""The labelled data of the shipped default model, laid out for ``malsensor-train fit
--label-from folder`` (used by contrib/models/train-default.sh and eval_default.py).

    default_data.py DATA_DIR OUT_DIR

writes ``OUT_DIR/benign/`` and ``OUT_DIR/malicious/``:

* the eight captures of ``DATA_DIR/pcap`` (symlinks): malicious = the three Stratosphere
  captures (botnet C&C, scanning host, SSH brute force) and the SYN scan; benign = web
  browsing, nDPI application traces, Firefox HTTPS, the TLS cipher handshakes;
* the 414 IoT Sentinel device-setup captures (symlinks ``iot__DEVICE__FILE``), benign:
  ordinary device traffic (DHCP, DNS, NTP, cloud TLS, UPnP...) of 31 device types;
* UNSW-NB15 (``UNSW_NB15_82k.csv``) in ``N_BLOCKS`` blocks of consecutive rows (the CSV is
  in time order: a block is a stretch of time, the closest the CSV comes to a capture),
  each block written as ``unsw_bNN.csv`` into ``benign/`` (label 0) and ``malicious/``
  (label 1), with the 17 columns converted from Argus's definitions to malsensor's (below).

Why the conversion: the daemon serves the default model with ``semantics = "malsensor"``
(Argus's lifecycle ends a record only after an hour: no use for a live sensor), and the
trainer refuses to mix semantics. Per row (docs/features.md, ../shared/data/README.md):

  bytes      Argus counts whole frames: minus 14 bytes of Ethernet header per packet
  TTL        Argus's is the last packet's; kept as the mean (equal unless the TTL changed)
  load       malsensor: bytes * 8 / dur (Argus leaves one packet out and uses frame bytes)
  bytes mean converted bytes / packets
  IAT mean   Argus: milliseconds -> seconds (0 below 2 packets)
  tcp_rtt    malsensor: syn_ack + ack_dat only when both are defined, else 0

What cannot be converted is the lifecycle (Argus merges a 5-tuple's connections that
malsensor ends at FIN/RST/idle) and the gaps Argus skips within one microsecond: the
converted rows are an approximation of what the sensor would have computed, which is why
eval_default.py measures the model with and without them on captures it never saw.
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from malsensor.models.data.protocols import proto_number

MALICIOUS_PCAPS = ("stratosphere_cc_capture1.pcap", "stratosphere_scanning_host.pcap",
                   "stratosphere_ssh_bruteforce.pcap", "synscan.pcapng")
BENIGN_PCAPS = ("http_espn.pcapng", "ndpi_1kxun.pcap", "ndpi_443_firefox.pcap", "retina_tls_ciphers.pcap")
N_BLOCKS = 16
ETHERNET_HEADER = 14
COLUMNS = ("dur", "proto", "s_bytes_sum", "d_bytes_sum", "s_ttl_mean", "d_ttl_mean", "s_load", "d_load",
           "s_pkt_cnt", "d_pkt_cnt", "s_bytes_mean", "d_bytes_mean", "s_iat_mean", "d_iat_mean", "tcp_rtt",
           "syn_ack", "ack_dat")


def _num(v: str) -> float:
    return float(v) if v.strip() else 0.0


def unsw_row_to_conn(row: dict[str, str]) -> list[float] | None:
    """The 17 malsensor-semantics conn features of one UNSW-NB15 row (None: unknown protocol)."""
    proto = proto_number(row["proto"])
    if proto is None:
        return None
    dur = _num(row["dur"])
    sp, dp = _num(row["spkts"]), _num(row["dpkts"])
    sb = max(_num(row["sbytes"]) - ETHERNET_HEADER * sp, 0.0)
    db = max(_num(row["dbytes"]) - ETHERNET_HEADER * dp, 0.0)
    synack, ackdat = _num(row["synack"]), _num(row["ackdat"])
    return [
        dur, float(proto), sb, db, _num(row["sttl"]), _num(row["dttl"]),
        sb * 8 / dur if dur > 0 else 0.0, db * 8 / dur if dur > 0 else 0.0,
        sp, dp, sb / sp if sp else 0.0, db / dp if dp else 0.0,
        _num(row["sinpkt"]) / 1000 if sp >= 2 else 0.0, _num(row["dinpkt"]) / 1000 if dp >= 2 else 0.0,
        synack + ackdat if synack > 0 and ackdat > 0 else 0.0, synack, ackdat,
    ]


def write_unsw_blocks(csv_path: Path, out: Path, n_blocks: int = N_BLOCKS) -> dict[str, int]:
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    counts = {"benign": 0, "malicious": 0, "skipped": 0}
    per = -(-len(rows) // n_blocks)
    for b in range(n_blocks):
        chunk = rows[b * per:(b + 1) * per]
        by_label: dict[str, list[list[float]]] = {"benign": [], "malicious": []}
        for r in chunk:
            x = unsw_row_to_conn(r)
            if x is None:
                counts["skipped"] += 1
                continue
            by_label["malicious" if r["label"].strip() == "1" else "benign"].append(x)
        for lab, xs in by_label.items():
            if not xs:
                continue
            with open(out / lab / f"unsw_b{b:02d}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(COLUMNS)
                w.writerows([repr(v) for v in x] for x in xs)
            counts[lab] += len(xs)
    return counts


def prepare(data: Path, out: Path, unsw: bool = True) -> None:
    for lab in ("benign", "malicious"):
        (out / lab).mkdir(parents=True, exist_ok=True)
    for lab, names in (("malicious", MALICIOUS_PCAPS), ("benign", BENIGN_PCAPS)):
        for n in names:
            src = data / "pcap" / n
            if not src.is_file():
                raise SystemExit(f"default_data.py: {src}: missing capture")
            os.symlink(src.resolve(), out / lab / n)
    iot = sorted((data / "iot_sentinel").glob("*/*.pcap*"))
    if not iot:
        raise SystemExit(f"default_data.py: {data / 'iot_sentinel'}: no captures")
    for p in iot:
        os.symlink(p.resolve(), out / "benign" / f"iot__{p.parent.name}__{p.name}")
    msg = f"{len(MALICIOUS_PCAPS) + len(BENIGN_PCAPS)} captures, {len(iot)} IoT Sentinel captures"
    if unsw:
        counts = write_unsw_blocks(data / "unsw_nb15" / "UNSW_NB15_82k.csv", out)
        msg += (f", UNSW-NB15 rows: {counts['benign']} benign + {counts['malicious']} malicious in {N_BLOCKS} "
                f"blocks ({counts['skipped']} with unknown protocols skipped)")
    print(f"default_data.py: {out}: {msg}", file=sys.stderr)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        raise SystemExit("usage: default_data.py [--no-unsw] DATA_DIR OUT_DIR")
    prepare(Path(args[0]), Path(args[1]), unsw="--no-unsw" not in sys.argv)
