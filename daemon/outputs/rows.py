"""Connection rows: the extractor's output and the trainer's input format.

One JSON object per connection: ``ts`` (first packet, epoch seconds), the
5-tuple, MACs, ``end_reason``, ``community_id`` (Community ID v1, the flow hash
Zeek and Suricata log: :mod:`.community_id`), ``fts`` (the 17 ``conn`` values
in order) and the 17 values again by name.
"""
from __future__ import annotations

import csv
import io
import ipaddress
from typing import IO, Iterator

import numpy as np
from ..jit import njit

from ..flows import layout as L
from ..intrinsics import borrowed
from ..views.conn import CONN_COLUMNS
from .community_id import TEXT_LEN as COMMUNITY_ID_LEN
from .community_id import WORK_LEN as COMMUNITY_ID_WORK
from .community_id import check_seed, community_ids, put_community_id
from .jsontext import (FLOAT_MAX, INT_MAX, IP_MAX, MAC_MAX, TextTable, format_rows, put_copy, put_float, put_int,
                       put_ip, put_mac, put_text, write_rows)

ROW_KEYS = ("ts", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "src_mac", "dest_mac", "end_reason",
            "community_id")
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


def _row_keys(records: np.ndarray, community_id_seed: int = 0) -> Iterator[tuple]:
    """(ts, src_ip, src_port, dest_ip, dest_port, proto, src_mac, dest_mac, end_reason, community_id) per record.

    Addresses and MACs repeat across connections: each distinct one is formatted once."""
    ips: dict[tuple[int, int], str] = {}
    macs: dict[int, str] = {}
    cols = [records[:, c].tolist() for c in (L.FIRST_TS, L.SRC_HI, L.SRC_LO, L.DST_HI, L.DST_LO, L.KEY,
                                             L.SRC_MAC, L.DST_MAC, L.END)]
    cids = community_ids(records, community_id_seed)
    for first, shi, slo, dhi, dlo, key, smac, dmac, end, cid in zip(*cols, cids):
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
               end_reason_name(end), cid)


def conn_rows(records: np.ndarray, features: np.ndarray, community_id_seed: int = 0) -> Iterator[dict]:
    """Rows (dicts) for a batch of finished connections and their ``conn`` features."""
    for keys, f in zip(_row_keys(records, community_id_seed), features.tolist()):
        row = dict(zip(ROW_KEYS, keys))
        row["fts"] = f
        row.update(zip(CONN_COLUMNS, f))
        row["proto"] = keys[5]  # the feature equals the key; keep the integer
        yield row


_NAMED = [i for i, c in enumerate(CONN_COLUMNS) if c != "proto"]
# the fixed text between the values of a JSONL row, in order
_ROW_TEXT = TextTable.of(
    ['{"ts":', ',"src_ip":"', '","src_port":', ',"dest_ip":"', '","dest_port":', ',"proto":', ',"src_mac":"',
     '","dest_mac":"', '","end_reason":"', '","community_id":"', '","fts":[']
    + [("]," if k == 0 else ",") + f'"{CONN_COLUMNS[i]}":' for k, i in enumerate(_NAMED)] + ["}\n"])
_T_NAMED = 11
END_REASON_TEXT = TextTable.of([end_reason_name(e) for e in range(256)])  # by END & 0xFF
_ROW_MAX = (_ROW_TEXT.off[-1] + END_REASON_TEXT.longest + 2 * IP_MAX + 2 * MAC_MAX + 4 * INT_MAX + 35 * FLOAT_MAX
            + COMMUNITY_ID_LEN)


@njit(cache=True, nogil=True, inline="always")
def put_endpoints(buf, pos, rec, i, text, text_off, k) -> int:
    """Source address and port, then destination address and port of record ``rec[i]``, each
    after the fixed text ``k``, ``k + 1``, ``k + 2``, ``k + 3`` of a :class:`TextTable`."""
    key = rec[i, L.KEY]
    pos = put_text(buf, pos, text, text_off, k)
    pos = put_ip(buf, pos, rec[i, L.SRC_HI], rec[i, L.SRC_LO])
    pos = put_text(buf, pos, text, text_off, k + 1)
    pos = put_int(buf, pos, (key >> 16) & 0xFFFF)
    pos = put_text(buf, pos, text, text_off, k + 2)
    pos = put_ip(buf, pos, rec[i, L.DST_HI], rec[i, L.DST_LO])
    pos = put_text(buf, pos, text, text_off, k + 3)
    return put_int(buf, pos, key & 0xFFFF)


