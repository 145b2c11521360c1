"""Regression tests of issue 10 ("Hardening"): every value a user or a file hands the program is
checked, and nothing good is lost. One test per finding, named after what it protects."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from malsensor.daemon.runtime import config as C

from conftest import PCAPS, require_data

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "etc" / "malsensor.toml"
MALSENSORD = [sys.executable, "-m", "malsensor.daemon.runtime.main"]
MALSENSOR = [sys.executable, "-m", "malsensor.daemon.cli"]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def problems(text: str) -> list[str]:
    with pytest.raises(C.ConfigError) as ei:
        C.parse_config(text, "t.toml", "/base")
    return [str(p) for p in ei.value.problems]


# ---------------------------------------------------------------- 2. numeric ranges


@pytest.mark.parametrize("option, value, message", [
    ("--tcp-idle-timeout", "8e9", "tracking.tcp_idle_timeout: 8000000000 is out of range (allowed: > 0 and <= 31536000)"),
    ("--active-timeout", "1e10", "tracking.active_timeout: 10000000000 is out of range (allowed: > 0 and <= 31536000)"),
    ("--handshake-timeout", "8e9", "tracking.handshake_timeout: 8000000000 is out of range"),
    ("--udp-idle-timeout", "nan", "tracking.udp_idle_timeout: expected a finite number"),
    ("--close-linger", "inf", "tracking.close_linger: expected a finite number"),
    ("--max-flows", "100000000000", "tracking.max_flows: 100000000000 is out of range (allowed: 1..67108864)"),
])
def test_extract_tracking_options_are_range_checked(tmp_path, option, value, message):
    """8e9 s silently ended every connection with "unknown_0"; 1e10/NaN/inf and a huge
    max_flows gave OverflowError/MemoryError tracebacks."""
    cap = require_data(PCAPS / "synscan.pcapng")
    r = run([*MALSENSOR, "extract", str(cap), "-o", str(tmp_path / "o.jsonl"), option, value])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{option}: {message}" in r.stderr


def test_config_numeric_keys_have_upper_bounds():
    """max_flows = 1e11 was a MemoryError, watch_interval = 1e12 killed the watcher thread."""
    got = problems("[tracking]\nmax_flows = 100000000000\ntcp_idle_timeout = 8e9\n"
                   "[inference]\nwatch_interval = 1e12\nbatch_sizes = [1, 100000000]\n"
                   "[replay]\nrepeat = -1\nrate = 1e300\n[metrics]\nport = 70000\n")
    assert got == [
        "t.toml:2: tracking.max_flows: 100000000000 is out of range (allowed: 1..67108864)",
        "t.toml:3: tracking.tcp_idle_timeout: 8000000000 is out of range (allowed: > 0 and <= 31536000)",
        "t.toml:5: inference.watch_interval: 1000000000000 is out of range (allowed: > 0 and <= 3600)",
        "t.toml:6: inference.batch_sizes: item 1: 100000000 is out of range (allowed: 1..65536)",
        "t.toml:8: replay.repeat: -1 is out of range (allowed: 0..1000000)",
        "t.toml:9: replay.rate: 1e+300 is out of range (allowed: 0..1000000000)",
        "t.toml:11: metrics.port: 70000 is out of range (allowed: 0..65535)",
    ]


def test_every_numeric_key_has_a_range():
    """The documented range of every numeric key is both ends (docs/daemon.md lists them)."""
    doc = (REPO / "docs" / "daemon.md").read_text()
    for toml_name in C.SECTIONS:
        for spec in C.section_specs(toml_name):
            if spec.type in (int, float):
                assert spec.min is not None and spec.max is not None, f"{toml_name}.{spec.name}"
                assert f"| `{toml_name}.{spec.name}` | {C.range_text(spec)} |" in doc, \
                    f"{toml_name}.{spec.name} is not in docs/daemon.md's table of ranges"


@pytest.mark.parametrize("args, message", [
    (["--metrics-port", "70000"], "--metrics-port: metrics.port: 70000 is out of range (allowed: 0..65535)"),
    (["--replay", "x.pcap", "--repeat", "-1"], "--repeat: replay.repeat: -1 is out of range (allowed: 0..1000000)"),
    (["--replay", "x.pcap", "--rate", "nan"], "--rate: replay.rate: expected a finite number"),
])
def test_malsensord_options_are_range_checked(args, message):
    """--metrics-port 70000 passed --check-config then crashed; --repeat -1 replayed nothing, exit 0."""
    r = run([*MALSENSORD, "-c", str(SHIPPED), "--check-config", *args])
    assert r.returncode == 2
    assert r.stderr.splitlines() == [message, f"malsensord: {SHIPPED}: invalid configuration (1 problem)"]
