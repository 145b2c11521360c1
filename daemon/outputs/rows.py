"""Connection rows: the extractor's output and the trainer's input format.

One JSON object per connection: ``ts`` (first packet, epoch seconds), the
5-tuple, MACs, ``end_reason``, ``fts`` (the 17 ``conn`` values in order) and
the 17 values again by name.
"""
from __future__ import annotations

import csv
import ipaddress
import json
from typing import IO, Iterator

import numpy as np

from ..flows import layout as L
from ..views.conn import CONN_COLUMNS

ROW_KEYS = ("ts", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "src_mac", "dest_mac", "end_reason")
_V4_MAPPED = 0xFFFF << 32


def format_ip(hi: int, lo: int) -> str:
    """Text form of an address as the decoder stores it (IPv4 as ::ffff:a.b.c.d)."""
    hi &= 0xFFFFFFFFFFFFFFFF
    lo &= 0xFFFFFFFFFFFFFFFF
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return ipaddress.IPv6Address((hi << 64) | lo).compressed


def format_mac(mac: int) -> str:
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def end_reason_name(end: int) -> str:
    return L.END_REASONS.get(end & 0xFF, f"unknown_{end & 0xFF}")


def conn_rows(records: np.ndarray, features: np.ndarray) -> Iterator[dict]:
    """Rows (dicts) for a batch of finished connections and their ``conn`` features."""
    fts = features.tolist()
    for rec, f in zip(records.tolist(), fts):
        key = rec[L.KEY]
        row = {
            "ts": rec[L.FIRST_TS] / 1e9,
            "src_ip": format_ip(rec[L.SRC_HI], rec[L.SRC_LO]),
            "src_port": (key >> 16) & 0xFFFF,
            "dest_ip": format_ip(rec[L.DST_HI], rec[L.DST_LO]),
            "dest_port": key & 0xFFFF,
            "proto": (key >> 32) & 0xFF,
            "src_mac": format_mac(rec[L.SRC_MAC]),
            "dest_mac": format_mac(rec[L.DST_MAC]),
            "end_reason": end_reason_name(rec[L.END]),
            "fts": f,
        }
        row.update(zip(CONN_COLUMNS, f))
        row["proto"] = (key >> 32) & 0xFF  # the feature equals the key; keep the integer
        yield row


class RowWriter:
    """Writes rows as JSONL (one object per line) or CSV (header + named columns)."""

    FORMATS = ("jsonl", "csv")

    def __init__(self, stream: IO[str], fmt: str = "jsonl") -> None:
        if fmt not in self.FORMATS:
            raise ValueError(f"unknown format {fmt!r} (allowed: {', '.join(self.FORMATS)})")
        self.stream = stream
        self.fmt = fmt
        self.count = 0
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(stream, lineterminator="\n")
            self._csv.writerow((*ROW_KEYS, *CONN_COLUMNS))

    def write_batch(self, records: np.ndarray, features: np.ndarray) -> int:
        n = 0
        if self._csv is not None:
            for r in conn_rows(records, features):
                self._csv.writerow([r[k] for k in ROW_KEYS] + [repr(v) for v in r["fts"]])
                n += 1
        else:
            dumps = json.dumps
            lines = [dumps(r, separators=(",", ":")) for r in conn_rows(records, features)]
            n = len(lines)
            if lines:
                self.stream.write("\n".join(lines) + "\n")
        self.count += n
        return n
