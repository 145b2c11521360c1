"""Private network namespaces and a veth pair for live-capture tests and benchmarks.

``VethPair`` creates two namespaces of its own and one veth pair between them:

    [ns "<prefix>-src-<id>"]  peer  <==== veth ====>  host  [ns "<prefix>-cap-<id>"]

Traffic is injected on ``peer`` from inside the source namespace (tcpreplay, a raw
socket) and captured on ``host`` inside the capture namespace. Nothing touches the
machine's own namespace: its routes, services and uplinks never see test packets.
IPv6 is disabled on both ends and no address is configured, so the kernel itself
sends nothing (no router solicitations, no ARP): every frame on the wire is one the
test sent.

Everything is removed on exit, also when the body raises or setup fails half way:
processes started through :meth:`VethPair.popen` are killed, the link is deleted and
both namespaces are removed. Names are unique per instance (random suffix), so
tests can run concurrently.

Use in a test::

    from netns import veth_pair            # tests/ is on sys.path under pytest

    def test_x(veth):                       # fixture, or: with VethPair() as v:
        with veth.capture_side():           # this thread (and threads it starts) now
            ...                             # live in the capture namespace
        veth.replay(pcap_path)              # tcpreplay from the source namespace

It also runs as a script (used by :meth:`VethPair.send_frames` inside the source
namespace): ``python tests/netns.py send IFNAME FILE`` sends each frame of a
length-prefixed frame file through a raw AF_PACKET socket.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move the calling thread into namespace ``name`` for the duration of the block.

    A network namespace belongs to a thread: threads started inside the block stay in
    ``name`` for their whole life; sockets keep the namespace they were created in.
    """
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_RUN_DIR / name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(back)


def _sysctl(ns: str, *settings: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", *settings], check=True,
                   stdout=subprocess.DEVNULL)


