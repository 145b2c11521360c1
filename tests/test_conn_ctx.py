"""The ``conn_ctx@1`` view: UNSW-NB15's connection context computed from flow records.

- crafted traffic: exact state, service and ct_* values;
- the UNSW CSV read as the view: its own ct_*, state and service columns, coded;
- no train/serve skew: the daemon's router fed batch by batch, and ``malsensord --replay``
  serving a gbdt trained on the view, against the trainer's capture reader.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from crafted import TcpConn, Traffic, full_tcp_conn, udp
from runtime_daemon import replay, trainer_part
from train_data import UNSW, cli, unsw_subset, write_spec

from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.pipeline import ConnPipeline
from malsensor.daemon.views.conn_ctx import (CONN_CTX, CONN_CTX_COLUMNS, ConnContext, ConnCtxRouter,
                                             argus_states)
from malsensor.daemon.views.context import CT_COLUMNS, STATE_NAMES
from malsensor.daemon.views.service import SERVICE_NAMES, service_codes


def _finished(tr: Traffic):
    rec, x = [], []
    for cb in ConnPipeline(TrackerConfig()).run([tr.batch()]):
        m = ~cb.is_snapshot
        rec.append(cb.records[m])
        x.append(cb.features[m])
    return np.concatenate(rec), np.concatenate(x)


def test_columns_are_conn_then_unsw_names():
    assert CONN_CTX.ref == "conn_ctx@1" and CONN_CTX.shape(CONN_CTX.options()) == (27,)
    assert CONN_CTX_COLUMNS[17:] == ("ct_srv_src", "ct_state_ttl", "ct_dst_ltm", "ct_src_dport_ltm",
                                     "ct_dst_sport_ltm", "ct_dst_src_ltm", "ct_src_ltm", "ct_srv_dst",
                                     "state", "service")


def test_shipped_unsw_spec():
    from train_data import REPO

    from malsensor.models.spec import load_spec
    from malsensor.models.zoo.base import get_kind

    spec = load_spec(REPO / "etc" / "models" / "unsw.toml")
    kind = get_kind(spec.kind)
    kind.check(spec.model)
    assert spec.kind == "gbdt" and kind.view(spec.model).ref == "conn_ctx@1"
    assert kind.view(spec.model).shape == (27,)
    assert spec.data.refit is True and spec.data.split == "random"


def test_service_by_port():
    proto = np.array([6, 6, 17, 6, 17, 6, 6, 1, 17])
    sport = np.array([40000, 20, 5000, 40000, 68, 40001, 40002, 0, 40000])
    dport = np.array([80, 40001, 53, 443, 67, 22, 12345, 0, 161])
    got = [SERVICE_NAMES[c] for c in service_codes(proto, sport, dport)]
    assert got == ["http", "ftp-data", "dns", "ssl", "dhcp", "ssh", "-", "-", "snmp"]


def test_states_and_counters_on_crafted_traffic():
    tr = Traffic()
    full_tcp_conn(tr, 0.0, cport=41000)                       # FIN, http
    full_tcp_conn(tr, 0.1, cport=41001)                       # FIN, http, same src/dst/dport
    TcpConn(tr, cport=41002, sport=22).c(0.2, "S")            # REQ (never answered), ssh
    c = TcpConn(tr, cport=41003, sport=25)                    # RST, smtp
    c.c(0.3, "S").s(0.31, "SA").c(0.32, "A").s(0.33, "R")
    udp(0.4, tr, sport=5000, dport=53)                        # INT (one-way), dns
    udp(0.5, tr, src="10.0.0.2", dst="10.0.0.1", sport=53, dport=5001)   # INT, '-' (dport 5001)
    rec, x = _finished(tr)
    rows = ConnContext().rows(rec, x)
    assert rows.shape == (6, 27)
    np.testing.assert_array_equal(rows[:, :17], x)
    order = np.argsort(rec[:, 6], kind="stable")               # by first packet: as crafted
    r = rows[order]
    states = [STATE_NAMES[int(s)] for s in r[:, 25]]
    services = [SERVICE_NAMES[int(s)] for s in r[:, 26]]
    assert states == ["FIN", "FIN", "REQ", "RST", "INT", "INT"]
    assert services == ["http", "http", "ssh", "smtp", "dns", "-"]
    np.testing.assert_array_equal(argus_states(rec), rows[:, 25])
    # the counters depend on the order connections finished: recompute them by definition
    ct = {c: rows[:, 17 + i] for i, c in enumerate(CT_COLUMNS)}
    key = rec[:, 4]
    src, dst = rec[:, 1], rec[:, 3]
    sport, dport = (key >> 16) & 0xFFFF, key & 0xFFFF
    srv = rows[:, 26]
    for i in range(rows.shape[0]):
        w = slice(0, i + 1)   # fewer than 100 connections: all those finished so far
        assert ct["ct_src_ltm"][i] == (src[w] == src[i]).sum()
        assert ct["ct_dst_ltm"][i] == (dst[w] == dst[i]).sum()
        assert ct["ct_dst_src_ltm"][i] == ((src[w] == src[i]) & (dst[w] == dst[i])).sum()
        assert ct["ct_src_dport_ltm"][i] == ((src[w] == src[i]) & (dport[w] == dport[i])).sum()
        assert ct["ct_dst_sport_ltm"][i] == ((dst[w] == dst[i]) & (sport[w] == sport[i])).sum()
        assert ct["ct_srv_src"][i] == ((src[w] == src[i]) & (srv[w] == srv[i])).sum()
        assert ct["ct_srv_dst"][i] == ((dst[w] == dst[i]) & (srv[w] == srv[i])).sum()
    # the two http connections: the second one counts both
    http = np.flatnonzero(srv == 1)
    assert ct["ct_srv_src"][http].tolist() == [1, 2] and ct["ct_src_dport_ltm"][http].tolist() == [1, 2]
    # ct_state_ttl: client TTL 64 / server 128 is none of the testbed's TTL patterns -> 0
    assert (ct["ct_state_ttl"] == 0).all()


def test_unsw_csv_reads_its_own_context_columns(tmp_path):
    from malsensor.models.data.load import DataOptions, load_dataset
    from malsensor.models.data.labels import LabelSpec

    small = unsw_subset(tmp_path, per_class=30)
    ds = load_dataset([small], CONN_CTX.info(), DataOptions(LabelSpec("column", "attack_cat")))
    with open(small, newline="") as f:
        rows = list(csv.DictReader(f))
    assert ds.n == len(rows) == 300 and ds.semantics == "argus"
    for j, c in enumerate(CT_COLUMNS):
        np.testing.assert_array_equal(ds.x[:, 17 + j], [float(r[c]) for r in rows])
    assert [STATE_NAMES[int(v)] for v in ds.x[:, 25]] == [r["state"] for r in rows]
    assert [SERVICE_NAMES[int(v)] for v in ds.x[:, 26]] == [r["service"] for r in rows]
    np.testing.assert_array_equal(ds.x[:, 0], np.float32([float(r["dur"]) for r in rows]))


@pytest.mark.parametrize("name,services", [
    ("stratosphere_scanning_host.pcap", {"-": 281, "dhcp": 13, "dns": 33, "http": 40, "ssh": 2}),
    ("retina_tls_ciphers.pcap", {"ssl": 73}),    # TLS on port 4433: named by the payload signature
])
def test_router_batch_by_batch_equals_the_trainer_reader(name, services):
    """The daemon's path (ConnPipeline batches -> ConnCtxRouter) and the trainer's capture
    reader give the same rows, bit for bit, on a real capture, ``service`` included."""
    from malsensor.daemon.capture.pcapfile import read_capture

    capture = require_data(f"pcap/{name}")
    part = trainer_part(CONN_CTX.info(), capture)
    router = ConnCtxRouter()
    got = []
    pipe = ConnPipeline(TrackerConfig())
    for cb in pipe.run(read_capture(capture, chunk_bytes=64 << 10)):   # many small batches
        rows = router.route(cb)
        if rows is not None:
            got.append(rows.x)
    x = np.concatenate(got)
    assert x.shape == part.x.shape and x.shape[0] > 70
    np.testing.assert_array_equal(x, part.x)
    assert x[:, 17:25].max() > 1   # the window really counts repeats
    names, counts = np.unique([SERVICE_NAMES[int(v)] for v in x[:, 26]], return_counts=True)
    assert dict(zip(names.tolist(), counts.tolist())) == services


@pytest.fixture(scope="module")
def ctx_model(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ctx")
    small = unsw_subset(tmp, per_class=80)
    spec = write_spec(tmp, "gbdt", {"view": "conn_ctx@1", "n_estimators": 20, "max_depth": 4,
                                    "early_stopping_rounds": 0})
    out = tmp / "models"
    proc = cli("fit", "--model", spec, "--data", small, "--label", "label", "--out", out, "--name", "ctx",
               "--reports", tmp / "r", "--refit")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_refit_meta_says_which_rows_the_artifact_saw(ctx_model):
    meta = json.loads((ctx_model / "ctx" / "current" / "meta.json").read_text())
    sizes = meta["data"]["split"]["sizes"]
    assert meta["view"]["name"] == "conn_ctx" and meta["view"]["shape"] == [27]
    assert meta["data"]["trained_on"]["splits"] == ["train", "val"]
    assert meta["data"]["trained_on"]["rows"] == sizes["train"] + sizes["val"] == meta["data"]["rows"] - sizes["test"]
    assert sizes["val"] > 0 and sizes["test"] > 0
    assert meta["data"]["trained_on"]["refit"]["early_stopping_rounds"] == 0


def test_split_ratios_80_20_0(tmp_path):
    small = unsw_subset(tmp_path, per_class=20)
    spec = write_spec(tmp_path, "gbdt", {"view": "conn_ctx@1", "n_estimators": 5, "max_depth": 3})
    proc = cli("fit", "--model", spec, "--data", small, "--label", "label", "--out", tmp_path / "m", "--name", "s",
               "--reports", tmp_path / "r", "--split-ratios", "80,20,0", "--refit")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "m" / "s" / "current" / "meta.json").read_text())
    assert meta["data"]["split"]["fractions"] == [0.8, 0.2, 0.0]
    assert meta["data"]["split"]["sizes"]["test"] == 0
    assert meta["data"]["trained_on"]["rows"] == meta["data"]["rows"] and meta["data"]["split"]["sizes"]["val"] > 0
    bad = cli("fit", "--model", spec, "--data", small, "--out", tmp_path / "m", "--name", "t",
              "--split-ratios", "80,30")
    assert bad.returncode != 0 and "split ratios '80,30'" in bad.stderr


def test_replay_serves_conn_ctx_without_skew(tmp_path, ctx_model):
    """``malsensord --replay``: every connection's probability equals the artifact's on the rows
    the trainer's reader builds from the same capture."""
    capture = require_data("pcap/stratosphere_scanning_host.pcap")
    events = replay(tmp_path, capture, f'[[model]]\nname = "ctx"\nmodels_dir = "{ctx_model}"\nview = "conn_ctx@1"\n',
                    tracking='[tracking]\nsemantics = "argus"\n').events

    from datetime import datetime

    from malsensor.daemon.artifact import load_artifact

    # the model learnt UNSW's (Argus) values: the daemon and the reader compute argus semantics
    part = trainer_part(CONN_CTX.info(), capture, semantics="argus")
    n = len(part.src_ip)
    assert n > 100 and len(events) == n
    probs = load_artifact(ctx_model / "ctx").predict_proba(np.asarray(part.x, np.float32))
    assert np.unique(probs[:, 0].round(6)).size > 3
    by_conn = {}
    for e in events:
        start = datetime.strptime(e["flow"]["start"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        by_conn[(e["src_ip"], e["dest_ip"], round(start * 1e6))] = e
    assert len(by_conn) == n
    for i in range(n):
        p = by_conn[(part.src_ip[i], part.dest_ip[i], round(part.ts[i] * 1e6))]["prediction"]
        cid = int(np.argmax(probs[i]))
        assert p["class_id"] == cid
        assert p["probability"] == pytest.approx(float(probs[i, cid]), abs=1e-5)
