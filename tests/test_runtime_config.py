"""malsensor.toml schema, validation messages (file, line, key path, allowed values) and
``malsensord --check-config``."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.runtime import config as C
from malsensor.daemon.runtime.tomlpos import key_lines
from malsensor.daemon.sources.afpacket import AfpacketConfig
from malsensor.daemon.sources.pcap import PcapConfig

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "etc" / "malsensor.toml"
MALSENSORD = [sys.executable, "-m", "malsensor.daemon.runtime.main"]


def problems(text: str, file: str = "t.toml") -> list[str]:
    with pytest.raises(C.ConfigError) as ei:
        C.parse_config(text, file, "/base")
    return [str(p) for p in ei.value.problems]


# ------------------------------------------------------------------ the shipped file


def _section_regions(text: str) -> dict[str, str]:
    """Text of each section of the shipped file (commented-out tables included)."""
    out: dict[str, str] = {}
    cur = ""
    for line in text.splitlines():
        m = re.match(r"^#?\s*\[\[?([a-z_]+)\]\]?\s*$", line)
        if m and m.group(1) in C.SECTIONS:
            cur = m.group(1)
        out[cur] = out.get(cur, "") + line + "\n"
    return out


# The keys etc/malsensor.toml sets to something other than their default (each says why):
# the default model's operating point (docs/training.md "The default model").
SHIPPED_OVERRIDES = {("model", "alert_threshold"): 0.8}


def test_shipped_config_is_valid_and_documents_every_key_with_its_default():
    cfg = C.load_config(SHIPPED)
    text = SHIPPED.read_text()
    regions = _section_regions(text)
    doc = tomllib.loads(text)
    for toml_name, (attr, cls, is_array) in C.SECTIONS.items():
        region = regions.get(toml_name, "")
        assert region, f"section {toml_name} is not in etc/malsensor.toml"
        active = doc[toml_name][0] if is_array else doc[toml_name]
        for spec in C.section_specs(toml_name):
            # every key appears (active or as a commented-out line) with a comment above it
            m = re.search(rf"^(#\s*)?{spec.name}\s*=\s*(.*)$", region, re.M)
            assert m, f"[{toml_name}] {spec.name} is not documented in etc/malsensor.toml"
            before = region[: m.start()].rstrip("\n").splitlines()
            while before and re.match(r"^[a-z_]+\s*=", before[-1]):  # keys documented as a group
                before.pop()
            assert before and before[-1].lstrip().startswith("#"), f"{toml_name}.{spec.name} has no comment"
            if spec.required or spec.required_for:
                continue
            # the value shown is the default
            shown = tomllib.loads(f"v = {m.group(2)}")["v"] if m.group(1) else active[spec.name]
            want = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            want = SHIPPED_OVERRIDES.get((toml_name, spec.name), want)
            assert shown == want, f"{toml_name}.{spec.name}: file shows {shown!r}, default is {want!r}"
    # non-array sections equal the dataclass defaults exactly
    assert cfg.service == C.ServiceSection()
    assert cfg.logging == C.LoggingSection()
    assert cfg.tracking == C.TrackingSection()
    assert cfg.inference == C.InferenceSection()
    assert cfg.stats == C.StatsSection()
    assert cfg.metrics == C.MetricsSection()
    assert cfg.sources == (AfpacketConfig(name="default"),)
    assert cfg.notices == ()
    assert cfg.models == (C.ModelSection(name="default", alert_threshold=0.8),)
    assert cfg.outputs == (C.OutputSection(path="/var/log/malsensor/eve.json"),)


def test_tracking_section_covers_trackerconfig():
    names = [s.name for s in C.section_specs("tracking")]
    assert names[: len(C.TRACKER_KEYS)] == [f.name for f in fields(TrackerConfig)
                                            if f.name not in ("snapshot_packets", "seq_packets")]
    assert names[len(C.TRACKER_KEYS):] == ["semantics", "protocols"]


# ------------------------------------------------------------------ messages

BAD = """\
[service]
usr = "x"
on_stop = "explode"

[tracking]
max_flows = 0
tcp_idle_timeout = -1

[inference]
batch_sizes = [16, 1]

[[model]]
name = "a"
trigger = "early"

[[model]]
name = "b"
alert_threshold = 2
topk = "3"

[[output]]
format = "xml"

[[output]]
path = "x.json"
models = ["zzz"]

[[interface]]
name = "lo"
bpf = "tcp port"
block_size = 5000

