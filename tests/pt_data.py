"""The real PT recordings in ../shared/data/pt/libxdc (the traces TEST_CASES.tsv names)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import DATA, _unavailable, require_data, require_tool

LIBXDC = DATA / "pt" / "libxdc"
LIBIPT_COUNT_C = Path(__file__).parent / "c" / "pt_libipt_count.c"


def recordings() -> list[Path]:
    """Each recorded trace that is present, in TEST_CASES.tsv order."""
    table = require_data(LIBXDC / "TEST_CASES.tsv").read_text().splitlines()[1:]
    out = []
    for row in table:
        trace = row.split("\t")[1]                      # test_data/<case>/<file>
        path = LIBXDC / Path(trace).relative_to("test_data")
        if path.exists():
            out.append(path)
    return out


def build_libipt_count(tmp: Path) -> Path:
    """Compile the libipt counting helper against libipt-dev (Debian), or skip (fail when strict)."""
    gcc = require_tool("gcc")
    if not Path("/usr/include/intel-pt.h").exists():
        _unavailable("libipt-dev is not installed (/usr/include/intel-pt.h)")
    exe = tmp / "pt_libipt_count"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(exe), str(LIBIPT_COUNT_C), "-lipt"], check=True)
    return exe


def libipt_counts(exe: Path, trace: Path) -> tuple[dict[str, int], int]:
    """(packets by type, errors) as libipt's packet decoder counts them."""
    out = subprocess.run([str(exe), str(trace)], check=True, capture_output=True, text=True).stdout
    counts = {}
    for line in out.splitlines():
        name, n = line.split()
        counts[name] = int(n)
    errors = counts.pop("errors")
    return counts, errors
