"""The real thing: malsensord under systemd, in a minimal Debian booted with systemd-nspawn.

The root filesystem is made once with debootstrap and cached outside the repository
(``$MALSENSOR_TEST_ROOTFS``, default /var/cache/malsensor-test): ``rootfs-base`` (Debian
bookworm minbase + systemd, python3, python3-systemd, libpcap, logrotate), a wheelhouse of
the daemon's dependencies at exactly the versions of this virtual environment, and
``rootfs-prep-<hash>``: the base plus a virtual environment at /opt/malsensor with those
wheels. Each run mounts an overlay on top of the prepared tree (so the cache stays clean),
installs the project's wheel built from this checkout, the unit from contrib/systemd, the
sysusers and logrotate files and the shipped configuration (capturing on ``lo``), and the
default model from contrib/models; it then boots the container (private network) and,
from outside, through nsenter:

* ``systemctl start malsensor`` returns once the daemon sent READY=1, and it is active
  (running) with a STATUS line; events of real traffic on lo are written;
* ``systemctl reload`` applies a configuration change (a new output), an invalid one is
  rejected with the service still running, logrotate's postrotate reload reopens the files;
* a SIGSTOPped daemon is killed by the watchdog and restarted (WatchdogSec=5 in a test
  drop-in; the shipped unit says 30);
* ``systemctl stop`` ends it cleanly (exit 0);
* ``systemd-analyze security`` of the unit is printed (and must stay "OK").
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, _unavailable, require_root, require_tool

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("MALSENSOR_TEST_ROOTFS", "/var/cache/malsensor-test"))
SUITE = "bookworm"
MIRROR = os.environ.get("MALSENSOR_TEST_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,python3-systemd,libpcap0.8,iproute2,procps,logrotate"
DEPENDENCIES = ("numpy", "numba", "llvmlite", "jax", "jaxlib", "ml_dtypes", "opt_einsum", "scipy", "msgpack",
                "flatbuffers", "prometheus_client", "pyroute2", "scapy")
GEN = '''\
"""Test traffic on lo: short TCP connections to a local listener, ten a second."""
import socket, threading, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8080)); srv.listen(64)
def serve():
    while True:
        c, _ = srv.accept(); c.recv(100); c.sendall(b"pong" * 10); c.close()
threading.Thread(target=serve, daemon=True).start()
while True:
    s = socket.create_connection(("127.0.0.1", 8080)); s.sendall(b"ping"); s.recv(100); s.close()
    time.sleep(0.1)
'''


def _host_has_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def _nspawn_base() -> list[str]:
    argv = ["systemd-nspawn", "-q"]
    if not _host_has_systemd():  # no machined / no manager to ask for a scope
        argv += ["--register=no", "--keep-unit"]
    return argv


def _run(argv: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def base_rootfs() -> Path:
    base = CACHE / "rootfs-base"
    if base.is_dir():
        return base
    require_tool("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "rootfs-base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(tmp), MIRROR], timeout=1800)
    tmp.rename(base)
    return base


def wheelhouse() -> tuple[Path, str]:
    pins = sorted(f"{d}=={md.version(d)}" for d in DEPENDENCIES)
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    wh = CACHE / f"wheels-{key}"
    if not wh.is_dir():
        tmp = CACHE / f"wheels-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:", "--no-deps", "-d", str(tmp),
              *pins], timeout=1800)
        tmp.rename(wh)
    return wh, key


def prepared_rootfs() -> Path:
    base = base_rootfs()
    wh, key = wheelhouse()
    prep = CACHE / f"rootfs-prep-{key}"
    if prep.is_dir():
        return prep
    tmp = CACHE / f"rootfs-prep-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["cp", "-a", str(base), str(tmp)])
    Path("/run/systemd/nspawn").mkdir(parents=True, exist_ok=True)
    _run([*_nspawn_base(), "-D", str(tmp), f"--bind-ro={wh}:/wheels", "--pipe", "/bin/sh", "-c",
          "python3 -m venv --system-site-packages /opt/malsensor && "
          "/opt/malsensor/bin/pip install -q --no-index --no-deps /wheels/*.whl"], timeout=1800)
    tmp.rename(prep)
    return prep


def build_wheel(out: Path) -> Path:
    """The project's wheel, built from a copy of this checkout's sources (nothing left behind)."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("malsensor\n")
    for d in ("daemon", "models"):
        shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out / "whl"), str(src)], timeout=600)
    return next((out / "whl").glob("malsensor-*.whl"))


