"""One AF_PACKET socket with a TPACKET_V3 receive ring, and the numba kernel that walks it.

Layout of the ring (``include/uapi/linux/if_packet.h``): ``block_count`` blocks of
``block_size`` bytes, mapped into our address space. The kernel fills one block at
a time with packets, each preceded by a ``struct tpacket3_hdr``, and hands a block
to user space ("retires" it: ``block_status |= TP_STATUS_USER``) when it is full or
when ``retire_timeout_ms`` has passed since its first packet. We walk retired blocks
in order, build one :class:`PacketBatch` whose ``buf`` is the whole ring (offsets
point straight into the mapping: no copy), let the consumer decode and track it, and
give the blocks back (``block_status = TP_STATUS_KERNEL``). While all blocks are in
user space the kernel drops packets and counts them (``PACKET_STATISTICS``).

Socket set-up order matters and differs from the textbook one on purpose:

1. ``socket(AF_PACKET, SOCK_RAW, 0)``: protocol 0 registers no packet hook, so
   nothing is queued before the socket is bound to *our* interface (a socket
   created with ``htons(ETH_P_ALL)`` would see every interface until ``bind``).
2. a drop-everything filter (``ret #0``), ``PACKET_VERSION``, ``PACKET_RX_RING``, mmap;
3. ``bind`` to the interface index with ``ETH_P_ALL``; promiscuous membership;
   ``PACKET_FANOUT``. A socket receives on its own between ``bind`` and joining the
   fanout group; the drop-all filter keeps those packets from being seen twice.
4. :meth:`Ring.activate` swaps in the real filter (the user's BPF expression, or
   ``ret #snaplen``) once every member of the group has joined.

The ring memory must be read in order: on x86-64 (the target) loads are not
reordered with older loads and stores are not reordered with older loads, so reading
``block_status`` before the packet headers and writing it after them needs no fence.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

import numpy as np
from ..jit import njit

from .batch import LINKTYPE_ETHERNET, PacketBatch
from .bpf import attach_filter, ret_program
from .ringconfig import RingConfig  # noqa: F401 (kept here for importers; numba-free module)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003

PACKET_FANOUT_HASH = 0
PACKET_FANOUT_LB = 1
PACKET_FANOUT_CPU = 2
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
FANOUT_MODES = {"hash": PACKET_FANOUT_HASH, "lb": PACKET_FANOUT_LB, "cpu": PACKET_FANOUT_CPU}

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_COPY = 1 << 1
TP_STATUS_LOSING = 1 << 2
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_GSO_TCP = 1 << 8  # Linux >= 5.4: a GSO/GRO super-frame (tp_len > MTU)

TPACKET3_HDRLEN = 48  # sizeof(struct tpacket3_hdr)
BLOCK_DESC_LEN = 48  # sizeof(struct tpacket_block_desc), first packet follows (aligned)
MIN_PACKET_SLOT = 64  # no packet takes less room in a block (header 48 + sockaddr_ll 20 > 64)

# counters[] slots filled by the kernel (cumulative over the ring's life)
(C_PACKETS, C_WIRE_BYTES, C_CAP_BYTES, C_TRUNCATED, C_VLAN, C_GSO, C_LOSING, C_BLOCKS,
 C_RING_ERRORS) = range(9)
N_COUNTERS = 9
COUNTER_NAMES = ("packets", "wire_bytes", "cap_bytes", "truncated", "vlan", "gso", "losing",
                 "blocks", "ring_errors")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
_libc.bind.restype = ctypes.c_int


class RingError(OSError):
    """Setting up the socket or ring failed (message names the step and interface)."""


class InterfaceGone(RingError):
    """The interface disappeared or went down while binding."""


@dataclass(frozen=True, slots=True)
class FanoutSpec:
    """Join a PACKET_FANOUT group: ``group_id`` None asks the kernel for a new unique id
    (PACKET_FANOUT_FLAG_UNIQUEID), which the other members then join."""

    mode: str = "hash"
    group_id: int | None = None
    defrag: bool = True

    def option(self) -> int:
        if self.mode not in FANOUT_MODES:
            raise ValueError(f"fanout mode {self.mode!r}: expected one of {sorted(FANOUT_MODES)}")
        flags = PACKET_FANOUT_FLAG_DEFRAG if (self.defrag and self.mode == "hash") else 0
        if self.group_id is None:
            return (FANOUT_MODES[self.mode] | flags | PACKET_FANOUT_FLAG_UNIQUEID) << 16
        return (self.group_id & 0xFFFF) | ((FANOUT_MODES[self.mode] | flags) << 16)


@dataclass(slots=True)
class KernelStats:
    """PACKET_STATISTICS running totals. ``packets`` counts what the filter accepted,
    drops included (the kernel adds tp_drops to tp_packets); ``freeze_q`` counts the times
    the ring was full and the kernel froze the queue."""

    packets: int = 0
    drops: int = 0
    freeze_q: int = 0

    def add(self, other: "KernelStats") -> None:
        self.packets += other.packets
        self.drops += other.drops
        self.freeze_q += other.freeze_q


@njit(cache=True, nogil=True)
def walk_blocks(r32, block_size, n_blocks, first, max_blocks, offset, caplen, wirelen, ts_ns,
                vlan, counters):
    """Walk retired blocks from ``first`` into the output arrays.

    Returns (blocks walked, packets written). Stops at the first block still owned by
    the kernel, after ``max_blocks`` blocks, or before a block that would not fit the
    output arrays. A header that points outside its block ends that block's walk and
    counts a ring error (never happens with a sane kernel; guards against reading
    outside the mapping).
    """
    cap = offset.shape[0]
    n = 0
    nb = 0
    b = first
    while nb < max_blocks:
        base = b * block_size
        w = base >> 2
        status = r32[w + 2]
        if (status & 1) == 0:
            break
        num = np.int64(r32[w + 3])
        if n + num > cap:
            if nb > 0:
                break
            counters[8] += 1
            num = cap
        off = np.int64(r32[w + 4])
        for _ in range(num):
            if off < BLOCK_DESC_LEN or off + TPACKET3_HDRLEN > block_size:
                counters[8] += 1
                break
            h = (base + off) >> 2
            next_off = np.int64(r32[h])
            snap = np.int64(r32[h + 3])
            length = np.int64(r32[h + 4])
            st = r32[h + 5]
            mac = np.int64(r32[h + 6] & 0xFFFF)
            if off + mac + snap > block_size:
                counters[8] += 1
                break
            if st & TP_STATUS_VLAN_VALID:
                # the kernel took the 802.1Q tag out of the frame: it was 4 bytes on the wire
                vlan[n] = r32[h + 8] & 0xFFFF
                length += 4
                counters[4] += 1
            else:
                vlan[n] = -1
            offset[n] = base + off + mac
            caplen[n] = snap
            wirelen[n] = length
            ts_ns[n] = np.int64(r32[h + 1]) * 1_000_000_000 + np.int64(r32[h + 2])
            if snap < length - (4 if st & TP_STATUS_VLAN_VALID else 0):
                counters[3] += 1
            if st & TP_STATUS_GSO_TCP:
                counters[5] += 1
            if st & TP_STATUS_LOSING:
                counters[6] += 1
            counters[0] += 1
            counters[1] += length
            counters[2] += snap
            n += 1
            if next_off == 0:
                break
            off += next_off
        nb += 1
        b += 1
        if b == n_blocks:
            b = 0
    counters[7] += nb
    return nb, n


@njit(cache=True, nogil=True)
def release_blocks(r32, block_size, n_blocks, first, count):
    """Give ``count`` blocks from ``first`` back to the kernel (block_status = TP_STATUS_KERNEL)."""
    b = first
    for _ in range(count):
        r32[((b * block_size) >> 2) + 2] = 0
        b += 1
        if b == n_blocks:
            b = 0


def _check_errno(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise RingError(err, f"{what}: {os.strerror(err)}")


class Ring:
    """An AF_PACKET socket bound to one interface, with its mapped TPACKET_V3 ring.

    Not thread-safe: one capture thread owns a ring. ``next_batch()`` returns a batch
    that stays valid until ``release()`` (its arrays are reused and its buffer is the
    ring itself); the consumer must copy whatever it keeps.
    """

    def __init__(self, ifindex: int, config: RingConfig, *, ifname: str = "",
                 linktype: int = LINKTYPE_ETHERNET, promisc: bool = True,
                 ignore_outgoing: bool = False, fanout: FanoutSpec | None = None) -> None:
        self.ifindex = ifindex
        self.ifname = ifname or f"ifindex {ifindex}"
        self.config = config
        self.linktype = linktype
        self.fanout_id: int | None = None
        self.stats = KernelStats()
        self.counters = np.zeros(N_COUNTERS, dtype=np.int64)
        self._sock: socket.socket | None = None
        self._mm: mmap.mmap | None = None
        self._held = 0
        self._cur = 0
        where = f"AF_PACKET on {self.ifname}"
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(sock, ret_program(0))
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_nr = config.ring_bytes // config.frame_size
            req = struct.pack("7I", config.block_size, config.block_count, config.frame_size,
                              frame_nr, config.retire_timeout_ms, 0, 0)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            except OSError as exc:
                raise RingError(exc.errno, f"{where}: PACKET_RX_RING ({config.block_count} x "
                                f"{config.block_size} bytes): {exc.strerror}") from None
            mm = mmap.mmap(sock.fileno(), config.ring_bytes, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE)
            self._mm = mm
            if ignore_outgoing:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            # struct sockaddr_ll: family, protocol (network order), ifindex, hatype, pkttype,
            # halen, addr[8]
            sll = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_ALL), ifindex,
                              0, 0, 0, b"")
            buf = ctypes.create_string_buffer(sll, len(sll))
            if _libc.bind(sock.fileno(), ctypes.addressof(buf), len(sll)) != 0:
                err = ctypes.get_errno()
                cls = InterfaceGone if err in (errno.ENODEV, errno.ENXIO, errno.ENETDOWN) else RingError
                raise cls(err, f"{where}: bind: {os.strerror(err)}")
            if promisc:
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if fanout is not None:
                try:
                    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("I", fanout.option()))
                except OSError as exc:
                    cls = InterfaceGone if exc.errno == errno.EINVAL and not _is_up(sock) else RingError
                    raise cls(exc.errno, f"{where}: PACKET_FANOUT {fanout}: {exc.strerror}") from None
                self.fanout_id = struct.unpack("I", sock.getsockopt(SOL_PACKET, PACKET_FANOUT, 4))[0] & 0xFFFF
        except BaseException:
            if self._mm is not None:
                self._mm.close()
                self._mm = None
            sock.close()
            raise
        self._sock = sock
        self.buf = np.frombuffer(mm, dtype=np.uint8)
        self._r32 = np.frombuffer(mm, dtype=np.uint32)
        cap = config.max_blocks_per_batch * (config.block_size // MIN_PACKET_SLOT)
        self._offset = np.empty(cap, dtype=np.int64)
        self._caplen = np.empty(cap, dtype=np.int32)
        self._wirelen = np.empty(cap, dtype=np.int32)
        self._ts = np.empty(cap, dtype=np.int64)
        self._vlan = np.empty(cap, dtype=np.int32)
        self._linktype = np.full(cap, linktype, dtype=np.int32)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)

    # -- life cycle ---------------------------------------------------------------------------
    def activate(self, program: bytes | None = None) -> None:
        """Start accepting packets: attach ``program`` (compiled BPF) or ``ret #snaplen``."""
        attach_filter(self.sock, program if program is not None else ret_program(self.config.snaplen))

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            raise RingError(errno.EBADF, f"AF_PACKET on {self.ifname}: ring is closed")
        return self._sock

    @property
    def closed(self) -> bool:
        return self._sock is None

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Read the last statistics, unmap and close. Safe to call twice."""
        if self._sock is None:
            return
        try:
            self.read_stats()
        except OSError:
            pass
        self._poll = None
        self.buf = self._r32 = None
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # a batch still references the ring; the mapping goes when it is collected
        self._sock.close()
        self._sock = None

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- receive ------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Is the next block retired (owned by user space)?"""
        cfg = self.config
        return bool(self._r32[((self._cur * cfg.block_size) >> 2) + 2] & TP_STATUS_USER)

    def wait(self, timeout_ms: int) -> int:
        """Sleep (GIL released) until a block is retired, an error is pending or the timeout.

        Returns 0, or the socket's pending error (e.g. ENETDOWN when the link went down;
        reading it clears it so poll does not spin).
        """
        if self.ready():
            return 0
        events = self._poll.poll(timeout_ms)
        for _, ev in events:
            if ev & select.POLLERR:
                return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return 0

    def next_batch(self) -> PacketBatch | None:
        """The packets of the retired blocks from the current position, or None if none.

        The blocks stay in user space until :meth:`release` (call it before the next
        ``next_batch``)."""
        if self._held:
            raise RingError(errno.EBUSY, f"AF_PACKET on {self.ifname}: release() the previous batch first")
        cfg = self.config
        nb, n = walk_blocks(self._r32, cfg.block_size, cfg.block_count, self._cur,
                            cfg.max_blocks_per_batch, self._offset, self._caplen, self._wirelen,
                            self._ts, self._vlan, self.counters)
        if nb == 0:
            return None
        self._held = nb
        return PacketBatch(buf=self.buf, offset=self._offset[:n], caplen=self._caplen[:n],
                           wirelen=self._wirelen[:n], ts_ns=self._ts[:n],
                           linktype=self._linktype[:n], vlan=self._vlan[:n])

    def release(self) -> None:
        """Hand the blocks of the last batch back to the kernel."""
        if self._held:
            cfg = self.config
            release_blocks(self._r32, cfg.block_size, cfg.block_count, self._cur, self._held)
            self._cur = (self._cur + self._held) % cfg.block_count
            self._held = 0

    def read_stats(self) -> KernelStats:
        """PACKET_STATISTICS since the last read (the kernel resets on read); also added to
        :attr:`stats`."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, freeze = struct.unpack("3I", raw)
        delta = KernelStats(packets, drops, freeze)
        self.stats.add(delta)
        return delta

    def counter_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in zip(COUNTER_NAMES, self.counters)}


def _is_up(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def warm_up() -> None:
    """Compile (or load from cache) the kernels before capture threads start."""
    cfg_bs = 4096
    r32 = np.zeros(cfg_bs * 2 // 4, dtype=np.uint32)
    o = np.empty(4, np.int64)
    c = np.empty(4, np.int32)
    walk_blocks(r32, cfg_bs, 2, 0, 2, o, c, c.copy(), o.copy(), c.copy(), np.zeros(N_COUNTERS, np.int64))
    release_blocks(r32, cfg_bs, 2, 0, 0)


def realtime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)
