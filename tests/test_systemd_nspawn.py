"""The real thing: the Debian package, installed and run under systemd in a booted container.

The root filesystem is a minimal Debian bookworm made once with debootstrap and cached
outside the repository (``$MALSENSOR_TEST_ROOTFS``, default /var/cache/malsensor-test):
systemd, dbus, python3 (for the traffic generator), iproute2, procps - none of the
package's own dependencies, so apt must resolve them. No mirror is named here: debootstrap
uses the host's Debian mirror (from its apt sources), and the container gets the host's
apt configuration (sources lists, the keyrings they name, proxy settings), so the test
runs wherever the host's apt-get works.

Each run builds the package with ``make deb`` (or takes ``$MALSENSOR_TEST_DEB``), mounts
an overlay on the cached tree (which stays clean), lets apt download the package's
dependencies into the container's cache (host network, container not booted), boots the
container with a private network and, from outside, through nsenter:

* ``apt-get install ./malsensor_*.deb``: the user, the directories, the default model
  published under /var/lib/malsensor/models/default, the unit enabled and started (it
  fails here, as it should: the private network has no default route to capture on);
* with the conffile changed to capture on ``lo``, ``systemctl start malsensor`` returns
  once the daemon sent READY=1, and it is active (running) with a STATUS line; events of
  real traffic on lo, classified by the default model, are written;
* ``systemctl reload`` applies a configuration change (a new output), an invalid one is
  rejected with the service still running, logrotate's postrotate reload reopens the files;
* a SIGSTOPped daemon is killed by the watchdog and restarted (WatchdogSec=5 in a test
  drop-in; the shipped unit says 30);
* ``systemctl stop`` ends it cleanly (exit 0);
* ``apt-get remove`` removes the program and the unit and keeps the configuration, the
  events and the models; ``apt-get purge`` deletes them;
* ``systemd-analyze security`` of the unit is printed (and must stay "OK").
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, _unavailable, require_root, require_tool

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("MALSENSOR_TEST_ROOTFS", "/var/cache/malsensor-test"))
SUITE = "bookworm"
PACKAGES = "systemd,systemd-sysv,dbus,python3,iproute2,procps"
APT_ENV = "DEBIAN_FRONTEND=noninteractive"
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


def host_apt_sources() -> list[Path]:
    """The host's apt source files, as apt reads them."""
    files = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    files += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    return [f for f in files if f.is_file()]


def _source_entries(path: Path) -> list[dict[str, list[str]]]:
    """(types, uris, suites, signed-by) of each entry of a one-line or deb822 sources file."""
    text = path.read_text(errors="replace")
    entries = []
    if path.suffix == ".sources":
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, list[str]] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
            if fields.get("enabled", ["yes"])[0].lower() != "no":
                entries.append(fields)
        return entries
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"(deb(?:-src)?)\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)", line)
        if m:
            opts = dict(o.split("=", 1) for o in (m.group(2) or "").split() if "=" in o)
            entries.append({"types": [m.group(1)], "uris": [m.group(3)], "suites": [m.group(4)],
                            "signed-by": opts.get("signed-by", "").split(",") if opts.get("signed-by") else []})
    return entries


def host_debian_mirror() -> str:
    """The host's mirror of Debian SUITE (debootstrap needs one URL; apt then uses them all)."""
    for f in host_apt_sources():
        for e in _source_entries(f):
            if "deb" in e.get("types", []) and SUITE in e.get("suites", []) and e.get("uris"):
                return e["uris"][0]
    _unavailable(f"the host's apt sources ({', '.join(map(str, host_apt_sources())) or 'none'}) "
                 f"name no mirror of Debian {SUITE}")
    raise AssertionError("unreachable")


def host_apt_proxy_conf() -> str:
    """The host's apt proxy settings (and the date checks a snapshot mirror needs), as apt.conf."""
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True).stdout
    keep = re.compile(r"^Acquire::((https?|ftp)::Proxy\S*|Check-Valid-Until|Check-Date) ", re.I)
    return "".join(line + "\n" for line in dump.splitlines() if keep.match(line))


