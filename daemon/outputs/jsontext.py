"""JSON text written by numba kernels straight into a byte buffer: numbers, addresses, times.

The writers of connection rows and prediction events format every value of a batch in one
kernel call instead of a Python ``repr``/``format`` per value (a float ``repr`` alone costs about
0.5 µs; here a float takes 35-70 ns and a whole event with its 17 features about 2 µs). Each
``put_*`` function writes at ``pos`` and returns the position after what it wrote; callers size
the buffer with the ``*_MAX`` bounds.

The text equals what Python writes, so JSON readers get the same values as from ``json.dumps``:

- floats: the shortest digits that read back as the same double, chosen and laid out exactly as
  ``repr`` does (Ryu, Ulf Adams, PLDI 2018: shortest, correctly rounded; positional notation when
  the decimal exponent is in [-4, 16), otherwise ``d.ddde+XX``); NaN and infinities are ``null``
  (JSON has no such numbers);
- addresses: IPv4 dotted quads for IPv4-mapped values, other IPv6 compressed like
  ``ipaddress.IPv6Address.compressed`` (longest run of zero groups, the first of equal runs);
- times: ``YYYY-MM-DDTHH:MM:SS.uuuuuu+0000`` (UTC, microseconds floored), Suricata's format.

Fixed text (keys, labels, names) travels as a :class:`TextTable`: one byte blob plus offsets.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from ..jit import njit

from ..intrinsics import copy16, f64_bits

FLOAT_MAX = 24      # "-2.2250738585072014e-308" is the longest repr
INT_MAX = 20        # "-9223372036854775808"
IP_MAX = 39         # a full IPv6 address
MAC_MAX = 17
TIME_MAX = 32       # year 9999; wider years are clamped
TEXT_CHUNK_ROWS = 4096  # rows formatted per kernel call: the scratch buffer stays a few MB
# put_copy moves text 16 bytes at a time: it may read up to 15 bytes past a text's end (a
# TextTable's blob is padded) and write up to 15 past the end of what it puts (scratch buffers
# are this much longer than asked; the next value overwrites them)
COPY_SLACK = 16

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)
_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class TextTable:
    """Byte strings ``blob[off[i]:off[i + 1]]`` for i in range(n), made once, passed to kernels."""

    blob: np.ndarray   # uint8
    off: np.ndarray    # int64, n + 1 entries

    @staticmethod
    def of(texts: Sequence[str]) -> "TextTable":
        data = [t.encode("utf-8") for t in texts]
        off = np.zeros(len(data) + 1, dtype=np.int64)
        off[1:] = np.cumsum([len(d) for d in data])
        blob = np.frombuffer(b"".join(data) + bytes(COPY_SLACK), dtype=np.uint8)  # padded for put_copy
        return TextTable(blob.copy(), off)

    @property
    def longest(self) -> int:
        return int(np.diff(self.off).max()) if self.off.shape[0] > 1 else 0


_scratch = threading.local()


def scratch(nbytes: int) -> np.ndarray:
    """This thread's output buffer, at least ``nbytes`` long and COPY_SLACK more (reused: its
    pages stay mapped)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.shape[0] < nbytes + COPY_SLACK:
        buf = _scratch.buf = np.empty(max(nbytes + COPY_SLACK, 1 << 20), dtype=np.uint8)
    return buf


def format_rows(n_rows: int, row_max: int, kernel: Callable[[int, int, np.ndarray], int]) -> bytes:
    """The text of ``n_rows`` rows, ``kernel(start, stop, buf)`` writing rows start..stop into
    ``buf`` (at most ``row_max`` bytes each) and returning the end; at most TEXT_CHUNK_ROWS rows
    per call, so the buffer stays small whatever the batch."""
    parts = []
    for start in range(0, n_rows, TEXT_CHUNK_ROWS):
        stop = min(start + TEXT_CHUNK_ROWS, n_rows)
        buf = scratch((stop - start) * row_max)
        parts.append(bytes(memoryview(buf)[:kernel(start, stop, buf)]))
    return parts[0] if len(parts) == 1 else b"".join(parts)


def write_rows(stream, n_rows: int, row_max: int, kernel: Callable[[int, int, np.ndarray], int]) -> int:
    """:func:`format_rows` written to the binary ``stream`` straight from the scratch buffer (no
    ``bytes`` made: a fresh multi-MB object per chunk cost its page faults and a copy, ~15 % of
    the JSONL rows' time, perf); returns the bytes written."""
    total = 0
    for start in range(0, n_rows, TEXT_CHUNK_ROWS):
        stop = min(start + TEXT_CHUNK_ROWS, n_rows)
        buf = scratch((stop - start) * row_max)
        end = kernel(start, stop, buf)
        stream.write(memoryview(buf)[:end])
        total += end
    return total


