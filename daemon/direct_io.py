"""Files read and written with direct I/O (O_DIRECT), on a thread, through aligned buffers.

:class:`ChunkReader` reads a capture at rest ahead of the kernels; :class:`DirectFileWriter`
writes the rows of ``malsensor extract`` behind them.

Why: a capture at rest is read once, front to back. Through the page cache every byte costs a
copy or a page-table entry, and on the 2-core VM the benchmarks run on, touching cached pages
was a third of ``malsensor extract``'s CPU time (``cat`` of the 388 MB x8 corpus took 0.11-0.57
CPU-s by the VM's memory state, the same read with O_DIRECT 0.01 CPU-s and 0.22-0.25 s of wall
time). With O_DIRECT the device writes into a few buffers the process keeps touching; the
reads run on a thread (they release the GIL, and so do the kernels) while the kernels work on
the chunk before, so the wall time stays the kernels'.

Where direct I/O would be slower - a slow disk under a file that is in the page cache - the
reader follows the consumer: while the consumer waits for its chunks twice as long as it works
on them (the device reads at under a third of the kernels' rate; moving averages over the last
eight or so chunks), each chunk is first asked of the page cache without blocking (``preadv2(RWF_NOWAIT)``)
and only what is not cached is read from the device. Short waits do not count: copying from
the page cache costs more CPU than the device's DMA, and the VM's device (1.3-1.7 GB/s) is
only a little slower than the kernels. A file system that refuses O_DIRECT reads (EINVAL) is
read through the page cache from there on.

A chunk ``k`` holds the file's bytes ``[k*chunk, (k+1)*chunk)`` at ``buf[head:head+length]``;
the ``head`` bytes before it are free for the consumer (the piece of a record cut by the chunk
boundary goes there, so records stay contiguous without copying the chunk).
"""
from __future__ import annotations

import errno
import fcntl
import io
import mmap
import os
import queue
import stat
import threading
import time
from dataclasses import dataclass

import numpy as np

ALIGN = 4096  # offsets, lengths and addresses of O_DIRECT reads (the largest logical block size in use)
HUGE_PAGE = 2 << 20


