"""Regression tests of issue 10 ("Hardening"): every value a user or a file hands the program is
checked, and nothing good is lost. One test per finding, named after what it protects."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_config_paths_with_a_nul_character_are_named():
    """An output path with a NUL (found by tests/test_fuzz.py) was a ValueError traceback from
    os.path.realpath in the output clash check."""
    assert problems('[[output]]\npath = "/tmp/a\\u0000b.json"\n[[model]]\nname = "m"\nmodels_dir = "/x\\u0000"\n') == [
        "t.toml:2: output[0].path: a path cannot contain a NUL character",
        "t.toml:5: model[0].models_dir: a path cannot contain a NUL character",
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
    (["--replay", "x.pcap", "--repeat", "-1"], "--repeat: source.repeat: -1 is out of range (allowed: 0..1000000)"),
    (["--replay", "x.pcap", "--rate", "nan"], "--rate: source.rate: expected a finite number"),
])
def test_malsensord_options_are_range_checked(args, message):
    """--metrics-port 70000 passed --check-config then crashed; --repeat -1 replayed nothing, exit 0."""
    r = run([*MALSENSORD, "-c", str(SHIPPED), "--check-config", *args])
    assert r.returncode == 2
    assert r.stderr.splitlines() == [message, f"malsensord: {SHIPPED}: invalid configuration (1 problem)"]


# ---------------------------------------------------------------- 3, 10, 11. artifacts


def _artifact(tmp_path: Path, name: str = "a", sums: bool = True, **kw) -> Path:
    from runtime_artifacts import write_artifact

    from malsensor.daemon import artifact as A

    root = write_artifact(tmp_path / name, **kw)
    if sums:
        (root / A.CHECKSUMS_FILE).write_text(A.checksums_text(root, (A.META_FILE, *A.ARTIFACT_FILES)))
    return root


def _edit_meta(root: Path, edit, resum: bool = True) -> None:
    import json

    from malsensor.daemon import artifact as A

    meta = json.loads((root / A.META_FILE).read_text())
    edit(meta)
    (root / A.META_FILE).write_text(json.dumps(meta))
    if resum:
        (root / A.CHECKSUMS_FILE).write_text(A.checksums_text(root, (A.META_FILE, *A.ARTIFACT_FILES)))


def _load_error(root: Path) -> str:
    from malsensor.daemon import artifact as A

    with pytest.raises(A.ArtifactError) as ei:
        A.load_artifact(root)
    return str(ei.value)


def test_meta_json_is_covered_by_the_checksums(tmp_path):
    """Issue 10.3: meta.json (canary tolerance, view) was outside every checksum."""
    root = _artifact(tmp_path)
    _edit_meta(root, lambda m: m["canary"].update(atol=1e-4), resum=False)
    assert _load_error(root) == (f"{root / 'meta.json'}: sha256 differs from SHA256SUMS "
                                 "(truncated, corrupt or replaced)")
    (root / "SHA256SUMS").write_text((root / "SHA256SUMS").read_text().replace("meta.json", "other.json"))
    assert _load_error(root) == f"{root / 'SHA256SUMS'}: no checksum for meta.json"


@pytest.mark.parametrize("atol", [float("nan"), float("inf"), -1.0, 0.5, "1e-5", True, None])
def test_canary_tolerance_is_finite_and_small(tmp_path, atol):
    """Issue 10.3: "canary": {"atol": NaN} passed every comparison, even with swapped classes."""
    root = _artifact(tmp_path, labels=["benign", "scan", "c2"])
    _edit_meta(root, lambda m: m["canary"].update(atol=atol))
    msg = _load_error(root)
    assert msg.startswith(f"{root / 'meta.json'}: key 'canary.atol': ") and "within 0..0.001" in msg


def test_swapped_classes_fail_the_canary_whatever_meta_json_says(tmp_path):
    """Issue 10.3: an artifact whose expected canary outputs have classes swapped is refused; NaN in
    the expected outputs is a failure, not a pass."""
    import msgpack

    from malsensor.daemon import artifact as A

    root = _artifact(tmp_path)
    doc = msgpack.unpackb((root / A.CANARY_FILE).read_bytes())
    probs = A.unpack_array(doc["probs"], "x", "probs").copy()
    for expected in (probs[:, ::-1].copy(), np.where(np.arange(probs.shape[1]) == 0, np.nan, probs)):
        doc["probs"] = A.pack_array(expected.astype(np.float32))
        (root / A.CANARY_FILE).write_bytes(msgpack.packb(doc))
        _edit_meta(root, lambda m: m["files"].__setitem__(
            A.CANARY_FILE, {"sha256": A.sha256_file(root / A.CANARY_FILE),
                            "bytes": (root / A.CANARY_FILE).stat().st_size}))
        msg = _load_error(root)
        assert msg.startswith(f"{root / A.CANARY_FILE}: canary outputs differ from the expected ones by ")


def test_artifacts_published_before_sha256sums_still_load(tmp_path):
    """The shipped default model and artifacts from before SHA256SUMS are read (covers_meta False)."""
    import shutil

    from malsensor.daemon import artifact as A

    shipped = A.load_artifact(REPO / "contrib" / "models" / "default", check_canary=False)
    assert shipped.covers_meta
    old = tmp_path / "old"
    shutil.copytree(shipped.path, old)
    (old / A.CHECKSUMS_FILE).unlink()
    art = A.load_artifact(old)
    assert not art.covers_meta and art.labels == shipped.labels


def test_artifact_text_is_escaped_for_logs(tmp_path):
    """Issue 10.10: a newline in meta.json's version forged a log line."""
    root = _artifact(tmp_path)
    _edit_meta(root, lambda m: m.update(version="v1\n2026-01-01 00:00:00 INFO forged", kind="k\x1b[2J"))
    from malsensor.daemon import artifact as A

    art = A.load_artifact(root)
    assert art.version == "v1\\n2026-01-01 00:00:00 INFO forged"
    assert art.kind == "k\\x1b[2J"


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["view"].update(columns=5), "key 'view.columns' must be a list of strings"),
    (lambda m: m.update(canary=5), "key 'canary' must be an object, got int"),
    (lambda m: m["view"].update(dtype=["float32"]), "unexpected content (TypeError: "),
])
def test_artifact_rejections_name_the_file_and_key(tmp_path, edit, message):
    """Issue 10.10: some rejections printed only the models directory and a raw TypeError."""
    root = _artifact(tmp_path)
    _edit_meta(root, edit)
    assert _load_error(root).startswith(f"{root / 'meta.json'}: {message}")


