"""A bounded, ordered spool of event lines on disk: what waits while a server is down or slow.

Layout of the directory (one spool per output; only one thread uses it)::

    00000000000000000001.seg   append-only segment files of whole lines ("...\\n"), oldest first
    00000000000000000002.seg
    cursor                     {"segment": 1, "offset": 81920}: where delivery stands in the oldest one

Lines are appended at the tail and read from the cursor; a segment is deleted once it is
delivered, and the whole spool is emptied (files removed) when delivery catches up, so a
spool that is not needed takes no disk. The byte bound counts the segment files as they are
on disk; lines that do not fit are refused whole and the caller counts them: nothing is
dropped silently, and what is kept stays in order.

Crash safety: a line is acknowledged only by moving the cursor (a 64-byte record rewritten in place)
after the server accepted it, so an unclean stop may deliver a line twice, never lose it. A
torn last line (the process died inside a write) is cut off when the spool is opened.
"""
from __future__ import annotations

import json
import logging
import os
import typing
from pathlib import Path

import numpy as np

log = logging.getLogger("malsensor.output")

SEGMENT_MAX_BYTES = 8 << 20
"""Largest segment: delivered space is given back one segment at a time."""
SEGMENT_MIN_BYTES = 4096
_SUFFIX = ".seg"
_CURSOR = "cursor"
_CURSOR_BYTES = 64


def _seg_name(seq: int) -> str:
    return f"{seq:020d}{_SUFFIX}"


def line_ends(data: bytes) -> np.ndarray:
    """Offsets just past each ``\\n`` of ``data`` (int64)."""
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1


