"""Read pcap and pcapng capture files (optionally gzip-compressed) as :class:`PacketBatch` objects.

The file is read ``chunk_bytes`` at a time into a fresh buffer. A numba kernel walks the
records of the chunk and fills the per-packet arrays, stopping at the last complete record;
the unconsumed tail is copied to the front of the next buffer (grown when one record is
larger than a chunk). Each yielded batch refers to its own buffer, which is never written
again, so a consumer may keep batches as long as it likes - except with ``reuse_buffers``,
where two buffers and two sets of per-packet arrays alternate (no copies, no page faults for
fresh memory) and a batch is valid only until the next one is requested. A regular file at rest
can instead be mapped or read with direct I/O a few chunks ahead (``read_capture``'s ``file_io``;
:class:`_MappedStream`, :class:`_DirectStream`): same packets and messages, fewer copies.

pcapng: the kernel walks Enhanced, Simple and (obsolete) Packet Blocks and skips Name
Resolution, Interface Statistics, Decryption Secrets, systemd Journal Export and custom
blocks; it returns to Python only at a Section Header Block or an Interface Description
Block (whose options Python parses) and at blocks of an unknown type (noted once per type
in ``ReaderStats.warnings``, then skipped).

Decisions worth knowing:

- Timestamps are converted to epoch nanoseconds with integer arithmetic only
  (``if_tsresol`` powers of 10 and of 2, plus ``if_tsoffset`` seconds); a resolution finer
  than 1 ns is floored to the nanosecond.
- A Simple Packet Block has no timestamp: it gets the time of the packet before it in the
  file (0 if it is the first packet), and belongs to interface 0 of its section; its
  captured length is min(original length, room in the block, interface snaplen if not 0).
- pcap header snaplen is not enforced: writers that record a smaller snaplen than they
  wrote exist, and libpcap and Wireshark accept such records. A record longer than
  ``MAX_CAPLEN`` (262144, libpcap's maximum) is corrupt.
- A record whose original length is smaller than its captured length gets
  ``wirelen = caplen`` (the batch contract says ``wirelen >= caplen``); these are counted
  in ``ReaderStats.wirelen_raised``.
- ``ReaderStats.bytes`` counts bytes of the *uncompressed* stream, and every offset in a
  message or a :class:`CaptureFormatError` is an offset in the uncompressed stream.
- A pcapng interface with a link type outside ``SUPPORTED_LINKTYPES`` is an error only
  when a packet of that interface is met (a file may describe interfaces it never uses).
"""
from __future__ import annotations

import logging
import mmap
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np

from ..intrinsics import load_be16, load_be32, load_le16, load_le32, prefetch
from ..jit import njit
from .batch import NO_VLAN, SUPPORTED_LINKTYPES, PacketBatch
from ..direct_io import ALIGN, Chunk, ChunkReader

log = logging.getLogger("malsensor.capture")

MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN: a longer record is corrupt
MAX_BLOCK = 16 << 20  # a pcapng block longer than this is corrupt (Wireshark uses 16 MiB too)
# The record walk is one dependency chain (each record's length gives the next record's place):
# over a memory mapping, whose pages no copy has brought into the cache, every record would wait
# for its own cache miss. The walkers prefetch every cache line this far ahead of the record
# they read, so the misses overlap (a few prefetch hints per packet; a no-op for read() buffers).
PREFETCH_BYTES = 4096

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_KUZNETZOV = 0xA1B2CD34
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
GZIP_MAGIC = b"\x1f\x8b"
LINKTYPE_MASK = 0x03FFFFFF  # pcap header "network": upper bits carry FCS information

# pcapng block types
_BT_IDB = 1
_BT_PB = 2
_BT_SPB = 3
_BT_NRB = 4
_BT_ISB = 5
_BT_EPB = 6
_BT_JOURNAL = 9
_BT_DSB = 10
_BT_CUSTOM = 0x00000BAD
_BT_CUSTOM_NOCOPY = 0x40000BAD

# kernel status codes
_NEED = 0  # aux = bytes needed from pos (0 if unknown yet)
_CORRUPT = 1  # aux = reason, aux2 = detail
_SHB = 2  # a Section Header Block starts at pos
_IDB = 3  # a complete Interface Description Block starts at pos; aux = its length
_UNKNOWN = 4  # a complete block of unknown type starts at pos; aux = type, aux2 = length
_BAD_LINKTYPE = 5  # packet at pos is on interface aux2 whose link type aux is unsupported

# corruption reasons
_R_CAPLEN_MAX = 1
_R_BLOCK_ALIGN = 2
_R_BLOCK_SHORT = 3
_R_BLOCK_TRAILER = 4
_R_BAD_IFACE = 5
_R_CAPLEN_BLOCK = 6
_R_BLOCK_HUGE = 7
_R_BLOCK_MIN = 8

# if_tsresol modes for the kernel
_TS_MUL10 = 0  # ns = ts * 10**(9 - k)
_TS_DIV10 = 1  # ns = ts // 10**(k - 9)   (k > 9)
_TS_POW2 = 2  # ns = floor(ts * 1e9 / 2**k)


class CaptureFormatError(Exception):
    """A capture file that cannot be read (further): names the file and the byte offset.

    ``offset`` is a byte offset in the uncompressed stream (``None`` when it does not
    apply, e.g. the file cannot be opened).
    """

    def __init__(self, path: str | os.PathLike[str], offset: int | None, message: str) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.message = message
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {message}")


@dataclass
class ReaderStats:
    """What one :func:`read_capture` call saw (filled in as batches are yielded)."""

    packets: int = 0
    bytes: int = 0  # bytes of the (uncompressed) stream consumed
    truncated_at: int | None = None  # offset of the record cut short by the end of the file
    linktypes: set[int] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    wirelen_raised: int = 0  # records whose original length was below the captured length
    format: str = ""  # "pcap", "pcap-ns", "pcapng"; "+gzip" appended when compressed
    sections: int = 0  # pcapng Section Header Blocks
    skipped_blocks: int = 0  # pcapng blocks skipped (NRB, ISB, DSB, custom, unknown, ...)
    file_io: str = ""  # how the file was read: "read", "map" or "direct" (see read_capture)


