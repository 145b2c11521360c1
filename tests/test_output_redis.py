"""The redis output (daemon/outputs/redis.py, spool.py) against a real ``redis-server`` on loopback.

- ``malsensord --replay`` with a file output and redis outputs in every mode: the list, the
  RPUSH list, the stream and the channel carry exactly the lines of the file, in order.
- The server stopped while events flow and started again: every event arrives, in order.
- The server down for a whole run with a small spool: the oldest events that fit are kept, the
  exact number that did not fit is reported (stats, Prometheus text); the next run of the daemon
  delivers the kept ones first.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from conftest import require_data
from redis_server import RedisServer, free_port
from runtime_artifacts import publish
from test_runtime_replay import run_replay, write_config

from malsensor.daemon.outputs.spool import Spool
from malsensor.daemon.runtime.config import OutputSection

CAPTURE = "pcap/stratosphere_cc_capture1.pcap"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    publish(d, "m1", "v1", seed=1)
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = RedisServer(tmp_path_factory.mktemp("redis"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def redis_output(port: int, key: str, spool: Path, **kw) -> str:
    # timeout: a reply slower than this (a loaded test machine) would be sent again (at least once)
    keys = {"kind": "redis", "server": "127.0.0.1", "port": port, "key": key, "spool_dir": str(spool),
            "timeout": 10.0, **kw}
    return "[[output]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


def list_in_order(client, key: str) -> list[bytes]:
    """An LPUSH list, oldest first (what consumers RPOP first)."""
    return client.lrange(key, 0, -1)[::-1]


def last_stats(logs: Path) -> dict:
    return json.loads((logs / "stats.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, models_dir, server):
    """One replay into a file and into redis in every mode (and a subscriber of the channel)."""
    capture = require_data(CAPTURE)
    tmp = tmp_path_factory.mktemp("replay")
    logs = tmp / "logs"
    logs.mkdir()
    port = server.port
    outputs = (f'[[output]]\npath = "{logs}/eve.json"\n'
               + redis_output(port, "eve-list", tmp / "sp1")
               + redis_output(port, "eve-rpush", tmp / "sp2", mode="rpush", pipelining=False)
               + redis_output(port, "eve-stream", tmp / "sp3", mode="stream", stream_maxlen=0, batch_size=7)
               + redis_output(port, "eve-chan", tmp / "sp4", mode="channel"))
    cfg = write_config(tmp / "m.toml", models_dir, logs, outputs=outputs)
    received: list[bytes] = []
    pubsub = server.client().pubsub()
    pubsub.subscribe("eve-chan")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    done = threading.Event()

    def listen():
        while not done.is_set():
            m = pubsub.get_message(timeout=0.2)
            if m and m["type"] == "message":
                received.append(m["data"])

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    try:
        r = run_replay(cfg, capture)
        assert r.returncode == 0, r.stderr
        lines = (logs / "eve.json").read_bytes().splitlines()
        deadline = time.monotonic() + 10
        while len(received) < len(lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        t.join(5)
        pubsub.close()
    return lines, received, last_stats(logs)


def test_every_mode_carries_the_file_lines_exactly(server, replayed):
    lines, received, stats = replayed
    assert len(lines) > 100
    c = server.client()
    assert list_in_order(c, "eve-list") == lines
    assert c.lrange("eve-rpush", 0, -1) == lines
    stream = c.xrange("eve-stream")
    assert [fields for _id, fields in stream] == [{b"eve": line} for line in lines]
    assert received == lines
    for key in ("eve-list", "eve-rpush", "eve-stream", "eve-chan"):
        o = stats["outputs"][f"redis://127.0.0.1:{server.port}/0/{key}"]
        assert (o["lines"], o["lost"], o["spooled"], o["queued"]) == (len(lines), 0, 0, 0), o
        assert o["dropped"] == {"queue_full": 0, "spool_full": 0, "spool_error": 0}
        assert o["connected"] is True and o["errors"] == 0


def _output(port: int, key: str, spool: Path, **kw) -> OutputSection:
    return OutputSection(kind="redis", server="127.0.0.1", port=port, key=key, spool_dir=str(spool), **kw)


def _wait(cond, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_server_stopped_and_restarted_mid_run_every_event_arrives_in_order(tmp_path, replayed):
    """Batches as the writer hands them; the server goes away for a third of them."""
    from malsensor.daemon.outputs.redis import RedisOutput

    lines = replayed[0]
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    out = RedisOutput(_output(srv.port, "eve", tmp_path / "spool", batch_size=16, timeout=10.0))
    batches = [lines[i:i + 25] for i in range(0, len(lines), 25)]
    third = len(batches) // 3
    try:
        assert out.open()

        def write(bs):
            for b in bs:
                assert out.write(b"\n".join(b) + b"\n", len(b))

        write(batches[:third])
        _wait(lambda: out.lines == sum(map(len, batches[:third])), "the first third delivered")
        srv.stop()  # (appendonly: what arrived so far is still there after the restart)
        write(batches[third:2 * third])
        outage = sum(map(len, batches[third:2 * third]))
        _wait(lambda: out.counters()["spooled"] == outage, "the outage's events in the spool")
        assert out.connected is False and out.errors >= 1
        assert sorted(p.name for p in (tmp_path / "spool").iterdir() if p.suffix == ".seg")
        srv.start()
        write(batches[2 * third:])
        _wait(lambda: out.lines == len(lines), "everything delivered")
    finally:
        out.close()
    try:
        assert list_in_order(srv.client(), "eve") == lines
        c = out.counters()
        assert (out.lost_lines, c["spooled"], c["spool_bytes"], c["queued"]) == (0, 0, 0, 0)
        assert not [p for p in (tmp_path / "spool").iterdir() if p.suffix == ".seg"]  # an empty spool takes no disk
    finally:
        srv.stop()


def test_spool_bound_counts_what_it_drops_and_a_restart_delivers_what_it_kept(tmp_path, models_dir):
    capture = require_data(CAPTURE)
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()  # nothing listens there during the first run
    spool = tmp_path / "spool"
    bound = 40_000
    outputs = (f'[[output]]\npath = "{logs}/eve.json"\n'
               + redis_output(port, "eve", spool, spool_max_bytes=bound))
    cfg = write_config(tmp_path / "m.toml", models_dir, logs, outputs=outputs)
    target = f"redis://127.0.0.1:{port}/0/eve"

    r = run_replay(cfg, capture)
    assert r.returncode == 0, r.stderr
    lines = (logs / "eve.json").read_bytes().splitlines()
    n = len(lines)
    sizes = [len(x) + 1 for x in lines]
    kept = next(k for k in range(n + 1) if k == n or sum(sizes[:k + 1]) > bound)
    assert 0 < kept < n
    o = last_stats(logs)["outputs"][target]
    assert o["dropped"] == {"queue_full": 0, "spool_full": n - kept, "spool_error": 0}
    assert (o["lost"], o["lines"], o["spooled"], o["spool_bytes"]) == (n - kept, 0, kept, sum(sizes[:kept]))
    assert o["connected"] is False and o["errors"] >= 1
    assert f"({n - kept} dropped in all" in r.stderr, r.stderr
    # the same counters as Prometheus shows them
    from prometheus_client import CollectorRegistry, generate_latest

    from malsensor.daemon.runtime.stats import LatencyStats, PrometheusCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(PrometheusCollector(lambda: last_stats(logs), LatencyStats()))
    text = generate_latest(reg).decode()
    assert f'malsensor_output_dropped_total{{path="{target}",reason="spool_full"}} {float(n - kept)}' in text
    assert f'malsensor_output_spooled{{path="{target}"}} {float(kept)}' in text
    assert f'malsensor_output_lost_total{{path="{target}"}} {float(n - kept)}' in text

    # the server is back; the daemon starts again: the spooled events first, then this run's
    srv = RedisServer(tmp_path / "redis", port=port)
    srv.start()
    try:
        r = run_replay(cfg, capture)
        assert r.returncode == 0, r.stderr
        assert f"{kept} events ({sum(sizes[:kept])} bytes) wait in the spool" in r.stderr
        both = (logs / "eve.json").read_bytes().splitlines()
        assert len(both) == 2 * n and both[:n] == lines
        assert list_in_order(srv.client(), "eve") == lines[:kept] + both[n:]
        o = last_stats(logs)["outputs"][target]
        assert (o["lines"], o["lost"], o["spooled"], o["spool_bytes"]) == (kept + n, 0, 0, 0)
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- the spool alone


def test_spool_keeps_order_across_reopen_and_cuts_a_torn_line(tmp_path):
    sp = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    sp.open()
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 7)) for i in range(40)]
    for i in range(0, 40, 4):
        assert sp.append(b"\n".join(lines[i:i + 4]) + b"\n") == 4
    assert sp.events == 40 and len(sp.segments) > 3
    got, pos = sp.peek(5)
    assert got == lines[:4]  # one segment at a time
    sp.commit(pos, len(got))
    got, pos = sp.peek(1)
    assert got == lines[4:5]
    sp.commit(pos, 1)
    sp.close()
    # an unclean stop inside a write: a torn line at the end of the last segment
    with open(tmp_path / f"{sp.segments[-1]:020d}.seg", "ab") as f:
        f.write(b'{"torn":')
    again = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    again.open()
    assert again.events == 35
    out = []
    while again.events:
        got, pos = again.peek(3)
        out += got
        again.commit(pos, len(got))
    assert out == lines[5:]
    assert again.bytes == 0 and not list(tmp_path.glob("*.seg"))  # delivered: no segment left


def test_spool_full_keeps_the_oldest_lines_without_gaps(tmp_path):
    sp = Spool(tmp_path, max_bytes=50)
    sp.open()
    assert sp.append(b"a" * 20 + b"\n" + b"b" * 20 + b"\n" + b"c" * 20 + b"\n") == 2
    assert sp.append(b"d\n") == 0  # it would fit, but it is newer than a refused line
    got, pos = sp.peek(10)
    assert got == [b"a" * 20, b"b" * 20]


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path):
    """The writer's side alone (the sender not started): a batch that does not fit is refused at once."""
    from malsensor.daemon.outputs.redis import RedisOutput

    out = RedisOutput(_output(free_port(), "eve", tmp_path / "spool", queue_max_bytes=1000))
    line = b'{"event_type":"prediction","pad":"' + b"x" * 60 + b'"}\n'
    assert len(line) * 10 <= 1000 < len(line) * 20
    t0 = time.monotonic()
    assert out.write(line * 10, 10) is True
    assert out.write(line * 10, 10) is False
    assert out.write(line * 3, 3) is False
    assert time.monotonic() - t0 < 0.5
    assert out.lost_lines == 13 and out.counters()["dropped"] == {"queue_full": 13, "spool_full": 0,
                                                                   "spool_error": 0}
    assert out.counters()["queued"] == 10 and "queue full" in out.last_error