def _proxy_env(conf: str) -> dict[str, str]:
    """debootstrap fetches with wget, which reads http_proxy, not apt's configuration."""
    env = dict(os.environ)
    m = re.search(r'^Acquire::http::Proxy "([^"]+)";', conf, re.M | re.I)
    if m and m.group(1).upper() != "DIRECT" and "http_proxy" not in env:
        env["http_proxy"] = m.group(1)
    return env


def install_host_apt_config(root: Path, proxy_conf: str) -> None:
    """The host's sources lists, the keyrings they name, and its proxy settings, into root."""
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list").write_text("")  # debootstrap's own line: the host's lists replace it
    for f in host_apt_sources():
        shutil.copy2(f, root / f.relative_to("/"))
        for e in _source_entries(f):
            for key in e.get("signed-by", []):
                if key.startswith("/") and Path(key).is_file() and not (root / key.lstrip("/")).exists():
                    (root / key.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(key, root / key.lstrip("/"))
    (root / "etc/apt/apt.conf.d/90host-proxy").write_text(proxy_conf)


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
    proxy_conf = host_apt_proxy_conf()
    mirror = host_debian_mirror()
    sources = "".join(f.read_text(errors="replace") for f in host_apt_sources())
    key = hashlib.sha256("\n".join([PACKAGES, mirror, sources, proxy_conf]).encode()).hexdigest()[:12]
    base = CACHE / f"rootfs-{SUITE}-{key}"
    if base.is_dir():
        return base
    require_tool("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"rootfs-{SUITE}-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(tmp), mirror], timeout=1800,
         env=_proxy_env(proxy_conf))
    install_host_apt_config(tmp, proxy_conf)
    tmp.rename(base)
    return base


