"""Processor-trace samples read by worker processes (models/data/pt_workers.py): exactly the
serial reader's rows and tokens, in the same order; a broken sample in the middle is skipped
with its reason (naming the sample and the byte offset) and the rest goes on; one whole log
line per sample naming the worker; no process is left behind."""
from __future__ import annotations

import gzip
import logging
import multiprocessing
import re

import numpy as np
import pytest

from conftest import DATA, require_data
from pt_barnum import PSB, build, rng_bytes, write_sample
from malsensor.daemon.pt.decoder import decode
from malsensor.daemon.pt.packets import ERROR, ERROR_NAMES
from malsensor.daemon.pt.samples import read_barnum
from malsensor.daemon.pt.tokens import trace_windows
from malsensor.daemon.views.pt_tokens import PtTokensOptions, PtTokensView
from malsensor.models.data.labels import LabelSpec
from malsensor.models.data.load import DataOptions, load_dataset
from malsensor.models.errors import TrainError

SEQ_LEN = 32
VIEW = PtTokensView().info(PtTokensOptions(seq_len=SEQ_LEN))


def _opts(workers: int, skip_bad: bool = True) -> DataOptions:
    return DataOptions(LabelSpec("column", "label"), skip_bad=skip_bad, workers=workers)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Ten Barnum samples from the real recordings (heads and tails) and two broken ones sorted
    among them: a gzip trace cut short, and a trace of random bytes (no control-flow token)."""
    libxdc = require_data(DATA / "pt" / "libxdc" / "TEST_CASES.tsv").parent
    root = tmp_path_factory.mktemp("ptw")
    build(libxdc, root / "s", root / "s")
    good = read_barnum(root / "s" / "foo-head")
    cut = write_sample(root / "s" / "dyn_test-zcut", "dyn_test-zcut", "dyn_test", good.modules, b"", gz=True)
    whole = gzip.compress(good.read_trace())
    (cut / "trace_0.gz").write_bytes(whole[:len(whole) // 2])
    # a PSB, then bytes no packet starts with (02 ff: an unknown extended opcode), then random bytes
    bad = PSB + b"\x02\xff" * 10 + rng_bytes(5000 - len(PSB) - 20, 3)
    noise = write_sample(root / "s" / "foo-noise", "foo-noise", "foo", good.modules, bad)
    return root / "s", cut, noise, len(whole) // 2


def test_workers_give_the_serial_rows_exactly_and_skip_a_broken_sample(samples, caplog):
    root, cut, noise, cut_size = samples
    caplog.set_level(logging.INFO, logger="malsensor.train")
    serial = load_dataset([root], VIEW, _opts(1))
    serial_lines = [r.getMessage() for r in caplog.records if r.name == "malsensor.train.pt"]
    caplog.clear()
    par = load_dataset([root], VIEW, _opts(3))
    assert not multiprocessing.active_children()            # every worker ended

    assert par.n == serial.n and np.array_equal(par.x, serial.x) and par.x.dtype == serial.x.dtype
    assert par.y.tolist() == serial.y.tolist() and np.array_equal(par.groups, serial.groups)
    assert np.array_equal(par.ts, serial.ts) and par.group_names == serial.group_names
    assert par.digest() == serial.digest()
    assert par.stats.as_dict() == serial.stats.as_dict()
    # the rows are every good sample's non-overlapping windows, in file order
    good = sorted(p for p in root.iterdir() if p not in (cut, noise))
    assert len(good) == 10
    want = [trace_windows(s.read_trace(), s.modules, SEQ_LEN, SEQ_LEN)[0] for s in map(read_barnum, good)]
    assert np.array_equal(par.x, np.concatenate(want).astype(np.float32))
    assert par.group_names == [str(p / "info.txt") for p in good]

    # the broken samples: skipped with their reason, naming the file and the byte offset
    noise_data = (noise / "trace_0").read_bytes()
    r = decode(noise_data, packets=True)
    first = int(np.flatnonzero(r.packets.type == ERROR)[0])
    assert int(r.packets.offset[first]) == len(PSB) and ERROR_NAMES[int(r.packets.aux[first])] == "bad_opcode"
    assert par.stats.bad_rows == 2
    assert par.stats.bad_examples == [
        f"{cut}: {cut / 'trace_0.gz'}: not a valid gzip file (it ends at byte {cut_size}, inside the member "
        f"that starts at byte 0)",
        f"{noise}: {noise / 'trace_0'}: no control-flow tokens in 5000 bytes ({r.counters.n_errors} decode errors, the "
        f"first at byte {int(r.packets.offset[first])} ({ERROR_NAMES[int(r.packets.aux[first])]}))"]

    # logs: one whole line per sample, naming the worker; the same lines as the serial reader's
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "malsensor.train.pt"]
    assert all("\n" not in ln for ln in lines)
    per_sample = [ln for ln in lines if re.match(r"worker \d+: \S+ \(\S+\): \d+ windows from \d+ tokens", ln)]
    assert sorted(re.sub(r"^worker \d+: ", "", ln).rsplit(", ", 1)[0] for ln in per_sample) == \
        sorted(ln.rsplit(", ", 1)[0] for ln in serial_lines if " windows from " in ln)   # less the seconds
    assert len(per_sample) == 10
    for s, x in zip(map(read_barnum, good), want):
        assert sum(f": {s.name} ({s.label}): {x.shape[0]} windows from " in ln for ln in per_sample) == 1
    skipped = [ln for ln in lines if " skipped " in ln]
    assert [re.sub(r"^worker \d+: skipped ", "", ln) for ln in skipped] == par.stats.bad_examples
    assert any(re.match(r"reading 12 sample file\(s\) with 3 worker process\(es\)", ln) for ln in lines)


def test_without_skip_bad_the_broken_sample_stops_the_load_and_the_workers(samples):
    root, cut, _, cut_size = samples
    with pytest.raises(TrainError) as e:
        load_dataset([root], VIEW, _opts(2, skip_bad=False))
    assert str(e.value) == (f"{cut}: {cut / 'trace_0.gz'}: not a valid gzip file (it ends at byte {cut_size}, inside the "
                            f"member that starts at byte 0) (use --skip-bad to count and skip malformed rows)")
    assert not multiprocessing.active_children()
