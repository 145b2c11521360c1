"""daemon/direct_io.py: the chunk reader and the block writer, on real files, a real full file
system (a tmpfs the test mounts) and the extract command that uses both."""
from __future__ import annotations

import errno
import fcntl
import io
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from malsensor.daemon.direct_io import ALIGN, ChunkReader, DirectFileWriter

from conftest import require_root
from test_extract_cli import extract
from test_pcap_file_io import repeated_capture


def drain(reader: ChunkReader, work_s: float = 0.0) -> bytes:
    out = []
    while True:
        c = reader.next()
        assert c.error is None
        out.append(c.buf[reader.head:reader.head + c.length].tobytes())
        reader.release(c)
        if work_s:
            time.sleep(work_s)
        if c.length < reader.chunk:
            return b"".join(out)


def test_chunk_reader_takes_the_page_cache_only_when_the_device_is_behind(tmp_path: Path) -> None:
    """A consumer that does nothing waits for every chunk: the reader then takes what the page
    cache holds (the file was just written). One that works 10 ms a chunk never waits for a
    64 KiB direct read: every byte comes from the device."""
    big = repeated_capture(tmp_path / "big.pcap", 1 << 20)
    data = big.read_bytes()
    with open(big, "rb") as f:
        r = ChunkReader(f.fileno(), ALIGN, ALIGN)
        try:
            assert drain(r) == data
        finally:
            r.close()
        assert r.bytes_cached > 0 and r.bytes_direct > 0
        assert r.bytes_cached + r.bytes_direct == len(data)

        r = ChunkReader(f.fileno(), 16 * ALIGN, ALIGN)
        try:
            assert drain(r, work_s=0.01)[:len(data)] == data
        finally:
            r.close()
        assert (r.bytes_direct, r.bytes_cached) == (len(data), 0)


def pieces(rng: np.random.Generator, total: int) -> list[bytes]:
    """``total`` random bytes cut at random places, some pieces longer than a block."""
    data = rng.integers(0, 256, total, dtype=np.uint8).tobytes()
    cuts = np.sort(rng.integers(0, total + 1, 40))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, total])]


@pytest.mark.parametrize("total", [0, 1, 4 * ALIGN - 1, 4 * ALIGN, 4 * ALIGN + 1, 37 * 4 * ALIGN + 12_345])
def test_writer_writes_exactly_what_it_was_given(tmp_path: Path, total: int) -> None:
    rng = np.random.default_rng(total)
    parts = pieces(rng, total)
    out = tmp_path / "out.bin"
    w = DirectFileWriter.open(str(out), block=4 * ALIGN)  # small blocks: many, pieces across their ends
    assert isinstance(w, DirectFileWriter)
    assert fcntl.fcntl(w.fd, fcntl.F_GETFL) & os.O_DIRECT
    for k, p in enumerate(parts):
        assert w.write(p) == len(p)
        if k == len(parts) // 2:
            w.flush()
            assert out.stat().st_size == (sum(map(len, parts[:k + 1])) // w.block) * w.block
    w.close()
    assert out.read_bytes() == b"".join(parts)
    w.close()  # a second close does nothing
    with pytest.raises(ValueError):
        w.write(b"x")


def test_a_refused_direct_write_goes_through_the_page_cache(tmp_path: Path) -> None:
    """O_DIRECT refuses memory that is not aligned (EINVAL), as some file systems refuse it
    altogether: the bytes are written through the page cache instead, and the rest of the file too."""
    from malsensor.daemon.direct_io import _write_all

    out = tmp_path / "out.bin"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    try:
        data = bytearray(range(256)) * 64  # 16 KiB, not at a page boundary
        view = memoryview(data)[1:1 + 4 * ALIGN]
        try:
            os.pwrite(fd, view, 0)
            checks_alignment = False  # tmpfs: its O_DIRECT is a copy, any address goes
            os.ftruncate(fd, 0)
        except OSError as e:
            assert e.errno == errno.EINVAL
            checks_alignment = True  # ext4, xfs: the case under test
        _write_all(fd, view)
        assert bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT) != checks_alignment
    finally:
        os.close(fd)
    assert out.read_bytes() == bytes(view)


