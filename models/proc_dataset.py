"""``malsensor-train dataset-proc``: a labelled proc_volume@1 dataset this machine can produce.

Harmless workloads run in a scratch directory, each in its own process group (killed, and
the scratch directory removed, whatever happens), while ``record-proc``'s recorder samples
/proc. Every run of a behaviour runs with a background of two other benign workloads, so a
window is not labelled by the mere presence of a process name.

Benign: ``compile`` (byte-compiles generated modules), ``compress`` (zlib over generated
data), ``web`` (an HTTP server and a client on loopback), ``churn`` (package-style file
creation, renaming, deletion), ``idle``. Malware-like: ``miner`` (a SHA-256 loop), ``ransom``
(reads files of the scratch directory, XORs them into ``*.locked`` copies, deletes the
originals), ``spawn`` (short-lived processes in a burst), ``portscan`` (TCP connects to
loopback ports), ``upload`` (bulk data to a loopback listener).

Labels: ``benign`` / ``malicious`` (default) or the behaviour's name (``--by-behaviour``).

Scope (``--scope cgroup``, the default): each recording's three workloads run in a cgroup v2 of
their own (proc_cgroup.py) and the recorder samples that cgroup only, as a daemon configured
with ``[[source]] cgroup = ...`` samples the unit it monitors: a volume holds the recording's
processes and nothing else of the machine. ``--scope machine`` records every process of the
machine (the label is then only in the rows the workloads win under the row rule).
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import TrainError
from .proc_cgroup import PREFIX, WorkCgroup, remove_stale, writable_parent
from .record_proc import RecordOptions, record

log = logging.getLogger("malsensor.train")

_COMMON = "import os, sys, time, socket, hashlib, zlib, random, threading\nD = sys.argv[1]\n"
WORKLOADS: dict[str, tuple[bool, str]] = {   # name -> (malicious, Python code run with the scratch dir)
    "compile": (False, """
import py_compile
for i in range(200):
    with open(os.path.join(D, f"m{i}.py"), "w") as f:
        f.write("".join(f"def f{j}(x):\\n    return x * {j} + {i}\\n" for j in range(200)))
while True:
    for i in range(200):
        py_compile.compile(os.path.join(D, f"m{i}.py"), cfile=os.path.join(D, f"m{i}.pyc"))
    time.sleep(0.2)
"""),
    "compress": (False, """
data = bytes(random.Random(0).getrandbits(8) for _ in range(1 << 16)) * 64
while True:
    with open(os.path.join(D, "out.z"), "wb") as f:
        f.write(zlib.compress(data, 6))
    time.sleep(0.3)
"""),
    "web": (False, """
import http.server, urllib.request
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k): super().__init__(*a, directory=D, **k)
    def log_message(self, *a): pass
with open(os.path.join(D, "index.html"), "w") as f: f.write("x" * 20000)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{srv.server_address[1]}/index.html"
while True:
    urllib.request.urlopen(url).read()
    time.sleep(0.05)
"""),
    "churn": (False, """
n = 0
while True:
    pkg = os.path.join(D, f"pkg{n % 5}")
    os.makedirs(pkg, exist_ok=True)
    for i in range(50):
        p = os.path.join(pkg, f"f{i}.tmp")
        with open(p, "wb") as f: f.write(os.urandom(4096))
        os.replace(p, p[:-4])
    for i in range(50):
        os.unlink(os.path.join(pkg, f"f{i}"))
    n += 1
    time.sleep(0.1)
"""),
    "idle": (False, "while True: time.sleep(1)\n"),
    "miner": (True, """
x = b"nonce"
while True:
    x = hashlib.sha256(x).digest()
"""),
    "ransom": (True, """
key = bytes(range(256))
while True:
    for i in range(100):
        with open(os.path.join(D, f"doc{i}.txt"), "wb") as f: f.write(os.urandom(16384))
    for i in range(100):
        p = os.path.join(D, f"doc{i}.txt")
        with open(p, "rb") as f: b = f.read()
        with open(p + ".locked", "wb") as f: f.write(bytes(c ^ key[j & 255] for j, c in enumerate(b[:4096])) + b[4096:])
        os.unlink(p)
    for name in os.listdir(D):
        if name.endswith(".locked"): os.unlink(os.path.join(D, name))