@njit(cache=True, nogil=True, inline="always")
def put_copy(buf, pos, src, a, n) -> int:
    """``n`` bytes of ``src`` from ``a`` at ``buf[pos]``, 16 at a time (see COPY_SLACK).

    Not a byte loop: the pieces of a row are a few bytes long, ~45 a JSONL row, and a byte loop's
    exit, at a different count each time, was a branch mispredicted once a piece (~0.8 of the
    row's 1.77 µs went to the pieces around its values). Not ``buf[pos:pos + n] = src[a:a + n]``
    either: each slice is an array view whose reference count numba moves with two atomic calls
    (NRT_incref/decref), which took a quarter of the rows' time (perf). ``src`` may be ``buf``
    itself, the piece lying before ``pos``."""
    k = 0
    while k < n:
        copy16(buf, pos + k, src, a + k)
        k += 16
    return pos + n


@njit(cache=True, nogil=True, inline="always")
def put_text(buf, pos, blob, off, i) -> int:
    """Entry ``i`` of a :class:`TextTable` (passed as its two arrays), into a buffer with
    COPY_SLACK bytes to spare after the text (:func:`scratch`'s buffers have them)."""
    a = off[i]
    return put_copy(buf, pos, blob, a, off[i + 1] - a)


_POW10 = np.array([10 ** k for k in range(1, 20)], dtype=np.uint64)
_PAIRS = np.frombuffer("".join(f"{k:02d}" for k in range(100)).encode(), dtype=np.uint8).copy()


@njit(cache=True, nogil=True, inline="always")
def _ndigits(v) -> int:
    """How many decimal digits the uint64 ``v`` has (1 for 0). (Summing one comparison with each
    power of ten, without the loop's branches, measured slower: JSONL rows 0.92-0.93 µs, 0.89.)"""
    n = 1
    while n < 20 and v >= _POW10[n - 1]:
        n += 1
    return n


@njit(cache=True, nogil=True)
def put_uint(buf, pos, v) -> int:
    """A non-negative integer (as uint64) in decimal (two digits per division)."""
    v = np.uint64(v)
    return _put_digits(buf, pos, v, _ndigits(v))


@njit(cache=True, nogil=True, inline="always")
def _put_digits(buf, pos, v, n) -> int:
    """The ``n`` decimal digits of ``v`` (exactly that many) at ``buf[pos]``."""
    k = pos + n
    hundred = np.uint64(100)
    while v >= hundred:
        q = v // hundred
        r = np.int64(v - q * hundred) * 2
        k -= 2
        buf[k] = _PAIRS[r]
        buf[k + 1] = _PAIRS[r + 1]
        v = q
    if v >= np.uint64(10):
        r = np.int64(v) * 2
        buf[k - 2] = _PAIRS[r]
        buf[k - 1] = _PAIRS[r + 1]
    else:
        buf[k - 1] = 48 + np.uint8(v)
    return pos + n


@njit(cache=True, nogil=True)
def put_int(buf, pos, v) -> int:
    v = np.int64(v)
    if v < 0:
        buf[pos] = 45  # '-'
        return put_uint(buf, pos + 1, np.uint64(-(v + 1)) + _U1)
    return put_uint(buf, pos, np.uint64(v))


# ---------------------------------------------------------------- shortest float digits (Ryu)
_POW5_BITS = 125


def _ryu_tables() -> tuple[np.ndarray, np.ndarray]:
    """5**i and 2**k / 5**i as 128-bit (lo, hi) pairs, scaled to 125 significant bits."""
    pos = np.empty((326, 2), dtype=np.uint64)
    for i in range(326):
        p = 5 ** i
        j = p.bit_length() - _POW5_BITS
        v = p >> j if j >= 0 else p << -j
        pos[i] = (v & _M64, v >> 64)
    inv = np.empty((342, 2), dtype=np.uint64)
    for i in range(342):
        p = 5 ** i
        v = (1 << (p.bit_length() - 1 + _POW5_BITS)) // p + 1
        inv[i] = (v & _M64, v >> 64)
    return pos, inv


_POW5, _POW5_INV = _ryu_tables()


