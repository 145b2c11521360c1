"""In-process pieces of the daemon with exact values: the bounded queue, trigger routing
(end / early), stop behaviour (emit / drop), EVE and label formatting, whole-line files on a
full disk, privilege drop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import require_root, require_tool
from crafted import EPOCH, TcpConn, Traffic, udp

from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.outputs.eve import (EventFile, PredictionBatch, eve_event, eve_lines, flow_ids,
                                          label_lines)
from malsensor.daemon.pipeline import ConnPipeline
from malsensor.daemon.runtime.config import ModelSection
from malsensor.daemon.capture.consumer import PipelineConsumer
from malsensor.daemon.runtime.inference import Dispatcher, EntityQueue, Route
from malsensor.daemon.runtime.registry import ModelSlot
from malsensor.daemon.views.base import EntityRows
from malsensor.daemon.views.conn import CONN, ConnOptions


def rows(n: int, start: int = 0) -> EntityRows:
    rec = np.zeros((n, L.N_COLS), dtype=np.int64)
    rec[:, L.SERIAL] = np.arange(start, start + n)
    return EntityRows(rec, np.zeros((n, 17)))


# ------------------------------------------------------------------ queue


def test_queue_drops_when_full_and_counts():
    q = EntityQueue(10)
    assert q.put(rows(6), 0, block=False) == 6
    assert q.put(rows(6, 6), 0, block=False) == 4
    assert (q.accepted, q.dropped, len(q)) == (10, 2, 10)
    rec, _, _, t = q.take(8, 0.0)
    assert rec[:, L.SERIAL].tolist() == list(range(8)) and t.tolist() == [0] * 8
    rec, _, _, _ = q.take(8, 0.0)
    assert rec[:, L.SERIAL].tolist() == [8, 9]
    assert q.take(8, 0.0, poll_s=0.05) is None
    q.close()
    assert q.take(8, 0.0) == ()
    assert q.put(rows(1), 0, block=False) == 0 and q.dropped == 3


def test_queue_blocking_put_waits_for_room():
    q = EntityQueue(4)
    q.put(rows(4), 0, block=True)
    done = threading.Event()

    def producer():
        q.put(rows(3, 4), 0, block=True)
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    time.sleep(0.2)
    assert not done.is_set()
    assert q.take(2, 0.0)[0][:, L.SERIAL].tolist() == [0, 1]
    time.sleep(0.05)
    assert not done.is_set()  # 2 + 3 > 4 still
    q.take(2, 0.0)
    assert done.wait(2)
    assert q.take(8, 0.0)[0][:, L.SERIAL].tolist() == [4, 5, 6] and q.dropped == 0


def test_queue_flushes_partial_batch_after_max_delay():
    q = EntityQueue(100)
    q.put(rows(3), time.monotonic_ns(), block=False)
    t0 = time.monotonic()
    rec, _, _, _ = q.take(64, 0.05)
    waited = time.monotonic() - t0
    assert rec.shape[0] == 3 and 0.03 <= waited < 0.5


# ------------------------------------------------------------------ triggers and stop


def _traffic() -> Traffic:
    """A TCP connection of 10 packets, one of 3 packets (open at the end) and a 1-packet UDP flow."""
    t = Traffic()
    long = TcpConn(t, cport=40001)
    long.c(0.0, "S").s(0.01, "SA").c(0.02, "A")
    for i in range(3):
        long.c(0.1 + i * 0.1, "PA", 100).s(0.15 + i * 0.1, "A")
    long.c(0.8, "FA").s(0.81, "FA").c(0.82, "A")
    short = TcpConn(t, cport=40002)
    short.c(1.0, "S").s(1.01, "SA").c(1.02, "A")
    udp(1.5, t)
    udp(5.0, t, sport=5354)  # time moves on: the closed connection's linger is over
    return t


def _slot(name: str, **kw) -> ModelSlot:
    return ModelSlot(ModelSection(name=name, options=ConnOptions(**kw)))


def _route(name: str, q: EntityQueue, points=(), **kw) -> Route:
    slot = _slot(name, **kw)
    return Route(slot, q, CONN.router(slot.cfg.options, {"snapshot_points": points}), "connections")


def _consumer(pipe: ConnPipeline, disp: Dispatcher, emit_at_stop=lambda: True) -> PipelineConsumer:
    return PipelineConsumer("t", pipe, disp.dispatch, emit_at_stop=emit_at_stop)


def test_routes_end_and_early_trigger_each_connection_once():
    batch = _traffic().batch()
    tracking = TrackerConfig(snapshot_packets=(4, 6))
    pipe = ConnPipeline(tracking)
    stop = threading.Event()
    disp = Dispatcher(block=False, stop=stop)
    qs = {n: EntityQueue(1000) for n in ("end", "e4", "e6")}
    disp.set_routes([
        _route("end", qs["end"], (4, 6)),
        _route("e4", qs["e4"], (4, 6), trigger="early", early_packets=4),
        _route("e6", qs["e6"], (4, 6), trigger="early", early_packets=6),
    ])
    consumer = _consumer(pipe, disp)
    consumer.consume(batch)
    consumer.finish()  # stop: the open connections end with "shutdown"
    got = {}
    for n, q in qs.items():
        rec, _, _, _ = q.take(100, 0.0)
        got[n] = sorted((int(L.sport_of(r)), L.END_REASONS[int(r[L.END]) & 0xFF], int(r[L.S_PKTS] + r[L.D_PKTS]))
                        for r in rec)
    assert got["end"] == [(5353, "shutdown", 1), (5354, "shutdown", 1), (40001, "fin", 12), (40002, "shutdown", 3)]
    assert got["e4"] == [(5353, "shutdown", 1), (5354, "shutdown", 1), (40001, "snapshot", 4), (40002, "shutdown", 3)]
    assert got["e6"] == [(5353, "shutdown", 1), (5354, "shutdown", 1), (40001, "snapshot", 6), (40002, "shutdown", 3)]
    assert (disp.counts["connections"], disp.counts["snapshots"]) == (4, 2)


def test_consumer_finish_emit_or_drop():
    batch = _traffic().batch()
    for emit, expect in ((True, 3), (False, 0)):
        disp = Dispatcher(block=False, stop=threading.Event())
        q = EntityQueue(100)
        disp.set_routes([_route("m", q)])
        c = _consumer(ConnPipeline(), disp, lambda e=emit: e)
        c.consume(batch)
        assert len(q) == 1  # the closed connection
        c.finish()
        assert len(q) == 1 + expect
        assert c.dropped_at_stop == (0 if emit else 3)
        # end of file always emits ("eof"), whatever on_stop says
        c2 = _consumer(ConnPipeline(), disp, lambda e=emit: e)
        c2.consume(batch)
        c2.finish(L.END_EOF)
        assert c2.dropped_at_stop == 0


# ------------------------------------------------------------------ formatting


def _pb(labels=("benign", "c2")) -> PredictionBatch:
    t = Traffic()
    TcpConn(t, cport=40001).c(0.0, "S").s(0.01, "SA").c(0.02, "A").c(0.5, "R")
    udp(1.25, t)
    pipe = ConnPipeline()
    cbs = list(pipe.run([t.batch()]))
    rec = np.concatenate([c.records for c in cbs])
    ft = np.concatenate([c.features for c in cbs])
    order = np.argsort(rec[:, L.FIRST_TS])
    rec, ft = rec[order], ft[order]
    probs = np.array([[0.25, 0.5, 0.25], [0.9, 0.05, 0.05]], dtype=np.float32)
    return PredictionBatch("m", "v7", "end", list(labels), rec, ft, probs, np.array([1, 0]),
                           np.array([[1, 0], [0, 1]]), np.array([True, False]), np.zeros(2, dtype=np.int64),
                           host="sensor-1")


def test_eve_event_exact():
    pb = _pb()
    lines = eve_lines(pb).splitlines()
    ev = json.loads(lines[0])
    assert ev == eve_event(pb, 0)
    assert list(ev) == ["timestamp", "flow_id", "community_id", "event_type", "host", "src_ip", "src_port",
                        "dest_ip", "dest_port", "proto", "src_mac", "dest_mac", "prediction", "flow", "conn"]
    assert ev["host"] == "sensor-1"
    # Community ID v1 of 10.0.0.1:40001 -> 10.0.0.2:80 TCP (as the communityid package computes it)
    assert ev["community_id"] == "1:kO0sj5IvmHyTr62l9OBOFqKIbrs="
    seeded = json.loads(eve_lines(pb, community_id_seed=1).splitlines()[0])
    assert seeded["community_id"] == "1:ONnwGXDd3nmLh9keyUOdsN7lzgE=" and seeded == eve_event(pb, 0, community_id_seed=1)
    assert ev["timestamp"] == "2023-11-14T22:13:20.500000+0000"  # EPOCH + 0.5 s (the RST), UTC
    assert EPOCH == 1_700_000_000
    assert (ev["src_ip"], ev["src_port"], ev["dest_ip"], ev["dest_port"], ev["proto"]) == (
        "10.0.0.1", 40001, "10.0.0.2", 80, "TCP")
    assert (ev["src_mac"], ev["dest_mac"]) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert ev["prediction"] == {"model": "m", "version": "v7", "label": "c2", "class_id": 1, "probability": 0.5,
                                "topk": [["c2", 0.5], ["benign", 0.25]], "alert": True, "trigger": "end"}
    assert ev["flow"] == {"start": "2023-11-14T22:13:20.000000+0000", "end": "2023-11-14T22:13:20.500000+0000",
                          "end_reason": "rst", "pkts_toserver": 3, "pkts_toclient": 1, "bytes_toserver": 120,
                          "bytes_toclient": 40}
    assert ev["conn"]["s_pkt_cnt"] == 3.0 and ev["conn"]["dur"] == 0.5
    assert ev["flow_id"] == int(flow_ids(pb.keys[:1])[0]) and 0 < ev["flow_id"] < 2 ** 52
    ev2 = json.loads(lines[1])
    assert ev2["proto"] == "UDP" and ev2["prediction"]["alert"] is False
    assert json.loads(eve_lines(pb, features=False).splitlines()[1]) == eve_event(pb, 1, features=False)
    # numbers are Python's own text for them; a selection of rows
    assert b'"probability":0.5,"topk":[["c2",0.5],["benign",0.25]]' in lines[0]
    assert eve_lines(pb, select=np.array([False, True])) == lines[1] + b"\n"
    other = PredictionBatch("m\"2", "w", "early", ["x"], pb.keys, pb.detail, pb.probs[:, :1], np.array([0, 0]),
                            np.array([[0], [0]]), np.array([False, False]), pb.t_ns)
    assert [json.loads(x) for x in eve_lines(other).splitlines()] == [eve_event(other, j) for j in range(2)]
    # a label the model does not name, and non-finite features (JSON has no NaN): null
    pb.detail[1, 0] = np.nan
    pb.class_id[1] = 2
    ev2 = json.loads(eve_lines(pb).splitlines()[1])
    assert ev2["conn"]["dur"] is None and ev2["prediction"]["label"] == "unknown_2"
    assert label_lines(pb) == b'"c2"\n"unknown_2"\n'
    assert label_lines(pb, select=np.array([False, True])) == b'"unknown_2"\n'
    pb.class_id[1] = 7  # not even a column of the probabilities
    pred = json.loads(eve_lines(pb).splitlines()[1])["prediction"]
    assert (pred["label"], pred["class_id"], pred["probability"]) == ("unknown_7", 7, None)


def test_event_text_is_the_same_in_chunks(monkeypatch):
    import malsensor.daemon.outputs.jsontext as jsontext

    pb = _pb()
    whole = eve_lines(pb)
    monkeypatch.setattr(jsontext, "TEXT_CHUNK_ROWS", 1)  # one kernel call per event
    assert eve_lines(pb) == whole and whole.count(b"\n") == 2


def test_flow_id_joins_snapshot_and_end_rows():
    t = Traffic()
    TcpConn(t).c(0.0, "S").s(0.01, "SA").c(0.02, "A").c(0.1, "PA", 10).c(0.2, "R")
    pipe = ConnPipeline(TrackerConfig(snapshot_packets=(3,)))
    rec = np.concatenate([c.records for c in pipe.run([t.batch()])])
    assert [L.END_REASONS[int(e) & 0xFF] for e in rec[:, L.END]] == ["snapshot", "rst"]
    ids = flow_ids(rec)
    assert ids[0] == ids[1]


# ------------------------------------------------------------------ files


def test_event_file_open_failure_and_reopen(tmp_path):
    f = EventFile(str(tmp_path / "no" / "eve.json"))
    assert not f.open() and f.last_error.endswith("No such file or directory")
    assert not f.write('"a"\n', 1) and f.lost_lines == 1
    (tmp_path / "no").mkdir()
    f._next_open = 0
    assert f.write('"b"\n', 1) and f.lines == 1
    os.rename(tmp_path / "no" / "eve.json", tmp_path / "no" / "eve.json.1")  # logrotate
    assert f.open() and f.write('"c"\n', 1)
    assert (tmp_path / "no" / "eve.json.1").read_text() == '"b"\n'
    assert (tmp_path / "no" / "eve.json").read_text() == '"c"\n'
    assert oct(os.stat(tmp_path / "no" / "eve.json").st_mode & 0o777) == "0o640"


def test_event_file_disk_full_keeps_whole_lines(tmp_path):
    require_root()
    require_tool("mount")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        f = EventFile(str(mnt / "eve.json"))
        assert f.open()
        line = json.dumps({"x": "y" * 1000}) + "\n"
        ok_lines = 0
        for _ in range(200):
            if f.write(line * 3, 3):
                ok_lines += 3
        assert f.errors > 0 and f.lost_lines == 600 - ok_lines
        assert f.last_error.endswith("No space left on device")
        text = (mnt / "eve.json").read_text()
        assert text.endswith("\n") and len(text.splitlines()) == ok_lines == f.lines
        assert all(json.loads(x) == {"x": "y" * 1000} for x in text.splitlines())
        # space again: writing resumes after what was there
        f.close()
        (mnt / "eve.json").write_text(text[: len(line) * 3])
        assert f.open() and f.write(line, 1)
        assert (mnt / "eve.json").read_text() == line * 4
        f.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ------------------------------------------------------------------ privileges


def test_drop_privileges_keeps_only_capture_capabilities(tmp_path):
    require_root()
    code = ("import os, socket; from malsensor.daemon.runtime.privileges import drop_privileges, effective_capabilities;"
            "print(drop_privileges('nobody'));"
            "print(os.getuid(), os.geteuid(), os.getgid(), hex(effective_capabilities()));"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0); print('af_packet ok');"
            "open('/root/x', 'w')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    out = r.stdout.splitlines()
    assert out[0] == ("switched to user nobody (uid 65534, gid 65534), keeping CAP_NET_RAW and CAP_NET_ADMIN")
    assert out[1] == "65534 65534 65534 0x3000"
    assert out[2] == "af_packet ok"  # capture sockets can still be opened (interfaces that come back)
    assert "PermissionError" in r.stderr  # but nothing root could do otherwise
    from malsensor.daemon.runtime.privileges import PrivilegeError, drop_privileges

    with pytest.raises(PrivilegeError, match="user 'no-such-user-x' does not exist"):
        drop_privileges("no-such-user-x")
    assert Path("/proc/self").exists()
