"""Source kind ``afpacket``: live capture on one interface (TPACKET_V3 rings, ``threads``
sockets in one PACKET_FANOUT group), each capture thread with its own pipeline."""
from __future__ import annotations

import logging
from dataclasses import MISSING, dataclass
from typing import ClassVar

from ..capture.ring import RingConfig
from ..schema import opt
from . import SourceContext, register_source
from ._connections import ConnectionSource

log = logging.getLogger("malsensor.capture")
_RING = RingConfig()
RING_KEYS = ("block_size", "block_count", "frame_size", "retire_timeout_ms", "snaplen")


@dataclass(frozen=True)
class AfpacketConfig:
    """[[source]] kind = "afpacket": one network interface to capture on."""

    kind: ClassVar[str] = "afpacket"
    name: str = opt(MISSING, "interface name; \"default\" = the interface of the default route")
    threads: int = opt(1, "capture threads (sockets in one PACKET_FANOUT group)", min=1, max=64)
    fanout: str = opt("hash", "how the kernel spreads packets over the threads (hash keeps each "
                              "connection on one thread)", choices=("hash", "cpu", "lb"))
    promiscuous: bool = opt(True, "put the interface in promiscuous mode")
    ignore_outgoing: bool = opt(False, "skip packets this host sends")
    bpf: str = opt("", "BPF filter expression (tcpdump syntax, compiled by libpcap); \"\" = all")
    block_size: int = opt(_RING.block_size, "ring block size in bytes (a multiple of the page size; "
                                            "the kernel hands over whole blocks)", min=4096, max=1 << 30)
    block_count: int = opt(_RING.block_count, "ring blocks per thread (ring memory = block_size * "
                                              "block_count per thread)", min=2, max=1 << 16)
    frame_size: int = opt(_RING.frame_size, "ring frame size (multiple of 16 dividing block_size; "
                                            "TPACKET_V3 packs packets regardless)", min=64,
                            max=1 << 30)
    retire_timeout_ms: int = opt(_RING.retire_timeout_ms, "a partly filled block is handed over this "
                                                          "long after its first packet", min=1, max=60000)
    snaplen: int = opt(_RING.snaplen, "bytes of each packet copied into the ring", min=64, max=262144)


def ring_config(itf: AfpacketConfig) -> RingConfig:
    """The capture ring geometry of one table (raises ValueError naming the key)."""
    return RingConfig(**{k: getattr(itf, k) for k in RING_KEYS})


def default_route_interface() -> str | None:
    """The interface of the IPv4 default route (else the IPv6 one), from /proc."""
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) > 7 and parts[1] == "00000000" and parts[7] == "00000000":
                    return parts[0]
    except OSError:
        pass
    try:
        with open("/proc/net/ipv6_route") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 10 and parts[0] == "0" * 32 and parts[1] == "00" and parts[9] != "lo":
                    return parts[9]
    except OSError:
        pass
    return None


@register_source
class AfpacketSource(ConnectionSource):
    kind = "afpacket"
    config = AfpacketConfig
    description = "live capture (AF_PACKET, TPACKET_V3, PACKET_FANOUT)"

    def __init__(self, cfg: AfpacketConfig, ctx: SourceContext) -> None:
        from ..capture.afpacket import CaptureConfig, LiveCapture

        super().__init__(cfg, ctx)
        self.ifname = self._resolve(cfg.name)
        cc = CaptureConfig(interfaces=(self.ifname,), ring=ring_config(cfg), fanout=cfg.threads,
                           fanout_mode=cfg.fanout, promisc=cfg.promiscuous, ignore_outgoing=cfg.ignore_outgoing,
                           bpf=cfg.bpf or None)
        lag_ns = int(cc.drain_s * 1e9)
        self.capture = LiveCapture(cc, lambda ifname, member: self.new_consumer(f"{ifname}/{member}", lag_ns))

    @classmethod
    def check(cls, cfgs, ck) -> None:
        names: dict[str, str] = {}
        for itf, path in cfgs:
            where = f"{path[0]}[{path[1]}]"
            if itf.name in names:
                ck.problem((*path, "name"), f"interface {itf.name!r} is also {names[itf.name]}")
            names.setdefault(itf.name, where)
            try:
                ring_config(itf)
            except ValueError as e:
                key = str(e).split()[0]
                ck.problem((*path, key) if key in RING_KEYS else path, str(e))
            if itf.bpf:
                from ..capture.bpf import BpfError, compile_filter

                try:
                    compile_filter(itf.bpf)
                except BpfError as e:
                    ck.problem((*path, "bpf"), str(e))

    @classmethod
    def preload(cls) -> None:
        from pyroute2 import IPRSocket

        from ..capture import afpacket, bpf, interfaces  # noqa: F401

        bpf.compile_filter("tcp")  # loads libpcap
        interfaces.lookup("lo")  # netlink request and reply parsing
        sock = IPRSocket()  # the link watcher's event socket
        sock.bind(groups=interfaces.RTMGRP_LINK)
        sock.close()

    @classmethod
    def warm(cls, ctx: SourceContext) -> list:
        from ..capture.ring import warm_up

        out = super().warm(ctx)
        warm_up()
        return out

    @staticmethod
    def _resolve(name: str) -> str:
        if name != "default":
            return name
        found = default_route_interface()
        if found is None:
            raise RuntimeError("interface \"default\": this host has no default route; name the interface "
                               "in [[source]] name")
        log.info("interface \"default\" is %s (the default route's)", found)
        return found

    def describe(self) -> str:
        return f"capturing on {self.ifname}"

    def start(self) -> None:
        self.capture.start()

    def wait_running(self, timeout: float) -> bool:
        return self.capture.wait_bound(1, timeout)

    def stop(self) -> None:
        self.capture.stop(drain=True)

    def join(self, timeout: float) -> None:
        try:
            self.capture.join(timeout)
        except RuntimeError as e:
            self.error = str(e)
        self.done.set()

    def alive(self) -> bool:
        return all(w.is_alive() for w in self.capture.workers) and not self.capture.halted()

    def failed(self) -> str | None:
        for w in self.capture.workers:
            if w.error is not None:
                return f"capture thread {w.name} failed: {w.error!r}"
        return None

    def kernel(self) -> tuple[int, int]:
        k = self.capture.stats().kernel
        return k.packets, k.drops