def package() -> Path:
    """The package under test: $MALSENSOR_TEST_DEB, or `make deb` of this checkout."""
    if os.environ.get("MALSENSOR_TEST_DEB"):
        return Path(os.environ["MALSENSOR_TEST_DEB"]).resolve()
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        require_tool(tool)
    for old in REPO.glob("malsensor_*.deb"):
        old.unlink()
    _run(["make", "-C", str(REPO), "deb"], timeout=1800)
    debs = sorted(REPO.glob("malsensor_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


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
    lower = base_rootfs()
    work = Path(tempfile.mkdtemp(prefix="malsensor-nspawn-"))
    c = Container(lower, work)
    try:
        yield c
    finally:
        c.close()
        shutil.rmtree(work, ignore_errors=True)


def test_package_install_start_reload_watchdog_stop_remove_purge(container):
    c = container
    deb = package()
    # -- the package's dependencies into the container's apt cache, through the host's
    # network and the host's apt configuration (the booted container has no network)
    shutil.copy2(deb, c.path("/root") / deb.name)
    Path("/run/systemd/nspawn").mkdir(parents=True, exist_ok=True)
    _run([*_nspawn_base(), "-D", str(c.root), "--pipe", "/bin/sh", "-c",
          f"export {APT_ENV}; apt-get update -q && apt-get install -q -y --download-only /root/{deb.name}"],
         timeout=1800)
    c.path("/srv/gen.py").parent.mkdir(exist_ok=True)
    c.path("/srv/gen.py").write_text(GEN)
    c.boot()

    # -- install
    t0 = time.monotonic()
    c.sh(f"cd /root && {APT_ENV} apt-get install -q -y ./{deb.name}", timeout=900)
    install_s = time.monotonic() - t0
    assert c.sh("systemctl is-enabled malsensor").stdout.strip() == "enabled"
    # the postinst started it; with no default route in the private network it cannot capture
    assert 'interface "default": this host has no default route' in c.journal()
    assert c.sh("id -un malsensor").stdout.strip() == "malsensor"
    assert c.sh("readlink -f /usr/bin/malsensord").stdout.strip() == "/opt/malsensor/bin/malsensord"
    assert c.path("/opt/malsensor/bin/malsensord").read_text().startswith("#!/opt/malsensor/bin/python3\n")
    assert not c.path("/opt/malsensor/bin/malsensor-train").exists()  # no training extras
    conffiles = c.sh("dpkg-query -W -f='${Conffiles}' malsensor").stdout
    assert "/etc/malsensor/malsensor.toml" in conffiles and "/etc/logrotate.d/malsensor" in conffiles
    shipped = os.readlink(REPO / "contrib/models/default/current")
    assert os.readlink(c.path("/var/lib/malsensor/models/default/current")) == shipped
    for name in os.listdir(REPO / "contrib/models/default" / shipped):
        assert (c.path(f"/var/lib/malsensor/models/default/{shipped}/{name}").read_bytes()
                == (REPO / "contrib/models/default" / shipped / name).read_bytes()), name
    owners = c.sh("stat -c '%n %U %a' /var/lib/malsensor /var/lib/malsensor/models /var/log/malsensor "
                  "/var/cache/malsensor").stdout.split("\n")
    assert owners[:4] == ["/var/lib/malsensor malsensor 750", "/var/lib/malsensor/models root 755",
                          "/var/log/malsensor malsensor 750", "/var/cache/malsensor malsensor 750"], owners
    c.sh("systemctl stop malsensor; systemctl reset-failed malsensor", check=False)

    # -- configure: capture on lo (the conffile), the test's watchdog drop-in
    cfg = c.path("/etc/malsensor/malsensor.toml")
    shipped_cfg = cfg.read_text()
    assert shipped_cfg == (REPO / "etc/malsensor.toml").read_text()
    assert 'name = "default"\n# Capture threads' in shipped_cfg
    cfg_text = shipped_cfg.replace('name = "default"\n# Capture threads', 'name = "lo"\n# Capture threads')
    cfg.write_text(cfg_text)
    dropin = c.path("/etc/systemd/system/malsensor.service.d")
    dropin.mkdir(parents=True)
    (dropin / "test.conf").write_text("[Service]\nWatchdogSec=5\nRestartSec=1\n")
    c.sh("systemctl daemon-reload")
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
    assert j.rindex("malsensord ready: capturing on lo") < j.rindex("Started malsensor.service")
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
    assert f'"model":"default","version":"{shipped}"' in first, first

    # -- reload: a new output appears
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
    # logrotate (installed as the package's Recommends): files moved away, postrotate
    # reloads, new files are written
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
    c.sh("systemctl start malsensor")  # running again: remove must stop it

    # -- remove: the program and the unit go, configuration and data stay
    c.sh(f"{APT_ENV} apt-get remove -q -y malsensor", timeout=600)
    assert c.show("ActiveState")["ActiveState"] == "inactive"
    for gone in ("/opt/malsensor", "/usr/bin/malsensord", "/usr/bin/malsensor", "/lib/systemd/system/malsensor.service",
                 "/usr/share/malsensor"):
        assert not os.path.lexists(c.path(gone)), gone
    # as Debian's helpers do: the enablement stays until purge (a reinstall restores it)
    for kept in ("/etc/malsensor/malsensor.toml", "/etc/logrotate.d/malsensor", "/var/log/malsensor/eve.json",
                 f"/var/lib/malsensor/models/default/{shipped}/model.jax", "/var/lib/malsensor/models/default/current"):
        assert c.path(kept).exists(), kept
    assert lines(labels) > 0

    # -- purge: configuration and data go
    c.sh(f"{APT_ENV} apt-get purge -q -y malsensor", timeout=600)
    for gone in ("/etc/malsensor", "/etc/logrotate.d/malsensor", "/var/lib/malsensor", "/var/log/malsensor",
                 "/var/cache/malsensor", "/etc/systemd/system/multi-user.target.wants/malsensor.service"):
        assert not os.path.lexists(c.path(gone)), gone
    assert c.sh("dpkg-query -W -f='${db:Status-Status}' malsensor", check=False).stdout.strip() in ("", "not-installed")
    print(f"apt-get install {install_s:.1f}s, start (READY) {started_s:.1f}s")