def aligned_buffer(size: int, huge: bool = True) -> np.ndarray:
    """``size`` bytes at a page boundary; with ``huge``, at a 2 MiB one and in transparent huge
    pages where the kernel gives them (the buffer's resident size is then rounded up to 2 MiB).

    An anonymous mapping (O_DIRECT needs aligned memory), private (a shared one is shmem, dearer
    per fault). Huge pages: on the VM a fresh 4 KiB page cost ~9 us at its first touch (perf of
    an x16 extract in small pages: the first touches of the reader's four buffers were 13 % of
    its page zeroing), a 2 MiB page about a tenth of that per byte."""
    if not huge:
        return np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE), dtype=np.uint8)
    span = -(-size // HUGE_PAGE) * HUGE_PAGE
    mm = mmap.mmap(-1, span + HUGE_PAGE, flags=mmap.MAP_PRIVATE)
    whole = np.frombuffer(mm, dtype=np.uint8)
    start = -whole.ctypes.data % HUGE_PAGE
    try:
        mm.madvise(mmap.MADV_HUGEPAGE, start, span)
    except (AttributeError, OSError, ValueError):  # no THP in this kernel: small pages
        pass
    return whole[start:start + size]


@dataclass
class Chunk:
    buf: np.ndarray  # the file's bytes at buf[head:head + length]
    offset: int  # file offset of buf[head]
    length: int  # bytes read: less than a chunk only at the end of the file or before an error
    error: OSError | None = None  # the read error that ended the file here


class ChunkReader:
    """Chunks of an open regular file, read ``depth`` chunks ahead on a thread.

    ``recycle``: the consumer hands chunks back with :meth:`release` once nothing refers to
    their buffers, and those buffers are read into again; without it every chunk gets a fresh
    buffer (a consumer may keep its chunks). Raises OSError when the file cannot be opened
    for direct I/O (the caller reads it another way).
    """

    def __init__(self, fd: int, chunk: int, head: int, depth: int = 4, recycle: bool = True) -> None:
        if chunk <= 0 or chunk % ALIGN or head % ALIGN:
            raise ValueError("chunk and head must be positive multiples of %d" % ALIGN)
        # a second open file description of the same file (not a dup: O_DIRECT is a property
        # of the description, and the caller's own reads must stay buffered)
        self._direct_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        try:
            self._cached_fd = os.dup(fd)
        except OSError:
            os.close(self._direct_fd)
            raise
        self.chunk, self.head, self.recycle = chunk, head, recycle
        self.direct = True  # False once the file system refused an O_DIRECT read
        self.starved = False  # the consumer waits for chunks twice as long as it works on them
        self._wait = self._work = 0.0  # moving averages, seconds a chunk
        self._returned = 0.0  # when next() last returned (0: not yet)
        self.bytes_direct = self.bytes_cached = 0  # read from the device / through the page cache
        self._stop = False
        self._free: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[Chunk] = queue.SimpleQueue()
        for _ in range(depth):
            self._free.put(self._new_buffer() if recycle else None)
        self._thread = threading.Thread(target=self._run, name="malsensor-read", daemon=True)
        self._thread.start()

    def _new_buffer(self) -> np.ndarray:
        # huge pages for the few recycled buffers only: chunks a consumer keeps would hold
        # 4 MiB each for 2.5 MiB of bytes
        return aligned_buffer(self.head + self.chunk, huge=self.recycle)

    # ------------------------------------------------------------------ consumer side

    def next(self) -> Chunk:
        """The next chunk (waits for it). After a chunk shorter than ``chunk`` there is none."""
        asked = time.perf_counter()
        try:
            c = self._ready.get_nowait()
            waited = 0.0
        except queue.Empty:
            c = self._ready.get()
            waited = time.perf_counter() - asked
        if self._returned:  # the first chunk is always waited for
            self._wait += (waited - self._wait) / 8
            self._work += (asked - self._returned - self._work) / 8
            self.starved = self._wait > 2 * self._work
        self._returned = time.perf_counter()
        return c

    def release(self, c: Chunk) -> None:
        """``c``'s buffer may be read into again."""
        self._free.put(c.buf if self.recycle else None)

    def close(self) -> None:
        self._stop = True
        self._free.put(None)  # wakes the thread if it waits for a buffer
        self._thread.join()
        os.close(self._direct_fd)
        os.close(self._cached_fd)

    # ------------------------------------------------------------------ reading thread

    def _run(self) -> None:
        offset = 0
        while True:
            buf = self._free.get()
            if self._stop:
                return
            if buf is None:
                buf = self._new_buffer()
            length, error = self._fill(buf, offset)
            self._ready.put(Chunk(buf, offset, length, error))
            if error is not None or length < self.chunk:
                return
            offset += length

    def _fill(self, buf: np.ndarray, offset: int) -> tuple[int, OSError | None]:
        view = memoryview(buf)[self.head:self.head + self.chunk]
        got = 0
        if self.starved:  # the device is behind the consumer: take what the page cache has
            try:
                got = os.preadv(self._cached_fd, [view], offset, os.RWF_NOWAIT)
            except OSError:  # EAGAIN: not cached; or RWF_NOWAIT unsupported
                got = 0
            self.bytes_cached += got
        while got < self.chunk:
            direct = self.direct and got % ALIGN == 0
            try:
                n = os.preadv(self._direct_fd if direct else self._cached_fd, [view[got:]], offset + got)
            except OSError as e:
                if direct and e.errno == errno.EINVAL:
                    self.direct = False
                    continue
                return got, e
            if n == 0:
                break
            got += n
            if direct:
                self.bytes_direct += n
            else:
                self.bytes_cached += n
        return got, None


class DirectFileWriter:
    """A binary file object that writes a regular file in ``block``-byte pieces with O_DIRECT,
    on a thread, up to ``depth`` blocks behind the caller.

    Why: through the page cache each written byte is copied into a freshly allocated page; on the
    VM that was 0.06-0.19 CPU-s of an x8/x16 JSONL extract (68 and 136 MB of rows, -o FILE
    against -o /dev/null), a quarter of its cost per packet. Here the caller's bytes are copied
    into a block the process keeps touching, and the device takes the block from there.

    The tail that does not fill a block is written through the page cache at :meth:`close`
    (O_DIRECT writes whole blocks), and so is everything after a short write. A write error of
    the thread is raised by the next :meth:`write`, :meth:`flush` or :meth:`close`; what was
    handed over after it is lost, as with any buffered writer. Make one with :meth:`open`, which
    gives a plain file object where O_DIRECT does not apply.
    """

    def __init__(self, fd: int, name: str, block: int = 2 << 20, depth: int = 4) -> None:
        if block <= 0 or block % ALIGN:
            raise ValueError("block must be a positive multiple of %d" % ALIGN)
        self.fd, self.name, self.block = fd, name, block
        self.closed = False
        self._buf = aligned_buffer(block)
        self._fill = 0
        self._error: OSError | None = None
        self._free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[np.ndarray | threading.Event | None] = queue.SimpleQueue()
        for _ in range(depth - 1):
            self._free.put(aligned_buffer(block))
        self._thread = threading.Thread(target=self._run, name="malsensor-write", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: str, block: int = 2 << 20) -> "DirectFileWriter | io.BufferedWriter":
        """``path`` created or truncated, as ``open(path, "wb")`` does: a DirectFileWriter when it
        is a regular file on a file system that takes O_DIRECT, else that plain file object
        (a FIFO, a device such as /dev/null or /dev/full, tmpfs before Linux 6.6)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            direct = stat.S_ISREG(os.fstat(fd).st_mode)
            if direct:
                _set_direct(fd, True)
        except OSError:  # EINVAL: no O_DIRECT on this file system
            direct = False
        return cls(fd, path, block) if direct else open(fd, "wb", closefd=True)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._check()
        src = np.frombuffer(data, dtype=np.uint8)
        n, done = src.shape[0], 0
        while done < n:
            k = min(n - done, self.block - self._fill)
            self._buf[self._fill:self._fill + k] = src[done:done + k]
            self._fill += k
            done += k
            if self._fill == self.block:
                self._full.put(self._buf)
                self._buf, self._fill = self._free.get(), 0  # waits while `depth` blocks are being written
                self._raise()
        return n

    def flush(self) -> None:
        """Wait until every full block handed over is written (the tail waits for :meth:`close`)."""
        self._check()
        done = threading.Event()
        self._full.put(done)
        done.wait()
        self._raise()

    def close(self) -> None:
        """Write what is left, wait for the thread, close the file; raise a write error."""
        if self.closed:
            return
        self.closed = True
        self._full.put(None)
        self._thread.join()
        try:
            self._raise()
            if self._fill:
                _set_direct(self.fd, False)
                _write_all(self.fd, memoryview(self._buf)[:self._fill])
        finally:
            os.close(self.fd)

    def __enter__(self) -> "DirectFileWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise OSError(self._error.errno, self._error.strerror, self.name)

    def _run(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            if self._error is None:
                try:
                    _write_all(self.fd, memoryview(item))
                except OSError as e:
                    self._error = e
            self._free.put(item)


def _set_direct(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)


def _write_all(fd: int, view: memoryview) -> None:
    """All of ``view``; after a short write the rest goes through the page cache (the file's
    end is no longer at a block boundary, which O_DIRECT needs), and so does everything once
    the file system refuses an O_DIRECT write (EINVAL: a block size above 4 KiB, some FUSE)."""
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            if e.errno == errno.EINVAL and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
                _set_direct(fd, False)
                continue
            raise
        view = view[n:]
        if view and n % ALIGN:
            _set_direct(fd, False)
