"""read_capture(file_io=...): the mapped and the direct-I/O readers give exactly what read() gives.

Same packets, bytes, timestamps, statistics, warnings and error messages (with their byte
offsets) on the shared captures, on copies cut short at many offsets and on corrupt records;
gzip, FIFOs and empty files are read with read() as before. The direct reader's chunks are
4 KiB multiples, so its batch boundaries may differ: it is compared packet by packet.
"""
from __future__ import annotations

import gzip
import logging
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from malsensor.daemon.capture import pcapfile
from malsensor.daemon.direct_io import ALIGN
from malsensor.daemon.capture.pcapfile import CaptureFormatError, ReaderStats, read_capture

from conftest import PCAPS, require_data

NAMES = ["http_espn.pcapng", "synscan.pcapng", "stratosphere_scanning_host.pcap", "ndpi_1kxun.pcap",
         "retina_tls_ciphers.pcap"]


def outcome(path, file_io: str, chunk: int = 2 << 20, reuse: bool = False, by_packet: bool = False):
    """Everything a reader hands out: per batch (n, frames, ts, caplen, wirelen, linktype),
    then the stats, then the error text. ``by_packet``: the batches' lists joined into one."""
    st = ReaderStats()
    got, err = [], None
    try:
        for b in read_capture(path, stats=st, chunk_bytes=chunk, reuse_buffers=reuse, file_io=file_io):
            frames = [b.buf[o:o + c].tobytes() for o, c in zip(b.offset.tolist(), b.caplen.tolist())]
            got.append((b.n, frames, b.ts_ns.tolist(), b.wirelen.tolist(), b.linktype.tolist(), b.vlan.tolist()))
    except CaptureFormatError as e:
        err = (str(e), e.offset)
    if by_packet:
        got = [tuple(sum((list(b[i]) for b in got), []) for i in range(1, 6))]
    return got, err, (st.packets, st.bytes, st.truncated_at, sorted(st.linktypes), st.warnings, st.wirelen_raised,
                      st.format, st.sections, st.skipped_blocks)


@pytest.fixture
def direct_for_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Direct I/O for files of any size (the shared captures are under DIRECT_MIN_BYTES)."""
    monkeypatch.setattr(pcapfile, "DIRECT_MIN_BYTES", 0)


def same(path, chunk: int = 2 << 20, reuse: bool = False) -> tuple:
    """read(), map and direct give the same packets, statistics and errors; read()'s outcome."""
    plain = outcome(path, "read", chunk)
    assert outcome(path, "map", chunk) == plain
    assert outcome(path, "map", chunk, reuse=reuse)[2] == plain[2]
    flat = outcome(path, "read", chunk, by_packet=True)
    assert outcome(path, "direct", chunk, reuse=reuse, by_packet=True) == flat
    return plain


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk", [2 << 20, 4093])
def test_every_way_matches_read_on_real_captures(name: str, chunk: int, direct_for_all) -> None:
    plain = same(require_data(PCAPS / name), chunk, reuse=True)
    assert plain[2][0] > 0 and plain[1] is None