def test_current_link_outside_its_model_folder_is_refused(tmp_path):
    """Issue 10.11: a `current` link to a directory outside the model folder was loaded."""
    import os

    from malsensor.daemon import artifact as A

    elsewhere = _artifact(tmp_path, "elsewhere")
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    os.symlink(elsewhere, folder / A.CURRENT_LINK)
    with pytest.raises(A.ArtifactError, match="points outside its model folder"):
        A.resolve(folder)
    with pytest.raises(A.ArtifactError, match="points outside its model folder"):
        A.resolve(folder / A.CURRENT_LINK)
    inside = _artifact(folder, "v1")
    os.unlink(folder / A.CURRENT_LINK)
    os.symlink("v1", folder / A.CURRENT_LINK)
    assert A.resolve(folder) == inside.resolve()


# ---------------------------------------------------------------- 4. --rate pacing


class _TimedDispatcher:
    """A real Dispatcher (no routes) that also notes when each connection was handed on."""

    def __new__(cls, stop):
        from malsensor.daemon.runtime.inference import Dispatcher

        class Timed(Dispatcher):
            def __init__(self) -> None:
                super().__init__(block=True, stop=stop)
                self.times: list[float] = []

            def dispatch(self, cb, beat=None) -> None:
                import time

                super().dispatch(cb, beat)
                self.times += [time.monotonic()] * int((~cb.is_snapshot).sum())

        return Timed()


def test_rate_paces_end_of_file_flushes_and_every_pass(tmp_path):
    """Issue 10.4: --rate 100 sent synscan's 1,994 end-of-file connections in 0.06 s, and each
    pass restarted the schedule. Now every connection keeps the rate, across two passes."""
    import threading

    from malsensor.daemon.sources import SourceContext
    from malsensor.daemon.sources.pcap import PcapSource

    cap = require_data(PCAPS / "synscan.pcapng")
    rate = 2000.0
    cfg = C.parse_config(f'[[source]]\nkind = "pcap"\nfile = "{cap}"\nrepeat = 2\nrate = {rate}\n', "t.toml")
    stop = threading.Event()
    disp = _TimedDispatcher(stop)
    src = PcapSource(cfg.sources[0], SourceContext(disp.dispatch, tracking=cfg.tracker_config()))
    src.start()
    assert src.done.wait(60) and src.error is None
    t = np.array(disp.times)
    assert len(t) == 2 * 1994
    span = t[-1] - t[0]
    assert span >= 0.95 * (len(t) - rate * 0.01) / rate  # ~1.99 s; it was ~0.1 s
    # no burst: in any 0.1 s, at most 0.1 s worth of connections plus one slice and the catch-up
    window = np.searchsorted(t, t + 0.1) - np.arange(len(t))
    assert window.max() <= rate * (0.1 + 0.01 + 0.1) + 1


