"""malsensord capturing live (AF_PACKET) in the foreground: a real capture replayed with
tcpreplay into a veth pair inside private network namespaces (tests/netns.py), the daemon
running as an unprivileged user (it keeps only CAP_NET_RAW and CAP_NET_ADMIN), and the
events equal to ``malsensor extract`` of the same file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import require_data, require_root, require_tool
from runtime_artifacts import publish
from runtime_daemon import Daemon, jsonl, wait_until

MALSENSOR = [sys.executable, "-m", "malsensor.daemon.cli"]


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="malsensord-live-"))  # under /tmp: readable by "nobody"
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _key(e: dict) -> tuple:
    return (e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"])


def test_live_capture_unprivileged_events_match_extract(workdir):
    require_root()
    require_tool("tcpreplay")
    from netns import VethPair

    capture = require_data("pcap/retina_tls_ciphers.pcap")
    publish(workdir / "models", "m1", "v1", seed=1)
    for p in [workdir / "models", *(workdir / "models").rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    x = subprocess.run([*MALSENSOR, "extract", str(capture)], capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in x.stdout.splitlines()]
    with VethPair(prefix="msd", mtu=9000) as v:  # the capture holds a 4,492-byte loopback frame
        cfg = workdir / "live.toml"
        cfg.write_text('[service]\nuser = "nobody"\n[metrics]\nenabled = false\n'
                       f'[stats]\npath = "{workdir}/stats.jsonl"\ninterval = 1.0\n'
                       f'[[source]]\nkind = "afpacket"\nname = "{v.host}"\nthreads = 2\n'
                       f'[[model]]\nname = "m1"\nmodels_dir = "{workdir}/models"\n'
                       f'[[output]]\npath = "{workdir}/eve.json"\n')
        d = Daemon(cfg, prefix=["ip", "netns", "exec", v.cap_ns])
        try:
            d.wait_log("switched to user nobody")
            d.wait_log(f"capturing on {v.host} .*2 threads, fanout hash")
            d.wait_log("malsensord ready")
            v.replay(capture)
            time.sleep(0.5)  # the last ring block is retired after retire_timeout_ms
            assert d.stop() == 0, d.log_text()
        finally:
            d.kill()
    events = jsonl(workdir / "eve.json")
    assert len(events) == len(rows) == 73
    assert sorted(_key(e) for e in events) == sorted(
        (r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"]) for r in rows)
    by_key = {_key(e): e for e in events}
    for r in rows:
        e = by_key[(r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"])]
        assert (e["flow"]["pkts_toserver"], e["flow"]["pkts_toclient"]) == (r["s_pkt_cnt"], r["d_pkt_cnt"]), (r, e)
        assert (e["flow"]["bytes_toserver"], e["flow"]["bytes_toclient"]) == (r["s_bytes_sum"], r["d_bytes_sum"])
        # a file's last connections end "eof"; live, still open at SIGTERM, they end "shutdown"
        assert e["flow"]["end_reason"] == {"eof": "shutdown"}.get(r["end_reason"], r["end_reason"])
    stats = jsonl(workdir / "stats.jsonl")[-1]
    assert stats["packets"] == 1095 and stats["kernel_packets"] == 1095 and stats["kernel_drops"] == 0
    assert stats["connections"] == 73 and stats["models"]["m1"]["predictions"] == 73


def test_default_interface_without_default_route_is_a_clear_error(workdir):
    require_root()
    from netns import VethPair

    cfg = workdir / "c.toml"
    cfg.write_text('[service]\nuser = ""\n[metrics]\nenabled = false\n[stats]\npath = ""\n'
                   '[[interface]]\nname = "default"\n')  # the old spelling still loads
    with VethPair(prefix="msd") as v:
        d = Daemon(cfg, prefix=["ip", "netns", "exec", v.cap_ns])
        try:
            assert d.wait(120) == 1
        finally:
            d.kill()
    assert ('cannot start: capture: interface "default": this host has no default route; name the interface '
            'in [[source]] name') in d.log_text()
    assert '[[interface]] is deprecated: write [[source]] kind = "afpacket" with the same keys' in d.log_text()
