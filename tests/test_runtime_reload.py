"""Hot reload: a new artifact version swapped in under load (no connection lost or predicted
twice, events carry the version that produced them), broken artifacts rejected with a log
line and a counter while the old model serves, models added/removed/changed by SIGHUP, a
model directory that appears after the start, and an output directory that appears later."""
from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import numpy as np

from conftest import require_data
from runtime_artifacts import params_of, point_current, publish, reference_predict, write_artifact, write_broken
from runtime_daemon import Daemon, jsonl, last_jsonl, metric, wait_until

from malsensor.daemon.views.conn import CONN_COLUMNS


def config(path: Path, models_dir: Path, logs: Path, capture: Path, *, repeat: int = 0, pause: float = 1.0,
           models: str | None = None, outputs: str | None = None, extra: str = "") -> Path:
    """A replay forever pauses 1 s between passes: at 0.2 s eve.json grew by ~10,000 events/s
    and re-reading it in polling loops outlasted their timeouts on a loaded CI machine."""
    if models is None:
        models = f'[[model]]\nname = "m1"\nmodels_dir = "{models_dir}"\n'
    if outputs is None:
        outputs = f'[[output]]\npath = "{logs}/eve.json"\n'
    path.write_text('[service]\nuser = ""\n[metrics]\nport = 0\n'
                    f'[replay]\nfile = "{capture}"\nrepeat = {repeat}\npause = {pause}\n'
                    f'[stats]\npath = "{logs}/stats.jsonl"\ninterval = 1.0\n'
                    '[inference]\nbatch_sizes = [1, 64]\nwatch_interval = 0.3\n'
                    + models + outputs + extra)
    return path


