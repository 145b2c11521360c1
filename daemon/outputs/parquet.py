"""Connection rows as Apache Parquet: the fields of a JSONL row (outputs/rows.py) as typed columns.

| column | Arrow type | JSONL field |
|---|---|---|
| ``ts`` | timestamp[ns, UTC] | ``ts`` (epoch seconds there; exact nanoseconds here) |
| ``src_ip``, ``dest_ip`` | string | the same text (IPv4 dotted, IPv6 compressed) |
| ``src_port``, ``dest_port`` | uint16 | |
| ``proto`` | uint8 | |
| ``src_mac``, ``dest_mac`` | string | ``aa:bb:cc:dd:ee:ff`` |
| ``end_reason`` | dictionary<int16, string> | |
| ``community_id`` | string | |
| 16 named features (all but ``proto``) | double | NaN where JSONL writes ``null`` |

There is no ``fts`` column: JSONL's ``fts`` is the 17 ``conn`` values in order, which here are
the ``proto`` column and the 16 named ones (docs/features.md's order; ``malsensor-train`` reads
them so). Kept as a list column besides them it was 41 % of the file (3.5 of 8.6 MB, x8
IoT corpus, 98 k rows) and 0.02-0.04 of the writer's ~0.13 CPU-s.

The text columns are written by numba kernels straight into Arrow's buffers (one pass per
column, no Python object per row); the numeric columns are numpy arrays handed to Arrow as
buffers. pyarrow is imported only when a Parquet file is written or read.

Every column is made with ``Array.from_buffers``, never ``pa.array``: ``pa.array`` of a numpy
array asks pyarrow's pandas shim whether the object is a pandas one, which imports pandas
whenever it is installed (the trainer's extra brings it): a 956-packet extract to Parquet took
0.48 CPU-s with it, 0.20 without (bench/bench_startup.py, 2-core VM).
"""
from __future__ import annotations

from typing import IO

import numpy as np
from ..jit import njit

from ..flows import layout as L
from ..intrinsics import borrowed
from ..views.conn import CONN_COLUMNS
from .jsontext import IP_MAX, MAC_MAX, put_ip, put_mac
from .rows import END_REASON_TEXT

NAMED = tuple(c for c in CONN_COLUMNS if c != "proto")
_NAMED_IDX = np.array([CONN_COLUMNS.index(c) for c in NAMED], dtype=np.int64)
# Parquet dictionary encoding for the columns whose values repeat (hosts, ports, reasons) only:
# tried on every column (pyarrow's default) it cost 0.8 of 2.0 us per row for the float features,
# which then fell back to plain encoding, and the file came out 5 % larger (x2 IoT corpus, 24 k rows)
DICTIONARY = ["src_ip", "src_port", "dest_ip", "dest_port", "proto", "src_mac", "dest_mac", "end_reason"]
KEY_COLUMNS = ("ts", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "src_mac", "dest_mac", "end_reason")
# Row-group min/max statistics for the key columns only, the ones a reader filters on (time,
# hosts, ports). A row group holds 16 k connections of every kind, so a feature's min and max span
# about its whole range and let a reader skip nothing (IoT corpus x8: all 6 row groups had the
# file's min and max of dur, bytes, load, packets and tcp_rtt); they cost 0.014 of the writer's
# 0.125 CPU-s there.
STATISTICS = list(KEY_COLUMNS)


@njit(cache=True, nogil=True)
def _ip_text(rec, c_hi, c_lo, buf, offsets) -> int:
    """The address in columns ``c_hi``/``c_lo`` of every record, as Arrow string data + offsets."""
    buf = borrowed(buf)  # put_ip per row without reference counts (daemon/intrinsics_llvm.py)
    pos = 0
    for i in range(rec.shape[0]):
        offsets[i] = pos
        pos = put_ip(buf, pos, rec[i, c_hi], rec[i, c_lo])
    offsets[rec.shape[0]] = pos
    return pos


@njit(cache=True, nogil=True)
def _mac_text(rec, c, buf, offsets) -> int:
    buf = borrowed(buf)
    pos = 0
    for i in range(rec.shape[0]):
        offsets[i] = pos
        pos = put_mac(buf, pos, rec[i, c])
    offsets[rec.shape[0]] = pos
    return pos


