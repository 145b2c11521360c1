"""The PT decoder on encoder output (round trips), on hand-made packets, and on garbage.

Round trips: random branch sequences through tests/pt_encoder.py (every IP compression
form, PSB and OVF at random points, TNT.8 and TNT.64) decode back to the same tokens,
without errors. Garbage: random bytes and damaged real recordings never crash the decoder,
always end, and account for every byte (decoded + skipped = in).
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from malsensor.daemon.pt import packets as P
from malsensor.daemon.pt.decoder import decode, decode_chunks
from malsensor.daemon.pt.listing import listing_lines
from pt_data import recordings
from pt_encoder import PSB_BYTES, PtEncoder, random_program


def _tokens(data: bytes) -> list[tuple[int, int]]:
    tk = decode(data, packets=False, tokens=True).tokens
    return list(zip(tk.kind.tolist(), tk.ip.tolist()))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), psb_every=st.sampled_from([None, 7, 50]))
def test_random_branch_sequences_round_trip(seed, n, psb_every):
    data, expected, _forms = random_program(random.Random(seed), n, psb_every)
    got = decode(data, tokens=True)
    assert got.counters.errors == {}
    assert got.counters.bytes_decoded == len(data) and got.counters.bytes_skipped == 0
    assert list(zip(got.tokens.kind.tolist(), got.tokens.ip.tolist())) == expected


def test_every_ip_compression_form_is_exercised_and_decoded():
    forms = set()
    for seed in range(40):
        data, expected, used = random_program(random.Random(seed), 300, 60)
        assert _tokens(data) == expected
        forms |= used
    assert forms == {0, 1, 2, 3, 4, 6}


@pytest.mark.parametrize("tnt64", [False, True])
def test_tnt_bits_come_out_in_branch_order(tnt64):
    enc = PtEncoder(tnt64=tnt64)
    enc.psb()
    enc.pge(0x401000)
    pattern = [True, False, False, True, True, True, False, True, False, False] * 9
    for b in pattern:
        enc.tnt(b)
    data, expected = enc.finish()
    got = _tokens(data)
    assert got == expected
    assert [k == P.TOK_TAKEN for k, _ in got[1:]] == pattern
    types = decode(data).counters.packets
    assert types.get("tnt.64" if tnt64 else "tnt.8", 0) == (2 if tnt64 else 15)


def test_last_ip_tracking_per_form():
    """upd-16/32/48 replace the low bits of the last IP, sext-48 sign-extends, OVF and PSB reset it."""
    data = bytes(PSB_BYTES) + bytes([0x02, 0x23])
    data += bytes([0xcd]) + (0x00007fff12345678).to_bytes(8, "little")        # tip full
    data += bytes([0x2d, 0xaa, 0xbb])                                         # tip upd16
    data += bytes([0x4d]) + (0x01020304).to_bytes(4, "little")                # tip upd32
    data += bytes([0x6d]) + (0x800000001000).to_bytes(6, "little")            # tip sext48
    data += bytes([0x8d]) + (0x000000002000).to_bytes(6, "little")            # tip upd48
    data += bytes([0x02, 0xf3])                                               # ovf
    data += bytes([0x3d, 0x34, 0x12])                                         # fup upd16 after ovf: unknown
    data += bytes([0x0d])                                                     # tip suppressed
    pk = decode(data).packets
    ip_rows = np.isin(pk.type, P.IP_TYPES)
    assert pk.ip[ip_rows].tolist() == [0x7fff12345678, 0x7fff1234bbaa, 0x7fff01020304,
                                       0xffff800000001000, 0xffff000000002000, 0x1234, 0x1234]
    known = (pk.aux[ip_rows] & P.AUX_IP_KNOWN) != 0
    assert known.tolist() == [True, True, True, True, True, False, False]
    assert _tokens(data) == [(P.TOK_TIP, 0x7fff12345678), (P.TOK_TIP, 0x7fff1234bbaa),
                             (P.TOK_TIP, 0x7fff01020304), (P.TOK_TIP, 0xffff800000001000),
                             (P.TOK_TIP, 0xffff000000002000)]


def test_error_then_resync_at_next_psb_counts_by_kind():
    good = bytes(PSB_BYTES) + bytes([0x02, 0x23, 0x0d])
    data = good + bytes([0xc9, 0x77, 0x55]) + bytes(5) + good + bytes([0xbd]) + bytes(3) + good + b"\x3d\x01"
    r = decode(data)
    assert r.counters.errors == {"bad_opcode": 1, "bad_ip_compression": 1, "truncated": 1}
    assert r.counters.resyncs == 2
    assert r.counters.packets == {"psb": 3, "psbend": 3, "tip": 3}
    assert r.counters.bytes_skipped == 3 + 5 + 1 + 3 + 2
    assert r.counters.bytes_decoded + r.counters.bytes_skipped == len(data)
    errors = r.packets.offset[r.packets.type == P.ERROR].tolist()
    assert errors == [len(good), 2 * len(good) + 8, len(data) - 2]


def test_no_psb_means_nothing_decoded():
    r = decode(bytes([0x0d, 0x00, 0x00, 0x02, 0x23] * 20))
    assert len(r.packets) == 0 and r.counters.bytes_skipped == 100


def test_chunked_output_equals_one_piece():
    data, _expected, _ = random_program(random.Random(5), 3000, 100)
    whole = decode(data, tokens=True)
    offsets, kinds = [], []
    for pk, tk, counters in decode_chunks(data, tokens=True, chunk=97):
        offsets.append(pk.offset.copy())
        kinds.append(tk.kind.copy())
    assert np.array_equal(np.concatenate(offsets), whole.packets.offset)
    assert np.array_equal(np.concatenate(kinds), whole.tokens.kind)
    assert counters == whole.counters


def _check_garbage(data: bytes) -> None:
    r = decode(data, tokens=True)
    c = r.counters
    assert c.bytes_decoded + c.bytes_skipped == c.bytes_in == len(data)
    pk = r.packets
    ok = pk.type != P.ERROR
    assert np.all(np.diff(pk.offset[ok]) > -16)          # a resync steps back at most 15 bytes
    assert int(pk.size[ok].astype(np.int64).sum()) >= c.bytes_decoded
    for _line in listing_lines(data):                     # the listing never fails either
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data):
    _check_garbage(data)
    _check_garbage(bytes(PSB_BYTES) + data)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 200), cut=st.floats(0.0, 1.0))
def test_damaged_recordings_never_crash(seed, flips, cut):
    rng = np.random.default_rng(seed)
    traces = recordings()
    data = np.fromfile(traces[int(rng.integers(len(traces)))], np.uint8)
    data = data[: max(1, int(data.size * cut))].copy()
    at = rng.integers(0, data.size, flips)
    data[at] = rng.integers(0, 256, flips, dtype=np.uint8)
    _check_garbage(data.tobytes())
