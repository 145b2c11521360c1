"""Per-connection record of the first N packets, for the ``pkt_seq@1`` view.

The flow table keeps counters, not packets. A model that reads ``pkt_seq`` needs each
connection's first N packets: size, direction, gap to the connection's previous packet and
TCP flags. Rather than growing every flow-table row (252 bytes per flow, README's memory
table), this side store exists only when ``TrackerConfig.seq_packets > 0``:

* the tracker's kernel tags every packet it accounts with its record's serial and direction
  (``serial * 2 + reverse``, the ``tags`` argument of ``track_kernel``);
* :func:`record_kernel` walks the tagged packets of a batch and appends the first N of each
  serial to a compact row: int16 size (IP total length, capped at 32767, negative when the
  packet went responder -> originator), uint8 TCP flags, float32 gap in seconds;
* :func:`take_kernel` turns the rows of emitted records (by serial) into the view's float32
  ``(n, N, 7)`` values and frees the rows of final records (snapshots keep theirs).

Memory per row of capacity: serial 8 + count 2 + last time 8 + N * (2 + 1 + 4) + index 8 +
free list 4 = 30 + 7N bytes (142 for N = 16; the index, rounded up to a power of two, takes
8-16 bytes). Measured for the default ``max_flows`` (262,144) and N = 16: 344,064 rows,
50.3 MB, 191.9 bytes per flow of the bound - beside the flow table's 252. The capacity is the tracker's ``max_flows`` plus
the records that can wait between the tracker and the views (:data:`SLACK_ROWS`); rows that
find it full are counted (``seq_full``) and their connection's sequence is empty (mask 0).
"""
from __future__ import annotations

import numpy as np

from ..intrinsics import borrowed
from ..jit import njit
from .layout import END, END_SNAPSHOT, KEY, SERIAL
from .probing import moves_back, pow2_at_least

# The view's columns along the feature axis (docs/features.md, "pkt_seq@1")
SEQ_COLUMNS = ("size", "direction", "iat", "tcp_flags", "proto", "service_port", "mask")
N_SEQ_COLUMNS = len(SEQ_COLUMNS)
SIZE_CAP = 32767
# records that can be emitted but not yet taken: the tracker's output buffer (65,536 rows) and
# the offline extractor's hold (pipeline.OFFLINE_EMIT_ROWS)
SLACK_ROWS = 65_536 + 16_384
# ctr slots
S_FREE, S_FULL, S_USED = range(3)


def seq_bytes_per_flow(n_packets: int) -> int:
    """Bytes the recorder holds per row of its capacity (see the module docstring)."""
    return 30 + 7 * n_packets


@njit(cache=True, inline="always")
def _hash(serial) -> np.int64:
    x = serial * np.int64(-7046029254386353131)
    return x ^ (x >> 29)


@njit(cache=True, inline="always")
def _find(index, serials, serial) -> tuple:
    """(bucket, row) of ``serial``; row -1 and the empty bucket where it would go if absent."""
    mask = index.shape[0] - 1
    i = _hash(serial) & mask
    while True:
        r = np.int64(index[i])
        if r < 0 or serials[r] == serial:
            return i, r
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def _delete(index, serials, bucket) -> None:
    """Backward-shift deletion (no tombstones), as the flow table's index does."""
    mask = index.shape[0] - 1
    i = bucket
    j = i
    while True:
        j = (j + 1) & mask
        r = index[j]
        if r < 0:
            break
        k = _hash(serials[r]) & mask
        if moves_back(i, j, k):
            index[i] = r
            i = j
    index[i] = -1