@njit(cache=True, nogil=True, inline="always")
def _umul128_hi_lo(a, b):
    """(low, high) 64-bit halves of the 128-bit product of two uint64."""
    a_lo = a & _M32
    a_hi = a >> _U32
    b_lo = b & _M32
    b_hi = b >> _U32
    b00 = a_lo * b_lo
    b01 = a_lo * b_hi
    b10 = a_hi * b_lo
    b11 = a_hi * b_hi
    mid1 = b10 + (b00 >> _U32)
    mid2 = b01 + (mid1 & _M32)
    hi = b11 + (mid1 >> _U32) + (mid2 >> _U32)
    lo = (mid2 << _U32) | (b00 & _M32)
    return lo, hi


@njit(cache=True, nogil=True, inline="always")
def _mul_shift(m, mul_lo, mul_hi, j):
    """(m * mul) >> j for the 128-bit ``mul``; 64 < j < 128."""
    lo1, hi1 = _umul128_hi_lo(m, mul_hi)
    _, hi0 = _umul128_hi_lo(m, mul_lo)
    s = hi0 + lo1
    if s < hi0:
        hi1 += _U1
    d = np.uint64(j - 64)
    return (hi1 << (np.uint64(64) - d)) | (s >> d)


@njit(cache=True, nogil=True, inline="always")
def _pow5bits(e):
    return ((e * 1217359) >> 19) + 1


@njit(cache=True, nogil=True)
def _pow5_factor(v) -> int:
    n = 0
    while v % np.uint64(5) == _U0:
        v //= np.uint64(5)
        n += 1
    return n


@njit(cache=True, nogil=True, inline="always")
def _drop_digit(vr, vp, vm):
    """The three bounds without their last decimal digit, and the digit dropped from ``vr``."""
    ten = np.uint64(10)
    return vr // ten, vp // ten, vm // ten, vr % ten


@njit(cache=True, nogil=True)
def shortest_digits(x: float):
    """(digits, exponent) with ``digits * 10**exponent`` the shortest decimal that reads back as
    ``|x|`` (ties to even); ``x`` finite and non-zero."""
    bits = f64_bits(np.float64(x))
    ieee_m = bits & ((_U1 << np.uint64(52)) - _U1)
    ieee_e = np.int64((bits >> np.uint64(52)) & np.uint64(0x7FF))
    if ieee_e == 0:
        e2 = 1 - 1023 - 52 - 2
        m2 = ieee_m
    else:
        e2 = ieee_e - 1023 - 52 - 2
        m2 = (_U1 << np.uint64(52)) | ieee_m
    accept = (m2 & _U1) == _U0
    mv = np.uint64(4) * m2
    mm_shift = _U1 if (ieee_m != _U0 or ieee_e <= 1) else _U0
    vm_tz = False
    vr_tz = False
    if e2 >= 0:
        q = ((e2 * 78913) >> 18) - (1 if e2 > 3 else 0)
        e10 = q
        j = -e2 + q + _POW5_BITS + _pow5bits(q) - 1
        lo, hi = _POW5_INV[q, 0], _POW5_INV[q, 1]
        vr = _mul_shift(mv, lo, hi, j)
        vp = _mul_shift(mv + np.uint64(2), lo, hi, j)
        vm = _mul_shift(mv - _U1 - mm_shift, lo, hi, j)
        if q <= 21:
            if mv % np.uint64(5) == _U0:
                vr_tz = _pow5_factor(mv) >= q
            elif accept:
                vm_tz = _pow5_factor(mv - _U1 - mm_shift) >= q
            elif _pow5_factor(mv + np.uint64(2)) >= q:
                vp -= _U1
    else:
        q = ((-e2 * 732923) >> 20) - (1 if -e2 > 1 else 0)
        e10 = q + e2
        i = -e2 - q
        j = q - (_pow5bits(i) - _POW5_BITS)
        lo, hi = _POW5[i, 0], _POW5[i, 1]
        vr = _mul_shift(mv, lo, hi, j)
        vp = _mul_shift(mv + np.uint64(2), lo, hi, j)
        vm = _mul_shift(mv - _U1 - mm_shift, lo, hi, j)
        if q <= 1:
            vr_tz = True
            if accept:
                vm_tz = mm_shift == _U1
            else:
                vp -= _U1
        elif q < 63:
            vr_tz = (mv & ((_U1 << np.uint64(q)) - _U1)) == _U0
    ten = np.uint64(10)
    removed = 0
    last = _U0
    if vm_tz or vr_tz:
        while vp // ten > vm // ten:
            vm_tz = vm_tz and vm % ten == _U0
            vr_tz = vr_tz and last == _U0
            vr, vp, vm, last = _drop_digit(vr, vp, vm)
            removed += 1
        if vm_tz:
            while vm % ten == _U0:
                vr_tz = vr_tz and last == _U0
                vr, vp, vm, last = _drop_digit(vr, vp, vm)
                removed += 1
        if vr_tz and last == np.uint64(5) and vr % np.uint64(2) == _U0:
            last = np.uint64(4)  # round half to even
        up = (vr == vm and (not accept or not vm_tz)) or last >= np.uint64(5)
    else:
        up = False
        hundred = np.uint64(100)
        if vp // hundred > vm // hundred:  # two digits at once (most values lose several)
            up = vr % hundred >= np.uint64(50)
            vr //= hundred
            vp //= hundred
            vm //= hundred
            removed += 2
        while vp // ten > vm // ten:
            vr, vp, vm, last = _drop_digit(vr, vp, vm)
            up = last >= np.uint64(5)
            removed += 1
        up = vr == vm or up
    return vr + (_U1 if up else _U0), e10 + removed


