"""A few crafted packets that run every numba kernel of the connection chain once.

Kernels are compiled (or loaded from numba's cache) on first use; a first real batch
must not wait for that while a capture ring fills up, and the daemon must load them
before it gives up its privileges. ``malsensor extract --interface`` and the daemon's
connection sources warm up through :func:`warm_connections`.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import tempfile

from ..flows.config import TrackerConfig
from .batch import PacketBatch

T0_NS = 1_700_000_000 * 1_000_000_000


def warm_frames() -> list[bytes]:
    """Ethernet/IPv4 frames: a TCP handshake (SYN, SYN-ACK, ACK) and a UDP datagram."""

    def ipv4(proto: int, l4: bytes, src: bytes, dst: bytes) -> bytes:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, src, dst) + l4

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    eth_ab = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    eth_ba = b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + b"\x08\x00"
    syn = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 65535, 0, 0)
    synack = struct.pack("!HHIIBBHHH", 80, 40000, 9, 2, 0x50, 0x12, 65535, 0, 0)
    ack = struct.pack("!HHIIBBHHH", 40000, 80, 2, 10, 0x50, 0x10, 65535, 0, 0)
    dgram = struct.pack("!HHHH", 5353, 53, 12, 0) + b"warm"
    return [eth_ab + ipv4(6, syn, a, b), eth_ba + ipv4(6, synack, b, a), eth_ab + ipv4(6, ack, a, b),
            eth_ab + ipv4(17, dgram, a, b)]


def pcap_bytes(frames: list[bytes]) -> bytes:
    """A classic pcap file (microsecond times, Ethernet) of ``frames``, one second apart."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", T0_NS // 10**9 + i, 0, len(f), len(f)) + f)
    return b"".join(out)


def pcapng_bytes(frames: list[bytes]) -> bytes:
    """A pcapng file (one Ethernet interface, microsecond times) of ``frames``."""

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)), block(1, struct.pack("<HHI", 1, 0, 65535))]
    for i, f in enumerate(frames):
        ts = (T0_NS // 10**9 + i) * 1_000_000
        out.append(block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f))
    return b"".join(out)


def warm_connections(tracking: TrackerConfig, semantics: str, *, files: bool) -> list:
    """Run decode, tracking (snapshots, sweeps, flushes) and the views over the crafted
    frames - through the pcap and pcapng readers too when ``files`` - and return the
    connection batches (the daemon warms its event formatters with them). Off the main thread,
    where capture and pipeline threads run: their kernels are numba's JIT ones
    (:func:`~malsensor.daemon.jit.off_main_thread`)."""
    from ..jit import off_main_thread

    return off_main_thread(_run_chain, tracking, semantics, files)


def _run_chain(tracking: TrackerConfig, semantics: str, files: bool) -> list:
    from ..pipeline import ConnPipeline

    tk = dataclasses.replace(tracking, snapshot_packets=(1,), max_flows=64)
    frames = warm_frames()
    out = []
    pipe = ConnPipeline(tk, semantics)
    batch = PacketBatch.from_packets(frames, [T0_NS + i * 1000 for i in range(len(frames))])
    out.extend(pipe.feed(batch))
    out.extend(pipe.expire(T0_NS + 10**15))
    out.extend(pipe.finish())
    if files:
        from .pcapfile import read_capture

        for data in (pcap_bytes(frames), pcapng_bytes(frames)):
            fd, path = tempfile.mkstemp(prefix="malsensor-warm-", suffix=".cap")
            try:
                os.write(fd, data)
                os.close(fd)
                pipe = ConnPipeline(tk, semantics)
                for b in read_capture(path, reuse_buffers=True):
                    out.extend(pipe.feed(b))
                out.extend(pipe.finish())
            finally:
                os.unlink(path)
    return out