def test_pacer_keeps_one_schedule_and_does_not_burst_after_a_pause():
    """The schedule is continuous; lateness (a pause between passes) is made up for at most
    CATCH_UP_S. A clock that moves only when the pacer waits makes the times exact."""
    import threading

    from malsensor.daemon.flows import layout as L
    from malsensor.daemon.pipeline import ConnBatch
    from malsensor.daemon.runtime.pacing import Pacer

    now = [100.0]
    slept: list[float] = []

    class Clock:
        def __call__(self) -> float:
            return now[0]

    class Stop(threading.Event):
        def wait(self, timeout=None) -> bool:  # the clock moves when the pacer waits
            slept.append(timeout)
            now[0] += timeout
            return False

    p = Pacer(100.0, clock=Clock())
    cb = ConnBatch(np.zeros((50, L.N_COLS), np.int64), np.zeros((50, 17)))
    stop = Stop()
    assert sum(part.n for part in p.pace(cb, stop)) == 50
    assert now[0] == pytest.approx(100.49)  # 50 connections at 100/s: the last goes at +0.49 s
    now[0] += 30.0  # a pause between passes: no catch-up burst beyond CATCH_UP_S
    list(p.pace(cb, stop))
    # (due was 100.50; now 130.49: due restarts at now - 0.1, the last of 50 goes 0.49 s later)
    assert now[0] == pytest.approx(130.39 + 0.49)


# ---------------------------------------------------------------- 5. one file, two outputs


def test_outputs_that_resolve_to_one_file_are_rejected(tmp_path):
    """Issue 10.5: `logs/../logs/eve.json` next to `logs/eve.json` (or a link to it) passed
    --check-config, and EVE objects and label strings went into one file."""
    import os

    logs = tmp_path / "logs"
    logs.mkdir()
    os.symlink(logs, tmp_path / "link")
    got = problems(f'[[output]]\npath = "{logs}/eve.json"\n'
                   f'[[output]]\npath = "{logs}/../logs/eve.json"\nformat = "label"\n'
                   f'[[output]]\npath = "{tmp_path}/link/eve.json"\n'
                   f'[stats]\npath = "{tmp_path}/link/s.jsonl"\n'
                   f'[[output]]\npath = "{logs}/s.jsonl"\n')
    assert got == [
        f"t.toml:4: output[1].path: {logs}/../logs/eve.json is also output[0]'s file ({logs}/eve.json)",
        f"t.toml:7: output[2].path: {tmp_path}/link/eve.json is also output[0]'s file ({logs}/eve.json)",
        "t.toml:11: output[3].path: is also the stats file",
    ]


def test_log_dir_collapsing_two_outputs_is_rejected(tmp_path):
    """Issue 10.5: --log-dir puts outputs with one base name into one file."""
    cfg = tmp_path / "m.toml"
    cfg.write_text('[service]\nuser = ""\n[metrics]\nenabled = false\n[replay]\nfile = "x.pcap"\n'
                   f'[[output]]\npath = "{tmp_path}/a/eve.json"\n'
                   f'[[output]]\npath = "{tmp_path}/b/eve.json"\nformat = "label"\n')
    r = run([*MALSENSORD, "-c", str(cfg), "--check-config", "--log-dir", str(tmp_path / "logs")])
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (f"--log-dir: output[1].path: {tmp_path}/logs/eve.json is also "
                                        "output[0]'s file")


# ---------------------------------------------------------------- 7. extract's input and outputs


def test_extract_never_overwrites_its_capture(tmp_path):
    """Issue 10.7: `extract x.pcapng -o x.pcapng` truncated the capture before reading it."""
    import os
    import shutil

    cap = tmp_path / "x.pcapng"
    shutil.copy(require_data(PCAPS / "synscan.pcapng"), cap)
    data = cap.read_bytes()
    os.link(cap, tmp_path / "hard.pcapng")
    for opt, target in (("-o", cap), ("-o", tmp_path / "hard.pcapng"), ("--summary-json", cap)):
        r = run([*MALSENSOR, "extract", str(cap), opt, str(target)])
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"{opt} {target} is the capture being read ({cap}); refusing to overwrite it" in r.stderr
        assert cap.read_bytes() == data


