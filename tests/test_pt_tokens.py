"""Processor-trace samples (both layouts), control-flow tokens, windows and the pt_tokens@1 view."""
from __future__ import annotations

import gzip
import random

import numpy as np
import pytest

from conftest import DATA, require_data
from pt_encoder import PtEncoder
from malsensor.daemon.pt import pending
from malsensor.daemon.pt.decoder import decode
from malsensor.daemon.pt.samples import Modules, SampleError, modules_from_lines, read_barnum, scan
from malsensor.daemon.pt.tokens import key_of, module_hash, token_keys, trace_windows, windows
from malsensor.daemon.views.base import get_view
from malsensor.daemon.views.pt_tokens import PtTokensOptions, PtTraceBatch

LIBXDC = DATA / "pt" / "libxdc"


def test_libxdc_table_gives_the_present_cases_and_says_why_the_others_are_skipped():
    got = scan(require_data(LIBXDC / "TEST_CASES.tsv").parent)
    assert [s.name for s in got.samples] == ["Unzip", "foo", "mruby", "dyn_test", "avscript_32", "icelake_tip"]
    assert [s.label for s in got.samples] == [s.name for s in got.samples]
    assert len(got.skipped) == 5
    assert all("TEST_CASES.tsv:" in why and "missing" in why for _, why in got.skipped)
    unzip = got.samples[0]
    # Unzip's page image: 39 pages 0x400000..0x426fff, one run
    assert unzip.modules.names == ["Unzip.r0"]
    assert int(unzip.modules.start[0]) == 0x400000 and int(unzip.modules.end[0]) == 0x427000
    assert len(got.samples[3].modules) == 12 and len(got.samples[4].modules) == 41


def test_mapping_lines_with_and_without_ends_and_their_errors():
    m = modules_from_lines(["0x7f0000001000 /lib/libc.so.6", "# comment", "", "400000 401000 /bin/prog",
                            "500000 /bin/other"], "map")
    assert m.names == ["/bin/prog", "/bin/other", "/lib/libc.so.6"]
    assert [int(v) for v in m.start] == [0x400000, 0x500000, 0x7F0000001000]
    # no end: up to the next start; the last one 1 GiB
    assert [int(v) for v in m.end] == [0x401000, 0x7F0000001000, 0x7F0000001000 + (1 << 30)]
    with pytest.raises(SampleError, match=r"^map:2: not a hex address: 'zz'$"):
        modules_from_lines(["1000 a", "zz b"], "map")
    with pytest.raises(SampleError, match=r"^map:1: end 0x1000 is not above start 0x2000$"):
        modules_from_lines(["2000 1000 a"], "map")
    with pytest.raises(SampleError, match="map: no modules"):
        modules_from_lines(["# nothing"], "map")


def test_barnum_folders_plain_and_gzip_and_incomplete_ones_skipped(tmp_path):
    enc = PtEncoder()
    enc.psb()
    enc.tip(0x401234)
    data, _ = enc.finish()
    a = tmp_path / "a"
    a.mkdir()
    (a / "info.txt").write_text("sample-a\nmalicious\n")
    (a / "mapping.txt.gz").write_bytes(gzip.compress(b"400000 402000 /bin/a\n"))
    (a / "trace_0.gz").write_bytes(gzip.compress(data))
    b = tmp_path / "sub" / "b"
    b.mkdir(parents=True)
    (b / "info.txt").write_text("sample-b\nbenign\n")
    (b / "mapping.txt").write_text("400000 /bin/b\n")     # no trace_0
    c = tmp_path / "c"
    c.mkdir()
    (c / "info.txt").write_text("sample-c\nbenign\n")
    (c / "mapping.txt").write_text("nothex /bin/c\n")
    (c / "trace_0").write_bytes(data)
    got = scan(tmp_path)
    assert [(s.name, s.label) for s in got.samples] == [("sample-a", "malicious")]
    assert got.samples[0].read_trace() == data
    reasons = dict((p.name, why) for p, why in got.skipped)
    assert reasons["b"] == f"{b}: incomplete sample, missing trace_0[.gz]"
    assert reasons["c"] == f"{c / 'mapping.txt'}:1: not a hex address: 'nothex'"
    with pytest.raises(SampleError, match="missing info.txt, mapping.txt"):
        read_barnum(tmp_path / "sub")