# ---------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True, inline="always")
def _u32(buf: np.ndarray, p: int, be: bool) -> int:
    return load_be32(buf, p) if be else load_le32(buf, p)


@njit(cache=True, nogil=True, inline="always")
def _u16(buf: np.ndarray, p: int, be: bool) -> int:
    return load_be16(buf, p) if be else load_le16(buf, p)


@njit(cache=True, nogil=True)
def _scale_ts(ts: np.uint64, mode: np.int64, k: np.int64, factor: np.uint64) -> np.int64:
    """Convert a pcapng timestamp in interface units to nanoseconds, exactly (floored).

    ``factor`` is 10**|9-k| for the power-of-10 modes (0 when the divisor exceeds 2**64,
    giving 0). For powers of two, ``ts * 1e9 / 2**k`` is split so that no intermediate
    value exceeds 63 bits: below k = 32 as whole units plus fraction, above as the high
    and low 32-bit halves of ts (floor(floor(x)/m) = floor(x/m) keeps it exact).
    """
    billion = np.uint64(1_000_000_000)
    if mode == 0:
        return np.int64(ts * factor)
    if mode == 1:
        if factor == np.uint64(0):
            return np.int64(0)
        return np.int64(ts // factor)
    if k < 32:
        sh = np.uint64(k)
        mask = (np.uint64(1) << sh) - np.uint64(1)
        return np.int64((ts >> sh) * billion + (((ts & mask) * billion) >> sh))
    hi = ts >> np.uint64(32)
    lo = ts & np.uint64(0xFFFFFFFF)
    s = hi * billion + ((lo * billion) >> np.uint64(32))
    if k - 32 >= 64:
        return np.int64(0)
    return np.int64(s >> np.uint64(k - 32))


@njit(cache=True, nogil=True)
def _walk_pcap(buf, start, end, be, frac_mult, out_off, out_cap, out_wire, out_ts):
    """Walk classic pcap records in ``buf[start:end]``.

    Returns (n packets, position of the first unconsumed byte, status, aux, aux2, raised)
    where ``raised`` counts records whose wirelen was raised to caplen.
    """
    n = 0
    pos = start
    raised = 0
    ahead = start  # every cache line below this was prefetched
    while True:
        lim = min(pos + PREFETCH_BYTES, end)
        while ahead < lim:
            prefetch(buf, ahead)
            ahead += 64
        if end - pos < 16:
            return n, pos, _NEED, 16, 0, raised
        sec = _u32(buf, pos, be)
        frac = _u32(buf, pos + 4, be)
        incl = _u32(buf, pos + 8, be)
        orig = _u32(buf, pos + 12, be)
        if incl > MAX_CAPLEN:
            return n, pos, _CORRUPT, _R_CAPLEN_MAX, incl, raised
        if end - pos - 16 < incl:
            return n, pos, _NEED, 16 + incl, 0, raised
        if orig < incl:
            orig = incl
            raised += 1
        elif orig > 0x7FFFFFFF:
            orig = 0x7FFFFFFF
        out_off[n] = pos + 16
        out_cap[n] = incl
        out_wire[n] = orig
        out_ts[n] = sec * 1_000_000_000 + frac * frac_mult
        n += 1
        pos += 16 + incl


@njit(cache=True, nogil=True)
def _walk_pcapng(buf, start, end, be, n_if, if_lt, if_ok, if_snap, if_mode, if_k, if_factor,
                 if_off_ns, if_used, state, out_off, out_cap, out_wire, out_ts, out_lt):
    """Walk pcapng blocks of one section in ``buf[start:end]`` (byte order ``be``).

    ``state[0]`` carries the last packet timestamp (for Simple Packet Blocks), ``state[1]``
    counts skipped blocks and ``state[2]`` records whose wirelen was raised to caplen.
    Returns (n packets, position, status, aux, aux2, 0).
    """
    n = 0
    pos = start
    ahead = start  # every cache line below this was prefetched
    while True:
        lim = min(pos + PREFETCH_BYTES, end)
        while ahead < lim:
            prefetch(buf, ahead)
            ahead += 64
        if end - pos < 8:
            return n, pos, _NEED, 0, 0, 0
        btype = _u32(buf, pos, be)
        if btype == PCAPNG_SHB:
            return n, pos, _SHB, 0, 0, 0
        blen = _u32(buf, pos + 4, be)
        if blen < 12:
            return n, pos, _CORRUPT, _R_BLOCK_SHORT, blen, 0
        if blen % 4 != 0:
            return n, pos, _CORRUPT, _R_BLOCK_ALIGN, blen, 0
        if blen > MAX_BLOCK:
            return n, pos, _CORRUPT, _R_BLOCK_HUGE, blen, 0
        if end - pos < blen:
            return n, pos, _NEED, blen, 0, 0
        if _u32(buf, pos + blen - 4, be) != blen:
            return n, pos, _CORRUPT, _R_BLOCK_TRAILER, _u32(buf, pos + blen - 4, be), 0
        if btype == _BT_EPB or btype == _BT_PB:
            if blen < 32:
                return n, pos, _CORRUPT, _R_BLOCK_MIN, blen, 0
            if btype == _BT_EPB:
                iface = _u32(buf, pos + 8, be)
            else:
                iface = _u16(buf, pos + 8, be)
            if iface >= n_if:
                return n, pos, _CORRUPT, _R_BAD_IFACE, iface, 0
            if if_ok[iface] == 0:
                return n, pos, _BAD_LINKTYPE, if_lt[iface], iface, 0
            incl = _u32(buf, pos + 20, be)
            orig = _u32(buf, pos + 24, be)
            if incl > MAX_CAPLEN:
                return n, pos, _CORRUPT, _R_CAPLEN_MAX, incl, 0
            if incl > blen - 32:
                return n, pos, _CORRUPT, _R_CAPLEN_BLOCK, incl, 0
            ts = (np.uint64(_u32(buf, pos + 12, be)) << np.uint64(32)) | np.uint64(
                _u32(buf, pos + 16, be))
            tns = _scale_ts(ts, if_mode[iface], if_k[iface], if_factor[iface]) + if_off_ns[iface]
            if orig < incl:
                orig = incl
                state[2] += 1
            elif orig > 0x7FFFFFFF:
                orig = 0x7FFFFFFF
            out_off[n] = pos + 28
            out_cap[n] = incl
            out_wire[n] = orig
            out_ts[n] = tns
            out_lt[n] = if_lt[iface]
            if_used[iface] = 1
            state[0] = tns
            n += 1
        elif btype == _BT_SPB:
            if blen < 16:
                return n, pos, _CORRUPT, _R_BLOCK_MIN, blen, 0
            if n_if == 0:
                return n, pos, _CORRUPT, _R_BAD_IFACE, 0, 0
            if if_ok[0] == 0:
                return n, pos, _BAD_LINKTYPE, if_lt[0], 0, 0
            orig = _u32(buf, pos + 8, be)
            incl = blen - 16
            if orig < incl:
                incl = orig
            if if_snap[0] > 0 and if_snap[0] < incl:
                incl = if_snap[0]
            if incl > MAX_CAPLEN:
                return n, pos, _CORRUPT, _R_CAPLEN_MAX, incl, 0
            if orig > 0x7FFFFFFF:
                orig = 0x7FFFFFFF
            out_off[n] = pos + 12
            out_cap[n] = incl
            out_wire[n] = orig
            out_ts[n] = state[0]
            out_lt[n] = if_lt[0]
            if_used[0] = 1
            n += 1
        elif btype == _BT_IDB:
            return n, pos, _IDB, blen, 0, 0
        elif (btype == _BT_NRB or btype == _BT_ISB or btype == _BT_DSB or btype == _BT_JOURNAL
              or btype == _BT_CUSTOM or btype == _BT_CUSTOM_NOCOPY):
            state[1] += 1
        else:
            return n, pos, _UNKNOWN, btype, blen, 0
        pos += blen


_REASONS = {
    _R_CAPLEN_MAX: "captured length {} exceeds the maximum of %d" % MAX_CAPLEN,
    _R_BLOCK_ALIGN: "block length {} is not a multiple of 4",
    _R_BLOCK_SHORT: "block length {} is smaller than 12",
    _R_BLOCK_TRAILER: "trailing block length {} does not match the leading one",
    _R_BAD_IFACE: "packet refers to interface {}, which no Interface Description Block defined",
    _R_CAPLEN_BLOCK: "captured length {} does not fit in its block",
    _R_BLOCK_HUGE: "block length {} exceeds the maximum of %d" % MAX_BLOCK,
    _R_BLOCK_MIN: "block length {} is too small for its block type",
}


# ---------------------------------------------------------------------------- buffering


class _Stream:
    """The uncompressed byte stream, seen through a window ``buf[start:end]``.

    ``refill`` builds a new buffer (batches already yielded keep the old one), or with
    ``reuse`` alternates between two buffers: the batch before the previous one is then
    overwritten, which suits consumers that finish with a batch before asking for the next
    (measured: ~10 % faster end to end, no page faults for fresh buffers).
    """

    WAY = "read"  # read_capture's file_io, as ReaderStats.file_io reports it

    def __init__(self, f: BinaryIO, path: str, chunk_bytes: int, stats: ReaderStats,
                 reuse: bool = False) -> None:
        self.f = f
        self.reuse = reuse
        self.spare: np.ndarray | None = None
        self.path = path
        self.chunk = chunk_bytes
        self.stats = stats
        self.buf = np.empty(0, dtype=np.uint8)
        self.base = 0  # stream offset of buf[0]
        self.start = 0
        self.end = 0
        self.eof = False
        self.error: CaptureFormatError | None = None  # a read error that ended the stream

    @property
    def avail(self) -> int:
        return self.end - self.start

    @property
    def offset(self) -> int:
        """Stream offset of ``buf[start]``."""
        return self.base + self.start

    def refill(self, need: int = 0) -> None:
        """New buffer: the unconsumed tail, then as much new data as fits.

        The buffer holds at least ``max(chunk_bytes, need)`` bytes, ``need`` counted from
        the current position (a record larger than a chunk grows it).
        """
        tail = self.avail
        size = max(self.chunk, need, tail + 1)
        if self.reuse and self.spare is not None and self.spare.shape[0] >= size:
            nbuf = self.spare[:size]
        else:
            nbuf = np.empty(size, dtype=np.uint8)
        nbuf[:tail] = self.buf[self.start:self.end]
        if self.reuse:
            self.spare = self.buf.base if self.buf.base is not None else self.buf
        self.base += self.start
        self.buf, self.start, self.end = nbuf, 0, tail
        view = memoryview(nbuf)
        while self.end < size and not self.eof:
            try:
                got = self.f.readinto(view[self.end:])
            except (zlib.error, OSError) as e:
                # keep what this refill already holds: the records before the fault are
                # read, then the readers raise this error (see ``fault``)
                self.eof = True
                self.error = CaptureFormatError(self.path, self.base + self.end,
                                                f"cannot read (compressed) data: {e}")
                break
            if not got:
                self.eof = True
                if getattr(self.f, "truncated", False):
                    msg = (f"{self.path}: compressed stream ends early, after "
                           f"{self.base + self.end} uncompressed bytes")
                    log.warning("%s", msg)
                    self.stats.warnings.append(msg)
                garbage = getattr(self.f, "garbage_at", None)
                if garbage is not None:  # gzip(1) too: "decompression OK, trailing garbage ignored"
                    msg = (f"{self.path}: trailing garbage ignored after the last gzip member "
                           f"(compressed byte {garbage}, after {self.base + self.end} "
                           "uncompressed bytes)")
                    log.warning("%s", msg)
                    self.stats.warnings.append(msg)
            else:
                self.end += got

    def fault(self) -> None:
        """Raise the read error met while filling the buffer, if any (once the records
        before it have been handed out)."""
        if self.error is not None:
            raise self.error

    def ensure(self, need: int) -> bool:
        """Have ``need`` bytes from the current position; False at end of file."""
        while self.avail < need:
            if self.eof:
                return False
            self.refill(need)
        return True

    def bytes_at(self, n: int) -> bytes:
        return self.buf[self.start:self.start + n].tobytes()

    def close(self) -> None:
        """Let go of what the stream holds besides the file (see the subclasses)."""


class _MappedStream(_Stream):
    """A regular file read through a private read-only mapping instead of ``read()``.

    The window ``buf[start:end]`` moves over the mapping (``buf`` is the whole file, ``base``
    stays 0): no bytes are copied, the kernels walk and decode the page cache's own pages.
    Measured on the 2-core VM (388 MB IoT corpus x8, file cached): ``read()`` into the buffers
    spent ~0.8 s of system time in 682 calls (~1 GB/s page-cache copies, ~0.3 us per packet,
    more than decoding and tracking together); the mapping costs its page faults only (the
    kernel maps 64 KiB around each fault of a cached file).

    Each window is announced with MADV_WILLNEED (cached pages mapped ahead, read-ahead for the
    others); the pages a window left behind are dropped with MADV_DONTNEED, so that the
    resident size stays a few windows however large the file (the mapping is private and never
    written: a batch still referring to dropped pages reads them again from the file).

    A file truncated by another process while it is mapped makes the next access past its new
    end raise SIGBUS, which ends the process: :func:`read_capture` maps only when asked to
    (``mmap=True``: the ``malsensor extract`` CLI and the trainer, which read files at rest), and
    never for standard input, FIFOs or gzip. The daemon's replay source keeps ``read()``.
    """

    WAY = "map"
    DROP_LAG = 2  # windows kept mapped behind the current one (reuse_buffers hands out two)

    def __init__(self, mm, path: str, chunk_bytes: int, stats: ReaderStats, reuse: bool = False) -> None:
        super().__init__(None, path, chunk_bytes, stats, reuse)  # type: ignore[arg-type]
        self.mm = mm
        self.size = len(mm)
        self.buf = np.frombuffer(mm, dtype=np.uint8)  # writable (ACCESS_COPY): the kernels' own signatures
        self.dropped = 0  # bytes before this were handed back with MADV_DONTNEED
        self.starts: list[int] = []  # start of the recent windows
        self._advise(mmap.MADV_SEQUENTIAL, 0, self.size)

    def _advise(self, how: int, start: int, length: int) -> None:
        page = mmap.PAGESIZE
        lo = start - start % page
        if length > 0:
            try:
                self.mm.madvise(how, lo, min(self.size, start + length) - lo)
            except (OSError, ValueError):  # advice only
                pass

    def refill(self, need: int = 0) -> None:
        """Move the window: from the current position, ``max(chunk_bytes, need)`` bytes or to
        the end of the file."""
        end = min(self.size, self.start + max(self.chunk, need, self.avail + 1))
        self._advise(mmap.MADV_WILLNEED, self.end, end - self.end)
        self.starts.append(self.start)
        if len(self.starts) > self.DROP_LAG:
            behind = self.starts.pop(0)
            behind -= behind % mmap.PAGESIZE
            if behind > self.dropped:
                self._advise(mmap.MADV_DONTNEED, self.dropped, behind - self.dropped)
                self.dropped = behind
        self.end = end
        self.eof = end == self.size

    def close(self) -> None:
        self.buf = np.empty(0, dtype=np.uint8)
        try:
            self.mm.close()
        except BufferError:  # batches still refer to it: unmapped when the last one goes
            pass


class _DirectStream(_Stream):
    """A regular file read with direct I/O, a few chunks ahead, by :class:`ChunkReader`.

    Each window is one chunk's buffer: the record piece left at the end of the window before is
    copied into the room in front of the chunk (``HEAD`` bytes, a pcap record's maximum), so
    nothing else is copied. A record longer than what that gives (a pcapng block over a chunk)
    is gathered into a buffer of its own. With ``reuse`` the chunk buffers go back to the reader
    two windows later (the same lifetime as the alternating buffers of read()); without it every
    chunk has a buffer of its own.

    Unlike a mapping, a file cut short by another process while it is read is simply shorter.
    """

    WAY = "direct"
    HEAD = 512 << 10  # > MAX_CAPLEN + the record header, rounded to a multiple of ALIGN
    KEEP = 2  # chunks held: the current window's and the one before (batches may refer to both)

    def __init__(self, reader: ChunkReader, path: str, stats: ReaderStats, reuse: bool) -> None:
        super().__init__(None, path, reader.chunk, stats, reuse)  # type: ignore[arg-type]
        self.reader = reader
        self.held: list[Chunk] = []

    def refill(self, need: int = 0) -> None:
        """The next chunk behind the unconsumed tail; at least ``need`` bytes from the current
        position, or all that is left."""
        if self.eof:
            return
        tail = self.avail
        need = max(need, tail + 1)
        c = self._take()
        if tail <= self.HEAD and (tail + c.length >= need or self.eof):
            lo = self.HEAD - tail
            c.buf[lo:self.HEAD] = self.buf[self.start:self.end]
            self.base = c.offset - self.HEAD
            self.buf, self.start, self.end = c.buf, lo, self.HEAD + c.length
            self.held.append(c)
            while len(self.held) > self.KEEP:
                self.reader.release(self.held.pop(0))
            return
        # gather: the tail and as many chunks as it takes, into a buffer of their own
        out = np.empty(max(need, tail + c.length), dtype=np.uint8)
        out[:tail] = self.buf[self.start:self.end]
        self.base += self.start
        end = tail
        while True:
            if end + c.length > out.shape[0]:
                out = np.concatenate([out[:end], np.empty(max(c.length, end), dtype=np.uint8)])
            out[end:end + c.length] = c.buf[self.HEAD:self.HEAD + c.length]
            end += c.length
            self.reader.release(c)
            if end >= need or self.eof:
                break
            c = self._take()
        self.buf, self.start, self.end = out, 0, end

    def _take(self) -> Chunk:
        """The reader's next chunk; marks the end of the file (or a read error) when it is the last."""
        c = self.reader.next()
        if c.error is not None:
            self.error = CaptureFormatError(self.path, c.offset + c.length,
                                            f"cannot read: {c.error.strerror or c.error}")
        self.eof = c.error is not None or c.length < self.reader.chunk
        return c

    def close(self) -> None:
        self.reader.close()


class _Gunzip:
    """Streaming gzip decompression (several members allowed) with a ``readinto`` method.

    Unlike :class:`gzip.GzipFile`, which raises EOFError and drops the data of the read that
    hit the end, a compressed stream cut short hands out everything it could decompress and
    then reports end of file with ``truncated`` set. Corrupt data hands out every byte decoded
    before the fault, as ``gzip -dc`` does, then raises ``zlib.error`` on the next read: the
    members are inflated raw and their CRC and length checked here, since zlib's own check
    fails the whole call that reaches the trailer and drops its output. Bytes after the last
    member that do not start a member end the stream (``garbage_at``: their compressed
    offset), as gzip(1) ignores them too.
    """

    READ = 1 << 18
    SALVAGE_STEP = 4096  # output bytes per call when decoding again up to a fault

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.inbuf = b""
        self.raw_eof = False
        self.d = zlib.decompressobj(wbits=-15)
        self.in_member = False
        self.crc = 0
        self.size = 0
        self.truncated = False
        self.garbage_at: int | None = None
        self.error: zlib.error | None = None
        self.consumed = 0  # compressed bytes read from ``raw``
        self.out = b""
        self.out_pos = 0

    def readinto(self, view: memoryview) -> int:
        while self.out_pos == len(self.out):
            if self.error is not None:
                err, self.error = self.error, None
                raise err
            if not self._decompress(len(view)):
                return 0
        n = min(len(view), len(self.out) - self.out_pos)
        view[:n] = self.out[self.out_pos:self.out_pos + n]
        self.out_pos += n
        return n

    def _more(self) -> bool:
        """Append the next compressed bytes to ``inbuf``; False at the end of the file."""
        data = self.raw.read(self.READ) if not self.raw_eof else b""
        self.consumed += len(data)
        self.raw_eof = not data
        self.inbuf += data
        return bool(data)

    def _fail(self, message: str) -> bool:
        self.error = zlib.error(message)
        self.out, self.out_pos = b"", 0
        return True

    def _decompress(self, want: int) -> bool:
        """Fill ``out`` with at most ``want`` bytes; False at the end of the stream."""
        self.out, self.out_pos = b"", 0
        if not self.in_member:
            while True:  # padding between members, as gzip allows
                self.inbuf = self.inbuf.lstrip(b"\0")
                if self.inbuf or not self._more():
                    break
            if not self.inbuf:
                return False
            hlen = self._header()
            while hlen is None and self._more():
                hlen = self._header()
            if hlen is None:
                if self.inbuf[:2] == GZIP_MAGIC[:len(self.inbuf[:2])]:
                    self.truncated = True  # a member header cut short
                else:
                    self.garbage_at = self.consumed - len(self.inbuf)
                return False
            if hlen < 0:
                if self.inbuf[:2] != GZIP_MAGIC:
                    self.garbage_at = self.consumed - len(self.inbuf)
                    return False
                return self._fail("bad gzip member header")
            self.inbuf = self.inbuf[hlen:]
            self.d = zlib.decompressobj(wbits=-15)
            self.in_member, self.crc, self.size = True, 0, 0
        if not self.d.eof:
            if not self.inbuf and not self._more():
                self.truncated = True
                return False
            before = self.d.copy()
            try:
                out = self.d.decompress(self.inbuf, max(want, 1 << 16))
            except zlib.error as e:
                self.out = self._salvage(before, self.inbuf)
                self.error = e
                return True
            self.inbuf = self.d.unconsumed_tail if not self.d.eof else b""
            self.crc = zlib.crc32(out, self.crc)
            self.size += len(out)
            self.out = out
            if not self.d.eof:
                return True
            self.inbuf = self.d.unused_data  # the trailer, maybe more members
        while len(self.inbuf) < 8:
            if not self._more():
                self.truncated = True
                return bool(self.out)
        crc, isize = struct.unpack_from("<II", self.inbuf)
        self.inbuf = self.inbuf[8:]
        self.in_member = False
        if crc != self.crc:
            self.error = zlib.error(f"bad CRC (stored {crc:#010x}, computed {self.crc:#010x})")
        elif isize != self.size & 0xFFFFFFFF:
            self.error = zlib.error(f"bad length (stored {isize}, decoded {self.size})")
        return True

    def _header(self) -> int | None:
        """Length of the gzip member header at the start of ``inbuf`` (RFC 1952); None if it
        needs more bytes, -1 if it is not a valid header."""
        b = self.inbuf
        if len(b) < 10:
            return None if GZIP_MAGIC.startswith(b[:2]) else -1
        if b[:2] != GZIP_MAGIC or b[2] != 8 or b[3] & 0xE0:
            return -1
        flags, p = b[3], 10
        if flags & 4:  # FEXTRA
            if len(b) < p + 2:
                return None
            p += 2 + struct.unpack_from("<H", b, p)[0]
        for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
            if flags & bit:
                z = b.find(b"\0", p)
                if z < 0:
                    return None
                p = z + 1
        if flags & 2:  # FHCRC
            p += 2
        return p if len(b) >= p else None

    def _salvage(self, d, data: bytes) -> bytes:
        """Every byte ``d`` decodes from ``data`` before it fails: zlib drops the output of
        the call that fails, so decode again in small steps, then byte by byte."""
        out = bytearray()
        step = self.SALVAGE_STEP
        while step:
            saved = d.copy()
            try:
                piece = d.decompress(data, step)
            except zlib.error:
                d = saved
                step = 1 if step > 1 else 0
                continue
            if not piece and not d.unconsumed_tail:
                break
            out += piece
            data = d.unconsumed_tail
        return bytes(out)

    def close(self) -> None:
        pass


class _Prefixed:
    """A non-seekable stream (a pipe) with the bytes already read from it put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head = head
        self.raw = raw

    def readinto(self, view: memoryview) -> int:
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.raw.readinto(view)  # type: ignore[attr-defined]

    def read(self, n: int) -> bytes:
        if self.head:
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.raw.read(n)

    def close(self) -> None:
        pass


def _open(path: str) -> tuple[BinaryIO, BinaryIO, bool]:
    """(stream to read, underlying file to close, compressed?). ``-`` is standard input; a
    FIFO or a pipe works too (nothing seeks: what was read to look for the gzip magic is put
    back in front)."""
    try:
        raw = os.fdopen(os.dup(0), "rb") if path == "-" else open(path, "rb")
    except OSError as e:
        raise CaptureFormatError(path, None, f"cannot open: {e.strerror or e}") from e
    try:
        head = raw.read(2)
        while 0 < len(head) < 2:  # a pipe may hand out one byte at a time
            more = raw.read(2 - len(head))
            if not more:
                break
            head += more
        if raw.seekable():
            raw.seek(0)
            f: BinaryIO = raw
        else:
            f = _Prefixed(head, raw)  # type: ignore[assignment]
    except OSError as e:
        raw.close()
        raise CaptureFormatError(path, 0, f"cannot read: {e.strerror or e}") from e
    if head == GZIP_MAGIC:
        return _Gunzip(f), raw, True  # type: ignore[return-value]
    return f, raw, False


# ---------------------------------------------------------------------------- readers


FILE_IO_WAYS = ("read", "map", "direct")
# Files smaller than this are mapped rather than read with direct I/O: a few chunks do not pay
# for the reading thread, and they are mostly small captures read again and again (tests, warm-up).
DIRECT_MIN_BYTES = 8 << 20


def read_capture(path: str | os.PathLike[str], *, chunk_bytes: int = 2 << 20,
                 stats: ReaderStats | None = None, reuse_buffers: bool = False,
                 file_io: str = "read") -> Iterator[PacketBatch]:
    """Yield the packets of a pcap or pcapng file (optionally gzip-compressed) in batches.

    One batch per chunk of ``chunk_bytes`` (the last records of a chunk that are cut by
    the chunk boundary go to the next batch). A file cut short yields every complete
    record, logs a warning on logger ``malsensor.capture`` and sets
    ``stats.truncated_at``; a corrupt record raises :class:`CaptureFormatError` after the
    batches before it were yielded.

    ``reuse_buffers``: a batch's bytes and arrays stay valid only until the next batch after it
    is requested, and must not be written (for consumers that finish with each batch first,
    like the pipeline).

    ``file_io`` says how an uncompressed regular file is read (other inputs always use
    ``read()``; packets, statistics and messages are the same every way, batch boundaries may
    differ):

    - ``"read"``: ``read()`` into the stream's own buffers;
    - ``"map"``: through a memory mapping (no copies; see :class:`_MappedStream`, also for why
      a file truncated while it is read then ends the process with SIGBUS);
    - ``"direct"``: with direct I/O, on a thread, a few chunks ahead (:class:`_DirectStream`;
      chunks are ``chunk_bytes`` rounded up to 4 KiB). A file under ``DIRECT_MIN_BYTES``, or
      one whose file system refuses O_DIRECT, is mapped instead.
    """
    path = os.fspath(path)
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    if file_io not in FILE_IO_WAYS:
        raise ValueError(f"file_io must be one of {FILE_IO_WAYS}")
    st = stats if stats is not None else ReaderStats()
    f, raw, compressed = _open(path)
    stream: _Stream | None = None
    try:
        if file_io != "read" and not compressed:
            stream = _at_rest(raw, path, chunk_bytes, st, reuse_buffers, file_io == "direct")
        if stream is None:
            stream = _Stream(f, path, chunk_bytes, st, reuse_buffers)
        st.file_io = stream.WAY
        stream.refill(0)
        if stream.avail < 4:
            stream.fault()
        if stream.avail == 0:
            raise CaptureFormatError(path, 0, "empty file" if not compressed
                                     else "empty compressed stream")
        if not stream.ensure(4):
            raise CaptureFormatError(path, 0, f"only {stream.avail} bytes: not a capture file")
        head = stream.bytes_at(4)
        le_magic = struct.unpack("<I", head)[0]
        be_magic = struct.unpack(">I", head)[0]
        gz = "+gzip" if compressed else ""
        if le_magic == PCAPNG_SHB:
            st.format = "pcapng" + gz
            yield from _read_pcapng(stream, st)
        elif PCAP_MAGIC_US in (le_magic, be_magic) or PCAP_MAGIC_NS in (le_magic, be_magic):
            be = be_magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS)
            nsec = PCAP_MAGIC_NS in (le_magic, be_magic)
            st.format = ("pcap-ns" if nsec else "pcap") + gz
            yield from _read_pcap(stream, st, be, nsec)
        elif PCAP_MAGIC_KUZNETZOV in (le_magic, be_magic):
            raise CaptureFormatError(path, 0, "modified (Kuznetzov) pcap format is not supported;"
                                     " convert it with editcap -F pcap")
        else:
            raise CaptureFormatError(
                path, 0, f"not a pcap or pcapng file (first bytes {head.hex()}; expected "
                "pcap magic a1b2c3d4/a1b23c4d, pcapng 0a0d0d0a or gzip 1f8b)")
        stream.fault()
    finally:
        if stream is not None:
            stream.close()
        f.close()
        raw.close()


def _at_rest(raw: BinaryIO, path: str, chunk_bytes: int, st: ReaderStats, reuse: bool,
             direct: bool) -> _Stream | None:
    """A direct-I/O or mapped stream over a regular file, or None (read it with read())."""
    try:
        fd = raw.fileno()
        info = os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if direct and info.st_size >= DIRECT_MIN_BYTES:
        chunk = -(-chunk_bytes // ALIGN) * ALIGN
        try:
            reader = ChunkReader(fd, chunk, _DirectStream.HEAD, recycle=reuse)
        except OSError as e:  # no O_DIRECT here (tmpfs before Linux 6.6, some FUSE), no /proc
            log.debug("%s: no direct I/O (%s); mapping it", path, e.strerror or e)
        else:
            log.debug("%s: read with direct I/O, %d KiB at a time, on a thread", path, chunk >> 10)
            return _DirectStream(reader, path, st, reuse)
    mapping = _map(fd, info.st_size)
    return _MappedStream(mapping, path, chunk_bytes, st, reuse) if mapping is not None else None


def _map(fd: int, size: int):
    """A private mapping of the whole of the regular file ``fd`` (``size`` bytes), or None
    (empty, mapping refused)."""
    if size == 0:
        return None
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return None


def _truncated(stream: _Stream, st: ReaderStats, what: str) -> None:
    stream.fault()  # a decompression fault, not a file cut short
    off = stream.offset
    st.truncated_at = off
    msg = (f"{stream.path}: truncated at byte {off}: {what} cut short "
           f"({stream.avail} bytes present); {st.packets} packets read before it")
    log.warning("%s", msg)
    st.warnings.append(msg)


class _Scratch:
    """Per-packet output arrays sized for the current buffer, reused across chunks.

    ``reuse``: batches hand out views of two alternating sets of arrays (the same lifetime as
    the stream's alternating buffers) instead of copies."""

    def __init__(self, reuse: bool = False) -> None:
        self.reuse = reuse
        self.size = -1
        self._sets: list[tuple] = []
        self._turn = 0
        self._fill: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by link type, for the current size

    def fit(self, buf_len: int) -> None:
        size = buf_len // 16 + 1  # every packet record takes at least 16 bytes
        if size > self.size:
            # a quarter more: a window is a chunk plus the piece of record before it, a little
            # longer now and then (growing them by that much made 14 new sets of arrays, 7 MB
            # of fresh pages each, in an x8 extract read with direct I/O)
            self.size = size = size + size // 4
            self._sets = [tuple(np.empty(size, dtype=dt) for dt in (np.int64, np.int32, np.int32, np.int64, np.int32))
                          for _ in range(2 if self.reuse else 1)]
            self._fill = {}
        if self.reuse:
            self._turn ^= 1
        self.off, self.cap, self.wire, self.ts, self.lt = self._sets[self._turn % len(self._sets)]

    def batch(self, buf: np.ndarray, n: int, linktype: int | None) -> PacketBatch:
        if not self.reuse:
            lt = (np.full(n, linktype, dtype=np.int32) if linktype is not None
                  else self.lt[:n].copy())
            return PacketBatch(buf=buf, offset=self.off[:n].copy(), caplen=self.cap[:n].copy(),
                               wirelen=self.wire[:n].copy(), ts_ns=self.ts[:n].copy(), linktype=lt,
                               vlan=np.full(n, NO_VLAN, dtype=np.int32))
        lt_fill, vlan = self._constant(linktype if linktype is not None else -1)
        return PacketBatch(buf=buf, offset=self.off[:n], caplen=self.cap[:n], wirelen=self.wire[:n],
                           ts_ns=self.ts[:n], linktype=lt_fill[:n] if linktype is not None else self.lt[:n],
                           vlan=vlan[:n])

    def _constant(self, linktype: int) -> tuple[np.ndarray, np.ndarray]:
        """Arrays of the link type and of NO_VLAN, as long as the scratch arrays, shared by the
        batches (not flagged read-only: numba would compile every kernel again for that type)."""
        got = self._fill.get(linktype)
        if got is None:
            got = self._fill[linktype] = (np.full(self.size, linktype, dtype=np.int32),
                                          np.full(self.size, NO_VLAN, dtype=np.int32))
        return got


def _read_pcap(stream: _Stream, st: ReaderStats, be: bool, nsec: bool) -> Iterator[PacketBatch]:
    path = stream.path
    if not stream.ensure(24):
        stream.fault()
        raise CaptureFormatError(path, stream.offset,
                                 f"pcap file header cut short ({stream.avail} of 24 bytes)")
    e = ">" if be else "<"
    _magic, vmaj, vmin, _zone, _sigfigs, snaplen, network = struct.unpack(
        e + "IHHiIII", stream.bytes_at(24))
    if vmaj != 2:
        raise CaptureFormatError(path, 4, f"unsupported pcap version {vmaj}.{vmin}")
    linktype = network & LINKTYPE_MASK
    if linktype not in SUPPORTED_LINKTYPES:
        raise CaptureFormatError(path, 20, f"unsupported link type {linktype} "
                                 f"(supported: {sorted(SUPPORTED_LINKTYPES)})")
    if network & 0x04000000:
        msg = (f"{path}: frames carry a {(network >> 28) * 2}-byte FCS "
               f"(link type field {network:#x})")
        log.warning("%s", msg)
        st.warnings.append(msg)
    st.linktypes.add(linktype)
    stream.start += 24
    st.bytes = stream.offset
    frac_mult = 1 if nsec else 1000
    scratch = _Scratch(stream.reuse)
    while True:
        scratch.fit(stream.end - stream.start)
        n, pos, status, aux, aux2, raised = _walk_pcap(
            stream.buf, stream.start, stream.end, be, frac_mult,
            scratch.off, scratch.cap, scratch.wire, scratch.ts)
        buf = stream.buf[:stream.end]
        stream.start = pos
        st.wirelen_raised += raised
        if n:
            st.packets += n
            st.bytes = stream.offset
            yield scratch.batch(buf, n, linktype)
        st.bytes = stream.offset
        if status == _CORRUPT:
            raise CaptureFormatError(path, stream.offset,
                                     "corrupt record: " + _REASONS[aux].format(aux2))
        # _NEED
        if stream.avail == 0 and stream.eof:
            return
        if stream.eof:
            _truncated(stream, st, "packet record")
            return
        stream.refill(aux)


@dataclass
class _Interfaces:
    """Interface Description Blocks of the current section, as kernel-ready arrays."""

    n: int = 0
    lt: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int32))
    ok: np.ndarray = field(default_factory=lambda: np.zeros(4, np.uint8))
    snap: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    mode: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    k: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    factor: np.ndarray = field(default_factory=lambda: np.zeros(4, np.uint64))
    off_ns: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    used: np.ndarray = field(default_factory=lambda: np.zeros(4, np.uint8))

    def add(self, linktype: int, snaplen: int, tsresol: int, tsoffset: int) -> None:
        if self.n == self.lt.shape[0]:
            for name in ("lt", "ok", "snap", "mode", "k", "factor", "off_ns", "used"):
                a = getattr(self, name)
                setattr(self, name, np.concatenate([a, np.zeros_like(a)]))
        i = self.n
        self.lt[i] = linktype
        self.ok[i] = linktype in SUPPORTED_LINKTYPES
        self.snap[i] = snaplen
        k = tsresol & 0x7F
        if tsresol & 0x80:
            self.mode[i], self.factor[i] = _TS_POW2, 0
        elif k <= 9:
            self.mode[i], self.factor[i] = _TS_MUL10, 10 ** (9 - k)
        else:
            div = 10 ** (k - 9)
            self.mode[i], self.factor[i] = _TS_DIV10, div if div < 1 << 64 else 0
        self.k[i] = k
        self.off_ns[i] = tsoffset * 1_000_000_000
        self.used[i] = 0
        self.n += 1