def test_extract_summary_json_errors_are_one_line(tmp_path):
    """Issue 10.7: --summary-json DIR or an unwritable path gave a traceback."""
    cap = require_data(PCAPS / "synscan.pcapng")
    r = run([*MALSENSOR, "extract", str(cap), "-o", str(tmp_path / "o.jsonl"), "--summary-json", str(tmp_path)])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"--summary-json {tmp_path} is a directory" in r.stderr
    bad = tmp_path / "no-such-dir" / "s.json"
    r = run([*MALSENSOR, "extract", str(cap), "-o", str(tmp_path / "o.jsonl"), "--summary-json", str(bad)])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot write summary {bad}: No such file or directory" in r.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1994  # the rows are all there


def test_extract_reads_standard_input_and_a_fifo(tmp_path):
    """Issue 10.7: `-` (standard input) and a FIFO work, plain or gzip: nothing seeks."""
    import gzip
    import os
    import threading

    cap = require_data(PCAPS / "synscan.pcapng")
    want = run([*MALSENSOR, "extract", str(cap)]).stdout
    assert len(want.splitlines()) == 1994
    for data in (cap.read_bytes(), gzip.compress(cap.read_bytes())):
        r = subprocess.run([*MALSENSOR, "extract", "-"], input=data, capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode() == want
        fifo = tmp_path / "f"
        if fifo.exists():
            fifo.unlink()
        os.mkfifo(fifo)

        def feed(d=data) -> None:
            with open(fifo, "wb") as f:
                f.write(d)

        t = threading.Thread(target=feed)
        t.start()
        r = run([*MALSENSOR, "extract", str(fifo)])
        t.join(10)
        assert r.returncode == 0, r.stderr
        assert r.stdout == want


# ---------------------------------------------------------------- 9. shutdown counts


def test_shutdown_counts_only_events_that_reached_the_file(tmp_path):
    """Issue 10.9: with every write failing, the daemon logged "N events written"."""
    from runtime_artifacts import publish

    cap = require_data(PCAPS / "synscan.pcapng")
    models = tmp_path / "models"
    publish(models, "m1", "v1", seed=1)
    cfg = tmp_path / "m.toml"
    cfg.write_text('[service]\nuser = ""\n[metrics]\nenabled = false\n[stats]\npath = ""\n'
                   '[inference]\nbatch_sizes = [1, 256]\n'
                   f'[[model]]\nname = "m1"\nmodels_dir = "{models}"\n'
                   '[[output]]\npath = "/dev/full"\n'  # every write fails: ENOSPC
                   f'[[output]]\npath = "{tmp_path}/labels.jsonl"\nformat = "label"\n')
    r = run([*MALSENSORD, "-c", str(cfg), "--replay", str(cap)])
    assert r.returncode == 0, r.stderr
    assert "stopped: 1994 connections, 1994 events written, 1994 lost (1994 predictions)" in r.stderr
    assert len((tmp_path / "labels.jsonl").read_text().splitlines()) == 1994


# ---------------------------------------------------------------- 11. evictions, metrics server


def test_evictions_are_in_the_daemon_stats_and_metrics(tmp_path):
    """Issue 10.11: evictions (a full flow table) were in extract's summary only."""
    import json

    cap = require_data(PCAPS / "synscan.pcapng")
    r = run([*MALSENSOR, "extract", str(cap), "-o", "/dev/null", "--max-flows", "64"])
    evicted = int(r.stderr.split("evicted ")[1].split()[0].replace(",", ""))
    assert evicted > 1000
    cfg = tmp_path / "m.toml"
    cfg.write_text('[service]\nuser = ""\n[metrics]\nenabled = false\n'
                   f'[stats]\npath = "{tmp_path}/stats.jsonl"\n[tracking]\nmax_flows = 64\n')
    r = run([*MALSENSORD, "-c", str(cfg), "--replay", str(cap)])
    assert r.returncode == 0, r.stderr
    last = json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])
    assert last["flows_evicted"] == evicted
    from malsensor.daemon.runtime.stats import LatencyStats, PrometheusCollector

    fams = {f.name: f for f in PrometheusCollector(lambda: {**last, "models": {}, "outputs": {}},
                                                   LatencyStats()).collect()}
    assert fams["malsensor_flows_evicted"].samples[0].value == evicted