[bogus]
x = 1
"""


def test_every_problem_reported_with_line_key_and_allowed_values():
    got = problems(BAD)
    assert got == [
        "t.toml:2: service.usr: unknown key; did you mean 'user'? (allowed: user, group, on_stop, "
        "watchdog_stall, status_interval, host, plugins)",
        "t.toml:3: service.on_stop: 'explode' is not allowed (allowed: emit, drop)",
        "t.toml:6: tracking.max_flows: 0 is out of range (allowed: 1..67108864)",
        "t.toml:7: tracking.tcp_idle_timeout: -1 is out of range (allowed: > 0 and <= 31536000)",
        "t.toml:12: model[0].early_packets: trigger = \"early\" needs early_packets >= 1",
        "t.toml:18: model[1].alert_threshold: 2 is out of range (allowed: 0..1)",
        "t.toml:19: model[1].topk: expected an integer, got string '3'",
        "t.toml:22: output[0].format: 'xml' is not allowed (allowed: eve, label)",
        "t.toml:21: output[0]: missing required key 'path'",
        "t.toml:33: bogus: unknown section (allowed: [service], [logging], [[source]], [tracking], "
        "[inference], [[model]], [[output]], [stats], [metrics])",
        "t.toml:26: output[1].models: no model named 'zzz' (models: a, b)",
        "t.toml:31: interface[0].block_size: block_size must be a positive multiple of the page size (4096)",
        "t.toml:30: interface[0].bpf: BPF filter 'tcp port': can't parse filter expression: syntax error",
        "t.toml:10: inference.batch_sizes: [16, 1] must be strictly increasing",
    ]


def test_syntax_error_names_line_and_column():
    assert problems("[service]\nuser = \"x\"\non_stop = emit\n") == [
        "t.toml:3: TOML syntax error at column 11: Invalid value"]


def test_type_errors_and_list_items():
    got = problems('[tracking]\nprotocols = ["tcp", 6]\nmidstream = 1\n[inference]\nbatch_sizes = [1, 0]\n')
    assert got == [
        "t.toml:2: tracking.protocols: item 1: expected a string, got number 6",
        "t.toml:3: tracking.midstream: expected true or false, got number 1",
        "t.toml:5: inference.batch_sizes: item 1: 0 is out of range (allowed: 1..65536)",
    ]
    assert problems('[tracking]\nprotocols = ["tcp", "bogus"]\n') == [
        "t.toml:2: tracking.protocols: item 1: unknown protocol 'bogus' (allowed: tcp, udp, icmp, icmp6, "
        "icmpv6, gre, sctp, esp, ah or a number 0-255)"]


def test_section_shape_errors():
    assert problems('model = "x"\nservice = 3\n[[stats]]\ninterval = 1\n') == [
        "t.toml:1: model: expected an array of tables [[model]], got string 'x'",
        "t.toml:2: service: expected a table, got number 3",
        "t.toml:3: stats: expected a table, got an array",
    ]
    assert problems('user = "x"\n') == [
        "t.toml:1: user: unknown top-level key; keys belong in a section [...]"]


def test_duplicates_and_cross_rules():
    text = ('[[model]]\nname = "a"\n[[model]]\nname = "a"\nearly_packets = 3\n[[model]]\nname = "bad name"\n'
            '[[output]]\npath = "e.json"\n[[output]]\npath = "e.json"\n'
            '[[interface]]\nname = "lo"\n[[interface]]\nname = "lo"\n')
    assert problems(text) == [
        "t.toml:5: model[1].early_packets: early_packets is only used with trigger = \"early\"",
        "t.toml:4: model[1].name: duplicate model name 'a' (also model[0])",
        "t.toml:7: model[2].name: 'bad name' is not a valid name (letters, digits, _ . -; at most 64 "
        "characters, starting with a letter or digit)",
        "t.toml:11: output[1].path: /base/e.json is also output[0]'s file",
        "t.toml:15: interface[1].name: interface 'lo' is also interface[0]",
    ]


def test_tracker_post_init_errors_name_the_key():
    assert problems("[tracking]\nclose_linger = -1.0\n") == [
        "t.toml:2: tracking.close_linger: -1 is out of range (allowed: 0..31536000)"]


def test_valid_config_values_paths_and_snapshot_points():
    cfg = C.parse_config(
        '[replay]\nfile = "caps/x.pcap"\n'
        '[tracking]\nmax_flows = 1000\nprotocols = ["tcp", "17"]\n'
        '[[model]]\nname = "early"\ntrigger = "early"\nearly_packets = 8\nmodels_dir = "m"\n'
        '[[model]]\nname = "late"\npath = "/abs/art"\n'
        '[[model]]\nname = "e4"\ntrigger = "early"\nearly_packets = 4\n'
        '[[output]]\npath = "logs/eve.json"\nmodels = ["late"]\n',
        "cfg.toml", "/etc/ms")
    assert cfg.sources == (PcapConfig(file="/etc/ms/caps/x.pcap"),)
    assert cfg.notices == ("cfg.toml:1: [replay] is deprecated: write [[source]] kind = \"pcap\" with the same keys",)
    assert cfg.tracking.tracker.max_flows == 1000
    assert cfg.protocol_numbers() == frozenset({6, 17})
    assert cfg.tracker_config().snapshot_packets == (4, 8)
    assert cfg.tracker_config().max_flows == 1000
    assert C.model_artifact_path(cfg.models[0]) == Path("/etc/ms/m/early")
    assert C.model_artifact_path(cfg.models[1]) == Path("/abs/art")
    assert C.model_artifact_path(cfg.models[2]) == Path("/var/lib/malsensor/models/e4")
    assert cfg.outputs[0].path == "/etc/ms/logs/eve.json"
    assert C.check_sources(cfg) == []
    assert C.check_sources(C.parse_config("", "x.toml")) == [
        "x.toml: no source: add a [[source]] table (kind = \"afpacket\" to capture, \"pcap\" to replay a file)"]


def test_key_lines_handles_multiline_values_and_quoted_keys():
    text = ('a = """\n[not.a.table]\nx = 1\n"""\n[t]\n"q.k" = [\n  1,\n  2, # ] not the end\n]\n'
            'b.c = 1\n[[arr]]\n[[arr]]\nk = \'#\' # c\n')
    lines = key_lines(text)
    assert lines[("a",)] == 1
    assert ("not", "a", "table") not in lines and ("x",) not in lines
    assert lines[("t", "q.k")] == 6
    assert lines[("t", "b", "c")] == 10
    assert lines[("arr", 0)] == 11 and lines[("arr", 1)] == 12
    assert lines[("arr", 1, "k")] == 13


# ------------------------------------------------------------------ the command


def test_check_config_command(tmp_path):
    ok = subprocess.run([*MALSENSORD, "-c", str(SHIPPED), "--check-config"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{SHIPPED}: configuration OK (1 afpacket source, 1 model(s), 1 output(s))\n"
    bad = tmp_path / "bad.toml"
    bad.write_text("[service]\nuser = \"x\"\nwatchdog_stal = 3\n")
    r = subprocess.run([*MALSENSORD, "-c", str(bad), "--check-config"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{bad}:3: service.watchdog_stal: unknown key; did you mean 'watchdog_stall'? (allowed: user, group, "
        "on_stop, watchdog_stall, status_interval, host, plugins)",
        f"malsensord: {bad}: invalid configuration (1 problem)"]
    missing = subprocess.run([*MALSENSORD, "-c", str(tmp_path / "nope.toml"), "--check-config"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[0] == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"
    nosrc = tmp_path / "nosrc.toml"
    nosrc.write_text("")
    r = subprocess.run([*MALSENSORD, "-c", str(nosrc), "--check-config"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert f"{nosrc}: no source: add a [[source]] table" in r.stderr


def test_argus_semantics_takes_argus_lifecycle_unless_set():
    cfg = C.parse_config('[tracking]\nsemantics = "argus"\n', "t.toml")
    assert cfg.tracking.tracker == TrackerConfig.for_semantics("argus")
    cfg = C.parse_config('[tracking]\nsemantics = "argus"\nudp_idle_timeout = 5.0\n', "t.toml")
    assert cfg.tracking.tracker == TrackerConfig.for_semantics("argus", udp_idle_timeout=5.0)
    assert C.parse_config("", "t.toml").tracking.tracker == TrackerConfig()


def test_source_tables_take_the_keys_of_their_kind():
    cfg = C.parse_config('[[source]]\nkind = "afpacket"\nname = "eth0"\nthreads = 2\n'
                         '[[source]]\nkind = "afpacket"\nname = "eth1"\n', "s.toml", "/etc/ms")
    assert cfg.sources == (AfpacketConfig(name="eth0", threads=2), AfpacketConfig(name="eth1"))
    assert cfg.notices == ()
    assert C.check_sources(cfg) == []
    assert problems('[[source]]\nkind = "pcap"\nfile = "a.pcap"\nthreads = 2\n'
                    '[[source]]\nkind = "tape"\n[[source]]\nname = "x"\n') == [
        "t.toml:4: source[0].threads: unknown key (allowed: kind, file, repeat, pause, rate)",
        "t.toml:6: source[1].kind: unknown source kind 'tape' (known: afpacket, pcap, procfs, pt_spool)",
        "t.toml:7: source[2]: missing required key 'kind'",
    ]
    both = C.parse_config('[[source]]\nkind = "pcap"\nfile = "a.pcap"\n[[source]]\nkind = "afpacket"\n'
                          'name = "lo"\n', "b.toml", "/x")
    assert C.check_sources(both) == [
        "b.toml: sources of kind pcap end by themselves and cannot run beside afpacket: use one or the other"]


def test_model_tables_take_the_keys_of_their_view():
    assert problems('[[model]]\nname = "s"\nview = "conn_series@1"\nlookback = 4\ntrigger = "early"\n'
                    '[[model]]\nname = "c"\nview = "conn_series@2"\n'
                    '[[model]]\nname = "d"\nlookbak = 3\n') == [
        "t.toml:5: model[0].trigger: a conn_series@1 model classifies at its last series point or at the "
        "connection's end: trigger must be \"end\"",
        "t.toml:8: model[1].view: unknown view 'conn_series@2' (known: conn@1, conn_ctx@1, conn_profile@1, conn_series@1, "
        "device_bag@1, host_volume@1, pkt_seq@1, proc_volume@1, pt_tokens@1)",
        "t.toml:11: model[2].lookbak: unknown key; did you mean 'lookback'? (allowed: name, models_dir, artifact, "
        "path, view, labels, topk, alert_threshold, benign_labels, trigger, early_packets, lookback)",
    ]
    cfg = C.parse_config('[[model]]\nname = "s"\nview = "conn_series@1"\nlookback = 3\n', "m.toml", "/x")
    assert cfg.models[0].input_shape() == (3, 17)
    assert cfg.tracker_config().snapshot_packets == (2, 4, 8)


def test_output_kinds_redis_keys_and_their_rules():
    cfg = C.parse_config('[[output]]\nkind = "redis"\nkey = "k"\nspool_dir = "sp"\n', "t.toml", "/base")
    o = cfg.outputs[0]
    assert (o.kind, o.path, o.key, o.mode, o.spool_dir) == ("redis", "", "k", "list", "/base/sp")
    assert o.target == "redis://127.0.0.1:6379/0/k"
    assert C.parse_config('[[output]]\nkind = "redis"\nserver = "/run/redis/redis.sock"\n', "t.toml",
                          "/base").outputs[0].target == "redis://unix:/run/redis/redis.sock/0/malsensor"
    assert problems('[[output]]\nkind = "redis"\npath = "e.json"\nmode = "queue"\nport = 0\n') == [
        "t.toml:4: output[0].mode: 'queue' is not allowed (allowed: list, lpush, rpush, channel, publish, stream, "
        "xadd)",
        "t.toml:5: output[0].port: 0 is out of range (allowed: 1..65535)",
        't.toml:3: output[0].path: only used with kind = "file" (here kind = "redis")',
    ]
    assert problems('[[output]]\nkind = "file"\nserver = "x"\n') == [
        't.toml:3: output[0].server: only used with kind = "redis" (here kind = "file")',
        "t.toml:1: output[0]: missing required key 'path'",
    ]
    assert problems('[[output]]\nkind = "kafka"\n') == [
        "t.toml:2: output[0].kind: 'kafka' is not allowed (allowed: file, redis)"]
    # two outputs on one list, or sharing a spool, would mix their events
    assert problems('[[output]]\nkind = "redis"\n[[output]]\nkind = "redis"\nmode = "stream"\n') == [
        "t.toml:3: output[1].key: redis://127.0.0.1:6379/0/malsensor is also output[0]'s redis key",
        "t.toml:3: output[1].spool_dir: /var/lib/malsensor/spool/redis is also output[0]'s spool_dir (each redis "
        "output needs its own)",
    ]
    assert C.parse_config('[[output]]\nkind = "redis"\n[[output]]\nkind = "redis"\nkey = "b"\nspool_max_bytes = 0\n',
                          "t.toml", "/base").outputs[1].spool_max_bytes == 0
