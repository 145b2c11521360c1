"""Real recordings: packet counts by type equal those of Intel's libipt (Debian libipt2 + libipt-dev).

A small C helper (tests/c/pt_libipt_count.c), compiled here with gcc against libipt-dev,
walks each trace as ptdump does (sync forward, next until an error, sync forward again)
and counts packets by type; our decoder must count the same, and report as many errors.
"""
from __future__ import annotations

import numpy as np
import pytest

from malsensor.daemon.pt.decoder import decode
from pt_data import build_libipt_count, libipt_counts, recordings


@pytest.fixture(scope="module")
def libipt_exe(tmp_path_factory):
    return build_libipt_count(tmp_path_factory.mktemp("libipt"))


def test_there_are_six_recordings():
    assert [p.parent.name for p in recordings()] == \
        ["Unzip", "foo", "mruby", "dyn_test", "avscript_32", "icelake_tip"]


@pytest.mark.parametrize("case", ["Unzip", "foo", "mruby", "dyn_test", "avscript_32", "icelake_tip"])
def test_counts_by_type_equal_libipt(libipt_exe, case):
    trace = next(p for p in recordings() if p.parent.name == case)
    expected, expected_errors = libipt_counts(libipt_exe, trace)
    got = decode(trace.read_bytes(), packets=False).counters
    assert got.packets == expected
    assert got.n_errors == expected_errors
    assert got.bytes_decoded + got.bytes_skipped == trace.stat().st_size


def test_counts_of_the_concatenation_equal_libipt(libipt_exe, tmp_path):
    """All recordings back to back: a trace cut mid-packet runs into the next one's bytes."""
    joined = tmp_path / "all.pt"
    joined.write_bytes(b"".join(p.read_bytes() for p in recordings()))
    expected, expected_errors = libipt_counts(libipt_exe, joined)
    got = decode(np.fromfile(joined, np.uint8), packets=False).counters
    assert got.packets == expected
    assert got.n_errors == expected_errors
    assert sum(expected.values()) > 500_000


def test_counts_on_damaged_recordings_equal_libipt(libipt_exe, tmp_path):
    """Bytes flipped at random in a real trace: errors and resyncs land where libipt's do.

    Bytes that would make packets libipt 2.0.5 does not know (CFE 02 13, EVD 02 53, TRIG d9:
    newer packets this decoder reads) are avoided, so both decoders see the same packet set.
    """
    rng = np.random.default_rng(12)
    base = np.fromfile(next(p for p in recordings() if p.parent.name == "foo"), np.uint8)
    errors = 0
    for round_ in range(8):
        data = base.copy()
        at = rng.choice(data.size, 40, replace=False)
        data[at] = rng.integers(0, 256, at.size, dtype=np.uint8)
        newer = data == 0xd9
        newer[:-1] |= (data[:-1] == 0x02) & ((data[1:] == 0x13) | (data[1:] == 0x53))
        data[newer] = 0x00
        path = tmp_path / f"damaged{round_}.pt"
        data.tofile(path)
        expected, expected_errors = libipt_counts(libipt_exe, path)
        got = decode(data, packets=False).counters
        assert (got.packets, got.n_errors) == (expected, expected_errors), round_
        errors += expected_errors
    assert errors > 8  # the damage really made the decoders resynchronise