def test_metrics_server_bounds_idle_connections():
    """Issue 10.11: each idle connection held a thread forever (300 connections, 325 threads)."""
    import socket
    import threading
    import time
    import urllib.request

    from malsensor.daemon.runtime import metrics_server as MS
    from malsensor.daemon.runtime.stats import LatencyStats, start_metrics_server

    snap = {"packets": 1, "wire_bytes": 2, "kernel_packets": 0, "kernel_drops": 0, "connections": 3,
            "snapshots": 0, "flows_active": 0, "flows_evicted": 0, "models": {}, "outputs": {}}
    server, port = start_metrics_server("127.0.0.1", 0, lambda: snap, LatencyStats())
    idle = []
    try:
        before = threading.active_count()
        for _ in range(100):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        for _ in range(30):  # the server accepts them (and closes those beyond its bound)
            time.sleep(0.1)
            assert threading.active_count() - before <= MS.MAX_CLIENTS
        assert server.refused > 0
        time.sleep(MS.CLIENT_TIMEOUT_S + 1.0)  # the idle ones are dropped ...
        assert threading.active_count() - before <= 1
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "malsensor_connections_total 3.0" in body  # ... and a scrape is served
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- 6. trainer inputs


def _row(i: int) -> dict:
    from malsensor.daemon.views.conn import CONN_COLUMNS

    return {"fts": [float(i + j) for j in range(len(CONN_COLUMNS))], "label": "a" if i % 2 else "b"}


@pytest.mark.parametrize("bad, problem", [
    ('{"fts": [' + "9" * 400 + ', 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], "label": "a"}',
     "fts[0] (dur) is an integer of 400 digits, not a number"),
    ("[" * 100_000 + "]" * 100_000, "invalid JSON (nested too deep)"),
    ('{"fts": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], "label": ' + "[" * 50_000 + "]" * 50_000 + "}",
     "invalid JSON (nested too deep)"),
    ('{"fts": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], "label": {"x": 1}}',
     "label 'label' is a JSON dict, expected a string or number"),
    ('{"fts": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], "label": "a", "ts": ' + "9" * 400 + "}",
     None),  # a timestamp out of range is no timestamp, the row is fine
])
def test_jsonl_hostile_numbers_and_nesting_are_row_errors(tmp_path, bad, problem):
    """Issue 10.6: a 400-digit integer or 100,000-deep nesting gave OverflowError/RecursionError
    tracebacks, even with --skip-bad."""
    import json

    from malsensor.models.data.jsonl import read_jsonl
    from malsensor.models.data.table import DataStats
    from malsensor.models.errors import TrainError
    from malsensor.daemon.views.conn import CONN

    p = tmp_path / "r.jsonl"
    p.write_text("\n".join([json.dumps(_row(0)), bad, json.dumps(_row(1))]) + "\n")
    if problem is None:
        assert read_jsonl(p, CONN.info(), None, DataStats(), False).x.shape == (3, 17)
        return
    with pytest.raises(TrainError) as ei:
        read_jsonl(p, CONN.info(), None, DataStats(), False)
    assert str(ei.value).startswith(f"{p}:2: {problem}")
    st = DataStats()
    part = read_jsonl(p, CONN.info(), None, st, True)
    assert st.bad_rows == 1 and part.x.shape == (2, 17) and part.label == ["b", "a"]


def test_csv_non_utf8_byte_is_reported_at_its_line_and_skips_only_its_row(tmp_path):
    """Issue 10.6: a latin-1 byte on line 1502 was reported at line 1458 and --skip-bad dropped
    44 valid rows with it."""
    from malsensor.models.data.csvsrc import read_csv
    from malsensor.models.data.table import DataStats
    from malsensor.models.errors import TrainError
    from malsensor.daemon.views.conn import CONN, CONN_COLUMNS

    lines = [",".join([*CONN_COLUMNS, "label"])]
    lines += [",".join([*(str(i + j) for j in range(17)), "a" if i % 2 else "b"]) for i in range(3000)]
    data = ("\n".join(lines) + "\n").encode()
    cut = data.index(b"\n1500,")  # line 1502 starts after this newline
    p = tmp_path / "t.csv"
    p.write_bytes(data[:cut + 1] + b"1500,1501,1502,1503,1504,1505,1506,1507,1508,1509,1510,1511,1512,1513,"
                  b"1514,1515,1516,caf\xe9" + data[data.index(b"\n", cut + 1):])
    with pytest.raises(TrainError) as ei:
        read_csv(p, CONN.info(), None, DataStats(), False)
    assert str(ei.value).startswith(f"{p}:1502: not UTF-8 (byte 88 of the line)")
    st = DataStats()
    part = read_csv(p, CONN.info(), None, st, True)
    assert st.bad_rows == 1 and st.rows_read == 3000 and part.x.shape == (2999, 17)


