"""The numba JSON text writers against Python's own text for the same values."""
from __future__ import annotations

import ipaddress
import time

import numpy as np
from numba import njit

from malsensor.daemon.outputs.jsontext import put_float, put_int, put_ip, put_mac, put_time

RNG = np.random.default_rng(7)


@njit
def _each(put, v, buf, ends):
    """``put`` each value of ``v`` (a row of it, for two-column values) one after the other."""
    pos = 0
    for i in range(v.shape[0]):
        pos = put(buf, pos, v[i])
        ends[i] = pos


@njit
def _put_ip_pair(buf, pos, hi_lo):
    return put_ip(buf, pos, hi_lo[0], hi_lo[1])


def texts(put, values: np.ndarray, width: int = 40) -> list[str]:
    n = values.shape[0]
    buf = np.empty(n * width, dtype=np.uint8)
    ends = np.empty(n, dtype=np.int64)
    _each(put, values, buf, ends)
    raw = buf[:ends[-1]].tobytes().decode("ascii")
    starts = np.concatenate([[0], ends[:-1]])
    return [raw[a:b] for a, b in zip(starts.tolist(), ends.tolist())]


def test_floats_are_python_repr():
    special = np.array([0.0, -0.0, 1.0, -1.5, 0.1, 0.3, 1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5, 0.00012,
                        5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 2.0 ** 53, 2.0 ** 63,
                        40000.00000000001, 1e22, 1e23, 123e-300, 0.011664999648928642])
    bits = RNG.integers(0, 2 ** 64 - 1, 300_000, dtype=np.uint64).view(np.float64)
    decimals = RNG.integers(0, 10 ** 9, 100_000).astype(np.float64) / 10.0 ** RNG.integers(0, 12, 100_000)
    probs = RNG.random(100_000).astype(np.float32).astype(np.float64)
    # around every power of ten where the layout changes (0.000d, d.ddd, integral, exponent)
    tens = 10.0 ** np.arange(-8, 25)
    edges = np.concatenate([tens, np.nextafter(tens, 0), np.nextafter(tens, np.inf),
                            RNG.integers(1, 10 ** 6, 33_000) * np.repeat(tens, 1000) / 1e6])
    # multiples of 1e-6 (durations from microsecond timestamps), up to and across 2**32, and
    # nanosecond timestamps in seconds (whose double is often not the one nearest the microsecond)
    micro = np.concatenate([RNG.integers(1, 2 ** 53, 100_000) / 1e6, RNG.integers(1, 10 ** 7, 50_000) / 1e6,
                            np.nextafter(RNG.integers(1, 10 ** 9, 20_000) / 1e6, np.inf),
                            RNG.integers(1_400_000_000_000_000, 1_800_000_000_000_000, 50_000) * 1000 / 1e9,
                            (2.0 ** 32 + RNG.integers(-10 ** 6, 10 ** 6, 20_000) / 1e6)])
    v = np.concatenate([special, bits[np.isfinite(bits)], decimals, probs, edges, micro])
    assert texts(put_float, v, width=25) == [repr(x) for x in v.tolist()]


def test_non_finite_floats_are_null():
    assert texts(put_float, np.array([np.nan, np.inf, -np.inf, 2.5])) == ["null", "null", "null", "2.5"]


def test_ints():
    v = np.concatenate([RNG.integers(-2 ** 63, 2 ** 63 - 1, 50_000), [0, -1, 9, 10, 99, 100, -2 ** 63, 2 ** 63 - 1]])
    assert texts(put_int, v) == [str(x) for x in v.tolist()]


def test_addresses_match_ipaddress():
    n = 50_000
    groups = RNG.integers(0, 65536, (n, 8), dtype=np.uint64)
    groups[RNG.random((n, 8)) < 0.5] = 0  # runs of zero groups of every length and place
    sh = np.array([48, 32, 16, 0], dtype=np.uint64)
    hi = (groups[:, :4] << sh).sum(axis=1, dtype=np.uint64).view(np.int64)
    lo = (groups[:, 4:] << sh).sum(axis=1, dtype=np.uint64).view(np.int64)
    v4 = RNG.integers(0, 2 ** 32, n) | (0xFFFF << 32)
    hi = np.concatenate([hi, np.zeros(n + 2, np.int64)])
    lo = np.concatenate([lo, v4, [0, 1]])
    expect = []
    for h, lo_ in zip(hi.tolist(), lo.tolist()):
        h &= 2 ** 64 - 1
        lo_ &= 2 ** 64 - 1
        if h == 0 and lo_ >> 32 == 0xFFFF:
            expect.append(str(ipaddress.IPv4Address(lo_ & 0xFFFFFFFF)))
        else:
            expect.append(ipaddress.IPv6Address((h << 64) | lo_).compressed)
    assert texts(_put_ip_pair, np.stack([hi, lo], axis=1)) == expect


def test_macs_and_times():
    m = RNG.integers(0, 2 ** 48, 20_000)
    assert texts(put_mac, m) == [":".join(f"{(x >> s) & 0xFF:02x}" for s in range(40, -8, -8)) for x in m.tolist()]
    t = np.concatenate([RNG.integers(0, 2 ** 63 - 1, 20_000), [0, 951_782_400 * 10 ** 9, 1_700_000_000_123_456_789]])
    expect = [time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(x // 10 ** 9)) + f".{x % 10 ** 9 // 1000:06d}+0000"
              for x in t.tolist()]
    assert texts(put_time, t) == expect