def _keys(enc: PtEncoder, mods: Modules, tip_only: bool = False) -> np.ndarray:
    data, _ = enc.finish()
    tk = decode(data, packets=False, tokens=True).tokens
    h = np.asarray([module_hash(n) for n in mods.names], np.int64)
    keys, _ = token_keys(tk.kind, tk.ip, tk.offset, mods.start, mods.end, h, tip_only)
    return keys


def _program(base_a: int, base_b: int, outside: int) -> PtEncoder:
    enc = PtEncoder(choose=random.Random(3).choice)
    enc.psb()
    enc.tip(base_a + 0x10)       # 0: A+0x10
    enc.tnt(True)                # 1: taken in A
    enc.tnt(False)               # 2: not taken in A
    enc.tip(outside)             # 3: outside
    enc.tnt(True)                # 4: taken outside
    enc.tip(base_b + 0x20)       # 5: B+0x20
    enc.tnt(True)                # 6: taken in B
    enc.tip(base_a + 0x10)       # 7: A+0x10 again
    return enc


def test_tokens_are_module_and_offset_independent_of_where_modules_are_loaded():
    mods1 = Modules(np.array([0x400000, 0x7F0000000000], np.uint64), np.array([0x410000, 0x7F0000100000], np.uint64),
                    ["/bin/prog", "/lib/libc.so.6"])
    mods2 = Modules(np.array([0x555555554000, 0x7FFFF7800000], np.uint64),
                    np.array([0x555555564000, 0x7FFFF7900000], np.uint64), ["/usr/bin/prog", "/usr/lib/libc.so.6"])
    k1 = _keys(_program(0x400000, 0x7F0000000000, 0x1000), mods1)
    k2 = _keys(_program(0x555555554000, 0x7FFFF7800000, 0xFFFF800000001000), mods2)
    assert k1.tolist() == k2.tolist()          # same modules (by file name) and offsets: same tokens
    assert len(k1) == 8 and (k1 > 0).all() and (k1 <= 0x7FFFFFFF).all()
    assert k1[0] == k1[7] and k1[1] != k1[2]  # taken != not taken
    assert k1[1] != k1[4] != k1[6] and k1[1] != k1[6]  # a TNT bit is tagged with the current module
    assert len(set(k1.tolist())) == 7
    # two different addresses outside every module: one token
    k3 = _keys(_program(0x400000, 0x7F0000000000, 0x2000), mods1)
    assert k3.tolist() == k1.tolist()
    # tip_only keeps the four IP tokens, same keys
    assert _keys(_program(0x400000, 0x7F0000000000, 0x1000), mods1, tip_only=True).tolist() == \
        k1[[0, 3, 5, 7]].tolist()


def test_windows_slide_with_a_last_window_on_the_tail_and_pad_short_traces():
    keys = np.arange(1, 11, dtype=np.int64) * 70001   # > 16 bits: hi and lo both used
    offs = np.arange(10, dtype=np.int64) * 100
    x, w = windows(keys, offs, 4, 3)
    assert x.shape == (3, 4, 2) and x.dtype == np.float32
    assert key_of(x).tolist() == [keys[0:4].tolist(), keys[3:7].tolist(), keys[6:10].tolist()]
    assert w.tolist() == [0, 300, 600]
    x, w = windows(keys, offs, 4, 4)                  # chunks: 0-3, 4-7, then 6-9 ends on the last token
    assert key_of(x).tolist() == [keys[0:4].tolist(), keys[4:8].tolist(), keys[6:10].tolist()]
    x, w = windows(keys[:2], offs[:2], 4, 1)
    assert key_of(x).tolist() == [[keys[0], keys[1], 0, 0]] and w.tolist() == [0]


