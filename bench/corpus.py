"""Build the benchmark corpus: every Ethernet capture in ../shared/data merged into one pcap.

Files are laid end to end in time (each starts an hour after the previous one
ended, so no connection spans two files) and the merged set is repeated
``repeat`` times the same way, giving one real-traffic pcap of the wanted size.
The result is cached under /tmp/malsensor-bench/.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
from pathlib import Path

import numpy as np

from malsensor.daemon.capture.batch import LINKTYPE_ETHERNET
from malsensor.daemon.capture.pcapfile import read_capture

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE = Path(os.environ.get("MALSENSOR_BENCH_DIR", "/tmp/malsensor-bench"))
GAP_S = 3600


SOURCES = ("all", "iot")  # every shared capture, or the IoT Sentinel captures only


def source_files(sources: str = "all") -> list[Path]:
    files = sorted((DATA / "iot_sentinel").glob("*/*.pcap"))
    if sources == "all":
        files = sorted((DATA / "pcap").glob("*.pcap*")) + files
    if not files:
        sys.exit(f"no captures under {DATA}: the benchmark needs ../shared/data")
    return files


def _base_records(sources: str = "all") -> tuple[bytearray, np.ndarray, int]:
    """All packets as pcap records (microsecond headers); header offsets; span in seconds."""
    out = bytearray()
    hdr_off = []
    t_shift = None
    clock = 0  # seconds, start of the next file
    for f in source_files(sources):
        tss, blobs = [], []
        for b in read_capture(f):
            keep = b.linktype == LINKTYPE_ETHERNET
            for i in np.flatnonzero(keep):
                o, c = int(b.offset[i]), int(b.caplen[i])
                tss.append((int(b.ts_ns[i]), int(b.wirelen[i])))
                blobs.append(b.buf[o:o + c].tobytes())
        if not blobs:
            continue
        t0 = min(t for t, _ in tss)
        t1 = max(t for t, _ in tss)
        if t_shift is None:
            clock = t0 // 1_000_000_000
        for (t, wl), data in zip(tss, blobs):
            rel = t - t0
            sec = clock + rel // 1_000_000_000
            usec = (rel % 1_000_000_000) // 1000
            hdr_off.append(len(out))
            out += struct.pack("<IIII", sec, usec, len(data), wl) + data
        t_shift = 1
        clock += (t1 - t0) // 1_000_000_000 + GAP_S
    return out, np.asarray(hdr_off, dtype=np.int64), clock


def byte_compile() -> None:
    """Byte-compile the checkout first, as an installed package is: with PYTHONDONTWRITEBYTECODE=1
    (set on the project's VMs) the editable sources would be compiled at every start (~40 ms)."""
    import compileall

    root = Path(__file__).resolve().parents[1]  # the checkout
    for d in ("daemon", "models"):
        compileall.compile_dir(str(root / d), quiet=1)


def build(repeat: int, sources: str = "all") -> Path:
    """Path of the merged corpus (``sources``: "all" or "iot") repeated ``repeat`` times (built
    once, then cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / (f"corpus-x{repeat}.pcap" if sources == "all" else f"corpus-{sources}-x{repeat}.pcap")
    if path.exists():
        return path
    base, hdr_off, clock = _base_records(sources)
    first_sec = struct.unpack_from("<I", base, int(hdr_off[0]))[0]
    span = clock - first_sec
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        arr = np.frombuffer(base, dtype=np.uint8).copy()
        secs = arr.view(np.uint8)
        for r in range(repeat):
            if r:
                # shift every record's ts_sec by one span: rewrite the 4-byte fields in place
                idx = hdr_off[:, None] + np.arange(4)
                cur = secs[idx].copy().view("<u4").ravel() + np.uint32(span)
                secs[idx] = cur.view(np.uint8).reshape(-1, 4)
            f.write(secs.tobytes())
    tmp.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sources", choices=SOURCES, default="all")
    a = ap.parse_args()
    p = build(a.repeat, a.sources)
    print(p, f"{p.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