@njit(cache=True, nogil=True)
def record_kernel(index, serials, count, last_ts, size, flags, iat, free, ctr,
                  start, end, tags, ts, ip_len, tcp_flags) -> None:
    """Append packets ``start..end`` (tagged by the tracker) to their connection's row."""
    index, serials, count, last_ts = borrowed(index), borrowed(serials), borrowed(count), borrowed(last_ts)
    size, flags, iat, free, ctr = borrowed(size), borrowed(flags), borrowed(iat), borrowed(free), borrowed(ctr)
    tags, ts, ip_len, tcp_flags = borrowed(tags), borrowed(ts), borrowed(ip_len), borrowed(tcp_flags)
    n_max = size.shape[1]
    for p in range(start, end):
        tag = tags[p]
        if tag == 0:
            continue
        serial = tag >> 1
        b, r = _find(index, serials, serial)
        if r < 0:
            if ctr[S_FREE] == 0:
                ctr[S_FULL] += 1
                continue
            ctr[S_FREE] -= 1
            r = np.int64(free[ctr[S_FREE]])
            index[b] = r
            serials[r] = serial
            count[r] = 0
            ctr[S_USED] += 1
        c = np.int64(count[r])
        if c >= n_max:
            continue
        s = min(np.int64(ip_len[p]), SIZE_CAP)
        size[r, c] = -s if (tag & 1) else s
        flags[r, c] = tcp_flags[p]
        iat[r, c] = (ts[p] - last_ts[r]) / 1e9 if c > 0 else 0.0
        last_ts[r] = ts[p]
        count[r] = c + 1


@njit(cache=True, nogil=True)
def take_kernel(index, serials, count, size, flags, iat, free, ctr, records, out) -> None:
    """The view's values of ``records`` into ``out`` (n, N, 7), zero-padded; frees the rows of
    final records."""
    n_max = out.shape[1]
    for i in range(records.shape[0]):
        for j in range(n_max):
            for k in range(out.shape[2]):
                out[i, j, k] = 0.0
        serial = records[i, SERIAL]
        b, r = _find(index, serials, serial)
        if r < 0:
            continue
        c = min(np.int64(count[r]), n_max)
        key = records[i, KEY]
        proto = (key >> 32) & 0xFF
        service = key & 0xFFFF      # the responder's port
        for j in range(c):
            s = np.int64(size[r, j])
            out[i, j, 0] = abs(s)
            out[i, j, 1] = -1.0 if s < 0 else 1.0
            out[i, j, 2] = iat[r, j]
            out[i, j, 3] = flags[r, j]
            out[i, j, 4] = proto
            out[i, j, 5] = service
            out[i, j, 6] = 1.0
        if (records[i, END] & 0xFF) != END_SNAPSHOT:
            _delete(index, serials, b)
            serials[r] = 0
            free[ctr[S_FREE]] = r
            ctr[S_FREE] += 1
            ctr[S_USED] -= 1


class SeqRecorder:
    """The first ``n_packets`` packets of each connection of one tracker (not thread-safe:
    one per capture thread, beside its tracker)."""

    def __init__(self, n_packets: int, max_flows: int, slack: int = SLACK_ROWS) -> None:
        if n_packets < 1:
            raise ValueError("seq_packets must be >= 1")
        cap = int(max_flows) + int(slack)
        self.n_packets = int(n_packets)
        self.capacity = cap
        self.index = np.full(pow2_at_least(2 * cap), -1, dtype=np.int32)
        self.serials = np.zeros(cap, dtype=np.int64)
        self.count = np.zeros(cap, dtype=np.uint16)
        self.last_ts = np.zeros(cap, dtype=np.int64)
        self.size = np.zeros((cap, self.n_packets), dtype=np.int16)
        self.flags = np.zeros((cap, self.n_packets), dtype=np.uint8)
        self.iat = np.zeros((cap, self.n_packets), dtype=np.float32)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int32)
        self.ctr = np.zeros(3, dtype=np.int64)
        self.ctr[S_FREE] = cap

    def record(self, start: int, end: int, tags: np.ndarray, ts: np.ndarray, ip_len: np.ndarray,
               tcp_flags: np.ndarray) -> None:
        record_kernel(self.index, self.serials, self.count, self.last_ts, self.size, self.flags, self.iat,
                      self.free, self.ctr, start, end, tags, ts, ip_len, tcp_flags)

    def take(self, records: np.ndarray) -> np.ndarray:
        """float32 (n, N, 7) for emitted records (rows of final records are freed)."""
        out = np.empty((records.shape[0], self.n_packets, N_SEQ_COLUMNS), dtype=np.float32)
        take_kernel(self.index, self.serials, self.count, self.size, self.flags, self.iat, self.free, self.ctr,
                    np.ascontiguousarray(records), out)
        return out

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.index, self.serials, self.count, self.last_ts, self.size,
                                      self.flags, self.iat, self.free))

    def stats(self) -> dict[str, int]:
        return {"seq_rows_used": int(self.ctr[S_USED]), "seq_full": int(self.ctr[S_FULL])}
