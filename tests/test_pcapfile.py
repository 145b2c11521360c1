"""The capture-file reader: real captures against independent readers, crafted files for every
format variant, chunk boundaries, and bad input (truncated, corrupt, unknown link type, garbage)."""
from __future__ import annotations

import gzip
import logging
import random
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from scapy.utils import RawPcapNgReader, RawPcapReader

from malsensor.daemon.capture.batch import NO_VLAN, PacketBatch
from malsensor.daemon.capture.pcapfile import (
    CaptureFormatError,
    ReaderStats,
    _scale_ts,
    read_capture,
)

from conftest import PCAPS, fuzz_cases, require_data, require_tool

NS = 1_000_000_000

# /work/shared/data/README.md
COUNTS = {
    "retina_tls_ciphers.pcap": 1095,
    "stratosphere_cc_capture1.pcap": 7931,
    "stratosphere_scanning_host.pcap": 2000,
    "stratosphere_ssh_bruteforce.pcap": 1178,
    "synscan.pcapng": 2011,
    "http_espn.pcapng": 956,
    "ndpi_1kxun.pcap": 1723,
    "ndpi_443_firefox.pcap": 667,
}


# ------------------------------------------------------------------------------ helpers


def read_all(path, **kw) -> tuple[dict[str, np.ndarray], list[bytes], ReaderStats, list]:
    """Concatenated per-packet arrays, the packet bytes, the stats and the batches."""
    st = kw.pop("stats", None) or ReaderStats()
    batches = list(read_capture(path, stats=st, **kw))
    return merge(batches), frames(batches), st, batches


def merge(batches: list[PacketBatch]) -> dict[str, np.ndarray]:
    keys = ("caplen", "wirelen", "ts_ns", "linktype", "vlan")
    if not batches:
        return {k: np.zeros(0, np.int64) for k in keys}
    return {k: np.concatenate([getattr(b, k) for b in batches]) for k in keys}


def frames(batches: list[PacketBatch]) -> list[bytes]:
    out = []
    for b in batches:
        assert b.buf.dtype == np.uint8 and b.offset.dtype == np.int64
        assert b.caplen.dtype == np.int32 and b.wirelen.dtype == np.int32
        assert b.ts_ns.dtype == np.int64 and b.linktype.dtype == np.int32
        assert b.n == b.caplen.shape[0] == b.ts_ns.shape[0] == b.vlan.shape[0]
        for o, c in zip(b.offset.tolist(), b.caplen.tolist()):
            assert 0 <= o and o + c <= b.buf.shape[0]
            out.append(b.buf[o:o + c].tobytes())
    return out


def pcap_offsets(data: bytes) -> list[int]:
    """Offsets of the records of a little-endian pcap, walked in Python (the reference)."""
    offs, p = [], 24
    while p + 16 <= len(data):
        incl = struct.unpack_from("<I", data, p + 8)[0]
        if p + 16 + incl > len(data):
            break
        offs.append(p)
        p += 16 + incl
    return offs


