"""Shipping the EVE file with a standard shipper (docs/fleet.md, contrib/fleet/).

- rsyslog (Debian) runs contrib/fleet/rsyslog-redis.conf as shipped (paths and port replaced):
  it follows an EVE file written by ``malsensord --replay`` and the redis list receives
  every line unchanged, in order.
- rsyslog validates the Kafka and Elasticsearch configurations (``rsyslogd -N1`` loads the
  output modules and checks every parameter); no broker or cluster is installable here.
- The Elasticsearch index template maps every field of real events with a type their values fit.
- The Vector and Filebeat files (not installable here) parse and follow the EVE file to both sinks.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import REPO, require_data, require_tool
from redis_server import RedisServer
from runtime_artifacts import publish
from test_runtime_replay import run_replay, write_config

FLEET = REPO / "contrib" / "fleet"
CAPTURE = "pcap/stratosphere_scanning_host.pcap"


@pytest.fixture(scope="module")
def eve_file(tmp_path_factory) -> Path:
    capture = require_data(CAPTURE)
    tmp = tmp_path_factory.mktemp("fleet")
    models = tmp / "models"
    models.mkdir()
    publish(models, "m1", "v1", seed=1)
    logs = tmp / "logs"
    logs.mkdir()
    cfg = write_config(tmp / "m.toml", models, logs, outputs=f'[[output]]\npath = "{logs}/eve.json"\n')
    r = run_replay(cfg, capture)
    assert r.returncode == 0, r.stderr
    return logs / "eve.json"


def rsyslogd() -> str:
    """rsyslogd lives in /usr/sbin, which a non-login PATH may lack."""
    if Path("/usr/sbin/rsyslogd").exists():
        return "/usr/sbin/rsyslogd"
    return require_tool("rsyslogd")


def shipped_config(name: str, work: Path, **replace: str) -> Path:
    text = (FLEET / name).read_text().replace("/var/spool/rsyslog", str(work))
    for old, new in replace.items():
        assert old in text, f"{name} has no {old!r}"
        text = text.replace(old, new)
    out = work / name
    out.write_text(text)
    return out


def test_rsyslog_ships_the_eve_file_to_redis_unchanged(tmp_path, eve_file):
    exe = rsyslogd()
    lines = eve_file.read_bytes().splitlines()
    assert len(lines) > 50
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    work = tmp_path / "rsyslog"
    work.mkdir()
    conf = shipped_config("rsyslog-redis.conf", work, **{"/var/log/malsensor/eve.json": str(eve_file),
                                                         'serverport="6379"': f'serverport="{srv.port}"'})
    proc = subprocess.Popen([exe, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        c = srv.client()
        deadline = time.monotonic() + 60
        while c.llen("malsensor") < len(lines):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, f"{c.llen('malsensor')} of {len(lines)} lines arrived"
            time.sleep(0.1)
        time.sleep(0.5)  # nothing more than the file's lines
        assert c.lrange("malsensor", 0, -1) == lines
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        srv.stop()


@pytest.mark.parametrize("name", ["rsyslog-kafka.conf", "rsyslog-elasticsearch.conf", "rsyslog-redis.conf"])
def test_rsyslog_validates_the_shipped_configurations(tmp_path, name):
    conf = shipped_config(name, tmp_path)
    r = subprocess.run([rsyslogd(), "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def _leaves(obj: dict, prefix: str = ""):
    for k, v in obj.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, path + ".")
        else:
            yield path, v


def _mapping(props: dict, path: str) -> dict | None:
    head, _, rest = path.partition(".")
    m = props.get(head)
    if m is None or not rest:
        return m
    return _mapping(m.get("properties", {}), rest)


def test_index_template_maps_every_event_field_with_a_type_its_values_fit(eve_file):
    template = json.loads((FLEET / "elasticsearch-template.json").read_text())
    props = template["template"]["mappings"]["properties"]
    assert template["index_patterns"] == ["malsensor-eve-*"]
    events = [json.loads(x) for x in eve_file.read_text().splitlines()]
    java_to_python = {"yyyy-MM-dd'T'HH:mm:ss.SSSSSSZ": "%Y-%m-%dT%H:%M:%S.%f%z"}
    seen = set()
    for ev in events:
        for path, v in _leaves(ev):
            m = _mapping(props, path)
            assert m is not None, f"{path} is not in the index template"
            seen.add(path)
            t = m["type"]
            if v is None:  # a feature that is not finite: JSON null, indexed as missing
                assert path.startswith("conn.")
            elif t == "ip":
                ipaddress.ip_address(v)
            elif t in ("integer", "long"):
                assert isinstance(v, int) and not isinstance(v, bool)
                assert -2**31 <= v < 2**31 if t == "integer" else -2**63 <= v < 2**63
            elif t in ("float", "double"):
                assert isinstance(v, (int, float)) and not isinstance(v, bool)
            elif t == "boolean":
                assert isinstance(v, bool)
            elif t == "keyword":
                assert isinstance(v, str) or (path == "prediction.topk" and not m.get("index", True)), path
            elif t == "date_nanos":
                datetime.strptime(v, java_to_python[m["format"]])
            else:
                pytest.fail(f"{path}: unexpected type {t}")
    assert {"src_ip", "dest_ip", "timestamp", "prediction.label", "prediction.alert", "flow.start",
            "conn.dur"} <= seen


def test_vector_and_filebeat_configurations_parse_and_follow_the_eve_file(eve_file):
    """Vector and Filebeat are not installable here: their files are only parsed (TOML, YAML) and
    checked for the path they follow and the chain from it to Kafka and Elasticsearch."""
    import tomllib

    import yaml

    v = tomllib.loads((FLEET / "vector.toml").read_text())
    assert v["sources"]["malsensor_eve"]["include"] == ["/var/log/malsensor/eve.json"]
    assert v["transforms"]["malsensor_events"]["inputs"] == ["malsensor_eve"]
    assert {v["sinks"][k]["type"] for k in ("kafka", "elasticsearch")} == {"kafka", "elasticsearch"}
    assert all(s["inputs"] == ["malsensor_events"] for s in v["sinks"].values())
    assert v["sinks"]["elasticsearch"]["bulk"]["index"].startswith("malsensor-eve-")  # the template's pattern
    fb = yaml.safe_load((FLEET / "filebeat.yml").read_text())
    (inp,) = fb["filebeat.inputs"]
    assert inp["type"] == "filestream" and inp["paths"] == ["/var/log/malsensor/eve.json"]
    assert inp["parsers"] == [{"ndjson": {"target": "", "overwrite_keys": True, "add_error_key": True}}]
    ts = fb["processors"][0]["timestamp"]
    assert ts["field"] == "timestamp"
    # the processor's own self-test value has the shape of malsensor's timestamps
    real = json.loads(eve_file.read_text().splitlines()[0])["timestamp"]
    assert len(ts["test"][0]) == len(real) and ts["test"][0][-5:] == real[-5:] == "+0000"
    assert fb["output.kafka"]["topic"] == "malsensor-eve"