def _schema(pa):
    fields = [pa.field("ts", pa.timestamp("ns", tz="UTC")), pa.field("src_ip", pa.string()),
              pa.field("src_port", pa.uint16()), pa.field("dest_ip", pa.string()),
              pa.field("dest_port", pa.uint16()), pa.field("proto", pa.uint8()),
              pa.field("src_mac", pa.string()), pa.field("dest_mac", pa.string()),
              pa.field("end_reason", pa.dictionary(pa.int16(), pa.string())),
              pa.field("community_id", pa.string())]
    return pa.schema(fields + [pa.field(c, pa.float64()) for c in NAMED])


class ParquetRows:
    """Writes batches of connections as row groups of one Parquet file (zstd-compressed)."""

    def __init__(self, stream: IO[bytes], compression: str = "zstd", community_id_seed: int = 0) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.seed = community_id_seed
        self.schema = _schema(pa)
        self._ts = self.schema.field("ts").type
        self._reasons = pa.StringArray.from_buffers(
            256, pa.py_buffer(END_REASON_TEXT.off.astype(np.int32)), pa.py_buffer(END_REASON_TEXT.blob))
        self.writer = pq.ParquetWriter(stream, self.schema, compression=compression, use_dictionary=DICTIONARY,
                                       write_statistics=STATISTICS)

    def _text(self, n: int, width: int, fill) -> object:
        buf = np.empty(max(n * width, 1), dtype=np.uint8)
        offsets = np.empty(n + 1, dtype=np.int32)
        end = fill(buf, offsets)
        pa = self.pa
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf[:end]))

    def _fixed(self, typ, values: np.ndarray):
        """A column of fixed-width values (a contiguous numpy array of ``typ``'s width)."""
        values = np.ascontiguousarray(values)
        return self.pa.Array.from_buffers(typ, values.shape[0], [None, self.pa.py_buffer(values)])

    def table(self, records: np.ndarray, features: np.ndarray):
        """The Arrow table of one batch (records int64 (n, N_COLS), features float64 (n, 17))."""
        pa = self.pa
        rec = np.ascontiguousarray(records, dtype=np.int64)
        n = rec.shape[0]
        key = rec[:, L.KEY]
        # one row per named column (the index copies; no contiguous copy of features first)
        named = np.ascontiguousarray(np.asarray(features, dtype=np.float64)[:, _NAMED_IDX].T)
        cols = [
            self._fixed(self._ts, rec[:, L.FIRST_TS]),
            self._text(n, IP_MAX, lambda b, o: _ip_text(rec, L.SRC_HI, L.SRC_LO, b, o)),
            self._fixed(pa.uint16(), ((key >> 16) & 0xFFFF).astype(np.uint16)),
            self._text(n, IP_MAX, lambda b, o: _ip_text(rec, L.DST_HI, L.DST_LO, b, o)),
            self._fixed(pa.uint16(), (key & 0xFFFF).astype(np.uint16)),
            self._fixed(pa.uint8(), ((key >> 32) & 0xFF).astype(np.uint8)),
            self._text(n, MAC_MAX, lambda b, o: _mac_text(rec, L.SRC_MAC, b, o)),
            self._text(n, MAC_MAX, lambda b, o: _mac_text(rec, L.DST_MAC, b, o)),
            pa.DictionaryArray.from_arrays(self._fixed(pa.int16(), (rec[:, L.END] & 0xFF).astype(np.int16)),
                                           self._reasons),
            self._community_ids(rec),
        ]
        cols += [self._fixed(pa.float64(), named[k]) for k in range(len(NAMED))]
        return pa.Table.from_arrays(cols, schema=self.schema)

    def _community_ids(self, rec: np.ndarray):
        from .community_id import TEXT_LEN, _record_ids

        n = rec.shape[0]
        text = np.empty((n, TEXT_LEN), dtype=np.uint8)
        _record_ids(rec, np.int64(self.seed), text)
        offsets = (np.arange(n + 1, dtype=np.int32) * TEXT_LEN)
        return self.pa.StringArray.from_buffers(n, self.pa.py_buffer(offsets), self.pa.py_buffer(text.reshape(-1)))

    def write_batch(self, records: np.ndarray, features: np.ndarray) -> None:
        self.writer.write_table(self.table(records, features))

    def close(self) -> None:
        """Writes the footer (the file is unreadable without it)."""
        self.writer.close()

