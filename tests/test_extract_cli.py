"""`malsensor extract` end to end on real captures: rows, formats, summary, bad input."""
from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from malsensor.daemon.views.conn import CONN_COLUMNS

from conftest import PCAPS, require_data, require_tool

ROW_KEYS = ["ts", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "src_mac", "dest_mac", "end_reason",
            "community_id", "fts"]


def extract(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "malsensor.daemon.cli", "extract", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_rows_have_the_contract_keys(tmp_path):
    cap = require_data(PCAPS / "stratosphere_cc_capture1.pcap")
    out = tmp_path / "rows.jsonl"
    proc = extract(str(cap), "-o", str(out))
    rows = jsonl(out)
    assert len(rows) == 299  # the capture's TLS connections, all closed
    for r in rows:
        assert list(r)[: len(ROW_KEYS)] == ROW_KEYS
        # the 17 named values follow; `proto` is both a key and a feature, listed once
        assert list(r)[len(ROW_KEYS):] == [c for c in CONN_COLUMNS if c != "proto"]
        assert r["fts"] == [r[k] for k in CONN_COLUMNS]
        assert r["proto"] == 6 and isinstance(r["src_port"], int)
    assert Counter(r["end_reason"] for r in rows) == {"fin": 299}
    assert "packets 7,931" in proc.stderr and "connections 299" in proc.stderr
    assert "malformed 0" in proc.stderr


def test_csv_matches_jsonl(tmp_path):
    cap = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    extract(str(cap), "-o", str(tmp_path / "a.jsonl"))
    extract(str(cap), "-o", str(tmp_path / "a.csv"), "--format", "csv")
    rows = jsonl(tmp_path / "a.jsonl")
    with open(tmp_path / "a.csv", newline="") as f:
        crow = list(csv.DictReader(f))
    assert len(crow) == len(rows) > 0
    for j, c in zip(rows, crow):
        assert c["src_ip"] == j["src_ip"] and int(c["dest_port"]) == j["dest_port"]
        assert [float(c[k]) for k in CONN_COLUMNS] == j["fts"]


def test_filter_keeps_only_the_named_protocols(tmp_path):
    cap = require_data(PCAPS / "ndpi_1kxun.pcap")
    out = tmp_path / "udp.jsonl"
    extract(str(cap), "--filter", "udp", "-o", str(out))
    rows = jsonl(out)
    assert rows and {r["proto"] for r in rows} == {17}
    bad = extract(str(cap), "--filter", "tcp,bogus", check=False)
    assert bad.returncode == 2 and "unknown protocol 'bogus'" in bad.stderr


def test_packet_and_byte_totals_agree_with_tshark(tmp_path):
    """Every IP packet of a capture lands in exactly one connection (midstream on)."""
    tshark = require_tool("tshark")
    cap = require_data(PCAPS / "stratosphere_scanning_host.pcap")
    out = tmp_path / "rows.jsonl"
    extract(str(cap), "--midstream", "-o", str(out))
    rows = jsonl(out)
    lines = subprocess.run([tshark, "-r", str(cap), "-Y", "ip or ipv6", "-T", "fields", "-E", "separator=,",
                            "-E", "occurrence=f", "-e", "ip.len", "-e", "ipv6.plen", "-e", "ip.frag_offset"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    ip_bytes = []
    for line in lines:
        ip_len, ipv6_plen, frag = line.split(",")
        if frag and int(frag) > 0:
            continue  # non-first fragments are counted apart, not in connections
        ip_bytes.append(int(ip_len) if ip_len else 40 + int(ipv6_plen))
    assert len(ip_bytes) > 1000
    assert sum(r["s_pkt_cnt"] + r["d_pkt_cnt"] for r in rows) == len(ip_bytes)
    assert sum(r["s_bytes_sum"] + r["d_bytes_sum"] for r in rows) == sum(ip_bytes)


def _cut(src: Path, dst: Path, n_bytes: int) -> None:
    dst.write_bytes(src.read_bytes()[:n_bytes])


def test_truncated_capture_keeps_what_came_before_and_warns_with_offset(tmp_path):
    cap = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    data = cap.read_bytes()
    cut = tmp_path / "cut.pcap"
    # walk the records to cut in the middle of record 600
    off, n = 24, 0
    while n < 600:
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
        n += 1
    _cut(cap, cut, off + 30)
    proc = extract(str(cut), "--midstream", "-o", str(tmp_path / "rows.jsonl"))
    rows = jsonl(tmp_path / "rows.jsonl")
    assert sum(r["s_pkt_cnt"] + r["d_pkt_cnt"] for r in rows) == 600
    assert "packets 600" in proc.stderr
    assert f"{off:,}" in proc.stderr or str(off) in proc.stderr


def test_log_level_after_the_command_is_honoured(tmp_path):
    """``malsensor extract ... -l error`` as ``malsensor -l error extract ...`` (and as
    ``malsensor-train``'s subcommands take it): the truncation warning goes, the summary stays."""
    cap = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    cut = tmp_path / "cut.pcap"
    _cut(cap, cut, 5000)
    loud = extract(str(cut), "-o", str(tmp_path / "a.jsonl"))
    assert "truncated at byte" in loud.stderr
    for args in (("-l", "error"), ("--log-level", "error")):
        quiet = extract(str(cut), "-o", str(tmp_path / "b.jsonl"), *args)
        assert "truncated at byte" not in quiet.stderr.replace("capture truncated at byte offset", "")
        assert "capture truncated at byte offset" in quiet.stderr  # the summary line
    bad = extract(str(cut), "-l", "loud", check=False)
    assert bad.returncode == 2 and "invalid choice: 'loud'" in bad.stderr


def test_corrupt_record_stops_with_offset_after_writing_earlier_rows(tmp_path):
    cap = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    data = bytearray(cap.read_bytes())
    off, n = 24, 0
    while n < 300:
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
        n += 1
    struct.pack_into("<I", data, off + 8, 0x7FFFFFF0)  # caplen of record 300: impossible
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    proc = extract(str(bad), "--midstream", "-o", str(tmp_path / "rows.jsonl"), check=False)
    assert proc.returncode == 1
    assert str(off) in proc.stderr.replace(",", "")
    rows = jsonl(tmp_path / "rows.jsonl")
    assert sum(r["s_pkt_cnt"] + r["d_pkt_cnt"] for r in rows) == 300


def test_unknown_link_type_and_missing_file_are_clear_errors(tmp_path):
    weird = tmp_path / "weird.pcap"
    weird.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147))  # LINKTYPE_USER0
    proc = extract(str(weird), check=False)
    assert proc.returncode != 0 and "147" in proc.stderr and "Traceback" not in proc.stderr
    proc = extract(str(tmp_path / "absent.pcap"), check=False)
    assert proc.returncode == 2 and "absent.pcap" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("semantics", ["malsensor", "argus"])
def test_every_shared_capture_extracts_cleanly(tmp_path, semantics):
    require_data(PCAPS)
    for cap in sorted(PCAPS.glob("*.pcap*")):
        out = tmp_path / (cap.name + ".jsonl")
        proc = extract(str(cap), "--semantics", semantics, "-o", str(out))
        assert "Traceback" not in proc.stderr
        for r in jsonl(out):
            assert len(r["fts"]) == 17 and all(v == v and v >= 0 for v in r["fts"]), (cap.name, r)


def test_fast_jsonl_text_equals_the_dict_rows(monkeypatch):
    import numpy as np

    from malsensor.daemon.outputs.rows import conn_rows, jsonl_bytes
    from malsensor.daemon.pipeline import extract_file

    cap = require_data(PCAPS / "ndpi_1kxun.pcap")
    cbs = list(extract_file(cap))
    rec = np.concatenate([cb.records for cb in cbs])
    fts = np.concatenate([cb.features for cb in cbs])
    text = jsonl_bytes(rec, fts).decode()
    assert text.endswith("\n")
    lines = text.splitlines()
    rows = list(conn_rows(rec, fts))
    assert len(lines) == len(rows) > 50
    for line, row in zip(lines, rows):
        parsed = json.loads(line)
        assert parsed == row and list(parsed) == list(row)
    # the numbers are Python's own text for them (shortest round trip), not just equal values
    assert all(f'"dur":{row["dur"]!r},' in line for line, row in zip(lines, rows))
    import malsensor.daemon.outputs.jsontext as jsontext

    monkeypatch.setattr(jsontext, "TEXT_CHUNK_ROWS", 7)  # formatted 7 rows per kernel call
    assert jsonl_bytes(rec, fts).decode() == text


def test_unwritable_or_full_output_is_a_clear_error(tmp_path):
    cap = require_data(PCAPS / "synscan.pcapng")
    proc = extract(str(cap), "-o", str(tmp_path / "absent" / "rows.jsonl"), check=False)
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    proc = extract(str(cap), "-o", "/dev/full", check=False)
    assert proc.returncode == 1 and "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert "connections 1,994" in proc.stderr  # the summary still comes


def test_parquet_rows_equal_the_jsonl_rows_with_typed_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cap = require_data(PCAPS / "ndpi_1kxun.pcap")
    extract(str(cap), "--semantics", "argus", "-o", str(tmp_path / "a.jsonl"))
    proc = extract(str(cap), "--semantics", "argus", "-o", str(tmp_path / "a.parquet"))  # format from the name
    assert "connections" in proc.stderr
    rows = jsonl(tmp_path / "a.jsonl")
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.num_rows == len(rows) > 50
    # no fts list: the feature vector is the proto column and the named ones, in CONN_COLUMNS order
    assert table.column_names == [k for k in ROW_KEYS if k != "fts"] + [c for c in CONN_COLUMNS if c != "proto"]
    types = {f.name: f.type for f in table.schema}
    assert types["ts"] == pa.timestamp("ns", tz="UTC")
    assert types["src_port"] == types["dest_port"] == pa.uint16() and types["proto"] == pa.uint8()
    assert types["src_ip"] == types["community_id"] == pa.string() and types["dur"] == pa.float64()
    assert types["end_reason"] == pa.dictionary(pa.int16(), pa.string())
    ts_ns = table.column("ts").cast(pa.int64()).to_pylist()
    for j, p, t in zip(rows, table.to_pylist(), ts_ns):
        assert t / 1e9 == j["ts"]
        p["ts"] = j["ts"]
        p = {k: None if v != v else v for k, v in p.items()}  # JSONL writes null for NaN; Parquet keeps it
        assert [p[c] for c in CONN_COLUMNS] == j.pop("fts")
        assert p == j
    # statistics where a reader filters (time, hosts, ports), none for the features
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata.row_group(0)
    stats = {meta.column(i).path_in_schema: meta.column(i).is_stats_set for i in range(meta.num_columns)}
    assert stats["ts"] and stats["src_ip"] and stats["dest_port"] and not stats["dur"] and not stats["community_id"]
    # an explicit --format wins over the extension; standard output works too
    out = subprocess.run([sys.executable, "-m", "malsensor.daemon.cli", "extract", str(cap), "--semantics",
                          "argus", "--format", "parquet"], capture_output=True, timeout=300, check=True).stdout
    assert pq.read_table(pa.BufferReader(out)).equals(table)


def test_parquet_output_to_a_full_disk_is_a_clear_error(tmp_path):
    cap = require_data(PCAPS / "synscan.pcapng")
    proc = extract(str(cap), "-o", "/dev/full", "--format", "parquet", check=False)
    assert proc.returncode == 1 and "No space left on device" in proc.stderr and "Traceback" not in proc.stderr


def test_ahead_of_time_kernels_give_the_jit_rows_without_importing_numba(tmp_path):
    """Both kernel builds (daemon/jit.py): identical rows; the AOT path never imports numba."""
    import os

    from malsensor.daemon import jit

    if not jit._load_aot():  # make test installs them; without them start-up is the JIT's again
        from conftest import _unavailable

        _unavailable("no ahead-of-time kernels built (pip install builds them)")
    cap = require_data(PCAPS / "ndpi_1kxun.pcap")
    ng = require_data(PCAPS / "http_espn.pcapng")
    # run the CLI in a child; it fails unless numba was imported exactly when the JIT was asked for
    code = ("import os, sys\nfrom malsensor.daemon.cli import main\nrc = main(sys.argv[1:])\n"
            "assert rc == 0 and ('numba' in sys.modules) == (os.environ['MALSENSOR_KERNELS'] == 'jit')\n")
    for src in (cap, ng):
        for fmt in ("jsonl", "parquet"):
            outs = {}
            for mode in ("aot", "jit"):
                outs[mode] = tmp_path / f"{mode}.{fmt}"
                subprocess.run([sys.executable, "-c", code, "extract", str(src), "--semantics", "argus", "-o",
                                str(outs[mode])], env=dict(os.environ, MALSENSOR_KERNELS=mode), check=True,
                               capture_output=True, timeout=300)
            assert outs["aot"].read_bytes() == outs["jit"].read_bytes()


def test_gzip_with_trailing_garbage_extracts_every_connection(tmp_path):
    """Issue 10.1: `extract` reported packets 0 for a gzip capture with bytes after the member."""
    import gzip

    cap = require_data(PCAPS / "synscan.pcapng")
    gz = tmp_path / "g.gz"
    gz.write_bytes(gzip.compress(cap.read_bytes()) + b"JUNK")
    out = tmp_path / "o.jsonl"
    proc = extract(str(gz), "-o", str(out))
    assert "packets 2,011  connections 1,994" in proc.stderr
    assert "trailing garbage ignored" in proc.stderr
    assert len(jsonl(out)) == 1994