@pytest.mark.parametrize("name", ["http_espn.pcapng", "stratosphere_scanning_host.pcap"])
def test_every_way_matches_read_when_cut_short(tmp_path: Path, name: str, direct_for_all,
                                               caplog: pytest.LogCaptureFixture) -> None:
    data = require_data(PCAPS / name).read_bytes()
    cut = tmp_path / name
    cuts = sorted({1, 3, 23, 24, 25, 40, 100, len(data) // 3, len(data) // 2 + 7, len(data) - 1})
    truncated = 0
    for size in cuts:
        cut.write_bytes(data[:size])
        truncated += same(cut, 4093)[2][2] is not None
    assert truncated >= 5  # the cuts inside records were reported as truncations
    cut.write_bytes(data[:len(data) // 2 + 7])
    for way in ("map", "direct"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="malsensor.capture"):
            st = ReaderStats()
            n = sum(b.n for b in read_capture(cut, stats=st, file_io=way))
        assert st.file_io == way
        assert n == st.packets and st.truncated_at is not None
        assert [r.getMessage() for r in caplog.records] == st.warnings
        assert st.warnings[0].startswith(f"{cut}: truncated at byte {st.truncated_at}: ")


def test_every_way_names_the_same_corrupt_record(tmp_path: Path, direct_for_all) -> None:
    data = bytearray(require_data(PCAPS / "stratosphere_scanning_host.pcap").read_bytes())
    # the 101st record claims 300000 captured bytes (more than libpcap's maximum)
    pos, k = 24, 0
    while k < 100:
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        k += 1
    struct.pack_into("<I", data, pos + 8, 300000)
    p = tmp_path / "corrupt.pcap"
    p.write_bytes(bytes(data))
    plain = same(p)
    assert plain[1] == (f"{p} at byte {pos}: corrupt record: captured length 300000 exceeds the maximum of 262144",
                        pos)
    assert sum(b[0] for b in plain[0]) == 100


def test_map_and_direct_fall_back_to_read_for_gzip_fifo_and_empty(tmp_path: Path, direct_for_all) -> None:
    src = require_data(PCAPS / "http_espn.pcapng")
    gz = tmp_path / "c.pcapng.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    for way in ("map", "direct"):
        assert outcome(gz, way) == outcome(gz, "read")
        assert outcome(gz, way)[2][6] == "pcapng+gzip"

    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    for way in ("map", "direct"):
        assert outcome(empty, way)[1] == (f"{empty} at byte 0: empty file", 0)

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for way in ("map", "direct"):
        feeder = threading.Thread(target=lambda: fifo.write_bytes(src.read_bytes()))
        feeder.start()
        try:
            st = ReaderStats()
            got = sum(b.n for b in read_capture(fifo, stats=st, file_io=way))
        finally:
            feeder.join()
        assert got == st.packets == 956 and st.file_io == "read"

    with open(src, "rb") as f:  # what the mapped reader maps, and what it leaves to read()
        assert pcapfile._map(f.fileno(), src.stat().st_size) is not None
    with open(empty, "rb") as f:
        assert pcapfile._map(f.fileno(), 0) is None
    with pytest.raises(ValueError, match="file_io must be one of"):
        next(read_capture(src, file_io="mmap"))


def test_mapped_batches_stay_valid_after_the_reader_ends() -> None:
    """Without reuse_buffers a batch may be kept: its bytes outlive the reader (the mapping is
    unmapped when the last batch goes, not when the file is done)."""
    path = require_data(PCAPS / "http_espn.pcapng")
    kept = list(read_capture(path, chunk_bytes=4093, file_io="map"))
    plain = list(read_capture(path, chunk_bytes=4093))
    assert len(kept) == len(plain) > 10
    for a, b in zip(kept, plain):
        assert np.array_equal(a.caplen, b.caplen)
        assert [a.buf[o:o + c].tobytes() for o, c in zip(a.offset, a.caplen)] == \
            [b.buf[o:o + c].tobytes() for o, c in zip(b.offset, b.caplen)]


# ---------------------------------------------------------------------------- direct I/O


def repeated_capture(path: Path, size: int) -> Path:
    """A pcap of ``size`` bytes: a real capture's records over and over, each time an hour later
    (its connections are new connections), the last record cut."""
    data = require_data(PCAPS / "stratosphere_scanning_host.pcap").read_bytes()
    body = bytearray(data[24:])
    starts, pos = [], 0
    while pos + 16 <= len(body):
        starts.append(pos)
        pos += 16 + struct.unpack_from("<I", body, pos + 8)[0]
    reps = []
    for k in range(-(-(size - 24) // len(body))):
        for p in starts:
            struct.pack_into("<I", body, p, struct.unpack_from("<I", body, p)[0] + (3600 if k else 0))
        reps.append(bytes(body))
    path.write_bytes((data[:24] + b"".join(reps))[:size])
    return path


def test_direct_reads_a_large_capture_by_default(tmp_path: Path) -> None:
    big = repeated_capture(tmp_path / "big.pcap", pcapfile.DIRECT_MIN_BYTES + 3 * ALIGN + 5)
    st = ReaderStats()
    got = outcome(big, "direct", reuse=True, by_packet=True)
    assert got == outcome(big, "read", by_packet=True)
    assert got[2][0] > 30_000 and got[2][2] is not None  # the last repetition is cut inside a record
    list(read_capture(big, stats=st, file_io="direct"))
    assert st.file_io == "direct"
    small = require_data(PCAPS / "http_espn.pcapng")  # under DIRECT_MIN_BYTES: mapped
    list(read_capture(small, stats=(st := ReaderStats()), file_io="direct"))
    assert st.file_io == "map" and st.packets == 956


def test_direct_batches_stay_valid_without_reuse(tmp_path: Path, direct_for_all) -> None:
    """Without reuse_buffers every chunk has its own buffer: batches kept to the end still
    hold their packets."""
    big = repeated_capture(tmp_path / "big.pcap", 300_000)
    kept = list(read_capture(big, chunk_bytes=8192, file_io="direct"))
    plain = list(read_capture(big, chunk_bytes=8192))
    frames = [[b.buf[o:o + c].tobytes() for o, c in zip(b.offset, b.caplen)] for b in (kept, plain)[0]]
    assert sum(frames, []) == sum(([b.buf[o:o + c].tobytes() for o, c in zip(b.offset, b.caplen)]
                                   for b in plain), [])
    assert len(kept) > 30


def test_direct_gathers_records_longer_than_a_chunk(tmp_path: Path, direct_for_all) -> None:
    """A 60000-byte record among small ones, read in 4 KiB chunks: the record is gathered into
    a buffer of its own, the records around it stay in the chunks."""
    frame = bytes(range(256)) * 4
    recs = []
    for i, n in enumerate([60, 1000, 60000, 70, 5000, 4096, 4097, 100, 200_000, 64]):
        body = (frame * (n // len(frame) + 1))[:n]
        recs.append(struct.pack("<IIII", 1_700_000_000 + i, i, n, n) + body)
    p = tmp_path / "long.pcap"
    p.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1) + b"".join(recs))
    for chunk in (4096, 8192, 65536):
        got = same(p, chunk, reuse=True)
        assert got[2][0] == 10 and got[1] is None
        assert [len(f) for b in got[0] for f in b[1]] == [60, 1000, 60000, 70, 5000, 4096, 4097, 100, 200_000, 64]


def test_direct_file_cut_short_while_it_is_read(tmp_path: Path, direct_for_all,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Another process truncates the file under the reader: the reader ends there as at a file
    cut short (through a mapping this is SIGBUS, the end of the process)."""
    big = repeated_capture(tmp_path / "big.pcap", 4 << 20)
    cut_at = (1 << 20) + 7
    expect = tmp_path / "expect.pcap"
    expect.write_bytes(big.read_bytes()[:cut_at])
    want = outcome(expect, "read", by_packet=True)
    st, frames = ReaderStats(), []
    with caplog.at_level(logging.WARNING, logger="malsensor.capture"):
        for i, b in enumerate(read_capture(big, stats=st, chunk_bytes=64 << 10, reuse_buffers=True,
                                           file_io="direct")):
            if i == 0:  # the reader is at most 5 chunks (320 KiB) ahead
                os.truncate(big, cut_at)
            frames += [b.buf[o:o + c].tobytes() for o, c in zip(b.offset, b.caplen)]
    assert st.file_io == "direct"
    assert frames == want[0][0][0]
    assert (st.packets, st.bytes, st.truncated_at, st.warnings) == \
        (want[2][0], want[2][1], want[2][2], [w.replace("expect.pcap", "big.pcap") for w in want[2][4]])
    assert st.truncated_at is not None and st.truncated_at < cut_at


def test_direct_reader_stops_when_the_consumer_does(tmp_path: Path, direct_for_all) -> None:
    big = repeated_capture(tmp_path / "big.pcap", 2 << 20)
    fds = len(os.listdir("/proc/self/fd"))
    gen = read_capture(big, chunk_bytes=8192, reuse_buffers=True, file_io="direct")
    next(gen)
    assert any(t.name == "malsensor-read" for t in threading.enumerate())
    assert len(os.listdir("/proc/self/fd")) == fds + 3  # the file, its O_DIRECT and its cached descriptors
    gen.close()
    assert not any(t.name == "malsensor-read" for t in threading.enumerate())
    assert len(os.listdir("/proc/self/fd")) == fds
