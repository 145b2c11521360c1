"""The unit of work between a capture source and the decoder: a batch of packets.

A batch never owns per-packet Python objects. Packet bytes live in one buffer
(a chunk of a capture file, or a retired TPACKET_V3 block) and the arrays
below say where each packet starts and what the source knew about it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# LINKTYPE_* values (https://www.tcpdump.org/linktypes.html) the decoder understands.
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in host byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
DLT_RAW_ALIASES = (12, 14)  # DLT_RAW as some platforms number it in pcap headers

SUPPORTED_LINKTYPES = frozenset(
    (LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4,
     LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2, *DLT_RAW_ALIASES)
)

NO_VLAN = -1


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """Packets of one chunk, as parallel arrays (all of length ``n``).

    buf       uint8   bytes that hold the packets (not necessarily contiguous packets)
    offset    int64   where packet i starts in ``buf``
    caplen    int32   bytes of packet i present in ``buf``
    wirelen   int32   original length of packet i on the wire (>= caplen)
    ts_ns     int64   capture time, nanoseconds since the Unix epoch
    linktype  int32   LINKTYPE_* of packet i (pcapng interfaces may differ)
    vlan      int32   VLAN TCI the kernel stripped into the ring header, NO_VLAN if none
    """

    buf: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    vlan: np.ndarray

    @property
    def n(self) -> int:
        return int(self.offset.shape[0])

    @staticmethod
    def from_packets(frames: list[bytes], ts_ns: list[int], linktype: int = LINKTYPE_ETHERNET,
                     wirelen: list[int] | None = None) -> "PacketBatch":
        """Build a batch from in-memory frames (tests, crafted traffic)."""
        n = len(frames)
        caplen = np.fromiter((len(f) for f in frames), dtype=np.int32, count=n)
        offset = np.zeros(n, dtype=np.int64)
        if n:
            offset[1:] = np.cumsum(caplen[:-1], dtype=np.int64)
        buf = np.frombuffer(b"".join(frames), dtype=np.uint8).copy()
        return PacketBatch(
            buf=buf,
            offset=offset,
            caplen=caplen,
            wirelen=caplen.copy() if wirelen is None else np.asarray(wirelen, dtype=np.int32),
            ts_ns=np.asarray(ts_ns, dtype=np.int64),
            linktype=np.full(n, linktype, dtype=np.int32),
            vlan=np.full(n, NO_VLAN, dtype=np.int32),
        )


class BatchConsumer:
    """What a capture worker calls (in its own thread)."""

    def consume(self, batch: PacketBatch) -> None:
        raise NotImplementedError

    def idle(self, now_ns: int) -> None:
        """No packet for a while: a chance to expire idle state."""

    def finish(self) -> None:
        """The worker ends: nothing more will come."""
