"""read_capture(map_file=True): the memory-mapped reader gives exactly what read() gives.

Same packets, bytes, timestamps, statistics, warnings and error messages (with their byte
offsets) on the shared captures, on copies cut short at many offsets and on corrupt records;
gzip, FIFOs and empty files are read with read() as before.
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
from malsensor.daemon.capture.pcapfile import CaptureFormatError, ReaderStats, read_capture

from conftest import PCAPS, require_data

NAMES = ["http_espn.pcapng", "synscan.pcapng", "stratosphere_scanning_host.pcap", "ndpi_1kxun.pcap",
         "retina_tls_ciphers.pcap"]


def outcome(path, map_file: bool, chunk: int = 2 << 20, reuse: bool = False):
    """Everything a reader hands out: per batch (n, frames, ts, caplen, wirelen, linktype),
    then the stats, then the error text."""
    st = ReaderStats()
    got, err = [], None
    try:
        for b in read_capture(path, stats=st, chunk_bytes=chunk, reuse_buffers=reuse, map_file=map_file):
            frames = [b.buf[o:o + c].tobytes() for o, c in zip(b.offset.tolist(), b.caplen.tolist())]
            got.append((b.n, frames, b.ts_ns.tolist(), b.wirelen.tolist(), b.linktype.tolist(), b.vlan.tolist()))
    except CaptureFormatError as e:
        err = (str(e), e.offset)
    return got, err, (st.packets, st.bytes, st.truncated_at, sorted(st.linktypes), st.warnings, st.wirelen_raised,
                      st.format, st.sections, st.skipped_blocks)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk", [2 << 20, 4093])
def test_mapped_reader_matches_read_on_real_captures(name: str, chunk: int) -> None:
    path = require_data(PCAPS / name)
    plain = outcome(path, False, chunk)
    assert plain[2][0] > 0 and plain[1] is None
    assert outcome(path, True, chunk) == plain
    assert outcome(path, True, chunk, reuse=True)[2] == plain[2]


@pytest.mark.parametrize("name", ["http_espn.pcapng", "stratosphere_scanning_host.pcap"])
def test_mapped_reader_matches_read_when_cut_short(tmp_path: Path, name: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    data = require_data(PCAPS / name).read_bytes()
    cut = tmp_path / name
    cuts = sorted({1, 3, 23, 24, 25, 40, 100, len(data) // 3, len(data) // 2 + 7, len(data) - 1})
    truncated = 0
    for size in cuts:
        cut.write_bytes(data[:size])
        plain = outcome(cut, False, 4093)
        mapped = outcome(cut, True, 4093)
        assert mapped == plain, size
        truncated += plain[2][2] is not None
    assert truncated >= 5  # the cuts inside records were reported as truncations
    caplog.clear()
    cut.write_bytes(data[:len(data) // 2 + 7])
    with caplog.at_level(logging.WARNING, logger="malsensor.capture"):
        st = ReaderStats()
        n = sum(b.n for b in read_capture(cut, stats=st, map_file=True))
    assert n == st.packets and st.truncated_at is not None
    assert [r.getMessage() for r in caplog.records] == st.warnings
    assert st.warnings[0].startswith(f"{cut}: truncated at byte {st.truncated_at}: ")


def test_mapped_reader_names_the_same_corrupt_record(tmp_path: Path) -> None:
    data = bytearray(require_data(PCAPS / "stratosphere_scanning_host.pcap").read_bytes())
    # the 101st record claims 300000 captured bytes (more than libpcap's maximum)
    pos, k = 24, 0
    while k < 100:
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        k += 1
    struct.pack_into("<I", data, pos + 8, 300000)
    p = tmp_path / "corrupt.pcap"
    p.write_bytes(bytes(data))
    plain = outcome(p, False)
    assert plain[1] == (f"{p} at byte {pos}: corrupt record: captured length 300000 exceeds the maximum of 262144",
                        pos)
    assert sum(b[0] for b in plain[0]) == 100
    assert outcome(p, True) == plain


def test_map_file_falls_back_to_read_for_gzip_fifo_and_empty(tmp_path: Path) -> None:
    src = require_data(PCAPS / "http_espn.pcapng")
    gz = tmp_path / "c.pcapng.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    assert outcome(gz, True) == outcome(gz, False)
    assert outcome(gz, True)[2][6] == "pcapng+gzip"

    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert outcome(empty, True)[1] == (f"{empty} at byte 0: empty file", 0)

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(src.read_bytes()))
    feeder.start()
    try:
        got = outcome(fifo, True)
    finally:
        feeder.join()
    assert got[1] is None and got[2][0] == 956

    with open(src, "rb") as f:  # what map_file maps, and what it leaves to read()
        assert pcapfile._map(f) is not None
    with open(empty, "rb") as f:
        assert pcapfile._map(f) is None


def test_mapped_batches_stay_valid_after_the_reader_ends() -> None:
    """Without reuse_buffers a batch may be kept: its bytes outlive the reader (the mapping is
    unmapped when the last batch goes, not when the file is done)."""
    path = require_data(PCAPS / "http_espn.pcapng")
    kept = list(read_capture(path, chunk_bytes=4093, map_file=True))
    plain = list(read_capture(path, chunk_bytes=4093))
    assert len(kept) == len(plain) > 10
    for a, b in zip(kept, plain):
        assert np.array_equal(a.caplen, b.caplen)
        assert [a.buf[o:o + c].tobytes() for o, c in zip(a.offset, a.caplen)] == \
            [b.buf[o:o + c].tobytes() for o, c in zip(b.offset, b.caplen)]
