"""Crafting test traffic with scapy: frames at known timestamps -> PacketBatch."""
from __future__ import annotations

from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from malsensor.daemon.capture.batch import PacketBatch

NS = 1_000_000_000
EPOCH = 1_700_000_000  # whole seconds; crafted times are offsets from it so they stay exact
CLIENT_MAC = "02:00:00:00:00:01"
SERVER_MAC = "02:00:00:00:00:02"


def ns(offset: float) -> int:
    """Capture time in ns of a packet ``offset`` seconds after EPOCH (exact to the ns)."""
    return EPOCH * NS + round(offset * NS)


@dataclass
class Traffic:
    """Frames and their capture times (seconds after EPOCH), in order of appending."""

    frames: list[bytes] = field(default_factory=list)
    times: list[int] = field(default_factory=list)

    def add(self, t: float, pkt) -> "Traffic":
        self.frames.append(bytes(pkt))
        self.times.append(ns(t))
        return self

    def batch(self) -> PacketBatch:
        return PacketBatch.from_packets(self.frames, self.times)


@dataclass
class TcpConn:
    """Both ends of one TCP connection; methods append frames to ``traffic``."""

    traffic: Traffic
    client: str = "10.0.0.1"
    server: str = "10.0.0.2"
    cport: int = 40000
    sport: int = 80
    cttl: int = 64
    sttl: int = 128
    cseq: int = 1000
    sseq: int = 5000
    v6: bool = False

    def _ip(self, from_client: bool):
        if self.v6:
            return (IPv6(src=self.client, dst=self.server, hlim=self.cttl) if from_client
                    else IPv6(src=self.server, dst=self.client, hlim=self.sttl))
        return (IP(src=self.client, dst=self.server, ttl=self.cttl) if from_client
                else IP(src=self.server, dst=self.client, ttl=self.sttl))

    def c(self, t: float, flags: str, payload: int = 0, seq: int | None = None, ack: int | None = None):
        eth = Ether(src=CLIENT_MAC, dst=SERVER_MAC)
        tcp = TCP(sport=self.cport, dport=self.sport, flags=flags,
                  seq=self.cseq if seq is None else seq, ack=(self.sseq if ack is None else ack) if "A" in flags else 0)
        self.traffic.add(t, eth / self._ip(True) / tcp / (b"x" * payload))
        self.cseq += payload + (1 if ("S" in flags or "F" in flags) else 0)
        return self

    def s(self, t: float, flags: str, payload: int = 0, seq: int | None = None, ack: int | None = None):
        eth = Ether(src=SERVER_MAC, dst=CLIENT_MAC)
        tcp = TCP(sport=self.sport, dport=self.cport, flags=flags,
                  seq=self.sseq if seq is None else seq, ack=(self.cseq if ack is None else ack) if "A" in flags else 0)
        self.traffic.add(t, eth / self._ip(False) / tcp / (b"y" * payload))
        self.sseq += payload + (1 if ("S" in flags or "F" in flags) else 0)
        return self


def full_tcp_conn(tr: Traffic, t0: float = 0.0, **kw) -> TcpConn:
    """A complete TCP connection of 8 packets: handshake, data both ways, FIN/FIN/ACK.

    Client packets: IP lengths 40, 40, 140, 40, 40 at t0 + 0, 12, 20, 40, 60 ms;
    server packets: 40, 240, 40 at t0 + 10, 30, 50 ms."""
    c = TcpConn(tr, **kw)
    c.c(t0, "S")
    c.s(t0 + 0.010, "SA")
    c.c(t0 + 0.012, "A")
    c.c(t0 + 0.020, "PA", payload=100)
    c.s(t0 + 0.030, "PA", payload=200)
    c.c(t0 + 0.040, "FA")
    c.s(t0 + 0.050, "FA")
    c.c(t0 + 0.060, "A")  # the last ACK of the teardown (inside close_linger)
    return c


def udp(t: float, traffic: Traffic, src="10.0.0.1", dst="10.0.0.2", sport=5353, dport=53, payload=20, ttl=64):
    traffic.add(t, Ether(src=CLIENT_MAC, dst=SERVER_MAC) / IP(src=src, dst=dst, ttl=ttl)
                / UDP(sport=sport, dport=dport) / (b"q" * payload))
    return traffic


def icmp_echo(t: float, traffic: Traffic, src, dst, type_, ident=7, seq=1, ttl=64):
    traffic.add(t, Ether() / IP(src=src, dst=dst, ttl=ttl) / ICMP(type=type_, id=ident, seq=seq) / (b"p" * 56))
    return traffic