def pcapng_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length) of each block of a little-endian pcapng file."""
    out, p = [], 0
    while p + 12 <= len(data):
        t, n = struct.unpack_from("<II", data, p)
        out.append((p, t, n))
        p += n
    return out


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def pcap_file(records, *, be=False, nsec=False, linktype=1, snaplen=262144) -> bytes:
    """records: (sec, usec-or-nsec, data, orig_len)."""
    e = ">" if be else "<"
    out = [struct.pack(e + "IHHiIII", 0xA1B23C4D if nsec else 0xA1B2C3D4, 2, 4, 0, 0, snaplen,
                       linktype)]
    for sec, frac, data, orig in records:
        out.append(struct.pack(e + "IIII", sec, frac, len(data), orig) + data)
    return b"".join(out)


class NG:
    """pcapng block writer for one byte order."""

    def __init__(self, be: bool) -> None:
        self.e = ">" if be else "<"

    def block(self, btype: int, body: bytes) -> bytes:
        body = pad4(body)
        n = 12 + len(body)
        return struct.pack(self.e + "II", btype, n) + body + struct.pack(self.e + "I", n)

    def shb(self) -> bytes:
        return self.block(0x0A0D0D0A, struct.pack(self.e + "IHHq", 0x1A2B3C4D, 1, 0, -1))

    def opt(self, code: int, val: bytes) -> bytes:
        return struct.pack(self.e + "HH", code, len(val)) + pad4(val)

    def idb(self, linktype: int, snaplen: int = 0, tsresol: int | None = None,
            tsoffset: int | None = None) -> bytes:
        opts = self.opt(2, b"eth0")  # if_name, to be skipped
        if tsresol is not None:
            opts += self.opt(9, bytes([tsresol]))
        if tsoffset is not None:
            opts += self.opt(14, struct.pack(self.e + "q", tsoffset))
        opts += struct.pack(self.e + "HH", 0, 0)
        return self.block(1, struct.pack(self.e + "HHI", linktype, 0, snaplen) + opts)

    def epb(self, iface: int, ts: int, data: bytes, orig: int | None = None) -> bytes:
        orig = len(data) if orig is None else orig
        return self.block(6, struct.pack(self.e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF,
                                         len(data), orig) + pad4(data))

    def pb(self, iface: int, ts: int, data: bytes, orig: int | None = None) -> bytes:
        orig = len(data) if orig is None else orig
        return self.block(2, struct.pack(self.e + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF,
                                         len(data), orig) + pad4(data))

    def spb(self, data: bytes, orig: int | None = None) -> bytes:
        return self.block(3, struct.pack(self.e + "I", len(data) if orig is None else orig)
                          + data)


def frame(i: int, size: int = 60) -> bytes:
    return bytes((i + j) & 0xFF for j in range(size))


def tshark_fields(path: Path) -> list[tuple[int | None, int, int]]:
    """(epoch ns or None, frame.len, frame.cap_len) per packet, as tshark reads the file."""
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "frame.len", "-e", "frame.cap_len"], check=True,
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        t, ln, cl = line.split("\t")
        sec, _, frac = t.partition(".")
        ns = int(sec) * NS + int((frac + "000000000")[:9]) if t else None
        rows.append((ns, int(ln), int(cl)))
    return rows


# ------------------------------------------------------------------------------ real captures


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_real_capture_counts_and_scapy(name: str) -> None:
    """Packet counts from the data README; every packet equal to scapy's raw reader."""
    path = require_data(PCAPS / name)
    arr, data, st, _ = read_all(path)
    assert st.packets == len(data) == COUNTS[name]
    assert st.bytes == path.stat().st_size
    assert st.truncated_at is None and st.warnings == []
    assert st.linktypes == {1}
    assert (arr["linktype"] == 1).all() and (arr["vlan"] == NO_VLAN).all()
    if name.endswith(".pcapng"):
        ref = []
        with RawPcapNgReader(str(path)) as r:
            for pkt, md in r:
                # scapy keeps the interface's tsresol as units per second
                ts = (md.tshigh << 32) | md.tslow
                ref.append((pkt, ts * NS // md.tsresol, md.wirelen))
        assert st.format == "pcapng" and st.sections == 1
    else:
        ref = []
        with RawPcapReader(str(path)) as r:
            for pkt, md in r:
                ref.append((pkt, md.sec * NS + md.usec * 1000, md.wirelen))
        assert st.format == "pcap"
    assert data == [r[0] for r in ref]
    assert arr["ts_ns"].tolist() == [r[1] for r in ref]
    assert arr["wirelen"].tolist() == [r[2] for r in ref]
    assert arr["caplen"].tolist() == [len(r[0]) for r in ref]


@pytest.mark.parametrize("name", ["stratosphere_cc_capture1.pcap", "http_espn.pcapng",
                                  "synscan.pcapng", "ndpi_1kxun.pcap"])
def test_real_capture_matches_tshark(name: str) -> None:
    path = require_data(PCAPS / name)
    arr, _, _, _ = read_all(path)
    ref = tshark_fields(path)
    assert len(ref) == COUNTS[name]
    assert list(zip(arr["ts_ns"].tolist(), arr["wirelen"].tolist(), arr["caplen"].tolist())) == ref


def test_real_capture_first_last_values() -> None:
    """Spot values (from tshark) so a regression shows a readable number."""
    arr, _, _, _ = read_all(require_data(PCAPS / "synscan.pcapng"))
    assert arr["ts_ns"][0] == 1278275056_274870000 and arr["caplen"][0] == 58
    assert arr["ts_ns"][-1] == 1278275079_360213000
    arr, _, _, _ = read_all(require_data(PCAPS / "retina_tls_ciphers.pcap"))
    assert arr["ts_ns"][0] == 1379281936_725950000 and arr["wirelen"][0] == 74
    assert arr["ts_ns"][-1] == 1379281937_696039000


@pytest.mark.parametrize("name", ["stratosphere_scanning_host.pcap", "synscan.pcapng"])
@pytest.mark.parametrize("chunk", [100, 1000, 4093, 65536])
def test_chunk_boundaries(name: str, chunk: int) -> None:
    """Records straddling chunks (and records larger than a chunk) read the same."""
    path = require_data(PCAPS / name)
    ref, ref_data, _, _ = read_all(path)
    arr, data, st, batches = read_all(path, chunk_bytes=chunk)
    assert data == ref_data
    for k in ref:
        assert arr[k].tolist() == ref[k].tolist()
    assert st.bytes == path.stat().st_size
    if chunk < 65536:
        assert len(batches) > 1


def test_batches_keep_their_buffers() -> None:
    """A batch stays valid after later batches are read (no buffer reuse)."""
    path = require_data(PCAPS / "retina_tls_ciphers.pcap")
    gen = read_capture(path, chunk_bytes=2000)
    first = next(gen)
    snapshot = frames([first])
    rest = list(gen)
    assert len(rest) > 10
    assert frames([first]) == snapshot


def test_gzip_real_capture(tmp_path: Path) -> None:
    for name in ("stratosphere_ssh_bruteforce.pcap", "synscan.pcapng"):
        path = require_data(PCAPS / name)
        gz = tmp_path / (name + ".gz")
        gz.write_bytes(gzip.compress(path.read_bytes()))
        ref, ref_data, _, _ = read_all(path)
        arr, data, st, _ = read_all(gz, chunk_bytes=5000)
        assert data == ref_data and st.packets == COUNTS[name]
        assert arr["ts_ns"].tolist() == ref["ts_ns"].tolist()
        assert st.format.endswith("+gzip")
        assert st.bytes == path.stat().st_size  # uncompressed bytes


def test_gzip_truncated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    raw = path.read_bytes()
    comp = gzip.compress(raw)
    gz = tmp_path / "cut.pcap.gz"
    gz.write_bytes(comp[:len(comp) // 2])
    caplog.set_level(logging.WARNING, logger="malsensor.capture")
    arr, data, st, _ = read_all(gz, chunk_bytes=4096)
    offs = pcap_offsets(raw)
    assert 0 < st.packets < len(offs)
    # what came out is an exact prefix of the file's packets
    ref, ref_data, _, _ = read_all(path)
    assert data == ref_data[:st.packets]
    assert any("compressed stream ends early" in w for w in st.warnings)
    assert st.truncated_at == offs[st.packets]


def test_gzip_several_members(tmp_path: Path) -> None:
    """Concatenated gzip members (with zero padding between them) are one stream."""
    path = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    raw = path.read_bytes()
    gz = tmp_path / "multi.pcap.gz"
    gz.write_bytes(gzip.compress(raw[:100_000]) + b"\0\0\0" + gzip.compress(raw[100_000:]))
    _, ref_data, _, _ = read_all(path)
    for chunk in (1000, 8 << 20):
        _, data, st, _ = read_all(gz, chunk_bytes=chunk)
        assert data == ref_data and st.truncated_at is None and st.warnings == []


def test_gzip_trailing_garbage_keeps_every_packet(tmp_path: Path) -> None:
    """Issue 10.1: bytes after the last member were an error that dropped the whole buffer;
    gzip(1) ignores them with a warning, and so does the reader."""
    path = require_data(PCAPS / "synscan.pcapng")
    gz = tmp_path / "junk.pcapng.gz"
    comp = gzip.compress(path.read_bytes())
    gz.write_bytes(comp + b"JUNK")
    _, ref_data, _, _ = read_all(path)
    for chunk in (5000, 2 << 20):
        _, data, st, _ = read_all(gz, chunk_bytes=chunk)
        assert data == ref_data and st.packets == COUNTS["synscan.pcapng"]
        assert st.warnings == [f"{gz}: trailing garbage ignored after the last gzip member "
                               f"(compressed byte {len(comp)}, after {path.stat().st_size} "
                               "uncompressed bytes)"]


def test_gzip_bad_crc_keeps_every_packet_and_names_the_decompressed_offset(tmp_path: Path) -> None:
    """Issue 10.1: a bad CRC was reported "at byte 0" with no packet; every packet comes out,
    then the error at the end of the decompressed member."""
    path = require_data(PCAPS / "synscan.pcapng")
    raw = path.read_bytes()
    comp = bytearray(gzip.compress(raw))
    comp[-8] ^= 0xFF  # first byte of the stored CRC32
    gz = tmp_path / "crc.pcapng.gz"
    gz.write_bytes(bytes(comp))
    _, ref_data, _, _ = read_all(path)
    for chunk in (5000, 2 << 20):
        batches: list[PacketBatch] = []
        with pytest.raises(CaptureFormatError, match="bad CRC") as ei:
            for b in read_capture(gz, chunk_bytes=chunk):
                batches.append(b)
        assert frames(batches) == ref_data
        assert ei.value.offset == len(raw)


def test_gzip_corrupt_data_keeps_every_packet_before_the_fault(tmp_path: Path) -> None:
    """Issue 10.1: corrupt deflate data dropped what the read buffer held; now every record
    that ``gzip -dc`` recovers before the fault is read, then the error names the offset."""
    path = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    raw = path.read_bytes()
    comp = bytearray(gzip.compress(raw))
    comp[len(comp) // 2:len(comp) // 2 + 64] = bytes(64)  # a run of zeros mid-stream
    gz = tmp_path / "mid.pcap.gz"
    gz.write_bytes(bytes(comp))
    recovered = subprocess.run([require_tool("gzip"), "-dc"], input=bytes(comp),
                               capture_output=True).stdout
    assert 0 < len(recovered) < len(raw)
    plain = tmp_path / "recovered.pcap"  # what gzip -dc recovers, read as a plain file
    plain.write_bytes(recovered)
    ref_batches: list[PacketBatch] = []
    try:
        for b in read_capture(plain):
            ref_batches.append(b)
    except CaptureFormatError:
        pass
    assert len(frames(ref_batches)) > 500  # 611 with this corruption
    for chunk in (5000, 2 << 20):
        batches: list[PacketBatch] = []
        with pytest.raises(CaptureFormatError) as ei:
            for b in read_capture(gz, chunk_bytes=chunk):
                batches.append(b)
        assert frames(batches) == frames(ref_batches)
        assert ei.value.offset is not None and 0 < ei.value.offset <= len(recovered)


# ------------------------------------------------------------------------------ crafted pcap


@pytest.mark.parametrize("be", [False, True])
@pytest.mark.parametrize("nsec", [False, True])
def test_crafted_pcap_byte_orders_and_resolutions(tmp_path: Path, be: bool, nsec: bool) -> None:
    recs = [(1_700_000_000, 999_999_999 if nsec else 999_999, frame(0, 60), 60),
            (1_700_000_001, 1, frame(1, 100), 1514),  # snapped: wirelen > caplen
            (4_000_000_000, 7, frame(2, 0), 0),  # seconds past 2038 (u32), empty frame
            (1_700_000_002, 3, frame(3, 70), 20)]  # orig < caplen: raised to caplen
    p = tmp_path / "c.pcap"
    p.write_bytes(pcap_file(recs, be=be, nsec=nsec, linktype=101))
    arr, data, st, _ = read_all(p)
    mult = 1 if nsec else 1000
    assert arr["ts_ns"].tolist() == [s * NS + f * mult for s, f, _, _ in recs]
    assert data == [r[2] for r in recs]
    assert arr["caplen"].tolist() == [60, 100, 0, 70]
    assert arr["wirelen"].tolist() == [60, 1514, 0, 70]
    assert arr["linktype"].tolist() == [101] * 4
    assert st.linktypes == {101} and st.wirelen_raised == 1
    assert st.format == ("pcap-ns" if nsec else "pcap")


def test_crafted_pcap_header_only(tmp_path: Path) -> None:
    p = tmp_path / "h.pcap"
    p.write_bytes(pcap_file([]))
    arr, data, st, batches = read_all(p)
    assert batches == [] and st.packets == 0 and st.truncated_at is None and st.bytes == 24


def test_record_larger_than_chunk(tmp_path: Path) -> None:
    big = frame(9, 200_000)
    p = tmp_path / "big.pcap"
    p.write_bytes(pcap_file([(1, 2, frame(1, 50), 50), (3, 4, big, 200_000), (5, 6, b"x", 1)]))
    _, data, st, _ = read_all(p, chunk_bytes=64)
    assert data == [frame(1, 50), big, b"x"] and st.packets == 3


# ------------------------------------------------------------------------------ crafted pcapng


def two_section_pcapng(custom: bool = True) -> tuple[bytes, list[tuple[int, int, int, bytes, int]]]:
    """Two sections (little then big endian), two interfaces each with different link types
    and if_tsresol, EPB/PB/SPB packets and skippable blocks. Returns the file and the
    expected (ts_ns, linktype, wirelen, data, caplen) per packet. ``custom=False`` leaves
    out the custom blocks (tshark 4 shows those as records)."""
    le, be = NG(False), NG(True)
    exp = []
    out = [le.shb(),
           le.idb(1, snaplen=64, tsresol=6),
           le.idb(101, snaplen=0, tsresol=0x80 | 20, tsoffset=1000)]
    t0 = 1_700_000_000_123_456  # microseconds
    out.append(le.epb(0, t0, frame(0, 60)))
    exp.append((t0 * 1000, 1, 60, frame(0, 60), 60))
    t1 = (1_700_000_001 << 20) + 12345  # 2^-20 s units
    out.append(le.epb(1, t1, frame(1, 40), orig=1500))
    exp.append((1_700_000_001 * NS + 12345 * NS // (1 << 20) + 1000 * NS, 101, 1500,
                frame(1, 40), 40))
    out.append(le.block(4, struct.pack("<HH", 0, 0)))  # NRB (end of records only)
    out.append(le.block(5, struct.pack("<IIII", 0, 0, 0, 0)))  # ISB
    if custom:
        out.append(le.block(0xBAD, struct.pack("<I", 12345) + b"vendor data"))
    out.append(le.block(0x1234, b"who knows"))  # unknown: skipped with a warning
    t2 = (1_700_000_002 << 20) + (1 << 19)  # half a second
    out.append(le.pb(1, t2, frame(2, 33)))
    exp.append((1_700_000_002 * NS + NS // 2 + 1000 * NS, 101, 33, frame(2, 33), 33))
    # SPB on interface 0 (snaplen 64): 150 bytes on the wire, the writer kept 64
    out.append(le.spb(frame(3, 64), orig=150))
    exp.append((exp[-1][0], 1, 150, frame(3, 64), 64))
    # SPB of 30 bytes (padded to 32 in the block): the original length bounds it
    out.append(le.spb(frame(4, 30)))
    exp.append((exp[-1][0], 1, 30, frame(4, 30), 30))
    # section 2: big endian, interfaces renumbered
    out += [be.shb(), be.idb(113, tsresol=9), be.idb(1, tsresol=3, tsoffset=-5)]
    t3 = 1_600_000_000_987_654_321
    out.append(be.epb(0, t3, frame(5, 44)))
    exp.append((t3, 113, 44, frame(5, 44), 44))
    t4 = 1_600_000_001_250  # milliseconds
    out.append(be.epb(1, t4, frame(6, 90)))
    exp.append((t4 * 1_000_000 - 5 * NS, 1, 90, frame(6, 90), 90))
    if custom:
        out.append(be.block(0x40000BAD, struct.pack(">I", 1) + b"x"))  # custom, no-copy
    return b"".join(out), exp


def check_two_sections(arr, data, st, exp) -> None:
    assert arr["ts_ns"].tolist() == [e[0] for e in exp]
    assert arr["linktype"].tolist() == [e[1] for e in exp]
    assert arr["wirelen"].tolist() == [e[2] for e in exp]
    assert data == [e[3] for e in exp]
    assert arr["caplen"].tolist() == [e[4] for e in exp]
    assert st.sections == 2 and st.linktypes == {1, 101, 113}
    assert st.skipped_blocks == 5
    assert sum("unknown type 0x1234" in w for w in st.warnings) == 1


def test_crafted_pcapng_sections_interfaces_blocks(tmp_path: Path) -> None:
    blob, exp = two_section_pcapng()
    p = tmp_path / "two.pcapng"
    p.write_bytes(blob)
    arr, data, st, _ = read_all(p)
    check_two_sections(arr, data, st, exp)
    assert st.bytes == len(blob) and st.truncated_at is None


def test_crafted_pcapng_every_chunk_size(tmp_path: Path) -> None:
    blob, exp = two_section_pcapng()
    p = tmp_path / "two.pcapng"
    p.write_bytes(blob)
    for chunk in list(range(1, 130, 7)) + [256, 333, 1024]:
        arr, data, st, _ = read_all(p, chunk_bytes=chunk)
        check_two_sections(arr, data, st, exp)


def test_crafted_pcapng_gzip(tmp_path: Path) -> None:
    blob, exp = two_section_pcapng()
    p = tmp_path / "two.pcapng.gz"
    p.write_bytes(gzip.compress(blob))
    arr, data, st, _ = read_all(p, chunk_bytes=50)
    check_two_sections(arr, data, st, exp)
    assert st.format == "pcapng+gzip"


def test_crafted_pcapng_matches_tshark(tmp_path: Path) -> None:
    """tshark agrees on the timestamps of EPB/PB packets (tsresol, tsoffset, sections)."""
    blob, exp = two_section_pcapng(custom=False)
    p = tmp_path / "two.pcapng"
    p.write_bytes(blob)
    arr, _, _, _ = read_all(p)
    ref = tshark_fields(p)
    assert len(ref) == len(exp)
    for i, (t, ln, cl) in enumerate(ref):
        assert (arr["wirelen"][i], arr["caplen"][i]) == (ln, cl)
        # tshark gives Simple Packet Blocks no time; we document "the previous packet's"
        assert arr["ts_ns"][i] == (t if i not in (3, 4) else arr["ts_ns"][i - 1])
        assert (t is None) == (i in (3, 4))


def test_tsresol_conversion_is_exact() -> None:
    rng = random.Random(7)
    values = [0, 1, (1 << 64) - 1, (1 << 63) + 12345] + [rng.getrandbits(64) for _ in range(40)]
    values += [rng.getrandbits(52) for _ in range(40)]
    for k in range(0, 128):
        for ts in values:
            want = ts * NS // (1 << k)
            if want < 1 << 63:  # beyond that the int64 result wraps, as documented
                got = int(_scale_ts(np.uint64(ts), np.int64(2), np.int64(k), np.uint64(0)))
                assert got == want, (k, ts)
    for k in range(0, 128):
        for ts in values:
            want = ts * NS // 10 ** k
            if k <= 9:
                mode, factor = 0, 10 ** (9 - k)
            else:
                mode, factor = 1, 10 ** (k - 9) if 10 ** (k - 9) < 1 << 64 else 0
            if want < 1 << 63:
                got = int(_scale_ts(np.uint64(ts), np.int64(mode), np.int64(k),
                                    np.uint64(factor)))
                assert got == want, (k, ts)


def test_pcapng_tsresol_via_file(tmp_path: Path) -> None:
    """Several resolutions in one file, expected values from exact fractions."""
    ng = NG(False)
    out = [ng.shb()]
    exp = []
    for i, res in enumerate([0, 3, 6, 9, 10, 12, 0x80 | 0, 0x80 | 10, 0x80 | 32, 0x80 | 40]):
        out.append(ng.idb(1, tsresol=res))
        per_s = (1 << (res & 0x7F)) if res & 0x80 else 10 ** res
        secs = min(1_650_000_000, (1 << 64) // per_s - 2)  # fine units cover fewer seconds
        ts = secs * per_s + per_s // 3 + 1
        out.append(ng.epb(i, ts, frame(i, 20)))
        exp.append(int(Fraction(ts * NS, per_s)))  # floor for positive values
    p = tmp_path / "res.pcapng"
    p.write_bytes(b"".join(out))
    arr, _, _, _ = read_all(p)
    assert arr["ts_ns"].tolist() == exp


# ------------------------------------------------------------------------------ truncation


def test_truncated_pcap_at_several_offsets(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    path = require_data(PCAPS / "stratosphere_scanning_host.pcap")
    raw = path.read_bytes()
    offs = pcap_offsets(raw)
    assert len(offs) == 2000
    ref, ref_data, _, _ = read_all(path)
    cuts = [(offs[0] + 5, 0), (offs[10] + 3, 10), (offs[500] + 16 + 3, 500),
            (offs[1999] + 16, 1999), (len(raw) - 1, 1999)]
    caplog.set_level(logging.WARNING, logger="malsensor.capture")
    for cut, k in cuts:
        p = tmp_path / f"cut{cut}.pcap"
        p.write_bytes(raw[:cut])
        for chunk in (8 << 20, 1000):
            caplog.clear()
            arr, data, st, _ = read_all(p, chunk_bytes=chunk)
            assert st.packets == k and data == ref_data[:k]
            assert arr["ts_ns"].tolist() == ref["ts_ns"][:k].tolist()
            assert st.truncated_at == offs[k]
            msgs = [r.getMessage() for r in caplog.records if r.name == "malsensor.capture"]
            assert len(msgs) == 1 and str(p) in msgs[0] and f"byte {offs[k]}" in msgs[0]
            assert st.warnings == msgs
    # a cut exactly at a record boundary is a complete file
    p = tmp_path / "boundary.pcap"
    p.write_bytes(raw[:offs[700]])
    _, data, st, _ = read_all(p)
    assert st.packets == 700 and st.truncated_at is None and st.warnings == []


def test_truncated_pcapng(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = require_data(PCAPS / "synscan.pcapng")
    raw = path.read_bytes()
    blocks = pcapng_blocks(raw)
    epbs = [b for b in blocks if b[1] == 6]
    assert len(epbs) == 2011
    ref, ref_data, _, _ = read_all(path)
    caplog.set_level(logging.WARNING, logger="malsensor.capture")
    for k, extra in [(0, 4), (0, 30), (77, 9), (2010, 40)]:
        cut = epbs[k][0] + extra
        p = tmp_path / f"cut{cut}.pcapng"
        p.write_bytes(raw[:cut])
        caplog.clear()
        _, data, st, _ = read_all(p, chunk_bytes=512)
        assert st.packets == k and data == ref_data[:k]
        assert st.truncated_at == epbs[k][0]
        assert any(str(p) in m and f"byte {epbs[k][0]}" in m for m in caplog.messages)
    # cut inside the Interface Description Block: no packets, a warning
    p = tmp_path / "idb.pcapng"
    p.write_bytes(raw[:blocks[1][0] + 8])
    _, _, st, batches = read_all(p)
    assert batches == [] and st.truncated_at == blocks[1][0]
    # cut inside the first Section Header Block: the file header, an error as for pcap
    for cut in (6, 20):
        p.write_bytes(raw[:cut])
        with pytest.raises(CaptureFormatError, match="Section Header Block cut short") as ei:
            list(read_capture(p))
        assert ei.value.offset == 0
    # cut inside a second section's header: a truncation
    blob, exp = two_section_pcapng()
    second = blob.index(NG(True).shb())
    p.write_bytes(blob[:second + 20])
    _, _, st, _ = read_all(p)
    assert st.packets == 5 and st.truncated_at == second


def test_pcap_header_cut_short(tmp_path: Path) -> None:
    p = tmp_path / "h.pcap"
    p.write_bytes(pcap_file([])[:10])
    with pytest.raises(CaptureFormatError, match="header cut short") as ei:
        list(read_capture(p))
    assert ei.value.path == str(p) and ei.value.offset == 0


# ------------------------------------------------------------------------------ corruption


def read_until_error(p: Path, **kw) -> tuple[list[bytes], CaptureFormatError]:
    got: list[PacketBatch] = []
    with pytest.raises(CaptureFormatError) as ei:
        for b in read_capture(p, **kw):
            got.append(b)
    return frames(got), ei.value


@pytest.mark.parametrize("chunk", [8 << 20, 3000])
def test_corrupt_pcap_record(tmp_path: Path, chunk: int) -> None:
    path = require_data(PCAPS / "stratosphere_ssh_bruteforce.pcap")
    raw = bytearray(path.read_bytes())
    offs = pcap_offsets(bytes(raw))
    _, ref_data, _, _ = read_all(path)
    k = 321
    struct.pack_into("<I", raw, offs[k] + 8, 300_000)
    p = tmp_path / "bad.pcap"
    p.write_bytes(bytes(raw))
    data, err = read_until_error(p, chunk_bytes=chunk)
    assert data == ref_data[:k]
    assert err.offset == offs[k] and err.path == str(p)
    assert f"byte {offs[k]}" in str(err) and "300000" in str(err)


@pytest.mark.parametrize("what,expect", [
    ("align", "not a multiple of 4"),
    ("short", "smaller than 12"),
    ("trailer", "trailing block length"),
    ("iface", "interface 5"),
    ("caplen", "does not fit"),
    ("huge", "exceeds the maximum"),
])
def test_corrupt_pcapng_block(tmp_path: Path, what: str, expect: str) -> None:
    path = require_data(PCAPS / "http_espn.pcapng")
    raw = bytearray(path.read_bytes())
    epbs = [b for b in pcapng_blocks(bytes(raw)) if b[1] == 6]
    _, ref_data, _, _ = read_all(path)
    k = 400
    off, _, blen = epbs[k]
    if what == "align":
        struct.pack_into("<I", raw, off + 4, blen + 2)
    elif what == "short":
        struct.pack_into("<I", raw, off + 4, 8)
    elif what == "trailer":
        struct.pack_into("<I", raw, off + blen - 4, blen + 4)
    elif what == "iface":
        struct.pack_into("<I", raw, off + 8, 5)
    elif what == "caplen":
        struct.pack_into("<I", raw, off + 20, blen)
    elif what == "huge":
        struct.pack_into("<I", raw, off + 4, 1 << 30)
    p = tmp_path / "bad.pcapng"
    p.write_bytes(bytes(raw))
    for chunk in (8 << 20, 777):
        data, err = read_until_error(p, chunk_bytes=chunk)
        assert data == ref_data[:k]
        assert err.offset == off and expect in str(err) and str(p) in str(err)


def test_unknown_linktype_pcap(tmp_path: Path) -> None:
    p = tmp_path / "usb.pcap"
    p.write_bytes(pcap_file([(1, 0, b"abc", 3)], linktype=189))
    with pytest.raises(CaptureFormatError, match="unsupported link type 189") as ei:
        list(read_capture(p))
    assert ei.value.path == str(p) and str(p) in str(ei.value)


def test_unknown_linktype_pcapng(tmp_path: Path) -> None:
    ng = NG(False)
    # an unused interface of an unknown type is fine; a packet on it is an error
    ok = ng.shb() + ng.idb(1) + ng.idb(189) + ng.epb(0, 5, frame(0))
    p = tmp_path / "ok.pcapng"
    p.write_bytes(ok)
    _, data, st, _ = read_all(p)
    assert data == [frame(0)] and st.linktypes == {1}
    bad = ok + ng.epb(1, 6, frame(1))
    p = tmp_path / "usb.pcapng"
    p.write_bytes(bad)
    data, err = read_until_error(p)
    assert data == [frame(0)]
    assert "unsupported link type 189" in str(err) and err.offset == len(ok)
    assert str(p) in str(err)


def test_bad_idb_options(tmp_path: Path) -> None:
    ng = NG(False)
    good = ng.idb(1, tsresol=6)
    # option if_tsresol claims 200 bytes inside a block that has far fewer
    bad = bytearray(good)
    opt_at = 16 + 8  # after the block header, linktype/snaplen and if_name (4 + 4)
    assert struct.unpack_from("<H", bad, opt_at)[0] == 9
    struct.pack_into("<H", bad, opt_at + 2, 200)
    p = tmp_path / "opt.pcapng"
    p.write_bytes(ng.shb() + bytes(bad) + ng.epb(0, 1, frame(0)))
    _, err = read_until_error(p)
    assert err.offset == 28 + opt_at and "option 9 of length 200" in str(err)
    p.write_bytes(ng.shb() + ng.idb(1, tsoffset=1 << 62) + ng.epb(0, 1, frame(0)))
    _, err = read_until_error(p)
    assert err.offset == 28 and "if_tsoffset" in str(err)


def test_epb_before_any_interface(tmp_path: Path) -> None:
    ng = NG(True)
    p = tmp_path / "noif.pcapng"
    p.write_bytes(ng.shb() + ng.epb(0, 5, frame(0)))
    _, err = read_until_error(p)
    assert err.offset == 28 and "interface 0" in str(err)
    p.write_bytes(ng.shb() + ng.spb(frame(0)))
    _, err = read_until_error(p)
    assert err.offset == 28


@pytest.mark.parametrize("content,expect", [
    (b"", "empty file"),
    (b"\xd4\xc3", "not a capture"),
    (b"hello world, this is not a capture file at all", "not a pcap or pcapng file"),
    (b"\x34\xcd\xb2\xa1" + b"\0" * 40, "Kuznetzov"),
    (b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x11\x22\x33\x44" + b"\0" * 20, "byte-order magic"),
    (b"\x0a\x0d\x0d\x0a\x1e\0\0\0\x4d\x3c\x2b\x1a" + b"\0" * 20, "block length 30"),
])
def test_not_a_capture(tmp_path: Path, content: bytes, expect: str) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(content)
    with pytest.raises(CaptureFormatError, match=expect) as ei:
        list(read_capture(p))
    assert ei.value.path == str(p)
    p.write_bytes(gzip.compress(content))
    with pytest.raises(CaptureFormatError):
        list(read_capture(p))


def test_missing_file_and_bad_gzip(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="cannot open"):
        list(read_capture(tmp_path / "nope.pcap"))
    p = tmp_path / "bad.gz"
    p.write_bytes(b"\x1f\x8b" + b"\xff" * 64)
    with pytest.raises(CaptureFormatError):
        list(read_capture(p))


# ------------------------------------------------------------------------------ fuzz


def _seed_files() -> list[bytes]:
    blob, _ = two_section_pcapng()
    out = [blob, pcap_file([(i, i, frame(i, 10 + i), 10 + i) for i in range(30)], be=True)]
    for name in ("retina_tls_ciphers.pcap", "synscan.pcapng"):
        p = PCAPS / name
        if p.exists():
            out.append(p.read_bytes()[:3000])
    return out


SEEDS = _seed_files()


@pytest.mark.fuzz
@settings(max_examples=fuzz_cases(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=hs.integers(0, len(SEEDS) - 1),
       edits=hs.lists(hs.tuples(hs.integers(0, 1 << 20), hs.integers(0, 255)), max_size=8),
       cut=hs.integers(0, 1 << 20), chunk=hs.sampled_from([13, 64, 500, 8 << 20]))
def test_fuzz_never_crashes(tmp_path: Path, seed: int, edits, cut: int, chunk: int) -> None:
    """Mutated and cut files either read or raise CaptureFormatError; packets stay in bounds."""
    data = bytearray(SEEDS[seed])
    for pos, val in edits:
        data[pos % len(data)] = val
    data = data[:max(cut % (len(data) + 1), 0)]
    p = tmp_path / "fuzz.bin"
    p.write_bytes(bytes(data))
    st = ReaderStats()
    try:
        for b in read_capture(p, chunk_bytes=chunk, stats=st):
            assert (b.caplen >= 0).all() and (b.caplen <= b.wirelen).all()
            assert (b.offset >= 0).all() and (b.offset + b.caplen <= b.buf.shape[0]).all()
    except CaptureFormatError as e:
        assert e.path == str(p)
    assert st.bytes <= len(data)


@pytest.mark.parametrize("name", ["stratosphere_cc_capture1.pcap", "http_espn.pcapng"])
@pytest.mark.parametrize("chunk", [4096, 65536, 2 << 20])
def test_reused_buffers_give_the_same_packets(name, chunk):
    """With reuse_buffers the bytes of each batch are right while it is the current one."""
    path = require_data(PCAPS / name)

    def packets(reuse: bool) -> list[tuple[int, int, bytes]]:
        out = []
        for b in read_capture(path, chunk_bytes=chunk, reuse_buffers=reuse):
            out.extend((int(t), int(w), b.buf[o:o + c].tobytes())
                       for t, w, o, c in zip(b.ts_ns, b.wirelen, b.offset, b.caplen))
        return out

    assert packets(True) == packets(False)