def _comm(proc_dir: Path) -> str:
    try:
        return (proc_dir / "comm").read_text().strip()
    except OSError:
        return ""


class Container:
    """A booted systemd-nspawn container on an overlay of the prepared root filesystem."""

    def __init__(self, lower: Path, work: Path) -> None:
        self.work = work
        self.root = work / "merged"
        for d in ("upper", "ovl-work", "merged"):
            (work / d).mkdir()
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'ovl-work'}", str(self.root)])
        self.proc: subprocess.Popen | None = None
        self.leader = 0

    def boot(self) -> None:
        Path("/run/systemd/nspawn").mkdir(parents=True, exist_ok=True)
        self.console = open(self.work / "console.log", "wb")
        self.proc = subprocess.Popen([*_nspawn_base(), "-b", "-D", str(self.root), "--private-network",
                                      "--console=passive", f"--machine=mstest-{os.getpid()}"],
                                     stdout=self.console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while not self.leader and time.monotonic() < end:
            for st in Path("/proc").glob("[0-9]*/stat"):
                try:
                    f = st.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                # nspawn's child that runs systemd (an intermediate fork of nspawn may
                # still be there: entering that one's namespaces finds no container)
                if int(f[1]) == self.proc.pid and _comm(st.parent) == "systemd":
                    self.leader = int(st.parent.name)
                    break
            time.sleep(0.1)
        assert self.leader, "the container's init did not start: " + (self.work / "console.log").read_text()[-2000:]
        end = time.monotonic() + 120
        state = ""
        while time.monotonic() < end:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise AssertionError(f"container did not finish booting (state {state!r})")

    def sh(self, cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "/bin/sh", "-c", cmd]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"in container: {cmd} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh("systemctl show malsensor " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.sh("journalctl -u malsensor --no-pager -o cat", check=False).stdout

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.leader:
                self.sh("systemctl poweroff", check=False, timeout=30)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(30)
        if getattr(self, "console", None):
            self.console.close()
        subprocess.run(["umount", str(self.root)], check=False)


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def lines(p: Path) -> int:
    try:
        text = p.read_text()
    except FileNotFoundError:
        return 0
    assert text == "" or text.endswith("\n")
    return len(text.splitlines())


@pytest.fixture
def container():
    require_root()
    require_tool("systemd-nspawn")
    require_tool("nsenter")
    if not Path("/proc/filesystems").read_text().count("overlay"):
        _unavailable("overlayfs is not available")
    lower = prepared_rootfs()
    work = Path(tempfile.mkdtemp(prefix="malsensor-nspawn-"))
    c = Container(lower, work)
    try:
        yield c
    finally:
        c.close()
        shutil.rmtree(work, ignore_errors=True)


def test_systemd_start_reload_watchdog_restart_stop(container):
    c = container
    wheel = build_wheel(c.work)
    # -- install: the package, the unit, the user, the configuration, the default model
    c.path("/opt/dist").mkdir()
    shutil.copy2(wheel, c.path("/opt/dist") / wheel.name)
    os.symlink("/opt/malsensor/bin/malsensord", c.path("/usr/bin/malsensord"))
    shutil.copy2(REPO / "contrib/systemd/malsensor.service", c.path("/etc/systemd/system/malsensor.service"))
    shutil.copy2(REPO / "contrib/sysusers.d/malsensor.conf", c.path("/usr/lib/sysusers.d/malsensor.conf"))
    shutil.copy2(REPO / "contrib/logrotate/malsensor", c.path("/etc/logrotate.d/malsensor"))
    cfg_text = (REPO / "etc/malsensor.toml").read_text()
    assert 'name = "default"\n# Capture threads' in cfg_text
    cfg_text = cfg_text.replace('name = "default"\n# Capture threads', 'name = "lo"\n# Capture threads')
    c.path("/etc/malsensor").mkdir()
    c.path("/etc/malsensor/malsensor.toml").write_text(cfg_text)
    c.path("/var/lib/malsensor/models").mkdir(parents=True)
    shutil.copytree(REPO / "contrib/models/default", c.path("/var/lib/malsensor/models/default"), symlinks=True)
    c.path("/srv/gen.py").parent.mkdir(exist_ok=True)
    c.path("/srv/gen.py").write_text(GEN)
    dropin = c.path("/etc/systemd/system/malsensor.service.d")
    dropin.mkdir(parents=True)
    (dropin / "test.conf").write_text("[Service]\nWatchdogSec=5\nRestartSec=1\n")
    c.boot()
    c.sh(f"/opt/malsensor/bin/pip install -q --no-index --no-deps /opt/dist/{wheel.name}")
    c.sh("systemd-sysusers && systemctl daemon-reload")
    security = c.sh("systemd-analyze security malsensor --no-pager", check=False).stdout
    m = re.search(r"Overall exposure level for malsensor.service: ([0-9.]+) (\w+)", security)
    assert m, security
    print(f"\nsystemd-analyze security malsensor.service: {m.group(1)} {m.group(2)}")
    assert m.group(2) == "OK" and float(m.group(1)) <= 2.5

    # -- start: returns after READY=1 (Type=notify)
    c.sh("systemd-run --unit=gen --quiet python3 /srv/gen.py")
    t0 = time.monotonic()
    c.sh("systemctl start malsensor")
    started_s = time.monotonic() - t0
    st = c.show("ActiveState", "SubState", "StatusText", "MainPID", "User")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running"), c.journal()
    assert st["StatusText"].startswith("capturing on lo:") and "models: default " in st["StatusText"]
    j = c.journal()
    assert j.index("malsensord ready: capturing on lo") < j.index("Started malsensor.service")
    pid = int(st["MainPID"])
    status = c.sh(f"grep -E '^(Uid|CapEff|CapBnd|CapAmb)' /proc/{pid}/status").stdout
    uid = c.sh("id -u malsensor").stdout.strip()
    assert re.search(rf"^Uid:\s+{uid}\s", status, re.M)
    assert re.search(r"^CapEff:\s+0000000000003000$", status, re.M), status  # CAP_NET_RAW + CAP_NET_ADMIN only
    assert re.search(r"^CapBnd:\s+0000000000003000$", status, re.M), status
    eve = c.path("/var/log/malsensor/eve.json")
    wait_for(lambda: lines(eve) > 5, 60, "events of the test traffic")
    first = eve.read_text().splitlines()[0]
    assert '"event_type":"prediction"' in first and '"dest_port":8080' in first

    # -- reload: a new output appears
    cfg = c.path("/etc/malsensor/malsensor.toml")
    cfg.write_text(cfg_text + '\n[[output]]\npath = "/var/log/malsensor/labels.jsonl"\nformat = "label"\n')
    c.sh("systemctl reload malsensor")
    labels = c.path("/var/log/malsensor/labels.jsonl")
    wait_for(lambda: lines(labels) > 3, 30, "the output added by the reload")
    assert "configuration reloaded" in c.journal()
    # an invalid configuration is rejected, the service runs on
    cfg.write_text(cfg.read_text() + "\n[metrics]\nbogus = 1\n")
    c.sh("systemctl reload malsensor")
    wait_for(lambda: "configuration reload rejected" in c.journal(), 30, "the rejection")
    assert c.show("ActiveState")["ActiveState"] == "active"
    n = lines(labels)
    wait_for(lambda: lines(labels) > n, 30, "events after the rejected reload")
    cfg.write_text(cfg_text + '\n[[output]]\npath = "/var/log/malsensor/labels.jsonl"\nformat = "label"\n')
    # logrotate: files moved away, postrotate reloads, new files are written
    c.sh("logrotate -f /etc/logrotate.d/malsensor")
    rotated = sorted(p.name for p in c.path("/var/log/malsensor").iterdir())
    assert any(name.startswith("eve.json-") for name in rotated), rotated
    wait_for(lambda: lines(eve) > 0, 30, "events in the new eve.json after logrotate")

    # -- watchdog: a stopped (SIGSTOP) daemon is killed and restarted
    c.sh(f"kill -STOP {pid}")
    wait_for(lambda: c.show("NRestarts")["NRestarts"] == "1", 60, "the watchdog restart")
    wait_for(lambda: c.show("ActiveState", "SubState") == {"ActiveState": "active", "SubState": "running"}, 120,
             "the restarted service to be ready")
    assert int(c.show("MainPID")["MainPID"]) != pid
    assert "Failed with result 'watchdog'" in c.journal()

    # -- stop: clean exit
    c.sh("systemctl stop malsensor")
    st = c.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("inactive", "success", "0"), st
    assert re.search(r"stopped: \d+ connections, \d+ events written", c.journal())
    print(f"start (READY) {started_s:.1f}s")