@njit(cache=True, nogil=True)
def put_key_fields(buf, pos, rec, i, text, text_off, reasons, reasons_off, cid_seed, cid_work) -> int:
    """The fields of record ``rec[i]`` before its features, as JSONL and CSV rows both write
    them: the first timestamp, the endpoints, the protocol, the MACs, the end reason and the
    Community ID, each after the fixed text 1..9 of the row's :class:`TextTable`."""
    key = rec[i, L.KEY]
    pos = put_float(buf, pos, rec[i, L.FIRST_TS] / 1e9)
    pos = put_endpoints(buf, pos, rec, i, text, text_off, 1)
    pos = put_text(buf, pos, text, text_off, 5)
    pos = put_int(buf, pos, (key >> 32) & 0xFF)
    pos = put_text(buf, pos, text, text_off, 6)
    pos = put_mac(buf, pos, rec[i, L.SRC_MAC])
    pos = put_text(buf, pos, text, text_off, 7)
    pos = put_mac(buf, pos, rec[i, L.DST_MAC])
    pos = put_text(buf, pos, text, text_off, 8)
    pos = put_text(buf, pos, reasons, reasons_off, rec[i, L.END] & 0xFF)
    pos = put_text(buf, pos, text, text_off, 9)
    return put_community_id(buf, pos, rec, i, cid_seed, cid_work)


@njit(cache=True, nogil=True)
def _jsonl_kernel(rec, ftr, named, text, text_off, reasons, reasons_off, cid_seed, buf) -> int:
    """Rows of ``rec``/``ftr`` into ``buf``; the end. Each feature is formatted once, in ``fts``,
    and its text copied for the named field (half the float formatting: a float takes 35-70 ns,
    a copy of its few bytes a few)."""
    pos = 0
    cid_work = np.zeros(COMMUNITY_ID_WORK, dtype=np.int64)  # borrowed per row: it lives through the loop
    n_ftr = ftr.shape[1]
    span = np.empty(n_ftr + 1, dtype=np.int64)  # where each value's text starts in ``fts``
    buf, rec, text, text_off = borrowed(buf), borrowed(rec), borrowed(text), borrowed(text_off)
    reasons, reasons_off = borrowed(reasons), borrowed(reasons_off)
    for i in range(rec.shape[0]):
        pos = put_text(buf, pos, text, text_off, 0)
        pos = put_key_fields(buf, pos, rec, i, text, text_off, reasons, reasons_off, cid_seed, borrowed(cid_work))
        pos = put_text(buf, pos, text, text_off, 10)
        for k in range(n_ftr):
            span[k] = pos
            pos = put_float(buf, pos, ftr[i, k])
            buf[pos] = 44  # ',' (the last one is overwritten by the next text)
            pos += 1
        span[n_ftr] = pos
        pos -= 1
        for k in range(named.shape[0]):
            pos = put_text(buf, pos, text, text_off, _T_NAMED + k)
            a = span[named[k]]
            pos = put_copy(buf, pos, buf, a, span[named[k] + 1] - 1 - a)
        pos = put_text(buf, pos, text, text_off, _T_NAMED + named.shape[0])
    return pos


# the fixed text of a CSV row: the values of the header's columns, comma-separated
_CSV_TEXT = TextTable.of(["", ",", ",", ",", ",", ",", ",", ",", ",", ",", "\n"])
_CSV_MAX = (END_REASON_TEXT.longest + 2 * IP_MAX + 2 * MAC_MAX + 3 * INT_MAX + (1 + len(CONN_COLUMNS)) * FLOAT_MAX
            + COMMUNITY_ID_LEN + 11 + len(CONN_COLUMNS))


@njit(cache=True, nogil=True, inline="always")
def put_repr(buf, pos, x) -> int:
    """``repr(x)`` of a double, ``nan``/``inf``/``-inf`` included (what the csv module writes)."""
    if x != x:
        buf[pos] = 110  # nan
        buf[pos + 1] = 97
        buf[pos + 2] = 110
        return pos + 3
    if x == np.inf or x == -np.inf:
        if x < 0:
            buf[pos] = 45
            pos += 1
        buf[pos] = 105  # inf
        buf[pos + 1] = 110
        buf[pos + 2] = 102
        return pos + 3
    return put_float(buf, pos, x)