# Below 2**32 a double's spacing is under 1e-6: distinct multiples of 1e-6 stay distinct doubles.
_MICRO_MAX = 2.0 ** 32


@njit(cache=True, nogil=True, inline="always")
def _micro_digits(ax):
    """(digits, exponent) as :func:`shortest_digits` gives them, for a positive non-integral
    ``ax`` that is the double nearest a multiple of 1e-6 (the durations, RTTs and many means
    of a row, made of microsecond timestamps); (0, 0) for any other value.

    If ``n / 1e6`` (rounded once, as division is) equals ``ax``, the decimal n * 1e-6 reads
    back as ``ax``; every other decimal with at most six places is 1e-6 or more away, so reads
    back as another double, and one with more places has more digits. So n without its trailing
    zeros is the shortest. A multiply, a division and a comparison instead of the general
    algorithm: a JSONL row of the IoT corpus, with ~3.5 such values, 0.94-0.95 -> 0.82-0.83 µs
    (bench/bench_rows.py --before DIR)."""
    if ax >= _MICRO_MAX:
        return _U0, 0
    m = np.floor(ax * 1e6 + 0.5)
    if m / 1e6 != ax:
        return _U0, 0
    n = np.uint64(m)
    exp = -6
    ten = np.uint64(10)
    while n % ten == _U0:  # at most five: ax is not integral
        n //= ten
        exp += 1
    return n, exp


@njit(cache=True, nogil=True, inline="always")
def put_float(buf, pos, x) -> int:
    """``repr(x)`` for finite doubles, ``null`` for NaN and infinities."""
    x = np.float64(x)
    if x != x or x == np.inf or x == -np.inf:
        buf[pos] = 110  # null
        buf[pos + 1] = 117
        buf[pos + 2] = 108
        buf[pos + 3] = 108
        return pos + 4
    bits = f64_bits(x)
    if bits >> np.uint64(63):
        buf[pos] = 45
        pos += 1
    if x == 0.0:
        buf[pos] = 48
        buf[pos + 1] = 46
        buf[pos + 2] = 48
        return pos + 3
    ax = abs(x)
    if ax < 1e16 and ax == np.floor(ax):  # integral: repr is its digits and ".0"
        pos = put_uint(buf, pos, np.uint64(ax))
        buf[pos] = 46
        buf[pos + 1] = 48
        return pos + 2
    digits, exp = _micro_digits(ax)
    if digits == _U0:
        digits, exp = shortest_digits(x)
    nd = _ndigits(digits)
    decpt = nd + exp  # position of the decimal point relative to the first digit
    if -4 < decpt <= 16:
        if decpt <= 0:  # "0.", up to 3 zeros, the digits (the 5 bytes written first, then overwritten)
            buf[pos] = 48
            buf[pos + 1] = 46
            buf[pos + 2] = 48
            buf[pos + 3] = 48
            buf[pos + 4] = 48
            return _put_digits(buf, pos + 2 - decpt, digits, nd)
        # here 0 < decpt < nd: integral values below 1e16 left above, larger ones have decpt > 16.
        # The digits, then the fraction (at most 16 of them) moved one place on for the point:
        # one 16-byte load and store (COPY_SLACK), where a byte loop's exit was a mispredicted branch
        end = _put_digits(buf, pos, digits, nd)
        copy16(buf, pos + decpt + 1, buf, pos + decpt)
        buf[pos + decpt] = 46
        return end + 1
    end = _put_digits(buf, pos + 1, digits, nd)  # d.ddd: first digit moved in front of the point
    buf[pos] = buf[pos + 1]
    if nd > 1:
        buf[pos + 1] = 46
    else:
        end -= 1
    buf[end] = 101  # 'e'
    e = decpt - 1
    buf[end + 1] = 45 if e < 0 else 43
    e = abs(e)
    if e < 10:
        buf[end + 2] = 48
        buf[end + 3] = 48 + e
        return end + 4
    return put_uint(buf, end + 2, np.uint64(e))


