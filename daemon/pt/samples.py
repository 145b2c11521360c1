"""Processor-trace samples on disk, in the two layouts the project reads.

* **Barnum** (the LSTM trace classifier this modality descends from): a folder per sample
  holding ``info.txt`` (first line the sample's name, second ``benign`` or ``malicious``, or
  any class name), ``mapping.txt`` or ``mapping.txt.gz`` (one module a line: ``START PATH``
  or ``START END PATH``, addresses in hex; a module without END ends where the next one
  starts, the last one 1 GiB after its start) and ``trace_0`` or ``trace_0.gz`` (raw PT).
* **libxdc page images** (``../shared/data/pt/libxdc``): ``TEST_CASES.tsv`` names, per
  case, a page image (``PREFIX.addr``: little-endian u64 page addresses, ``PREFIX.dump``:
  the pages) and a trace. Runs of contiguous pages become the modules
  (``CASE.rK``); the sample's label is the case's folder name (program identification).

:func:`scan` finds samples under a root and skips incomplete ones with a reason; it
never raises on bad input.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAGE = 0x1000
LAST_MODULE_SPAN = 1 << 30
BARNUM_FILES = ("info.txt", "mapping.txt", "trace_0")


class SampleError(ValueError):
    """A sample that cannot be read; the message names the file (and line)."""


@dataclass
class Modules:
    """The traced process's memory layout: sorted, non-overlapping [start, end) ranges."""

    start: np.ndarray   # uint64
    end: np.ndarray     # uint64
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class PtSample:
    name: str
    label: str | None
    trace: Path                     # raw PT (may end in .gz)
    modules: Modules
    where: Path                     # the folder (Barnum) or TEST_CASES.tsv row's folder
    layout: str = "barnum"

    def read_trace(self) -> bytes:
        return read_maybe_gz(self.trace)


@dataclass
class ScanResult:
    samples: list[PtSample] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)   # (where, why)


GZ_CHUNK = 1 << 16


def read_maybe_gz(path: Path) -> bytes:
    data = Path(path).read_bytes()
    return gunzip(data, path) if str(path).endswith(".gz") else data


def gunzip(data: bytes, where) -> bytes:
    """The gzip members of ``data`` one after the other (as ``gzip.decompress``); a bad or cut
    stream raises a SampleError naming the compressed byte offset where it goes wrong."""
    out, pos = [], 0
    while pos < len(data):
        start = pos
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)     # a gzip header, trailer checked
        while not d.eof:
            if pos >= len(data):
                raise SampleError(f"{where}: not a valid gzip file (it ends at byte {len(data)}, inside the "
                                  f"member that starts at byte {start})")
            chunk = data[pos:pos + GZ_CHUNK]
            before = d.copy()
            try:
                out.append(d.decompress(chunk))
            except zlib.error as e:
                raise SampleError(f"{where}: not a valid gzip file at byte {pos + _bad_byte(before, chunk)} "
                                  f"({e})") from None
            pos += len(chunk) - len(d.unused_data)
    return b"".join(out)


def _bad_byte(d, chunk: bytes) -> int:
    """Where in ``chunk`` the decompressor ``d`` fails (byte by byte on the error path only)."""
    for i in range(len(chunk)):
        try:
            d.decompress(chunk[i:i + 1])
        except zlib.error:
            return i
    return len(chunk) - 1


def _present(folder: Path, name: str) -> Path | None:
    for p in (folder / name, folder / (name + ".gz")):
        if p.is_file():
            return p
    return None


def modules_from_lines(lines: list[str], where: str) -> Modules:
    """Parse ``START PATH`` / ``START END PATH`` lines (hex). Errors name ``where:LINE``."""
    rows: list[tuple[int, int | None, str]] = []
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        try:
            start = int(parts[0], 16)
            end = int(parts[1], 16) if len(parts) >= 3 else None
        except ValueError:
            raise SampleError(f"{where}:{i}: not a hex address: {parts[0]!r}") from None
        if len(parts) < 2:
            raise SampleError(f"{where}:{i}: expected START [END] PATH")
        path = " ".join(parts[2:] if end is not None else parts[1:])
        if end is not None and end <= start:
            raise SampleError(f"{where}:{i}: end {end:#x} is not above start {start:#x}")
        if start >= 1 << 64 or (end or 0) > 1 << 64:
            raise SampleError(f"{where}:{i}: address beyond 64 bits")
        rows.append((start, end, path))
    if not rows:
        raise SampleError(f"{where}: no modules")
    rows.sort(key=lambda r: r[0])
    starts = [r[0] for r in rows]
    ends = []
    for k, (start, end, _) in enumerate(rows):
        nxt = starts[k + 1] if k + 1 < len(rows) else None
        e = end if end is not None else (nxt if nxt is not None else min(start + LAST_MODULE_SPAN, (1 << 64) - 1))
        if nxt is not None:
            e = min(e, nxt)   # overlapping modules: the later start wins
        ends.append(e)
    return Modules(np.asarray(starts, np.uint64), np.asarray(ends, np.uint64), [r[2] for r in rows])