@njit(cache=True, nogil=True)
def _csv_kernel(rec, ftr, text, text_off, reasons, reasons_off, cid_seed, buf) -> int:
    """CSV rows (the columns of the header RowWriter writes) of ``rec``/``ftr`` into ``buf``;
    the end. No value needs quoting: addresses, MACs, reason names and base64 have no comma,
    quote or line break."""
    pos = 0
    cid_work = np.zeros(COMMUNITY_ID_WORK, dtype=np.int64)
    buf, rec, text, text_off = borrowed(buf), borrowed(rec), borrowed(text), borrowed(text_off)
    reasons, reasons_off = borrowed(reasons), borrowed(reasons_off)
    for i in range(rec.shape[0]):
        pos = put_key_fields(buf, pos, rec, i, text, text_off, reasons, reasons_off, cid_seed, borrowed(cid_work))
        for k in range(ftr.shape[1]):
            buf[pos] = 44  # ','
            pos = put_repr(buf, pos + 1, ftr[i, k])
        pos = put_text(buf, pos, text, text_off, 10)
    return pos


def write_csv(stream: IO[bytes], records: np.ndarray, features: np.ndarray, community_id_seed: int = 0) -> int:
    """CSV rows of connections (without the header), the text the csv module writes for
    :func:`conn_rows` (``repr`` of every float, ``nan``/``inf`` included); bytes written."""
    records = np.ascontiguousarray(records, dtype=np.int64)
    features = np.ascontiguousarray(features, dtype=np.float64)
    seed = check_seed(community_id_seed)
    return write_rows(stream, records.shape[0], _CSV_MAX, lambda a, b, buf: _csv_kernel(
        records[a:b], features[a:b], _CSV_TEXT.blob, _CSV_TEXT.off, END_REASON_TEXT.blob, END_REASON_TEXT.off,
        seed, buf))


_NAMED_IDX = np.array(_NAMED, dtype=np.int64)


def jsonl_bytes(records: np.ndarray, features: np.ndarray, community_id_seed: int = 0) -> bytes:
    """The rows of :func:`conn_rows` as JSON lines (UTF-8, each ending in a newline), equal to
    them once parsed (non-finite values are ``null``), formatted by one numba kernel for the batch."""
    records = np.ascontiguousarray(records, dtype=np.int64)
    features = np.ascontiguousarray(features, dtype=np.float64)
    seed = check_seed(community_id_seed)
    return format_rows(records.shape[0], _ROW_MAX, _jsonl_chunks(records, features, seed))


def write_jsonl(stream: IO[bytes], records: np.ndarray, features: np.ndarray, community_id_seed: int = 0) -> int:
    """:func:`jsonl_bytes` written to ``stream`` (from the formatter's own buffer); bytes written."""
    records = np.ascontiguousarray(records, dtype=np.int64)
    features = np.ascontiguousarray(features, dtype=np.float64)
    return write_rows(stream, records.shape[0], _ROW_MAX,
                      _jsonl_chunks(records, features, check_seed(community_id_seed)))


def _jsonl_chunks(records: np.ndarray, features: np.ndarray, seed: int):
    return lambda a, b, buf: _jsonl_kernel(records[a:b], features[a:b], _NAMED_IDX, _ROW_TEXT.blob, _ROW_TEXT.off,
                                           END_REASON_TEXT.blob, END_REASON_TEXT.off, seed, buf)


def format_for_path(path: str) -> str:
    """The row format a file name asks for: ``.parquet``/``.pq`` -> parquet, ``.csv`` -> csv, else jsonl."""
    name = path.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv" if name.endswith(".csv") else "jsonl"


class RowWriter:
    """Writes rows to a binary stream as JSONL (one object per line), CSV (header + named columns)
    or Parquet (outputs/parquet.py: typed columns; complete only after :meth:`close`)."""

    FORMATS = ("jsonl", "csv", "parquet")

    def __init__(self, stream: IO[bytes], fmt: str = "jsonl", community_id_seed: int = 0) -> None:
        if fmt not in self.FORMATS:
            raise ValueError(f"unknown format {fmt!r} (allowed: {', '.join(self.FORMATS)})")
        self.stream = stream
        self.fmt = fmt
        self.community_id_seed = check_seed(community_id_seed)
        self.count = 0
        self._parquet = None
        if fmt == "csv":
            self._write_csv([(*ROW_KEYS, *CONN_COLUMNS)])
        elif fmt == "parquet":
            from .parquet import ParquetRows

            self._parquet = ParquetRows(stream, community_id_seed=self.community_id_seed)

    def _write_csv(self, rows) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        self.stream.write(text.getvalue().encode("utf-8"))

    def write_batch(self, records: np.ndarray, features: np.ndarray) -> int:
        n = records.shape[0]
        if n == 0:
            return 0
        if self.fmt == "csv":
            write_csv(self.stream, records, features, self.community_id_seed)
        elif self._parquet is not None:
            self._parquet.write_batch(records, features)
        else:
            write_jsonl(self.stream, records, features, self.community_id_seed)
        self.count += n
        return n

    def close(self) -> None:
        """Finish the format (Parquet's footer); the stream itself stays open."""
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