class Spool:
    """Event lines waiting on disk, within ``max_bytes``; see the module docstring."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes or min(SEGMENT_MAX_BYTES, max(SEGMENT_MIN_BYTES, max_bytes // 8)))
        self.segments: list[int] = []   # sequence numbers, oldest first
        self.sizes: dict[int, int] = {}
        self.head_offset = 0            # bytes of segments[0] already delivered
        self.bytes = 0                  # on disk, all segments
        self.events = 0                 # lines not yet delivered
        self.next_seq = 1               # the next segment's number (never reused: the cursor names it)
        self.full = False               # a line was refused: refuse all until delivery makes room
        self._fd: int | None = None     # the tail segment, open for appending
        self._cursor_fd: int | None = None
        self._reader: tuple[int, typing.BinaryIO] | None = None  # (segment, file) being read

    # ------------------------------------------------------------------ open / close

    def open(self) -> None:
        """Create the directory or take over what a previous run left (raises OSError)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = sorted(int(p.name[: -len(_SUFFIX)]) for p in self.dir.iterdir()
                      if p.name.endswith(_SUFFIX) and p.name[: -len(_SUFFIX)].isdigit())
        seg0, off0 = self._read_cursor()
        for seq in segs:
            if seq < seg0:  # delivered before the cursor file was updated
                (self.dir / _seg_name(seq)).unlink(missing_ok=True)
        self.segments = [s for s in segs if s >= seg0]
        self.next_seq = max([seg0, *segs]) + 1 if segs else max(seg0, 1)
        self.sizes = {s: (self.dir / _seg_name(s)).stat().st_size for s in self.segments}
        if self.segments:
            self._cut_torn_tail(self.segments[-1])
        self.head_offset = off0 if self.segments and self.segments[0] == seg0 else 0
        self.head_offset = min(self.head_offset, self.sizes.get(self.segments[0], 0) if self.segments else 0)
        self.bytes = sum(self.sizes.values())
        self.events = self._count_pending()
        if not self.events:
            self._reset()

    def close(self) -> None:
        self._close_tail()
        self._close_reader()
        if self._cursor_fd is not None:
            os.close(self._cursor_fd)
            self._cursor_fd = None

    def _close_tail(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def _read_cursor(self) -> tuple[int, int]:
        p = self.dir / _CURSOR
        try:
            c = json.loads(p.read_text())
            return int(c["segment"]), int(c["offset"])
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("spool %s: unreadable cursor file (%s): delivering the spool from its start "
                      "(lines may be delivered twice)", self.dir, e)
            return 0, 0

    def _cut_torn_tail(self, seq: int) -> None:
        path = self.dir / _seg_name(seq)
        size = self.sizes[seq]
        if not size:
            return
        with open(path, "rb") as f:
            f.seek(max(0, size - 65536))
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        if keep == 0 and size > len(tail):  # a line longer than the look-back: find its start
            keep = self._last_line_end(path, size)
        os.truncate(path, keep)
        log.warning("spool %s: cut a torn last line (%d bytes at byte offset %d of %s) left by an unclean stop",
                    self.dir, size - keep, keep, path.name)
        self.sizes[seq] = keep

    @staticmethod
    def _last_line_end(path: Path, size: int) -> int:
        with open(path, "rb") as f:
            data = f.read(size)
        return data.rfind(b"\n") + 1

    def _count_pending(self) -> int:
        n = 0
        for i, seq in enumerate(self.segments):
            with open(self.dir / _seg_name(seq), "rb") as f:
                if i == 0:
                    f.seek(self.head_offset)
                while chunk := f.read(1 << 20):
                    n += chunk.count(b"\n")
        return n

    def _reset(self) -> None:
        """Everything delivered: remove the segments; the cursor names the next one (numbers only grow,
        so a cursor left by a crash never points past lines appended later)."""
        self._close_tail()
        self._close_reader()
        self.segments, self.sizes = [], {}
        self.head_offset = self.bytes = self.events = 0
        self._write_cursor()
        for p in self.dir.iterdir():
            if p.name.endswith(_SUFFIX):
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ append

    def append(self, data: bytes) -> int:
        """Append whole lines (``data`` ends with ``\\n``) as far as the bound allows; returns how many
        lines were kept (the first ones). Raises OSError when the disk refuses (nothing kept).

        The bound counts the segment files on disk, so room comes back a segment at a time as
        delivery deletes them (all of it once delivery catches up)."""
        if not data or self.full:
            return 0
        room = self.max_bytes - self.bytes
        if len(data) > room:
            # what is kept is always the oldest part of the stream, without gaps: once a line is
            # refused, so are all later ones until delivery makes room
            self.full = True
            ends = line_ends(data)
            k = int(np.searchsorted(ends, room, side="right"))
            if k == 0:
                return 0
            data = data[: int(ends[k - 1])]
            n = k
        else:
            n = data.count(b"\n")
        fd = self._tail_fd(len(data))
        seq = self.segments[-1]
        start = self.sizes[seq]
        try:
            view = memoryview(data)
            done = 0
            while done < len(data):
                done += os.write(fd, view[done:])
        except OSError:
            try:  # whole lines only: cut back what part of this call reached the file
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
        self.sizes[seq] = start + len(data)
        self.bytes += len(data)
        self.events += n
        return n

    def _tail_fd(self, incoming: int) -> int:
        """The descriptor of the segment to append ``incoming`` bytes to (a new one when the tail is full)."""
        if self.segments:
            seq = self.segments[-1]
            size = self.sizes[seq]
            if size == 0 or size + incoming <= self.segment_bytes:
                if self._fd is None:
                    self._fd = os.open(self.dir / _seg_name(seq), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                return self._fd
        self._close_tail()
        seq = self.next_seq
        self._fd = os.open(self.dir / _seg_name(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.next_seq += 1
        self.segments.append(seq)
        self.sizes[seq] = 0
        return self._fd

    # ------------------------------------------------------------------ read / commit

    def peek(self, max_lines: int, max_bytes: int = 1 << 20) -> tuple[list[bytes], tuple[int, int]]:
        """The oldest waiting lines (without their ``\\n``), at most ``max_lines`` and about
        ``max_bytes``, from one segment; and the position to :meth:`commit` once they are delivered."""
        while self.segments:
            seq = self.segments[0]
            size = self.sizes[seq]
            if self.head_offset < size:
                f = self._head_file(seq)
                f.seek(self.head_offset)
                chunk = f.read(min(max_bytes, size - self.head_offset))
                if b"\n" not in chunk:  # one line longer than max_bytes
                    chunk += f.readline()
                parts = chunk.split(b"\n", max_lines)  # the last part: the rest (or a cut line)
                lines = parts[:-1]
                cut = len(chunk) - len(parts[-1])
                return lines, (seq, self.head_offset + cut)
            if len(self.segments) == 1:
                break
            self._drop_head()
        return [], (0, 0)

    def _head_file(self, seq: int):
        """The oldest segment, open for reading (kept open while it is the oldest)."""
        if self._reader is None or self._reader[0] != seq:
            self._close_reader()
            self._reader = (seq, open(self.dir / _seg_name(seq), "rb"))
        return self._reader[1]

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    def commit(self, position: tuple[int, int], n_lines: int) -> None:
        """Mark the lines up to ``position`` (from :meth:`peek`) as delivered."""
        seq, offset = position
        if not self.segments or self.segments[0] != seq:
            return
        self.head_offset = offset
        self.events -= n_lines
        self.full = False
        if self.events <= 0:
            self._reset()
            return
        if offset >= self.sizes[seq] and len(self.segments) > 1:
            self._drop_head()
        else:
            self._write_cursor()

    def _drop_head(self) -> None:
        self._close_reader()
        seq = self.segments.pop(0)
        (self.dir / _seg_name(seq)).unlink(missing_ok=True)
        self.bytes -= self.sizes.pop(seq)
        self.head_offset = 0
        self._write_cursor()

    def _write_cursor(self) -> None:
        """Overwrite the cursor in place: one fixed-size record in the first sector (a write of a
        temporary file and a rename took 2 ms on an overlay file system, 30 times a round trip's
        parsing; this takes microseconds)."""
        seg = self.segments[0] if self.segments else self.next_seq
        rec = json.dumps({"segment": seg, "offset": self.head_offset}).encode().ljust(_CURSOR_BYTES - 1) + b"\n"
        if self._cursor_fd is None:
            self._cursor_fd = os.open(self.dir / _CURSOR, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        os.pwrite(self._cursor_fd, rec, 0)
