"""sd_notify messages of malsensord, received on a real AF_UNIX datagram socket the test binds
(the daemon finds it through NOTIFY_SOCKET, exactly as under systemd): READY after the models
are warm and capture runs, STATUS, WATCHDOG from the health check (and none while a capture
thread is stuck), RELOADING with MONOTONIC_USEC, a rejected reload, STOPPING and a clean exit.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import require_data
from runtime_artifacts import publish

from malsensor.daemon.runtime.notify import Notifier

MALSENSORD = [sys.executable, "-m", "malsensor.daemon.runtime.main"]


class NotifySocket:
    """A bound SOCK_DGRAM socket collecting sd_notify messages in a background thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []  # (CLOCK_MONOTONIC seconds, text)
        self._cond = threading.Condition()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def wait_for(self, pred, timeout: float, start: int = 0) -> int:
        """Index of the first message from ``start`` on that satisfies ``pred``."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.messages)):
                    if pred(self.messages[i][1]):
                        return i
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching sd_notify message in {timeout}s; got "
                                         f"{[m for _, m in self.messages[start:]]}")
                self._cond.wait(left)

    def texts(self, start: int = 0, end: int | None = None) -> list[str]:
        with self._cond:
            return [m for _, m in self.messages[start:end]]

    def close(self) -> None:
        self._stop = True
        self._t.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    publish(d, "m1", "v1", seed=1)
    return d


def config_text(models_dir: Path, logs: Path, capture: Path, *, output: str = "eve.json", extra: str = "",
                stall: float = 20.0, repeat: int = 0) -> str:
    return ('[service]\nuser = ""\nstatus_interval = 0.5\n'
            f'watchdog_stall = {stall}\n[metrics]\nenabled = false\n'
            f'[replay]\nfile = "{capture}"\nrepeat = {repeat}\npause = 0.3\n'
            f'[stats]\npath = "{logs}/stats.jsonl"\ninterval = 1.0\n'
            '[inference]\nbatch_sizes = [1, 64]\n'
            f'[[model]]\nname = "m1"\nmodels_dir = "{models_dir}"\n'
            f'[[output]]\npath = "{logs}/{output}"\n' + extra)


def start_daemon(cfg: Path, notify: Path, watchdog_usec: int | None = 400_000, env_extra=None) -> subprocess.Popen:
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    env.pop("WATCHDOG_PID", None)
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    env.update(env_extra or {})
    return subprocess.Popen([*MALSENSORD, "-c", str(cfg)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lines_of(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), f"{path} ends with a torn line"
    return [json.loads(line) for line in text.splitlines()]


def wait_until(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_notify_ready_watchdog_status_reload_rejected_reload_and_stop(tmp_path, models_dir):
    capture = require_data("pcap/synscan.pcapng")
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "malsensor.toml"
    cfg.write_text(config_text(models_dir, logs, capture))
    ns = NotifySocket(tmp_path / "notify.sock")
    proc = start_daemon(cfg, ns.path)
    try:
        # start-up: STATUS while loading, then READY with the model version and the source
        i_ready = ns.wait_for(lambda m: m.startswith("READY=1"), 120)
        before = ns.texts(0, i_ready)
        assert before == ["STATUS=loading models"]
        ready = ns.texts(i_ready, i_ready + 1)[0].split("\n")
        assert ready[0] == "READY=1"
        assert ready[1].startswith(f"STATUS=replay {capture}:") and ready[1].endswith("models: m1 v1")
        assert len(ready) == 2
        # WATCHDOG=1 from the health check, every 0.2 s (WATCHDOG_USEC / 2)
        t0 = time.monotonic()
        i = i_ready
        for _ in range(4):
            i = ns.wait_for(lambda m: m == "WATCHDOG=1", 2.0, i + 1)
        assert time.monotonic() - t0 < 2.0
        # periodic STATUS with rates
        i = ns.wait_for(lambda m: m.startswith("STATUS=") and "conn/s" in m, 3.0, i_ready + 1)
        st = ns.texts(i, i + 1)[0]
        assert "models: m1 v1" in st and "kernel drops 0" in st and "queue drops 0" in st
        wait_until(lambda: len(lines_of(logs / "eve.json")) > 0, 10, "events in eve.json")

        # a valid change: events go to a new file from now on
        cfg.write_text(config_text(models_dir, logs, capture, output="eve2.json"))
        mark = len(ns.messages)
        t_before = monotonic_usec()
        proc.send_signal(signal.SIGHUP)
        i_rel = ns.wait_for(lambda m: m.startswith("RELOADING=1"), 10, mark)
        t_after = monotonic_usec()
        rel = ns.texts(i_rel, i_rel + 1)[0].split("\n")
        assert rel[0] == "RELOADING=1"
        assert rel[1].startswith("MONOTONIC_USEC=")
        assert t_before <= int(rel[1].split("=")[1]) <= t_after
        assert rel[2] == "STATUS=reloading configuration"
        i_ok = ns.wait_for(lambda m: m.startswith("READY=1"), 30, i_rel)
        assert "models: m1 v1" in ns.texts(i_ok, i_ok + 1)[0]
        n_old = len(lines_of(logs / "eve.json"))
        wait_until(lambda: len(lines_of(logs / "eve2.json")) > 0, 10, "events in eve2.json")
        time.sleep(0.5)
        assert len(lines_of(logs / "eve.json")) == n_old  # the old file no longer grows

        # an invalid change is rejected; the running configuration stays
        cfg.write_text(config_text(models_dir, logs, capture, output="eve3.json").replace("[metrics]\n",
                                                                                          "[metrics]\nbogus = 1\n"))
        mark = len(ns.messages)
        proc.send_signal(signal.SIGHUP)
        i_rel = ns.wait_for(lambda m: m.startswith("RELOADING=1"), 10, mark)
        i_rej = ns.wait_for(lambda m: m.startswith("READY=1"), 30, i_rel)
        rej = ns.texts(i_rej, i_rej + 1)[0].split("\n")
        assert rej[1].startswith(f"STATUS=reload rejected: {cfg}:")
        assert rej[1].endswith("running the previous configuration")
        n2 = len(lines_of(logs / "eve2.json"))
        wait_until(lambda: len(lines_of(logs / "eve2.json")) > n2, 10, "eve2.json still growing")
        assert not (logs / "eve3.json").exists()
        # watchdog keeps coming after the reloads
        ns.wait_for(lambda m: m == "WATCHDOG=1", 2.0, i_rej)

        # SIGTERM: STOPPING=1, then a clean exit with whole lines
        mark = len(ns.messages)
        proc.send_signal(signal.SIGTERM)
        i_stop = ns.wait_for(lambda m: m.startswith("STOPPING=1"), 10, mark)
        assert ns.texts(i_stop, i_stop + 1)[0] == "STOPPING=1\nSTATUS=stopping: draining capture, models and outputs"
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "reload rejected: " in err and "metrics.bogus: unknown key" in err
        events = lines_of(logs / "eve.json") + lines_of(logs / "eve2.json")
        assert all(e["prediction"]["version"] == "v1" for e in events)
        stats = lines_of(logs / "stats.jsonl")
        assert stats[-1]["reloads"] == {"ok": 1, "rejected": 1}
        assert stats[-1]["models"]["m1"]["predictions"] == len(events)
        # no message after STOPPING
        assert all(not m.startswith(("READY", "WATCHDOG")) for m in ns.texts(i_stop + 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        ns.close()


def test_watchdog_withheld_while_capture_thread_is_stuck(tmp_path, models_dir):
    """A capture thread blocked in read(2) (a FIFO nobody writes) fails the health check: no
    WATCHDOG=1 while it is stuck, so systemd restarts the service after WatchdogSec."""
    logs = tmp_path / "logs"
    logs.mkdir()
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    cfg = tmp_path / "malsensor.toml"
    cfg.write_text(config_text(models_dir, logs, fifo, stall=1.0, repeat=1))
    ns = NotifySocket(tmp_path / "notify.sock")
    proc = start_daemon(cfg, ns.path)
    writer_fd = None
    try:
        i_ready = ns.wait_for(lambda m: m.startswith("READY=1"), 120)
        writer_fd = os.open(fifo, os.O_WRONLY)  # the replay thread now blocks reading it
        i_unhealthy = ns.wait_for(lambda m: "UNHEALTHY: capture thread replay made no progress" in m, 10, i_ready)
        t_bad = ns.messages[i_unhealthy][0]
        time.sleep(1.5)
        # no WATCHDOG=1 since the health check failed (give 0.3 s for a ping already in flight)
        late = [t for t, m in ns.messages[i_ready:] if m == "WATCHDOG=1" and t > t_bad]
        assert late == []
        os.close(writer_fd)  # the thread moves again (end of input); the replay ends
        writer_fd = None
        out, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, 1), err  # (a FIFO is not a seekable capture file: rc 1 is fine)
        assert "health check failed: capture thread replay made no progress for" in err
        assert " connections processed (" in out
    finally:
        if writer_fd is not None:
            os.close(writer_fd)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        ns.close()


def test_notifier_messages_and_watchdog_environment(tmp_path, monkeypatch):
    ns = NotifySocket(tmp_path / "n.sock")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(ns.path))
        monkeypatch.setenv("WATCHDOG_USEC", "3000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        n = Notifier()
        assert n.watchdog_interval == 1.5
        assert n.ready("up") and n.status("s") and n.watchdog() and n.stopping()
        t0 = monotonic_usec()
        assert n.reloading()
        t1 = monotonic_usec()
        ns.wait_for(lambda m: m.startswith("RELOADING"), 5)
        got = ns.texts()
        assert got[:4] == ["READY=1\nSTATUS=up", "STATUS=s", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]
        rel = got[4].split("\n")
        assert rel[0] == "RELOADING=1" and rel[2] == "STATUS=reloading configuration"
        assert t0 <= int(rel[1].removeprefix("MONOTONIC_USEC=")) <= t1
        # the watchdog belongs to another process: not enabled here
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
        assert Notifier().watchdog_interval is None
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert Notifier().watchdog_interval == 1.5
        # outside systemd: no-ops
        monkeypatch.delenv("NOTIFY_SOCKET")
        quiet = Notifier()
        assert not quiet.enabled and quiet.ready("x") is False
    finally:
        ns.close()
