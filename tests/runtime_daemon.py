"""Running malsensord as a subprocess in tests: stderr collected live, log lines awaited,
the metrics endpoint read, whole-line JSONL files parsed; a capture replayed through a model
and the events read, next to the rows the trainer's reader builds from the same capture."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MALSENSORD = [sys.executable, "-m", "malsensor.daemon.runtime.main"]


class Daemon:
    def __init__(self, cfg: Path, *args: str, env: dict | None = None, prefix: list[str] | None = None) -> None:
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.update(env or {})
        self.proc = subprocess.Popen([*(prefix or []), *MALSENSORD, "-c", str(cfg), *args], env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.out = ""
        self._cond = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_log(self, pattern: str, timeout: float = 60.0, start: int = 0) -> re.Match:
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._t.is_alive()):
                    raise AssertionError(f"no log line matching {pattern!r} in {timeout}s; log:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def metrics_port(self) -> int:
        return int(self.wait_log(r"metrics on http://[^:]+:(\d+)/metrics").group(1))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port()}/metrics", timeout=10) as r:
            return r.read().decode()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        # stdout only: stderr belongs to the reader thread (communicate() would race it for lines)
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.read()), daemon=True)
        reader.start()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            reader.join(10)
            self._t.join(10)
        self.out = box[0] if box else ""
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def jsonl(path: Path) -> list:
    """Every line of a JSONL file, asserting that none is torn.

    The daemon may be writing while the test reads, and a read can see part of a
    write in progress: a line still unfinished after a second is torn."""
    deadline = time.monotonic() + 1.0
    while True:
        text = path.read_text() if path.exists() else ""
        if text == "" or text.endswith("\n") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert text == "" or text.endswith("\n"), f"{path} ends with a torn line"
    return [json.loads(line) for line in text.splitlines()]


def last_jsonl(path: Path, tail: int = 1 << 16) -> dict | None:
    """The last complete line of a JSONL file, reading only its tail: a daemon replaying
    forever writes ~10,000 events/s, and parsing the whole file in a polling loop took
    longer than the loop's timeout (a CI failure)."""
    if not path.exists():
        return None
    with path.open("rb") as f:
        start = f.seek(max(0, f.seek(0, 2) - tail))
        lines = f.read().split(b"\n")
    complete = [line for line in lines[(1 if start else 0):-1] if line.strip()]  # a cut first, unfinished last
    return json.loads(complete[-1]) if complete else None


def metric(text: str, name: str, **labels: str) -> float | None:
    """Value of one sample in Prometheus text format (labels in any order)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?", head)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == labels:
            return float(value)
    return None


def wait_until(pred, timeout: float, what: str, interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Replayed:
    """A finished ``malsensord --replay``: the process, its events and its logs folder
    (``eve.json``, ``stats.jsonl``)."""

    proc: subprocess.CompletedProcess
    events: list[dict]
    logs: Path


def replay(tmp_path: Path, capture: Path, models: str, *, tracking: str = "", batch_sizes: tuple = (1, 16, 256),
           timeout: float = 300) -> Replayed:
    """``malsensord --replay CAPTURE`` serving the ``[[model]]`` tables ``models`` (TOML text;
    ``tracking``: a ``[tracking]`` table), metrics off, stats and events under ``tmp_path/logs``;
    asserts that it exits 0."""
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "m.toml"
    cfg.write_text('[service]\nuser = ""\n[metrics]\nenabled = false\n' + tracking
                   + f'[stats]\npath = "{logs}/stats.jsonl"\n'
                   + f'[inference]\nbatch_sizes = {list(batch_sizes)}\n'
                   + models
                   + f'[[output]]\npath = "{logs}/eve.json"\n')
    r = subprocess.run([*MALSENSORD, "-c", str(cfg), "--replay", str(capture)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return Replayed(r, jsonl(logs / "eve.json"), logs)


def trainer_part(view, capture: Path, **data_options):
    """The rows the view's own reader builds from ``capture`` (as ``malsensor-train fit`` reads
    it; ``data_options``: :class:`DataOptions` fields, e.g. ``semantics="argus"``)."""
    from malsensor.models.data.load import DataOptions, view_reader
    from malsensor.models.data.table import DataStats

    reader = view_reader(view)
    return reader.read(capture, reader.file_type(capture), view, DataOptions(**data_options), DataStats())
