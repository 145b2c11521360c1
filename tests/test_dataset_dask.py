"""`malsensor-train dataset` (Parquet shards + manifest, in parallel over files) and gbdt on Dask.

A real dask.distributed LocalCluster (scheduler + 2 worker processes on loopback) builds the
same shards as this process does, and xgboost.dask boosts a model of the same quality as the
local fit on the same held-out rows. The cluster is closed by the fixture even when a test fails.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from conftest import PCAPS, require_data
from train_data import UNSW, write_spec

# small real captures (2,000-8,000 packets), two folders so that --label-from folder gives two labels
BENIGN = ("http_espn.pcapng", "ndpi_443_firefox.pcap")
MALICIOUS = ("stratosphere_scanning_host.pcap", "synscan.pcapng")


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    try:
        yield c.scheduler_address
    finally:
        c.close()


def captures(tmp_path):
    """benign/ and malicious/ folders of links to real captures."""
    require_data(PCAPS)
    for folder, names in (("benign", BENIGN), ("malicious", MALICIOUS)):
        (tmp_path / "in" / folder).mkdir(parents=True)
        for n in names:
            os.symlink(PCAPS / n, tmp_path / "in" / folder / n)
    return tmp_path / "in"


def build(data, out, **kw):
    from malsensor.daemon.views.conn import CONN
    from malsensor.models.data.labels import LabelSpec
    from malsensor.models.data.load import DataOptions
    from malsensor.models.dataset import BuildOptions, build_dataset

    label = kw.pop("label", None)
    labels = LabelSpec("column", label) if label else LabelSpec("folder")
    opts = DataOptions(labels, require_labels=False)
    return build_dataset(BuildOptions([str(p) for p in data], out, CONN.info(), opts, progress=False, **kw))


def shard_tables(out):
    import pyarrow.parquet as pq

    m = json.loads((out / "manifest.json").read_text())
    return m, [pq.read_table(out / e["shard"]) for e in m["files"]]


def load(paths, label_from="folder", label=None):
    from malsensor.daemon.views.conn import CONN
    from malsensor.models.data.labels import LabelSpec
    from malsensor.models.data.load import DataOptions, load_dataset

    spec = LabelSpec("column", label) if label else LabelSpec(label_from)
    return load_dataset([str(p) for p in paths], CONN.info(), DataOptions(spec))


def assert_same_dataset(a, b):
    assert a.n == b.n and a.n > 0
    assert np.array_equal(a.x, b.x)                  # float32 after cleaning: bit for bit
    assert a.y.tolist() == b.y.tolist()
    assert np.array_equal(a.groups, b.groups) and a.group_names == b.group_names
    assert (a.ts is None and b.ts is None) or np.array_equal(a.ts, b.ts)
    assert a.semantics == b.semantics and a.captures == b.captures
    assert a.stats.as_dict() == b.stats.as_dict()
    assert a.digest() == b.digest()


def test_dask_extraction_equals_local(tmp_path, cluster):
    """Shards built in this process, on 2 local worker processes and on the Dask cluster are
    the same tables; reading the folder back gives exactly what the captures give."""
    inp = captures(tmp_path)
    one = build([inp], tmp_path / "one", workers=1)
    procs = build([inp], tmp_path / "procs", workers=2)
    dask = build([inp], tmp_path / "dask", dask=cluster)
    assert one.built == procs.built == dask.built == 4 and one.failed == procs.failed == dask.failed == 0
    m1, t1 = shard_tables(tmp_path / "one")
    for other in ("procs", "dask"):
        m2, t2 = shard_tables(tmp_path / other)
        assert [e["file"] for e in m1["files"]] == [e["file"] for e in m2["files"]]
        strip = lambda e: {k: v for k, v in e.items() if k != "seconds"}  # noqa: E731
        assert [strip(e) for e in m1["files"]] == [strip(e) for e in m2["files"]]
        assert all(a.equals(b) for a, b in zip(t1, t2))
    # the manifest's counts are the rows' counts
    direct = load([inp])
    assert m1["rows"] == direct.n
    assert m1["label_counts"] == direct.label_counts()
    assert sum(e["labels"].get("benign", 0) for e in m1["files"]) == direct.label_counts()["benign"]
    assert {e["file"].rsplit("/", 1)[1]: e["digest"] for e in m1["files"]}["synscan.pcapng"] == \
        "sha256:" + __import__("hashlib").sha256((PCAPS / "synscan.pcapng").read_bytes()).hexdigest()
    assert_same_dataset(load([tmp_path / "dask"], "auto"), direct)


def test_reuse_changes_and_bad_files(tmp_path):
    """Unchanged inputs reuse their shards; a changed file is rebuilt, a removed one's shard goes,
    a file that is not a capture is one line naming it and the others are kept."""
    from train_data import cli

    inp = captures(tmp_path)
    out = tmp_path / "ds"
    first = build([inp], out, workers=1)
    again = build([inp], out, workers=1)
    assert (first.built, first.reused) == (4, 0) and (again.built, again.reused) == (0, 4)
    # a changed input: a copy of a capture cut short (a truncated capture keeps what came before the cut)
    victim = inp / "malicious" / "synscan.pcapng"
    data = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(data[: len(data) // 2])
    (inp / "benign" / "ndpi_443_firefox.pcap").unlink()
    (inp / "benign" / "junk.pcap").write_bytes(b"this is not a capture\n" * 10)
    proc = cli("dataset", "--data", inp, "--out", out, "--workers", "1", "--label-from", "folder")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "junk.pcap" in proc.stderr and "2 reused, 1 failed" in proc.stdout, proc.stdout + proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["files"]) == 3 and [f["file"].endswith("junk.pcap") for f in m["failed"]] == [True]
    assert len(list((out / "shards").glob("*.parquet"))) == 3        # the removed capture's shard is gone
    half = next(e for e in m["files"] if e["file"].endswith("synscan.pcapng"))
    assert half["digest"] != first.manifest["files"][-1]["digest"]
    assert 0 < half["rows_in_shard"] < next(e for e in first.manifest["files"]
                                            if e["file"].endswith("synscan.pcapng"))["rows_in_shard"]
    os.unlink(inp / "benign" / "junk.pcap")
    assert_same_dataset(load([out], "auto"), load([inp]))
    # a dataset folder is read by evaluate/fit like its inputs; the wrong label column is refused clearly
    with pytest.raises(Exception, match="labelled from column 'label' when it was built"):
        load([out], label="attack_cat")


def unsw_parts(tmp_path, parts=3, rows=3000):
    """Every 8th row of the real UNSW CSV (both label columns), cut into ``parts`` files."""
    src = require_data(UNSW)
    lines = src.read_text(encoding="utf-8-sig").splitlines()
    header, body = lines[0], lines[1::8][:rows]
    (tmp_path / "unsw").mkdir()
    out = []
    for i in range(parts):
        p = tmp_path / "unsw" / f"part{i}.csv"
        p.write_text("\n".join([header, *body[i::parts]]) + "\n")
        out.append(p)
    return out


def test_gbdt_on_dask_same_quality(tmp_path, cluster):
    """The dataset built on the cluster from UNSW rows, then gbdt boosted locally and through
    xgboost.dask: the same held-out rows, accuracy within 0.015 of each other."""
    from malsensor.models.fit import FitOptions, run_fit

    parts = unsw_parts(tmp_path)
    ds = tmp_path / "ds"
    r = build(parts, ds, dask=cluster, label="label")
    assert r.built == 3 and r.manifest["rows"] == 3000
    assert_same_dataset(load([ds], "auto"), load(parts, label="label"))
    spec = write_spec(tmp_path, "gbdt", {"n_estimators": 40, "rounds_per_chunk": 20, "max_depth": 6,
                                         "n_jobs": 1, "early_stopping_rounds": 20})
    fits = {}
    for how, addr in (("local", None), ("dask", cluster)):
        fits[how] = run_fit(FitOptions(model=str(spec), data=[str(ds)], out=tmp_path / "m", name=how,
                                       reports=tmp_path / "r", progress=False, dask=addr))
    a, b = fits["local"], fits["dask"]
    assert np.array_equal(a.test_idx, b.test_idx) and a.test_idx.size == 600
    acc = {k: f.metrics["test"]["accuracy"] for k, f in fits.items()}
    assert acc["local"] >= 0.9 and acc["dask"] >= 0.9, acc
    assert abs(acc["local"] - acc["dask"]) <= 0.015, acc   # 9 of the 600 rows
    # evaluate reads the folder (the rows it gives are the CSV files' rows: assert_same_dataset above)
    from malsensor.models import use

    art = use.open_artifact(b.artifact)
    on_folder = use.evaluate(art, use.DataArgs([str(ds)]))
    assert on_folder["n"] == 3000 and on_folder["accuracy"] >= 0.9 and on_folder["data"]["files"] == 3
    meta = art.meta
    assert meta["model_static"]["dask"] == cluster and "dask" not in a.result.static
    assert meta["export"]["max_abs_diff_vs_trainer"] <= 1e-6     # the artifact is the booster the cluster made


def test_dask_refused_for_other_kinds_and_unreachable(tmp_path, monkeypatch):
    from train_data import assert_clean_error, cli

    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "2s")

    parts = unsw_parts(tmp_path, parts=1, rows=300)
    proc = cli("fit", "--model", "forest", "--data", parts[0], "--label", "label", "--out", tmp_path / "m",
               "--name", "f", "--dask", "tcp://127.0.0.1:9")
    assert_clean_error(proc, "model kind forest does not train on Dask")
    proc = cli("dataset", "--data", parts[0], "--out", tmp_path / "d", "--dask", "tcp://127.0.0.1:9")
    assert_clean_error(proc, "--dask tcp://127.0.0.1:9: cannot reach the scheduler")
    shutil.rmtree(tmp_path / "d", ignore_errors=True)