def test_reload_replaces_the_output_and_the_new_one_takes_over_its_spool(tmp_path):
    """EventWriter (the daemon's writer thread): a configuration reload while events wait in the spool."""
    from test_runtime_units import _pb

    from malsensor.daemon.runtime.stats import LatencyStats
    from malsensor.daemon.runtime.writer import EventWriter

    srv = RedisServer(tmp_path / "redis")
    srv.start()
    outputs = (OutputSection(path=str(tmp_path / "eve.json")),
               _output(srv.port, "eve", tmp_path / "spool", timeout=10.0))
    target = outputs[1].target
    w = EventWriter(outputs, LatencyStats())
    assert w.open_all() == []
    w.start()
    try:
        w.submit(_pb())
        _wait(lambda: w.counters()[target]["lines"] == 2, "the first batch delivered")
        srv.stop()
        w.submit(_pb())
        _wait(lambda: w.counters()[target]["spooled"] == 2, "the second batch in the spool")
        assert w.reconfigure(outputs).wait(30)
        _wait(lambda: w.counters()[target]["spooled"] == 2, "the new output holding the spool")
        assert w.counters()[target]["lines"] == 2  # counting goes on where it was
        srv.start()
        w.submit(_pb())
        _wait(lambda: w.counters()[target]["lines"] == 6, "everything delivered")
    finally:
        w.stop()
    try:
        file_lines = (tmp_path / "eve.json").read_bytes().splitlines()
        assert len(file_lines) == 6
        assert list_in_order(srv.client(), "eve") == file_lines
    finally:
        srv.stop()
