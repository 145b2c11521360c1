"""Datasets: JSONL and CSV parsing, labels from MAC tables, captures, cleaning, splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from train_data import IOT, UNSW, unsw_subset

from malsensor.models.data.csvsrc import read_csv
from malsensor.models.data.labels import LabelSpec, normalise_mac, read_mac_table
from malsensor.models.data.load import DataOptions, load_dataset
from malsensor.models.data.protocols import proto_number
from malsensor.models.data.split import class_weights, split_dataset
from malsensor.models.data.table import DataStats
from malsensor.models.errors import TrainError
from malsensor.daemon.views.conn import CONN, CONN_COLUMNS
from malsensor.daemon.views.conn_series import CONN_SERIES, SeriesOptions

VIEW = CONN.info()


def test_conn_columns_come_from_the_daemon():
    from malsensor.daemon.views.conn import CONN_COLUMNS as DAEMON

    assert CONN_COLUMNS == DAEMON and len(CONN_COLUMNS) == 17


# --------------------------------------------------------------------------- UNSW CSV

def test_unsw_row_maps_onto_the_17_features():
    part = read_csv(require_data(UNSW), VIEW, "attack_cat", DataStats(), False)
    # id 1: 0.000011,udp,-,INT,2,0,496,0,90909.0902,254,0,180363632,0,...,sinpkt 0.011,...,smean 248
    assert part.x[0].tolist() == [0.000011, 17, 496, 0, 254, 0, 180363632, 0, 2, 0, 248, 0, 0.011, 0, 0, 0, 0]
    assert part.label[0] == "Normal" and part.semantics == "argus"
    assert part.x.shape == (65870, 17)
    binary = read_csv(UNSW, VIEW, "label", DataStats(), False)
    assert sorted(set(binary.label)) == ["0", "1"] and binary.label.count("1") == 36270


def test_protocol_names():
    assert proto_number("tcp") == 6 and proto_number("UDP") == 17 and proto_number("ospf") == 89
    assert proto_number("sctp") == 132 and proto_number("any") == 61 and proto_number("arp") == 2054
    assert proto_number("47") == 47 and proto_number("nosuch") is None


def _csv(tmp: Path, body: str) -> Path:
    src = require_data(UNSW).read_text(encoding="utf-8-sig").splitlines()
    p = tmp / "bad.csv"
    p.write_text("\n".join([src[0], src[1], body, src[2]]) + "\n")
    return p


def test_csv_malformed_row_names_file_and_line(tmp_path):
    p = _csv(tmp_path, "3,0.1,tcp,-,FIN,2")
    with pytest.raises(TrainError, match=rf"{p}:3: 6 fields, the header has 45"):
        read_csv(p, VIEW, None, DataStats(), False)
    stats = DataStats()
    part = read_csv(p, VIEW, None, stats, True)
    assert part.n == 2 and stats.bad_rows == 1 and "bad.csv:3" in stats.bad_examples[0]


def test_csv_unknown_protocol_and_garbage_number(tmp_path):
    src = require_data(UNSW).read_text(encoding="utf-8-sig").splitlines()
    bad = src[1].split(",")
    bad[2] = "warp-drive"
    p = _csv(tmp_path, ",".join(bad))
    with pytest.raises(TrainError, match=r":3: column 'proto' is 'warp-drive': unknown protocol name"):
        read_csv(p, VIEW, None, DataStats(), False)
    bad = src[1].split(",")
    bad[7] = "12x"
    p = _csv(tmp_path, ",".join(bad))
    with pytest.raises(TrainError, match=r":3: column 'sbytes' is '12x': not a number"):
        read_csv(p, VIEW, None, DataStats(), False)


def test_csv_without_feature_columns(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,label\n1,2,x\n")
    with pytest.raises(TrainError, match="neither the 17 feature columns"):
        read_csv(p, VIEW, None, DataStats(), False)


# --------------------------------------------------------------------------- JSONL

FTS = [0.5, 6, 100, 200, 64, 60, 1600, 3200, 2, 2, 50, 100, 0.25, 0.25, 0.01, 0.004, 0.006]


def _jsonl(tmp: Path, rows: list, name: str = "rows.jsonl") -> Path:
    p = tmp / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_jsonl_fts_and_named_fields(tmp_path):
    named = dict(zip(CONN_COLUMNS, [v * 2 for v in FTS]))
    p = _jsonl(tmp_path, [{"s_mac": "aa:bb:cc:dd:ee:01", "fts": FTS},
                          dict(named, s_mac="aa:bb:cc:dd:ee:02"),
                          {"s_mac": "aa:bb:cc:dd:ee:01", "fts": FTS[:4] + [None] + FTS[5:]}])
    ds = load_dataset([p], VIEW)
    assert ds.x.dtype == np.float32 and ds.x.shape == (3, 17)
    assert ds.x[0].tolist() == np.float32(FTS).tolist()
    assert ds.x[1].tolist() == np.float32([v * 2 for v in FTS]).tolist()
    assert ds.x[2, 4] == 0.0 and ds.stats.missing_values == 1
    assert ds.y.tolist() == ["aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:01"]


@pytest.mark.parametrize("line,problem", [
    ('{"s_mac": "a", "fts": [1, 2', "invalid JSON"),
    ('[1, 2, 3]', "expected a JSON object, got list"),
    (json.dumps({"s_mac": "a", "fts": FTS[:16]}), "'fts' has 16 values, expected 17"),
    (json.dumps({"s_mac": "a", "fts": FTS[:3] + ["x"] + FTS[4:]}), "fts[3] (d_bytes_sum) is 'x', not a number"),
    (json.dumps({"s_mac": "a"}), "no features: expected 'fts' (17 values) or the named columns"),
    (json.dumps({"s_mac": "a", "dur": 1.0}), "missing feature keys: proto"),
])
def test_jsonl_bad_lines(tmp_path, line, problem):
    p = _jsonl(tmp_path, [{"s_mac": "a", "fts": FTS}, {"s_mac": "b", "fts": FTS}, line])
    with pytest.raises(TrainError) as e:
        load_dataset([p], VIEW)
    assert f"{p}:3: " in str(e.value) and problem in str(e.value)
    ds = load_dataset([p], VIEW, DataOptions(skip_bad=True))
    assert ds.n == 2 and ds.stats.bad_rows == 1


def test_empty_and_unlabelled(tmp_path):
    p = _jsonl(tmp_path, [])
    with pytest.raises(TrainError, match="empty dataset"):
        load_dataset([p], VIEW)
    p = _jsonl(tmp_path, [{"fts": FTS}], "nolabel.jsonl")
    with pytest.raises(TrainError, match="no label column"):
        load_dataset([p], VIEW)


def test_nonfinite_and_duplicates(tmp_path):
    inf_row = FTS[:6] + [1e999] + FTS[7:]
    p = _jsonl(tmp_path, [{"label": "a", "fts": FTS}, {"label": "a", "fts": FTS}, {"label": "b", "fts": FTS},
                          {"label": "b", "fts": inf_row}])
    ds = load_dataset([p], VIEW)
    assert ds.stats.nonfinite_values == 1 and ds.x[3, 6] == 0.0
    assert ds.stats.duplicates == 2 and ds.stats.conflicting_duplicates == 3
    ds = load_dataset([p], VIEW, DataOptions(dedup=True))
    assert ds.n == 3 and ds.stats.duplicates_dropped == 1


def test_series_view_from_jsonl(tmp_path):
    view = CONN_SERIES.info(SeriesOptions(lookback=2))
    p = _jsonl(tmp_path, [{"label": "a", "series": [FTS, FTS]}, {"label": "b", "series": [FTS, FTS[:16]]}])
    with pytest.raises(TrainError, match=r":2: series\[1\] has 16 values, expected 17"):
        load_dataset([p], view)
    with pytest.raises(TrainError, match="no 'series' key"):
        load_dataset([_jsonl(tmp_path, [{"label": "a", "fts": FTS}], "flat.jsonl")], view)
    with pytest.raises(TrainError, match="a CSV table holds one row per connection"):
        load_dataset([unsw_subset(tmp_path, 5)], view)


# --------------------------------------------------------------------------- labels

def test_mac_table_merges_shared_macs():
    stats = DataStats()
    table = read_mac_table(require_data(IOT / "device_macs.csv"), stats)
    assert table["1c:5f:2b:aa:fd:4e"] == "D-LinkDoorSensor+D-LinkHomeHub"
    assert table["00:17:88:24:76:ff"] == "HueBridge+HueSwitch"
    assert len(set(table.values())) == 29 and len(table) == 29
    assert stats.merged_labels == {"D-LinkDoorSensor": "D-LinkDoorSensor+D-LinkHomeHub",
                                   "D-LinkHomeHub": "D-LinkDoorSensor+D-LinkHomeHub",
                                   "HueBridge": "HueBridge+HueSwitch", "HueSwitch": "HueBridge+HueSwitch"}
    assert normalise_mac("AA-BB-CC-DD-EE-FF") == "aa:bb:cc:dd:ee:ff" and normalise_mac("zz") is None


def test_s_mac_rows_labelled_through_a_mac_table(tmp_path):
    macs = require_data(IOT / "device_macs.csv")
    p = _jsonl(tmp_path, [{"s_mac": "20:F8:5E:CA:91:52", "fts": FTS}, {"s_mac": "00:17:88:24:76:ff", "fts": FTS},
                          {"s_mac": "02:00:00:00:00:01", "fts": FTS}])
    ds = load_dataset([p], VIEW, DataOptions(LabelSpec(macs=macs)))
    assert ds.y.tolist() == ["Aria", "HueBridge+HueSwitch"] and ds.stats.unlabelled == 1


def test_ip_list_labels(tmp_path):
    ips = tmp_path / "bad_ips.txt"
    ips.write_text("# C2 servers\n10.0.0.9\n192.168.1.7, scanner\n")
    p = _jsonl(tmp_path, [{"src_ip": "10.0.0.1", "dest_ip": "10.0.0.9", "fts": FTS},
                          {"src_ip": "192.168.1.7", "dest_ip": "1.1.1.1", "fts": FTS},
                          {"src_ip": "10.0.0.1", "dest_ip": "1.1.1.1", "fts": FTS}])
    ds = load_dataset([p], VIEW, DataOptions(LabelSpec(ips=ips)))
    assert ds.y.tolist() == ["malicious", "scanner", "benign"]


# --------------------------------------------------------------------------- captures

def test_captures_labelled_by_mac_grouped_by_file():
    folder = require_data(IOT / "Aria")
    files = sorted(folder.glob("*.pcap"))[:3]
    ds = load_dataset(files, VIEW, DataOptions(LabelSpec(macs=IOT / "device_macs.csv")))
    assert ds.captures and set(ds.y.tolist()) == {"Aria"} and ds.semantics == "malsensor"
    assert sorted(set(ds.groups.tolist())) == list(range(len(ds.group_names)))
    assert ds.stats.unlabelled > 0          # the gateway's own connections have no device label
    # the same rows as the extractor produces for each file
    from malsensor.daemon.pipeline import extract_file

    rows = np.concatenate([cb.features for f in files for cb in extract_file(f)])
    assert ds.n <= rows.shape[0]


def test_conn_series_from_captures():
    f = sorted(require_data(IOT / "Aria").glob("*.pcap"))[0]
    flat = load_dataset([f], VIEW, DataOptions(LabelSpec(mode="folder")))
    ds = load_dataset([f], CONN_SERIES.info(SeriesOptions(lookback=3)), DataOptions(LabelSpec(mode="folder")))
    assert ds.x.shape == (flat.n, 3, 17) and set(ds.y.tolist()) == {"Aria"}
    # short connections repeat their final features; the final features of a connection with
    # at most 2 packets are its first snapshot
    pk = ds.x[:, -1, 8] + ds.x[:, -1, 9]
    short = pk <= 2
    assert short.any()
    assert np.array_equal(ds.x[short, 0], ds.x[short, 2])
    # packet counts in the series never exceed the snapshot points 2, 4, 8
    counts = ds.x[:, :, 8] + ds.x[:, :, 9]
    assert (counts[:, 0] <= 2).all() and (counts[:, 1] <= 4).all() and (counts[:, 2] <= 8).all()


# --------------------------------------------------------------------------- splits

def _ds(tmp_path, per_class=30):
    return load_dataset([unsw_subset(tmp_path, per_class)], VIEW, DataOptions(LabelSpec(column="attack_cat")))


def test_random_split_is_stratified_and_seeded(tmp_path):
    ds = _ds(tmp_path)
    s = split_dataset(ds, "random", seed=5)
    assert s.sizes() == {"train": 10 * 18, "val": 10 * 6, "test": 10 * 6}
    assert not set(s.train) & set(s.val) and not set(s.val) & set(s.test)
    for lab in set(ds.y.tolist()):
        assert (ds.y[s.train] == lab).sum() == 18
    again = split_dataset(ds, "random", seed=5)
    assert np.array_equal(s.test, again.test)
    assert not np.array_equal(s.test, split_dataset(ds, "random", seed=6).test)


def test_group_split_keeps_captures_on_one_side():
    files = sorted(require_data(IOT / "Aria").glob("*.pcap"))[:4] + sorted((IOT / "EdimaxCam1").glob("*.pcap"))[:4]
    ds = load_dataset(files, VIEW, DataOptions(LabelSpec(macs=IOT / "device_macs.csv")))
    s = split_dataset(ds, "auto", seed=0)
    assert s.mode == "group"
    sides = [set(ds.groups[i].tolist()) for i in (s.train, s.val, s.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert all(sides)


def test_time_split(tmp_path):
    rows = [{"label": "ab"[i % 2], "ts": 1000.0 + i, "fts": FTS} for i in range(10)]
    ds = load_dataset([_jsonl(tmp_path, rows[::-1])], VIEW)
    s = split_dataset(ds, "time")
    assert ds.ts[s.train].max() < ds.ts[s.val].min() and ds.ts[s.val].max() < ds.ts[s.test].min()


def test_class_weights():
    y = np.array([0, 0, 0, 1])
    assert class_weights(y, 2, "balanced").tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights(y, 2, "none").tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- Parquet

def _extract(cap: Path, out: Path) -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "malsensor.daemon.cli", "extract", str(cap), "-o", str(out)],
                   check=True, capture_output=True, timeout=300)


def test_parquet_rows_read_as_the_jsonl_rows(tmp_path):
    from conftest import PCAPS

    cap = require_data(PCAPS / "stratosphere_cc_capture1.pcap")
    _extract(cap, tmp_path / "a.jsonl")
    _extract(cap, tmp_path / "b.parquet")
    opts = DataOptions(labels=LabelSpec(column="dest_port"))
    a = load_dataset([tmp_path / "a.jsonl"], VIEW, opts)
    b = load_dataset([tmp_path / "b.parquet"], VIEW, opts)
    assert a.n == b.n == 299
    assert np.array_equal(a.x, b.x) and a.y.tolist() == b.y.tolist() and np.array_equal(a.ts, b.ts)
    assert a.stats.rows_read == b.stats.rows_read == 299
    # labelled through the MAC columns, as JSONL rows are
    from malsensor.models.data.parquetsrc import read_parquet

    part = read_parquet(tmp_path / "b.parquet", VIEW, None, DataStats())
    assert part.label is None and len(set(part.src_mac)) >= 1 and part.src_ip[0].count(".") == 3


def test_parquet_named_columns_nulls_and_bad_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {c: [1.0, None] for c in CONN_COLUMNS}
    cols["proto"] = pa.array([6, 17], type=pa.uint8())
    cols["label"] = ["a", "b"]
    pq.write_table(pa.table(cols), tmp_path / "named.parquet")
    from malsensor.models.data.parquetsrc import read_parquet

    part = read_parquet(tmp_path / "named.parquet", VIEW, None, DataStats())
    assert part.label == ["a", "b"] and part.x[1, 1] == 17 and np.isnan(part.x[1, 0])
    cols["dur"] = ["x", "y"]
    pq.write_table(pa.table(cols), tmp_path / "bad.parquet")
    with pytest.raises(TrainError, match=r"bad.parquet: column 'dur': type string is not numeric"):
        load_dataset([tmp_path / "bad.parquet"], VIEW)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(TrainError, match=r"junk.parquet: cannot read as Parquet"):
        load_dataset([tmp_path / "junk.parquet"], VIEW)
    del cols["dur"]
    pq.write_table(pa.table(cols), tmp_path / "few.parquet")
    with pytest.raises(TrainError, match=r"few.parquet: no features: .*missing dur"):
        load_dataset([tmp_path / "few.parquet"], VIEW)