"""),
    "spawn": (True, """
import subprocess
while True:
    ps = [subprocess.Popen(["sleep", "0.2"]) for _ in range(20)]
    for p in ps: p.wait()
"""),
    "portscan": (True, """
port = 1
while True:
    s = socket.socket(); s.settimeout(0.05)
    try: s.connect(("127.0.0.1", port))
    except OSError: pass
    finally: s.close()
    port = port % 65535 + 1
"""),
    "upload": (True, """
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen()
def sink():
    c, _ = ls.accept()
    while c.recv(1 << 16): pass
threading.Thread(target=sink, daemon=True).start()
c = socket.create_connection(ls.getsockname())
block = os.urandom(1 << 16)
while True:
    c.sendall(block)
"""),
}
BENIGN = [k for k, (bad, _) in WORKLOADS.items() if not bad]


@contextmanager
def workload(name: str, scratch: Path, cgroup: WorkCgroup | None = None):
    """Runs one workload in its own process group and scratch folder (and in ``cgroup``, joined
    before exec); kills the group and removes the folder on the way out, whatever happened."""
    d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    p = subprocess.Popen([sys.executable, "-c", _COMMON + WORKLOADS[name][1], str(d)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=cgroup.join if cgroup is not None else None)
    try:
        yield p
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class DatasetOptions:
    out: Path
    runs: int = 3
    duration: float = 60.0
    interval: float = 1.0
    steps: int = 8
    processes: int = 120
    by_behaviour: bool = False
    behaviours: tuple[str, ...] = tuple(WORKLOADS)
    scratch: Path | None = None
    seed: int = 0
    scope: str = "cgroup"              # "cgroup": each recording's workloads in a cgroup of their own,
    #                                    recorded alone; "machine": every process of the machine
    cgroup_parent: Path | None = None  # where those cgroups are made (default: the cgroup v2 mount)


@contextmanager
def recording_cgroup(parent: Path | None, name: str):
    """A cgroup for one recording's workloads (None without one), killed and removed on the way out."""
    if parent is None:
        yield None
        return
    cg = WorkCgroup.make(parent / name)
    try:
        yield cg
    finally:
        cg.remove()


def make_dataset(o: DatasetOptions) -> list[tuple[str, int, Path | None, int]]:
    """(behaviour, run, shard, volumes) of every recording."""
    unknown = set(o.behaviours) - set(WORKLOADS)
    if unknown:
        raise TrainError(f"dataset-proc: unknown behaviour(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(WORKLOADS)})")
    if o.scope not in ("cgroup", "machine"):
        raise TrainError(f"dataset-proc: --scope {o.scope!r}: expected cgroup or machine")
    rng = random.Random(o.seed)
    out = []
    top = None
    parent = writable_parent(o.cgroup_parent) if o.scope == "cgroup" else None
    base = Path(tempfile.mkdtemp(prefix="malsensor-proc-", dir=o.scratch))
    old_term = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if parent is not None:
            remove_stale(parent)
            top = WorkCgroup.make(parent / f"{PREFIX}{os.getpid()}")
            log.info("dataset-proc: each recording's workloads in a cgroup under %s, recorded alone", top.path)
        total = o.runs * len(o.behaviours)
        for run in range(o.runs):
            for name in o.behaviours:
                bad = WORKLOADS[name][0]
                label = name if o.by_behaviour else ("malicious" if bad else "benign")
                background = rng.sample([b for b in BENIGN if b != name], 2)
                log.info("dataset-proc: %d/%d: %s (run %d) over %s, label %s", len(out) + 1, total, name, run,
                         "+".join(background), label)
                with recording_cgroup(top.path if top else None, f"{len(out)}-{name}") as cg, \
                        workload(background[0], base, cg), workload(background[1], base, cg), \
                        workload(name, base, cg):
                    time.sleep(min(1.0, o.interval))
                    path, n = record(RecordOptions(label, o.duration, o.out, o.interval, o.steps, o.processes,
                                                   cgroup=str(cg.path) if cg else ""))
                out.append((name, run, path, n))
    finally:
        signal.signal(signal.SIGTERM, old_term)
        try:
            if top is not None:
                top.remove()
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return out