def key(e: dict) -> tuple:
    return (e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"], e["proto"], e["flow"]["start"])


def test_hot_swap_under_load(tmp_path):
    capture = require_data("pcap/stratosphere_ssh_bruteforce.pcap")
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    publish(models, "m1", "v1", seed=1)
    passes = 100
    cfg = config(tmp_path / "c.toml", models, logs, capture, repeat=passes, pause=0.06)
    d = Daemon(cfg)
    try:
        d.wait_log("malsensord ready")
        time.sleep(1.0)
        write_artifact(models / "m1" / "v2", seed=2, version="v2", name="m1")
        t_pub = time.monotonic()
        point_current(models / "m1", "v2")  # the publish: one atomic rename of the link
        d.wait_log(r"model m1: swapped version v1 -> v2", 30)
        switch_s = time.monotonic() - t_pub
        assert d.wait(120) == 0, d.log_text()
    finally:
        d.kill()
    assert switch_s < 10.0
    events = jsonl(logs / "eve.json")
    versions = [e["prediction"]["version"] for e in events]
    first_v2 = versions.index("v2")
    assert first_v2 > 0 and set(versions[:first_v2]) == {"v1"} and set(versions[first_v2:]) == {"v2"}
    # every connection of every pass predicted exactly once
    counts = collections.Counter(key(e) for e in events)
    per_pass = len(counts)
    assert set(counts.values()) == {passes}
    assert len(events) == passes * per_pass
    assert d.out.startswith(f"{passes * per_pass} connections processed (")
    # each event's probabilities are those of the version it names
    x = np.asarray([[e["conn"][c] for c in CONN_COLUMNS] for e in events])
    for v, seed in (("v1", 1), ("v2", 2)):
        idx = [i for i, ver in enumerate(versions) if ver == v]
        ref = reference_predict(params_of(seed), x[idx])
        got = np.asarray([[dict(e["prediction"]["topk"])[lab] for lab in ("benign", "scan", "c2")]
                          for e in (events[i] for i in idx)])
        np.testing.assert_allclose(got, ref, atol=2e-5)
    stats = jsonl(logs / "stats.jsonl")[-1]["models"]["m1"]
    assert stats["queue_dropped"] == 0 and stats["unserved"] == 0 and stats["swaps"] == 2
    print(f"hot swap: link renamed -> swapped in {switch_s:.2f}s; {len(events)} events, v1 {first_v2}, "
          f"v2 {len(events) - first_v2}")


BROKEN = ("truncated", "view", "semantics", "canary", "meta", "model")


def test_broken_artifacts_rejected_old_model_keeps_serving(tmp_path):
    capture = require_data("pcap/synscan.pcapng")
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    publish(models, "m1", "v1", seed=1)
    d = Daemon(config(tmp_path / "c.toml", models, logs, capture))
    try:
        d.wait_log("malsensord ready")
        for i, how in enumerate(BROKEN, start=1):
            m = d.mark()
            frag = write_broken(models / "m1" / f"bad-{how}", how, seed=10 + i)
            point_current(models / "m1", f"bad-{how}")
            line = d.wait_log(r"model m1: rejected artifact: .*; still serving version v1", 30, m).string
            assert frag in line, line
        m = d.mark()
        point_current(models / "m1", "missing-version")
        line = d.wait_log(r"model m1: rejected artifact: .*; still serving version v1", 30, m).string
        assert f"{models / 'm1' / 'current'}: dangling link" in line
        text = d.metrics()
        assert metric(text, "malsensor_model_rejected_total", model="m1") == len(BROKEN) + 1
        assert metric(text, "malsensor_model_swaps_total", model="m1") == 1
        assert metric(text, "malsensor_model_info", model="m1", version="v1", kind="linear-test") == 1
        # a rejected artifact is not retried over and over
        time.sleep(1.0)
        assert d.log_text().count("rejected artifact") == len(BROKEN) + 1
        n_v1 = len(jsonl(logs / "eve.json"))
        assert n_v1 > 0
        # a good version is then taken
        publish(models, "m1", "v3", seed=3)
        d.wait_log(r"model m1: swapped version v1 -> v3", 30)
        wait_until(lambda: (last_jsonl(logs / "eve.json") or {}).get("prediction", {}).get("version") == "v3", 10,
                   "v3 events")
        assert d.stop() == 0
    finally:
        d.kill()
    events = jsonl(logs / "eve.json")
    assert {e["prediction"]["version"] for e in events} == {"v1", "v3"}


def test_sighup_adds_changes_and_removes_models(tmp_path):
    capture = require_data("pcap/synscan.pcapng")
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    publish(models, "m1", "v1", seed=1)
    fixed = write_artifact(tmp_path / "fixed-art", seed=5, version="f1", name="m2")
    cfg = tmp_path / "c.toml"
    config(cfg, models, logs, capture)
    d = Daemon(cfg)
    try:
        d.wait_log("malsensord ready")
        wait_until(lambda: len(jsonl(logs / "eve.json")) > 0, 20, "m1 events")
        # add m2 (a fixed artifact) with its own output and a custom labels file
        labels = tmp_path / "labels.json"
        labels.write_text('["ok", "bad"]')
        two = (f'[[model]]\nname = "m1"\nmodels_dir = "{models}"\n'
               f'[[model]]\nname = "m2"\npath = "{fixed}"\ntopk = 2\nlabels = "{labels}"\n')
        outs = (f'[[output]]\npath = "{logs}/eve.json"\nmodels = ["m1"]\n'
                f'[[output]]\npath = "{logs}/m2.jsonl"\nformat = "label"\nmodels = ["m2"]\n')
        config(cfg, models, logs, capture, models=two, outputs=outs)
        m = d.mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded; models: m1 v1, m2 f1", 60, m)
        wait_until(lambda: len(jsonl(logs / "m2.jsonl")) > 0, 20, "m2 labels")
        # labels.json override: ids 0 and 1 named by the file, id 2 has no name
        assert set(jsonl(logs / "m2.jsonl")) <= {"ok", "bad", "unknown_2"}
        # an early trigger needing a snapshot point the running tables lack: rejected
        early = two.replace('topk = 2\n', 'topk = 2\ntrigger = "early"\nearly_packets = 3\n')
        config(cfg, models, logs, capture, models=early, outputs=outs)
        m = d.mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"reload rejected: model m2: view conn@1 needs the snapshot points \[3\], which the running "
                   r"flow tables do not all have \(none\); restart to apply", 30, m)
        # remove m1: its events stop, m2 goes on
        only2 = f'[[model]]\nname = "m2"\npath = "{fixed}"\ntopk = 2\n'
        config(cfg, models, logs, capture, models=only2,
               outputs=f'[[output]]\npath = "{logs}/m2.jsonl"\nformat = "label"\n')
        m = d.mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded; models: m2 f1", 60, m)
        n1 = len(jsonl(logs / "eve.json"))
        n2 = len(jsonl(logs / "m2.jsonl"))
        wait_until(lambda: len(jsonl(logs / "m2.jsonl")) > n2 + 50, 20, "m2 still classifying")
        assert len(jsonl(logs / "eve.json")) == n1
        text = d.metrics()
        assert metric(text, "malsensor_config_reloads_total", result="ok") == 2
        assert metric(text, "malsensor_config_reloads_total", result="rejected") == 1
        assert d.stop() == 0
    finally:
        d.kill()
    # without the override, m2's labels are the artifact's
    assert set(jsonl(logs / "m2.jsonl")[-20:]) <= {"benign", "scan", "c2"}