def test_csv_duplicated_header_column_is_an_error(tmp_path):
    """Issue 10.6: a duplicated header column silently used its last copy."""
    from malsensor.models.data.csvsrc import read_csv
    from malsensor.models.data.table import DataStats
    from malsensor.models.errors import TrainError
    from malsensor.daemon.views.conn import CONN, CONN_COLUMNS

    p = tmp_path / "d.csv"
    p.write_text(",".join([*CONN_COLUMNS, "label", "dur"]) + "\n" + ",".join(["1"] * 19) + "\n")
    with pytest.raises(TrainError, match=r":1: column 'dur' appears 2 times \(fields 1, 19\)"):
        read_csv(p, CONN.info(), None, DataStats(), False)


def test_tiny_dataset_warns_that_validation_and_test_are_empty(tmp_path):
    """Issue 10.6: a 3-row dataset published with empty validation and test splits, no warning."""
    import json

    p = tmp_path / "tiny.jsonl"
    p.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(3)))
    r = run([sys.executable, "-m", "malsensor.models.cli", "fit", "--model", str(REPO / "etc/models/forest.toml"),
             "--data", str(p), "--label", "label", "--out", str(tmp_path / "m"), "--name", "tiny"])
    assert r.returncode == 0, r.stderr
    assert "the validation split is empty (3 rows in all)" in r.stderr
    assert "the test split is empty (3 rows in all)" in r.stderr


# ---------------------------------------------------------------- 8. checkpoints


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory):
    """A real checkpoint of an MLP run stopped after one epoch, and the options to resume it."""
    from train_data import unsw_subset, write_spec

    from malsensor.models.fit import FitOptions, run_fit
    from malsensor.models.train import _Interrupted

    d = tmp_path_factory.mktemp("ckpt")
    data = unsw_subset(d, per_class=20)
    spec = write_spec(d, "mlp", {"hidden": [8]}, {"epochs": 4, "batch_size": 32, "patience": 0})
    opts = dict(model=str(spec), data=[str(data)], name="m", label="attack_cat", progress=False,
                out=d / "out", reports=d / "r")
    with pytest.raises(_Interrupted):
        run_fit(FitOptions(stop_after_epochs=1, **opts))
    path = d / "out" / "m" / ".work" / "checkpoint.msgpack"
    return path, path.read_bytes(), opts


def _drop(st, key):
    del st[key]


def _wrong_shape(st):
    first = next(iter(st["params"].values()))
    first["kernel"] = np.zeros((3, 3), np.float32)


@pytest.mark.parametrize("edit, message", [
    (lambda st: _drop(st, "stale"), "missing key 'stale'"),
    (lambda st: st.update(epoch=-1), "epoch = -1 is not an integer within 0..4 for this run"),
    (lambda st: st.update(epoch=10 ** 6), "epoch = 1000000 is not an integer within 0..4 for this run"),
    (lambda st: st.update(best_loss=float("nan")), "best_loss = nan is not a number"),
    (_wrong_shape, "params: /dense_0/kernel has shape [3, 3], this run's model needs [17, 8]"),
])
def test_resume_checks_the_checkpoint_against_the_run(mlp_checkpoint, edit, message):
    """Issue 10.8: checkpoints that parse but are wrong gave KeyError/ValueError/flax tracebacks,
    and epoch = 10**6 published an under-trained model."""
    from flax import serialization

    from malsensor.models.errors import TrainError
    from malsensor.models.fit import FitOptions, run_fit

    path, good, opts = mlp_checkpoint
    doc = serialization.msgpack_restore(good)
    edit(doc["state"])
    path.write_bytes(serialization.msgpack_serialize(doc))
    try:
        with pytest.raises(TrainError) as ei:
            run_fit(FitOptions(resume=True, **opts))
        assert str(ei.value).startswith(f"{path}: {message}"), str(ei.value)
        assert not (path.parent.parent / "current").exists()  # nothing was published
    finally:
        path.write_bytes(good)
