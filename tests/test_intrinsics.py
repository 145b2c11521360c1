"""The LLVM intrinsics of the per-packet kernels (daemon/intrinsics_llvm.py) against plain numpy."""
from __future__ import annotations

import struct

import numpy as np
from numba import njit

from malsensor.daemon.intrinsics_llvm import (borrowed, copy16, f64_bits, load_be16, load_be32, load_be48, load_be64,
                                              load_le16, load_le32, prefetch)
from malsensor.daemon.outputs.jsontext import COPY_SLACK, TextTable, put_copy, put_text

BYTES = np.frombuffer(bytes(range(0xF0, 0x100)) + bytes(range(16)), dtype=np.uint8).copy()


@njit
def _loads(buf, pos):
    return (load_be16(buf, pos), load_be32(buf, pos), load_be48(buf, pos), load_be64(buf, pos),
            load_le16(buf, pos), load_le32(buf, pos))


def test_loads_are_unaligned_big_and_little_endian_integers():
    for pos in (0, 1, 3, 7, 24):
        raw = BYTES[pos:pos + 8].tobytes()
        be16, be32, be48, be64, le16, le32 = _loads(BYTES, pos)
        assert be16 == struct.unpack(">H", raw[:2])[0]
        assert be32 == struct.unpack(">I", raw[:4])[0]
        assert be48 == int.from_bytes(raw[:6], "big")
        assert int(be64) == struct.unpack(">Q", raw)[0]
        assert le16 == struct.unpack("<H", raw[:2])[0]
        assert le32 == struct.unpack("<I", raw[:4])[0]


@njit
def _copy16(dst, i, src, j):
    copy16(dst, i, src, j)


def test_copy16_moves_sixteen_bytes_between_unaligned_places():
    for i, j in ((0, 0), (3, 1), (5, 16), (15, 7)):
        dst = np.zeros(40, dtype=np.uint8)
        _copy16(dst, i, BYTES, j)
        want = np.zeros(40, dtype=np.uint8)
        want[i:i + 16] = BYTES[j:j + 16]
        assert dst.tolist() == want.tolist()


@njit
def _texts(buf, blob, off, n):
    pos = 0
    for i in range(n):
        pos = put_text(buf, pos, blob, off, i)
    return pos


@njit
def _copy_back(buf, pos, a, n):
    return put_copy(buf, pos, buf, a, n)


def test_put_copy_writes_exactly_the_text_at_every_length():
    """Lengths 0..40 across the 16-byte steps: the text is exact, nothing after it counts, and a
    copy from earlier in the same buffer (the JSONL rows' named features) is exact too."""
    texts = ["".join(chr(97 + (k + i) % 26) for i in range(k)) for k in range(41)]
    table = TextTable.of(texts)
    assert table.blob.shape[0] == table.off[-1] + COPY_SLACK
    buf = np.full(sum(map(len, texts)) + 40 + COPY_SLACK, 0xEE, dtype=np.uint8)  # room for the copies back
    end = _texts(buf, table.blob, table.off, len(texts))
    assert buf[:end].tobytes() == "".join(texts).encode()
    for a, n in ((0, 0), (2, 1), (5, 16), (100, 17), (300, 40)):
        want = buf[a:a + n].tobytes()
        assert _copy_back(buf, end, a, n) == end + n
        assert buf[end:end + n].tobytes() == want


@njit
def _bits(x):
    return f64_bits(x)


def test_f64_bits_is_the_ieee_754_pattern():
    for x in (0.0, -0.0, 1.5, -2.25e-300, np.inf, 6.02e23):
        assert int(_bits(x)) == struct.unpack("<Q", struct.pack("<d", x))[0]


@njit
def _prefetch_everywhere(a):
    for i in (-(1 << 40), -1, 0, a.shape[0], 1 << 40):
        prefetch(a, i)  # a hint: never faults, whatever the index
    return a.sum()


def test_prefetch_never_faults():
    a = np.arange(10, dtype=np.int64)
    assert _prefetch_everywhere(a) == 45


@njit
def _fill_borrowed(a, b):
    a, b = borrowed(a), borrowed(b)
    for i in range(a.shape[0]):
        row = a[i]  # a row view of a borrowed array: no owner either
        for j in range(row.shape[0]):
            row[j] = i * 10 + j
    b[:] = a.sum(axis=1)
    return a.shape, a.strides, b.shape


def test_borrowed_views_are_the_same_memory_shape_and_strides():
    a = np.zeros((4, 3), dtype=np.int64)
    b = np.zeros(4, dtype=np.int64)
    shape, strides, bshape = _fill_borrowed(a, b)
    assert shape == a.shape and strides == a.strides and bshape == b.shape
    assert a.tolist() == [[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]]
    assert b.tolist() == [3, 33, 63, 93]


def test_borrowed_keeps_a_non_contiguous_layout():
    a = np.zeros((4, 6), dtype=np.int64)
    b = np.zeros(4, dtype=np.int64)
    _fill_borrowed(a[:, ::2], b)  # strides (48, 16): numba's 'A' layout
    assert a[:, ::2].tolist() == [[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]]
    assert a[:, 1::2].sum() == 0