def test_writer_is_a_plain_file_where_direct_io_does_not_apply(tmp_path: Path) -> None:
    for dev in ("/dev/null", "/dev/full"):
        f = DirectFileWriter.open(dev)
        assert isinstance(f, io.BufferedWriter)
        f.close()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    f = DirectFileWriter.open(str(fifo))  # O_DIRECT would make the pipe a packet pipe
    assert isinstance(f, io.BufferedWriter)
    f.write(b"rows\n")
    f.close()
    reader.join()
    assert got == [b"rows\n"]


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 1 MiB tmpfs mounted for the test (tmpfs takes O_DIRECT since Linux 6.6)."""
    require_root()
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_writer_on_a_full_file_system_raises_and_keeps_what_fit(small_fs: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    out = small_fs / "out.bin"
    w = DirectFileWriter.open(str(out), block=64 << 10)
    if not isinstance(w, DirectFileWriter):
        pytest.fail(f"tmpfs refused O_DIRECT on Linux {os.uname().release}")
    with pytest.raises(OSError) as e:
        for k in range(0, len(data), 10_000):
            w.write(data[k:k + 10_000])
        w.close()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(out)
    if not w.closed:  # the error came from a write: close says it again, then the file is closed
        with pytest.raises(OSError, match="No space left on device"):
            w.close()
    w.close()
    written = out.read_bytes()
    assert 0 < len(written) <= 1 << 20 and written == data[:len(written)]
    assert not any(t.name == "malsensor-write" for t in threading.enumerate())


def test_extract_reads_and_writes_with_direct_io_and_the_rows_are_the_same(tmp_path: Path) -> None:
    """A 12 MB capture (over DIRECT_MIN_BYTES): rows read and written with direct I/O are byte
    for byte those of read() and a buffered file, and so are the messages."""
    big = repeated_capture(tmp_path / "big.pcap", 12 << 20)
    for fmt in ("jsonl", "csv"):
        direct, plain = tmp_path / f"direct.{fmt}", tmp_path / f"plain.{fmt}"
        a = extract(str(big), "-o", str(direct), "-l", "debug", check=False)
        b = extract(str(big), "-o", str(plain), "-l", "debug", check=False, env=dict(os.environ, MALSENSOR_FILE_IO="read"))
        assert a.returncode == b.returncode == 0
        assert f"{big}: read with direct I/O, 2048 KiB at a time, on a thread" in a.stderr
        assert f"{direct}: written with direct I/O, 2048 KiB at a time, on a thread" in a.stderr
        assert "direct I/O" not in b.stderr
        assert "capture truncated at byte offset 12,582," in a.stderr  # the last record is cut
        assert a.stderr[a.stderr.index("packets "):] == b.stderr[b.stderr.index("packets "):]
        assert direct.read_bytes() == plain.read_bytes() and direct.stat().st_size > 2 << 20  # > one block
    bad = extract(str(big), "-o", str(tmp_path / "x.jsonl"), check=False, env=dict(os.environ, MALSENSOR_FILE_IO="mmap"))
    assert bad.returncode == 2 and "MALSENSOR_FILE_IO=mmap: must be one of read, map, direct" in bad.stderr


def test_extract_to_a_full_file_system_is_a_clear_error(tmp_path: Path, small_fs: Path) -> None:
    big = repeated_capture(tmp_path / "big.pcap", 12 << 20)
    out = small_fs / "rows.jsonl"
    proc = extract(str(big), "-o", str(out), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot write {out}: No space left on device (" in proc.stderr
    assert "connections " in proc.stderr  # the summary still comes
    lines = out.read_bytes().split(b"\n")
    assert len(lines) > 100 and all(line.startswith(b'{"ts":') for line in lines[:-1])