@dataclass
class VethPair:
    """Two private namespaces joined by a veth pair (see the module docstring)."""

    prefix: str = "mstest"
    mtu: int = 1500
    offloads: bool = False
    """Leave GRO/TSO/GSO on (True) or switch them off on both ends (False, the default:
    one frame on the wire = one packet in the ring)."""
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    src_ns: str = ""
    cap_ns: str = ""
    host: str = ""
    peer: str = ""
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory | None = None

    def __post_init__(self) -> None:
        self.src_ns = self.src_ns or f"{self.prefix}-src-{self.tag}"
        self.cap_ns = self.cap_ns or f"{self.prefix}-cap-{self.tag}"
        self.host = self.host or f"msh{self.tag}"  # <= 15 chars (IFNAMSIZ)
        self.peer = self.peer or f"msp{self.tag}"

    # -- set-up / tear-down ------------------------------------------------------------------
    def __enter__(self) -> "VethPair":
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _setup(self) -> None:
        from pyroute2 import IPRoute, netns

        for ns in (self.cap_ns, self.src_ns):
            netns.create(ns)
            _sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        with in_netns(self.cap_ns):
            with IPRoute() as ipr:
                ipr.link("add", ifname=self.host, kind="veth", mtu=self.mtu,
                         peer={"ifname": self.peer, "net_ns_fd": self.src_ns, "mtu": self.mtu})
                idx = ipr.link_lookup(ifname=self.host)[0]
                ipr.link("set", index=idx, state="up")
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
        with in_netns(self.src_ns):
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=self.peer)[0]
                ipr.link("set", index=idx, state="up")
        if not self.offloads:
            for ns, ifname in ((self.cap_ns, self.host), (self.src_ns, self.peer)):
                set_offloads(ns, ifname, False)
        self.wait_carrier()

    def close(self) -> None:
        """Kill started processes, delete the veth pair, remove both namespaces (idempotent)."""
        from pyroute2 import netns

        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
        self._procs.clear()
        existing = set(netns.listnetns())
        # Removing a namespace destroys the veth end inside it, and with it the pair.
        for ns in (self.src_ns, self.cap_ns):
            if ns in existing:
                with contextlib.suppress(Exception):
                    self._kill_ns_pids(ns)
                with contextlib.suppress(Exception):
                    netns.remove(ns)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @staticmethod
    def _kill_ns_pids(ns: str) -> None:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def tmpdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.prefix}-{self.tag}-")
        return Path(self._tmp.name)

    def capture_side(self) -> contextlib.AbstractContextManager[None]:
        """Run the calling thread inside the capture namespace (where ``host`` lives)."""
        return in_netns(self.cap_ns)

    def source_side(self) -> contextlib.AbstractContextManager[None]:
        return in_netns(self.src_ns)

    def ns_cmd(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run_src(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("check", True)
        kw.setdefault("capture_output", True)
        return subprocess.run(self.ns_cmd(self.src_ns, argv), **kw)

    def run_cap(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("check", True)
        kw.setdefault("capture_output", True)
        return subprocess.run(self.ns_cmd(self.cap_ns, argv), **kw)

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process in ``ns``; it is killed on close()."""
        p = subprocess.Popen(self.ns_cmd(ns, argv), **kw)
        self._procs.append(p)
        return p

    def replay(self, pcap: str | os.PathLike, *extra: str) -> subprocess.CompletedProcess:
        """tcpreplay ``pcap`` out of ``peer`` (default: at the recorded speed unless extra
        options say otherwise, e.g. ``--topspeed``, ``--pps=N``, ``--multiplier=X``)."""
        return self.run_src(["tcpreplay", "-q", "-i", self.peer, *extra, str(pcap)])

    def send_frames(self, frames: Iterable[bytes], gap_us: int = 0) -> int:
        """Send raw Ethernet frames out of ``peer`` with an AF_PACKET socket; returns count."""
        path = self.tmpdir / f"frames-{secrets.token_hex(4)}.bin"
        n = write_frames(path, frames)
        self.run_src([sys.executable, str(Path(__file__).resolve()), "send", self.peer, str(path),
                      str(gap_us)])
        return n

    def link(self, state: str) -> None:
        """Set ``host`` up or down (from the capture namespace)."""
        from pyroute2 import IPRoute

        with in_netns(self.cap_ns), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=self.host)[0], state=state)

    def host_index(self) -> int:
        from pyroute2 import IPRoute

        with in_netns(self.cap_ns), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.host)
            return found[0] if found else 0

    def delete_link(self) -> None:
        from pyroute2 import IPRoute

        with in_netns(self.cap_ns), IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=self.host)[0])

    def recreate_link(self) -> None:
        """Create the pair again (same names; ``host`` gets a new ifindex)."""
        from pyroute2 import IPRoute

        with in_netns(self.cap_ns), IPRoute() as ipr:
            ipr.link("add", ifname=self.host, kind="veth", mtu=self.mtu,
                     peer={"ifname": self.peer, "net_ns_fd": self.src_ns, "mtu": self.mtu})
            ipr.link("set", index=ipr.link_lookup(ifname=self.host)[0], state="up")
        with in_netns(self.src_ns), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=self.peer)[0], state="up")
        self.wait_carrier()

    def add_pair(self, suffix: str) -> tuple[str, str]:
        """Another veth pair between the same two namespaces (gone with them on close):
        returns (host name, peer name)."""
        from pyroute2 import IPRoute

        host, peer = f"msh{self.tag}{suffix}", f"msp{self.tag}{suffix}"
        with in_netns(self.cap_ns), IPRoute() as ipr:
            ipr.link("add", ifname=host, kind="veth", mtu=self.mtu,
                     peer={"ifname": peer, "net_ns_fd": self.src_ns, "mtu": self.mtu})
            ipr.link("set", index=ipr.link_lookup(ifname=host)[0], state="up")
        with in_netns(self.src_ns), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], state="up")
        if not self.offloads:
            set_offloads(self.cap_ns, host, False)
            set_offloads(self.src_ns, peer, False)
        return host, peer

    def send_frames_on(self, ifname: str, frames: Iterable[bytes]) -> int:
        """Like send_frames, out of another interface of the source namespace."""
        path = self.tmpdir / f"frames-{secrets.token_hex(4)}.bin"
        n = write_frames(path, frames)
        self.run_src([sys.executable, str(Path(__file__).resolve()), "send", ifname, str(path), "0"])
        return n

    def wait_carrier(self, timeout: float = 5.0) -> None:
        """Wait until both ends report carrier (a veth is down until its peer is up)."""
        deadline = time.monotonic() + timeout
        path = f"/sys/class/net/{self.host}/operstate"
        while time.monotonic() < deadline:
            out = self.run_cap(["cat", path], check=False).stdout.strip()
            if out in (b"up", "up"):
                return
            time.sleep(0.02)
        raise TimeoutError(f"{self.host} in {self.cap_ns} has no carrier after {timeout}s")


OFFLOAD_FEATURES = ("rx-gro", "tx-tcp-segmentation", "tx-tcp6-segmentation",
                    "tx-generic-segmentation", "rx-lro")


def set_offloads(ns: str, ifname: str, enable: bool) -> None:
    """Switch GRO/LRO/TSO/GSO of ``ifname`` in namespace ``ns`` on or off (ethtool -K)."""
    from pyroute2.ethtool import Ethtool

    with in_netns(ns):
        eth = Ethtool()
        try:
            feats = eth.get_features(ifname)
            for name in OFFLOAD_FEATURES:
                f = feats.features.get(name)
                if f is not None and f.available:
                    f.enable = enable
            eth.set_features(ifname, feats)
        finally:
            eth.close()


def write_frames(path: str | os.PathLike, frames: Iterable[bytes]) -> int:
    """Frame file: each frame as u32 little-endian length + bytes."""
    n = 0
    with open(path, "wb") as f:
        for fr in frames:
            f.write(struct.pack("<I", len(fr)))
            f.write(fr)
            n += 1
    return n


def read_frames(path: str | os.PathLike) -> list[bytes]:
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (ln,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4: pos + 4 + ln])
        pos += 4 + ln
    return out


def _send_main(ifname: str, path: str, gap_us: str = "0") -> None:
    frames = read_frames(path)
    gap = int(gap_us) / 1e6
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((ifname, 0))
    for fr in frames:
        s.send(fr)
        if gap:
            time.sleep(gap)
    s.close()


try:
    import pytest
except ImportError:  # running as the sender script inside a namespace
    pytest = None

if pytest is not None:
    @pytest.fixture
    def veth() -> Iterator[VethPair]:
        """A fresh VethPair per test (root required; skipped otherwise, fails when strict)."""
        from conftest import require_root, require_tool

        require_root()
        require_tool("ip")
        with VethPair() as pair:
            yield pair


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "send":
        _send_main(*sys.argv[2:])
    else:
        sys.exit("usage: netns.py send IFNAME FRAMEFILE [GAP_US]")