# ---------------------------------------------------------------- addresses and times
@njit(cache=True, nogil=True, inline="always")
def _hex(d) -> int:
    return 48 + d if d < 10 else 87 + d


@njit(cache=True, nogil=True, inline="always")
def _group(hi, lo, k) -> int:
    """16-bit group ``k`` (0..7) of the address ``hi``:``lo`` (uint64 halves)."""
    half = hi if k < 4 else lo
    return np.int64((half >> np.uint64(48 - 16 * (k & 3))) & np.uint64(0xFFFF))


@njit(cache=True, nogil=True)
def put_ip(buf, pos, hi, lo) -> int:
    """An address as the decoder stores it (IPv4 as ::ffff:a.b.c.d -> dotted quad)."""
    hi = np.uint64(hi)
    lo = np.uint64(lo)
    if hi == _U0 and (lo >> _U32) == np.uint64(0xFFFF):
        for k in range(4):
            pos = put_uint(buf, pos, (lo >> np.uint64(24 - 8 * k)) & np.uint64(0xFF))
            if k < 3:
                buf[pos] = 46
                pos += 1
        return pos
    best, best_len, run = -1, 0, 0  # the groups are computed where used: no array per address
    for k in range(8):
        if _group(hi, lo, k) == 0:
            run += 1
            if run > best_len:
                best_len = run
                best = k - run + 1
        else:
            run = 0
    if best_len < 2:
        best = -1
    k = 0
    while k < 8:
        if k == best:
            buf[pos] = 58
            pos += 1
            if k == 0:
                buf[pos] = 58
                pos += 1
            k += best_len
            continue
        g = _group(hi, lo, k)
        started = False
        for sh in (12, 8, 4, 0):
            d = (g >> sh) & 0xF
            if d or started or sh == 0:
                buf[pos] = _hex(d)
                pos += 1
                started = True
        if k < 7:
            buf[pos] = 58
            pos += 1
        k += 1
    return pos


@njit(cache=True, nogil=True)
def put_mac(buf, pos, mac) -> int:
    for k in range(6):
        b = (np.int64(mac) >> (40 - 8 * k)) & 0xFF
        buf[pos] = _hex(b >> 4)
        buf[pos + 1] = _hex(b & 0xF)
        if k < 5:
            buf[pos + 2] = 58
            pos += 3
        else:
            pos += 2
    return pos


@njit(cache=True, nogil=True, inline="always")
def _put2(buf, pos, v) -> int:
    buf[pos] = 48 + v // 10
    buf[pos + 1] = 48 + v % 10
    return pos + 2


@njit(cache=True, nogil=True)
def put_time(buf, pos, ts_ns) -> int:
    """Epoch ns as ``YYYY-MM-DDTHH:MM:SS.uuuuuu+0000`` (UTC; years outside 0..9999 clamped)."""
    ts_ns = np.int64(ts_ns)
    sec = ts_ns // 1_000_000_000
    usec = (ts_ns - sec * 1_000_000_000) // 1000
    days = sec // 86400
    rem = sec - days * 86400
    z = days + 719468  # civil_from_days (H. Hinnant)
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    y = min(max(y, 0), 9999)
    pos = _put2(buf, pos, y // 100)
    pos = _put2(buf, pos, y % 100)
    buf[pos] = 45
    pos = _put2(buf, pos + 1, m)
    buf[pos] = 45
    pos = _put2(buf, pos + 1, d)
    buf[pos] = 84  # 'T'
    pos = _put2(buf, pos + 1, rem // 3600)
    buf[pos] = 58
    pos = _put2(buf, pos + 1, (rem // 60) % 60)
    buf[pos] = 58
    pos = _put2(buf, pos + 1, rem % 60)
    buf[pos] = 46
    pos += 1
    for k in range(5, -1, -1):
        buf[pos + k] = 48 + usec % 10
        usec //= 10
    pos += 6
    for c in (43, 48, 48, 48, 48):  # +0000
        buf[pos] = c
        pos += 1
    return pos
