"""The extract rows' text, byte for byte: the numba JSONL and CSV formatters against the text
Python's json and csv modules make of the same rows, on real connections and on the floats
that are hard to print; the Parquet writer's imports; the pipeline's reused row buffer."""
from __future__ import annotations

import csv
import gc
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from malsensor.daemon.outputs.rows import ROW_KEYS, RowWriter, conn_rows, jsonl_bytes, write_csv, write_jsonl
from malsensor.daemon.pipeline import extract_file
from malsensor.daemon.views.conn import CONN_COLUMNS

from conftest import PCAPS, require_data

# shortest round trips of every shape repr has: integral, exponent both ways, subnormal, the
# largest double, negative zero, and the values JSON has no number for
HARD_FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e16, 1e15, 123456789012345678.0, 1e-4, 9.999e-5, 5e-324,
               2.2250738585072014e-308, 1.7976931348623157e308, 0.30000000000000004, 1 / 3, 2 ** 53 + 2.0,
               float("nan"), float("inf"), float("-inf")]


def _connections(name: str, semantics: str = "malsensor") -> tuple[np.ndarray, np.ndarray]:
    from malsensor.daemon.flows.config import TrackerConfig

    cbs = list(extract_file(require_data(PCAPS / name), TrackerConfig.for_semantics(semantics), semantics))
    return np.concatenate([cb.records for cb in cbs]), np.concatenate([cb.features for cb in cbs])


def _json_value(v) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    if isinstance(v, list):
        return "[" + ",".join(_json_value(x) for x in v) + "]"
    return json.dumps(v)


def reference_jsonl(rec: np.ndarray, ftr: np.ndarray, seed: int = 0) -> bytes:
    """The rows as Python writes them: keys in order, no spaces, floats by repr, null for NaN/inf."""
    return "".join("{" + ",".join(f'"{k}":{_json_value(v)}' for k, v in row.items()) + "}\n"
                   for row in conn_rows(rec, ftr, seed)).encode()


def reference_csv(rec: np.ndarray, ftr: np.ndarray, seed: int = 0) -> bytes:
    """The csv module's rows (what RowWriter wrote before its kernel)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(
        [r[k] for k in ROW_KEYS] + [repr(v) for v in r["fts"]] for r in conn_rows(rec, ftr, seed))
    return text.getvalue().encode()


@pytest.mark.parametrize("name,semantics", [("ndpi_1kxun.pcap", "argus"), ("http_espn.pcapng", "malsensor"),
                                            ("synscan.pcapng", "malsensor")])
def test_jsonl_and_csv_text_equal_pythons_on_real_connections(name, semantics):
    rec, ftr = _connections(name, semantics)
    assert rec.shape[0] > 30
    for seed in (0, 4242):
        assert jsonl_bytes(rec, ftr, seed) == reference_jsonl(rec, ftr, seed)
        out = io.BytesIO()
        assert write_jsonl(out, rec, ftr, seed) == len(out.getvalue())
        assert out.getvalue() == reference_jsonl(rec, ftr, seed)
        out = io.BytesIO()
        write_csv(out, rec, ftr, seed)
        assert out.getvalue() == reference_csv(rec, ftr, seed)


def test_hard_floats_in_every_feature_column():
    """Each feature column gets each hard value (rolled, so every column meets all of them):
    JSONL writes the named copy exactly as the ``fts`` entry, CSV writes repr's nan/inf."""
    rec, ftr = _connections("ndpi_1kxun.pcap")
    n = len(HARD_FLOATS)
    rec = np.repeat(rec[:1], n, axis=0)
    hard = np.array(HARD_FLOATS)
    ftr = np.stack([np.roll(hard, -i)[np.arange(ftr.shape[1]) % n] for i in range(n)])
    assert jsonl_bytes(rec, ftr) == reference_jsonl(rec, ftr)
    out = io.BytesIO()
    write_csv(out, rec, ftr)
    text = out.getvalue()
    assert text == reference_csv(rec, ftr)
    assert b",nan," in text and b",-inf," in text and b",-0.0," in text and b",5e-324," in text


def test_row_writer_csv_has_the_header_then_the_rows(tmp_path):
    rec, ftr = _connections("http_espn.pcapng")
    path = tmp_path / "rows.csv"
    with open(path, "wb") as f:
        w = RowWriter(f, "csv")
        w.write_batch(rec[:10], ftr[:10])
        w.write_batch(rec[10:], ftr[10:])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [*ROW_KEYS, *CONN_COLUMNS]
    assert path.read_bytes().split(b"\n", 1)[1] == reference_csv(rec, ftr)
    assert len(rows) == rec.shape[0] + 1


def test_parquet_output_does_not_import_pandas(tmp_path):
    """pa.array() of a numpy array imports pandas (if installed) to ask whether it is a pandas
    object: ~0.5 CPU-s of start-up. The writer builds every column from buffers instead."""
    cap = require_data(PCAPS / "http_espn.pcapng")
    code = ("import sys\nfrom malsensor.daemon.cli import main\nrc = main(sys.argv[1:])\n"
            "assert rc == 0\nassert 'pyarrow' in sys.modules\n"
            "bad = sorted(m for m in ('pandas', 'numba', 'pyarrow.compute') if m in sys.modules)\n"
            "assert not bad, bad\n")
    out = tmp_path / "rows.parquet"
    proc = subprocess.run([sys.executable, "-c", code, "extract", str(cap), "-o", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 39


def test_reused_row_buffer_gives_the_same_batches():
    """reuse_rows (what `malsensor extract` asks for): the rows and features of every batch are
    those of the pipeline that allocates per batch, as long as each is used before the next."""
    from malsensor.daemon.capture.pcapfile import read_capture
    from malsensor.daemon.flows.config import TrackerConfig
    from malsensor.daemon.pipeline import ConnPipeline

    cap = require_data(PCAPS / "synscan.pcapng")  # ~2,000 connections, most ended while packets come
    for semantics in ("malsensor", "argus"):
        got = {}
        for reuse in (False, True):
            # records cut every second (end_reason "active"): they end while the packets come
            tracking = TrackerConfig.for_semantics(semantics, active_timeout=1.0, sweep_interval=0.5)
            pipe = ConnPipeline(tracking, semantics, emit_rows=64, reuse_rows=reuse)
            texts = [jsonl_bytes(cb.records, cb.features) for cb in pipe.run(read_capture(cap, chunk_bytes=65536))]
            got[reuse] = texts
        assert len(got[True]) > 3 and got[True] == got[False]


def test_main_restores_the_garbage_collector(tmp_path):
    """main() turns collection off while modules load and back on; a caller's choice stands."""
    from malsensor.daemon.cli import main

    cap = require_data(PCAPS / "synscan.pcapng")
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            assert main(["-l", "warning", "extract", str(cap), "-o", os.devnull]) == 0
            assert gc.isenabled() is enabled
        finally:
            gc.enable()