def _parse_options(body: bytes, e: str, base: int, path: str) -> Iterator[tuple[int, bytes]]:
    """(code, value) of each option in ``body``; ``base`` is its stream offset."""
    p = 0
    while p + 4 <= len(body):
        code, olen = struct.unpack_from(e + "HH", body, p)
        if code == 0:
            return
        if p + 4 + olen > len(body):
            raise CaptureFormatError(path, base + p, f"option {code} of length {olen} runs "
                                     "past the end of its block")
        yield code, body[p + 4:p + 4 + olen]
        p += 4 + ((olen + 3) & ~3)


def _shb_cut(stream: _Stream, st: ReaderStats) -> None:
    """A Section Header Block cut short: an error for the first (the file header, as for
    pcap), a truncation warning for a later one."""
    stream.fault()
    if st.sections == 0:
        raise CaptureFormatError(stream.path, stream.offset, "pcapng Section Header Block cut "
                                 f"short ({stream.avail} bytes present)")
    _truncated(stream, st, "Section Header Block")


def _read_pcapng(stream: _Stream, st: ReaderStats) -> Iterator[PacketBatch]:
    path = stream.path
    be = False
    e = "<"
    ifs = _Interfaces()
    state = np.zeros(3, dtype=np.int64)
    scratch = _Scratch(stream.reuse)
    in_section = False
    seen_unknown: set[int] = set()

    def note_used() -> None:
        for i in np.flatnonzero(ifs.used[:ifs.n]):
            st.linktypes.add(int(ifs.lt[i]))

    while True:
        if not in_section:  # a Section Header Block starts here (or the file ends)
            if not stream.ensure(1):
                return
            if not stream.ensure(12):
                return _shb_cut(stream, st)
            head = stream.bytes_at(12)
            bom = head[8:12]
            if bom == b"\x4d\x3c\x2b\x1a":
                be, e = False, "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                be, e = True, ">"
            else:
                raise CaptureFormatError(path, stream.offset + 8, "corrupt Section Header Block: "
                                         f"bad byte-order magic {bom.hex()}")
            blen = struct.unpack(e + "I", head[4:8])[0]
            if blen % 4 or blen < 28 or blen > MAX_BLOCK:
                raise CaptureFormatError(path, stream.offset, "corrupt Section Header Block: "
                                         f"block length {blen}")
            if not stream.ensure(blen):
                return _shb_cut(stream, st)
            block = stream.bytes_at(blen)
            trailer = struct.unpack_from(e + "I", block, blen - 4)[0]
            if trailer != blen:
                raise CaptureFormatError(path, stream.offset, "corrupt Section Header Block: "
                                         + _REASONS[_R_BLOCK_TRAILER].format(trailer))
            vmaj, vmin = struct.unpack_from(e + "HH", block, 12)
            if vmaj != 1:
                raise CaptureFormatError(path, stream.offset + 12,
                                         f"unsupported pcapng version {vmaj}.{vmin}")
            note_used()
            ifs = _Interfaces()
            in_section = True
            st.sections += 1
            stream.start += blen
            st.bytes = stream.offset
            continue
        scratch.fit(stream.end - stream.start)
        n, pos, status, aux, aux2, _ = _walk_pcapng(
            stream.buf, stream.start, stream.end, be, ifs.n, ifs.lt, ifs.ok, ifs.snap, ifs.mode,
            ifs.k, ifs.factor, ifs.off_ns, ifs.used, state,
            scratch.off, scratch.cap, scratch.wire, scratch.ts, scratch.lt)
        buf = stream.buf[:stream.end]
        stream.start = pos
        st.skipped_blocks += int(state[1])
        st.wirelen_raised += int(state[2])
        state[1] = state[2] = 0
        if n:
            st.packets += n
            st.bytes = stream.offset
            note_used()
            yield scratch.batch(buf, n, None)
        st.bytes = stream.offset
        if status == _NEED:
            if stream.eof:
                if stream.avail:
                    _truncated(stream, st, "block")
                return
            stream.refill(aux)
        elif status == _SHB:
            in_section = False
        elif status == _IDB:
            block = stream.bytes_at(aux)
            if aux < 20:
                raise CaptureFormatError(path, stream.offset, "corrupt Interface Description "
                                         "Block: " + _REASONS[_R_BLOCK_MIN].format(aux))
            linktype, _res, snaplen = struct.unpack_from(e + "HHI", block, 8)
            tsresol, tsoffset = 6, 0
            for code, val in _parse_options(block[16:aux - 4], e, stream.offset + 16, path):
                if code == 9 and len(val) >= 1:
                    tsresol = val[0]
                elif code == 14 and len(val) >= 8:
                    tsoffset = struct.unpack_from(e + "q", val)[0]
            if abs(tsoffset) > (1 << 63) // 1_000_000_000 - 1:
                raise CaptureFormatError(path, stream.offset, f"if_tsoffset {tsoffset} s is out "
                                         "of range")
            ifs.add(linktype, snaplen, tsresol, tsoffset)
            stream.start += aux
        elif status == _UNKNOWN:
            st.skipped_blocks += 1
            if aux not in seen_unknown:
                seen_unknown.add(aux)
                msg = (f"{path}: skipping pcapng block(s) of unknown type {aux:#x} "
                       f"(first at byte {stream.offset})")
                log.info("%s", msg)
                st.warnings.append(msg)
            stream.start += aux2
        elif status == _BAD_LINKTYPE:
            raise CaptureFormatError(path, stream.offset,
                                     f"unsupported link type {aux} (interface {aux2}; "
                                     f"supported: {sorted(SUPPORTED_LINKTYPES)})")
        else:  # _CORRUPT
            raise CaptureFormatError(path, stream.offset,
                                     "corrupt block: " + _REASONS[aux].format(aux2))