def test_model_published_after_start_and_output_dir_created_later(tmp_path):
    capture = require_data("pcap/synscan.pcapng")
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    late_dir = tmp_path / "later"
    outs = (f'[[output]]\npath = "{logs}/eve.json"\n'
            f'[[output]]\npath = "{late_dir}/eve.json"\n')
    d = Daemon(config(tmp_path / "c.toml", models, logs, capture, outputs=outs))
    try:
        d.wait_log(f"model m1: {models / 'm1'}: no such artifact or model directory")
        d.wait_log(f"output: cannot open {late_dir / 'eve.json'}: No such file or directory")
        d.wait_log("malsensord ready")
        wait_until(lambda: d.metrics() and (metric(d.metrics(), "malsensor_model_unserved_total", model="m1") or 0) > 0,
                   20, "connections counted as unserved")
        assert not (logs / "eve.json").exists() or jsonl(logs / "eve.json") == []
        publish(models, "m1", "v1", seed=1)
        d.wait_log(r"model m1: serving .* version v1", 30)
        wait_until(lambda: len(jsonl(logs / "eve.json")) > 0, 20, "events once the model exists")
        lost = metric(d.metrics(), "malsensor_output_lost_total", path=str(late_dir / "eve.json"))
        assert lost and lost > 0
        late_dir.mkdir()
        m = d.mark()
        d.signal(signal.SIGHUP)
        d.wait_log("configuration reloaded", 30, m)
        wait_until(lambda: len(jsonl(late_dir / "eve.json")) > 0, 20, "events in the late output")
        assert d.stop() == 0
    finally:
        d.kill()


def test_disk_full_output_keeps_whole_lines_and_the_daemon_running(tmp_path):
    import subprocess

    from conftest import require_root, require_tool

    require_root()
    require_tool("mount")
    capture = require_data("pcap/synscan.pcapng")
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    small = tmp_path / "small"
    small.mkdir()
    publish(models, "m1", "v1", seed=1)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    d = None
    try:
        outs = (f'[[output]]\npath = "{small}/eve.json"\n'
                f'[[output]]\npath = "{logs}/labels.jsonl"\nformat = "label"\n')
        d = Daemon(config(tmp_path / "c.toml", models, logs, capture, outputs=outs, pause=0.05))
        d.wait_log(f"output {small}/eve.json: writing {small}/eve.json: No space left on device; "
                   r"\d+ event\(s\) lost \(lines already written are kept; \d+ lost in all\)", 60)
        n = len(jsonl(logs / "labels.jsonl"))
        wait_until(lambda: len(jsonl(logs / "labels.jsonl")) > n + 100, 20, "the other output going on")
        text = d.metrics()
        written = metric(text, "malsensor_output_lines_total", path=f"{small}/eve.json")
        lost = metric(text, "malsensor_output_lost_total", path=f"{small}/eve.json")
        assert written > 0 and lost > 0
        assert metric(text, "malsensor_healthy") == 1
        assert d.stop() == 0
        events = jsonl(small / "eve.json")  # whole lines only
        final = jsonl(logs / "stats.jsonl")[-1]["outputs"][f"{small}/eve.json"]
        assert len(events) == final["lines"] >= written and final["lost"] >= lost
        assert d.log_text().count("No space left on device") == 1  # said once, counted always
    finally:
        if d is not None:
            d.kill()
        subprocess.run(["umount", str(small)], check=False)


def test_logrotate_reopen_also_when_the_new_config_is_rejected(tmp_path):
    capture = require_data("pcap/synscan.pcapng")
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    publish(models, "m1", "v1", seed=1)
    cfg = config(tmp_path / "c.toml", models, logs, capture)
    d = Daemon(cfg)
    try:
        d.wait_log("malsensord ready")
        wait_until(lambda: len(jsonl(logs / "eve.json")) > 0, 20, "events")
        for i, bad in enumerate((False, True)):
            rotated = logs / f"eve.json.{i + 1}"
            (logs / "eve.json").rename(rotated)  # what logrotate does, then it sends SIGHUP
            if bad:
                cfg.write_text(cfg.read_text() + "[bogus]\n")
            m = d.mark()
            d.signal(signal.SIGHUP)
            d.wait_log("reopened 1 output file" if bad else "configuration reloaded", 30, m)
            wait_until(lambda: len(jsonl(logs / "eve.json")) > 0, 20, "events in the new file")
            n = len(jsonl(rotated))
            time.sleep(0.6)
            assert len(jsonl(rotated)) == n  # nothing goes to the rotated file any more
        assert d.stop() == 0
    finally:
        d.kill()