def test_real_recording_windows_cover_every_token():
    s = [s for s in scan(require_data(LIBXDC / "TEST_CASES.tsv").parent).samples if s.name == "foo"][0]
    x, w, n, counters = trace_windows(s.read_trace(), s.modules, 32, 32)
    assert n == 25362 and counters.n_errors == 0
    assert x.shape == (-(-n // 32), 32, 2)
    assert (np.diff(w) >= 0).all() and (key_of(x) > 0).all()


def test_view_shape_columns_options_and_router():
    v = get_view("pt_tokens@1")
    assert v.entity == "trace" and v.consumes == "pt_samples"
    o = PtTokensOptions(seq_len=16, tip_only=True)
    info = v.info(o)
    assert info.shape == (16, 2) and info.columns == ("tip_hi", "tip_lo")
    assert v.options_for(info) == PtTokensOptions(seq_len=16, tip_only=True)
    assert v.info().shape == (128, 2) and v.info().columns == ("token_hi", "token_lo")
    enc = _program(0x400000, 0x7F0000000000, 0x1000)
    data, _ = enc.finish()
    tk = decode(data, packets=False, tokens=True).tokens
    mods = Modules(np.array([0x400000, 0x7F0000000000], np.uint64), np.array([0x410000, 0x7F0000100000], np.uint64),
                   ["/bin/prog", "/lib/libc.so.6"])
    t = pending.register("s", "benign", "/nowhere")
    h = np.asarray([module_hash(n) for n in mods.names], np.int64)
    r = v.router(PtTokensOptions(seq_len=4, stride=2), {})
    rows = r.route(PtTraceBatch(t.seq, tk.kind, tk.ip, tk.offset, mods, h))
    assert rows.x.shape == (3, 4, 2)                  # 8 tokens: windows at 0, 2, 4
    assert rows.keys[:, 0].tolist() == [t.seq] * 3 and rows.keys[:, 2].tolist() == [0, 1, 2]
    assert pending.get(t.seq).routes == {r.id: 3} and pending.get(t.seq).top == {r.id: 5}
    pending.mark_dispatched(t.seq)
    pending.complete_route(t.seq, r.id)
    assert pending.get(t.seq) is None
    # max_windows bounds a long trace: 8 tokens, seq_len 2, stride 1 would be 7 windows
    r = v.router(PtTokensOptions(seq_len=2, stride=1, max_windows=4), {})
    t = pending.register("s", "benign", "/nowhere")
    rows = r.route(PtTraceBatch(t.seq, tk.kind, tk.ip, tk.offset, mods, h))
    assert rows.x.shape[0] <= 4 and rows.keys[-1, 3] == tk.offset[-2]   # still ends on the last token
    pending.mark_dispatched(t.seq)
    pending.complete_route(t.seq, r.id)
    assert pending.get(t.seq) is None


def test_lstm_vocabulary_keeps_the_most_frequent_keys_and_maps_unseen_to_unknown():
    from malsensor.models.zoo.lstm import LSTMConfig, PAD, UNKNOWN
    from malsensor.models.zoo.base import get_kind

    def rows(keys):
        k = np.asarray(keys, np.int64)
        return np.stack([k >> 16, k & 0xFFFF], axis=-1).astype(np.float32)

    kind = get_kind("lstm")
    # key 70001 x3, 9 x2, 5 x2, 123 x1 (and padding 0, never in the vocabulary); room for 3 keys
    x = rows([[70001, 9, 5, 0], [70001, 9, 5, 123], [70001, 0, 0, 0]])
    inputs = kind.fit_inputs(LSTMConfig(max_vocab=5), x)
    assert inputs["vocab"].dtype == np.int32 and inputs["vocab"].tolist() == [5, 9, 70001]
    ids = np.asarray(kind.prepare_inputs(inputs, rows([[9, 0, 123, 70001, 5, 0x7FFFFFFF]])))
    assert ids.tolist() == [[3, PAD, UNKNOWN, 4, 2, UNKNOWN]]
    d = kind.describe_inputs(inputs, ("token_hi", "token_lo"))
    assert d["vocabulary"] == 3 and d["transform"] == "token_vocabulary"