def read_barnum(folder: Path) -> PtSample:
    """One Barnum sample folder (SampleError naming the missing or bad file)."""
    info = folder / "info.txt"
    mapping = _present(folder, "mapping.txt")
    trace = _present(folder, "trace_0")
    missing = [n for n, p in (("info.txt", info if info.is_file() else None), ("mapping.txt[.gz]", mapping),
                              ("trace_0[.gz]", trace)) if p is None]
    if missing:
        raise SampleError(f"{folder}: incomplete sample, missing {', '.join(missing)}")
    try:
        lines = info.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SampleError(f"{info}: not UTF-8 text (byte {e.start})") from None
    if not lines or not lines[0].strip():
        raise SampleError(f"{info}:1: expected the sample's name")
    label = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
    try:
        text = read_maybe_gz(mapping).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SampleError(f"{mapping}: not UTF-8 text (byte {e.start})") from None
    mods = modules_from_lines(text.splitlines(), str(mapping))
    return PtSample(lines[0].strip(), label, trace, mods, folder, "barnum")


def modules_from_pages(addr_file: Path, case: str) -> Modules:
    """Runs of contiguous pages of a libxdc page image as modules ``CASE.r0``, ``CASE.r1`` ..."""
    raw = addr_file.read_bytes()
    if len(raw) % 8:
        raise SampleError(f"{addr_file}: size {len(raw)} is not a multiple of 8 (u64 page addresses)")
    pages = np.unique(np.frombuffer(raw, "<u8") & ~np.uint64(PAGE - 1))
    if pages.size == 0:
        raise SampleError(f"{addr_file}: no pages")
    breaks = np.flatnonzero(np.diff(pages) != PAGE) + 1
    starts = pages[np.concatenate([[0], breaks])]
    last = pages[np.concatenate([breaks - 1, [pages.size - 1]])]
    return Modules(starts.astype(np.uint64), (last + np.uint64(PAGE)).astype(np.uint64),
                   [f"{case}.r{k}" for k in range(starts.size)])


def read_libxdc(table: Path) -> ScanResult:
    """The cases of a libxdc ``TEST_CASES.tsv`` whose page image and trace are present."""
    out = ScanResult()
    root = table.parent
    lines = table.read_text(encoding="utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines[1:], 2):
        cols = line.split("\t")
        if len(cols) < 2:
            out.skipped.append((table, f"{table}:{i}: expected page_dump_prefix and trace columns"))
            continue
        prefix = root / Path(cols[0]).relative_to("test_data") if cols[0].startswith("test_data/") else root / cols[0]
        trace = root / Path(cols[1]).relative_to("test_data") if cols[1].startswith("test_data/") else root / cols[1]
        case = prefix.parent.name
        addr = prefix.with_name(prefix.name + ".addr")
        if not trace.is_file() or not addr.is_file():
            what = [str(p.name) for p in (addr, trace) if not p.is_file()]
            out.skipped.append((prefix.parent, f"{table}:{i}: case {case}: missing {', '.join(what)}"))
            continue
        try:
            mods = modules_from_pages(addr, case)
        except SampleError as e:
            out.skipped.append((prefix.parent, str(e)))
            continue
        out.samples.append(PtSample(case, case, trace, mods, prefix.parent, "libxdc"))
    return out


def scan(root: str | Path) -> ScanResult:
    """Every sample under ``root``: Barnum folders (any folder holding one of info.txt,
    mapping.txt[.gz], trace_0[.gz]) and libxdc tables; incomplete or bad ones are skipped
    with a reason. Sorted by path."""
    root = Path(root)
    out = ScanResult()
    if not root.exists():
        out.skipped.append((root, f"{root}: no such file or directory"))
        return out
    if root.is_file():
        if root.name == "TEST_CASES.tsv":
            return read_libxdc(root)
        folders = [root.parent]
    else:
        folders = sorted({p.parent for name in ("info.txt", "mapping.txt", "mapping.txt.gz", "trace_0",
                                                 "trace_0.gz", "TEST_CASES.tsv")
                          for p in root.rglob(name)} | ({root} if _is_barnum(root) else set()))
    for folder in folders:
        if (folder / "TEST_CASES.tsv").is_file():
            got = read_libxdc(folder / "TEST_CASES.tsv")
            out.samples += got.samples
            out.skipped += got.skipped
            continue
        try:
            out.samples.append(read_barnum(folder))
        except (SampleError, OSError) as e:
            out.skipped.append((folder, str(e)))
    return out


def _is_barnum(folder: Path) -> bool:
    return any(_present(folder, n) for n in BARNUM_FILES)
