"""Connection-tracking settings (the ``[tracking]`` section of malsensor.toml)."""
from __future__ import annotations

from dataclasses import dataclass, field

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Lifecycle of tracked connections. Times are seconds of packet time.

    Defaults follow what Zeek and Suricata users expect: long TCP idle times,
    short ones for UDP and ICMP, a handshake deadline that covers the Linux SYN
    retransmission schedule (1, 3, 7, 15 s), and a short linger after a TCP
    close so that the last ACK of the teardown still counts to its connection.
    """

    max_flows: int = 262_144
    """Bound on concurrently tracked connections. When full, the least recently
    active of ``evict_candidates`` slots under a rotating hand is emitted with
    end_reason "evicted" to make room."""
    midstream: bool = False
    """Also track TCP connections first seen without their SYN."""
    tcp_idle_timeout: float = 300.0
    udp_idle_timeout: float = 60.0
    other_idle_timeout: float = 30.0
    """ICMP, ICMPv6 and every other IP protocol."""
    active_timeout: float = 1800.0
    """A connection older than this is emitted (end_reason "active") and goes on
    as a new record with the same key."""
    handshake_timeout: float = 30.0
    """A TCP connection whose handshake has not completed this long after its
    first SYN ends with end_reason "handshake"."""
    close_linger: float = 2.0
    """After FIN in both directions or an RST, packets arriving within this many
    seconds still belong to the connection; then it ends ("fin" / "rst")."""
    sweep_interval: float = 1.0
    """How often (packet time) the whole table is checked for timeouts."""
    evict_candidates: int = 8
    icmp_errors_extend_tcp: bool = False
    """An IPv4 ICMP error (unreachable, redirect, time exceeded, ...) whose quoted header names a
    tracked TCP connection moves that connection's end time to the error's time, as Argus does
    (``ArgusUpdateICMPState``); nothing else of the connection changes, and the error is still
    tracked as an ICMP flow of its own."""
    argus_tcp: bool = False
    """Time the TCP handshake the way Argus does (docs/argus-semantics.md, R6): the SYN-ACK is
    checked against the first SYN (not the last retransmission), and a retransmitted SYN-ACK moves
    the recorded SYN and SYN-ACK times together, so that ack_dat is measured from the last one
    while syn_ack keeps its value. It also follows Argus's TCP state machine to decide when a SYN
    on a known 5-tuple starts a new record (R3: only in FIN_WAIT_1, CLOSING/CLOSED or after a
    first-packet RST; SEQ then holds Argus's tracked sequence number per side, STATE bits 13..21
    the state), and carries each side's previous packet time and last TTL into the flow's next
    record, restart or status split (R4). Only meaningful with semantics = "argus" (it changes the
    malsensor semantics' ack_dat of such connections)."""
    snapshot_packets: tuple[int, ...] = field(default_factory=tuple)
    """Packet counts (both directions) at which a live connection's record is
    also emitted as a snapshot (feeds conn_series and early-triggered models)."""
    seq_packets: int = 0
    """Packets per connection whose size, direction, gap and TCP flags are kept for the
    ``pkt_seq`` view (daemon/flows/seq.py); 0 (the default, no model reads pkt_seq) keeps
    nothing, and the flow table stays at its bytes per flow."""

    @classmethod
    def for_semantics(cls, semantics: str, **overrides) -> "TrackerConfig":
        """Lifecycle defaults that go with a feature semantics.

        ``argus`` reproduces how ``argus -S 3600`` cuts records (docs/argus-semantics.md):
        connections first seen mid-stream are tracked, and a record is not ended by
        FIN, RST, idle time or an unfinished handshake, only 3600 s after it started
        (the status interval), by a new SYN on the same 5-tuple after a close, or at
        the end of input. ICMP errors that quote a tracked TCP connection extend its
        duration to the error's time.
        """
        if semantics == "argus":
            hour = 3600.0
            base = dict(midstream=True, tcp_idle_timeout=hour, udp_idle_timeout=hour, other_idle_timeout=hour,
                        active_timeout=hour, handshake_timeout=hour, close_linger=hour,
                        icmp_errors_extend_tcp=True, argus_tcp=True)
            base.update(overrides)
            return cls(**base)
        return cls(**overrides)

    def __post_init__(self) -> None:
        if self.max_flows < 1:
            raise ValueError("max_flows must be >= 1")
        for name in ("tcp_idle_timeout", "udp_idle_timeout", "other_idle_timeout",
                     "active_timeout", "handshake_timeout", "sweep_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.close_linger < 0:
            raise ValueError("close_linger must be >= 0")
        if self.evict_candidates < 1:
            raise ValueError("evict_candidates must be >= 1")
        if any(p < 1 for p in self.snapshot_packets) or list(self.snapshot_packets) != sorted(set(self.snapshot_packets)):
            raise ValueError("snapshot_packets must be increasing positive packet counts")
        if not 0 <= self.seq_packets <= 1024:
            raise ValueError("seq_packets must be 0..1024")
