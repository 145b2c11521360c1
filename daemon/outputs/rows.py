"""Connection rows: the extractor's output and the trainer's input format.

One JSON object per connection: ``ts`` (first packet, epoch seconds), the
5-tuple, MACs, ``end_reason``, ``fts`` (the 17 ``conn`` values in order) and
the 17 values again by name.
"""
from __future__ import annotations

import csv
import ipaddress
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


def _row_keys(records: np.ndarray) -> Iterator[tuple]:
    """(ts, src_ip, src_port, dest_ip, dest_port, proto, src_mac, dest_mac, end_reason) per record.

    Addresses and MACs repeat across connections: each distinct one is formatted once."""
    ips: dict[tuple[int, int], str] = {}
    macs: dict[int, str] = {}
    cols = [records[:, c].tolist() for c in (L.FIRST_TS, L.SRC_HI, L.SRC_LO, L.DST_HI, L.DST_LO, L.KEY,
                                             L.SRC_MAC, L.DST_MAC, L.END)]
    for first, shi, slo, dhi, dlo, key, smac, dmac, end in zip(*cols):
        s = ips.get((shi, slo))
        if s is None:
            s = ips[(shi, slo)] = format_ip(shi, slo)
        d = ips.get((dhi, dlo))
        if d is None:
            d = ips[(dhi, dlo)] = format_ip(dhi, dlo)
        sm = macs.get(smac)
        if sm is None:
            sm = macs[smac] = format_mac(smac)
        dm = macs.get(dmac)
        if dm is None:
            dm = macs[dmac] = format_mac(dmac)
        yield (first / 1e9, s, (key >> 16) & 0xFFFF, d, key & 0xFFFF, (key >> 32) & 0xFF, sm, dm,
               end_reason_name(end))


def conn_rows(records: np.ndarray, features: np.ndarray) -> Iterator[dict]:
    """Rows (dicts) for a batch of finished connections and their ``conn`` features."""
    for keys, f in zip(_row_keys(records), features.tolist()):
        row = dict(zip(ROW_KEYS, keys))
        row["fts"] = f
        row.update(zip(CONN_COLUMNS, f))
        row["proto"] = keys[5]  # the feature equals the key; keep the integer
        yield row


_NAMED = [c for c in CONN_COLUMNS if c != "proto"]
_PROTO_AT = CONN_COLUMNS.index("proto")
_JSONL = ('{"ts":%r,"src_ip":"%s","src_port":%d,"dest_ip":"%s","dest_port":%d,"proto":%d,'
          '"src_mac":"%s","dest_mac":"%s","end_reason":"%s","fts":[%s],'
          + ",".join(f'"{c}":%s' for c in _NAMED) + "}")


def jsonl_lines(records: np.ndarray, features: np.ndarray) -> list[str]:
    """The rows of :func:`conn_rows` as JSON text, formatted without building dicts
    (the extractor writes one line per connection; this is its hot path)."""
    out = []
    for keys, f in zip(_row_keys(records), features.tolist()):
        txt = [repr(v) for v in f]
        named = txt[:_PROTO_AT] + txt[_PROTO_AT + 1:]
        out.append(_JSONL % (*keys, ",".join(txt), *named))
    return out


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
            lines = jsonl_lines(records, features)
            n = len(lines)
            if lines:
                self.stream.write("\n".join(lines) + "\n")
        self.count += n
        return n
