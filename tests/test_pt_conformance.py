"""libipt's own conformance vectors: our ptdump listing equals the reference listing of each.

For every ``out/NAME.pt`` in ../shared/data/pt/libipt the listing of ``malsensor ptdump``
(with the options the vector's ``.ptt`` gives ptdump, once per CPU it names, as libipt's
script/test.bash runs them) equals ``out/NAME-ptdump.exp`` compared as ``diff -b`` does.
Vectors that need ptdump's timing or sideband options are left out; they are exactly the
ones docs/pt.md lists, with the reason.
"""
from __future__ import annotations

import difflib
import re
import shlex
import subprocess
import sys

import pytest

from conftest import DATA, REPO, require_data
from malsensor.daemon.pt.decoder import Errata, errata_for_cpu
from malsensor.daemon.pt.listing import ListingOptions, listing_lines, normalise

VECTORS = DATA / "pt" / "libipt"
FLAGS = {"--no-offset": ("show_offset", False), "--raw": ("raw", True), "--lastip": ("lastip", True),
         "--exec-mode": ("exec_mode", True), "--no-pad": ("no_pad", True), "--no-timing": ("no_timing", True),
         "--no-cyc": ("no_cyc", True), "--no-sync": ("no_sync", True), "--quiet": ("quiet", True)}
# these only configure ptdump's time tracking, which prints nothing without --time
TIMING_CONFIG = {"--mtc-freq", "--nom-freq", "--cpuid-0x15.eax", "--cpuid-0x15.ebx"}


def _names() -> list[str]:
    return sorted(p.stem for p in (VECTORS / "src").glob("*.ptt")) or ["<no vectors>"]


def _plan(name: str) -> tuple[dict, list[str | None], str | None]:
    """(ListingOptions fields, CPUs to run with, why the vector is left out or None)."""
    text = (VECTORS / "src" / f"{name}.ptt").read_text()
    args = shlex.split(" ".join(re.findall(r"^\s*;\s*opt:ptdump\s+(.*?)\s*$", text, re.M)))
    cpus: list[str | None] = re.findall(r"^\s*;\s*cpu\s+(.*?)\s*$", text, re.M) or [None]
    kw: dict = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a in FLAGS:
            kw[FLAGS[a][0]] = FLAGS[a][1]
        elif a in TIMING_CONFIG:
            i += 1
        elif a == "--cpu":
            cpus = [args[i + 1]]
            i += 1
        else:
            return kw, cpus, a
        i += 1
    return kw, cpus, None


def _listing(data: bytes, kw: dict, cpu: str | None) -> list[str]:
    pre, errata = [], Errata()
    if cpu:
        family, model = (int(x) for x in cpu.split("/")[:2])
        found = errata_for_cpu(family, model)
        if found is None:
            pre = ["[0: failed to determine errata: unknown cpu]"]  # ptdump's diag; it goes on without errata
        else:
            errata = found
    return pre + list(listing_lines(data, ListingOptions(errata=errata, **kw)))


def _left_out_in_docs() -> set[str]:
    text = (REPO / "docs" / "pt.md").read_text()
    section = text.split("<!-- left-out vectors -->")[1].split("<!-- end -->")[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.M))


@pytest.mark.parametrize("name", _names())
def test_listing_equals_libipt_reference(name):
    require_data(VECTORS / "out")
    kw, cpus, unsupported = _plan(name)
    if unsupported:
        assert name in _left_out_in_docs(), f"{name} needs ptdump {unsupported} and is not listed in docs/pt.md"
        return
    expected = normalise((VECTORS / "out" / f"{name}-ptdump.exp").read_text().splitlines())
    data = (VECTORS / "out" / f"{name}.pt").read_bytes()
    for cpu in cpus:
        got = normalise(_listing(data, kw, cpu))
        assert got == expected, f"{name} (cpu {cpu}):\n" + "\n".join(
            difflib.unified_diff(expected, got, "expected", "malsensor", lineterm=""))


def test_left_out_vectors_are_exactly_those_in_the_docs():
    require_data(VECTORS / "src")
    left_out = {n for n in _names() if _plan(n)[2]}
    assert left_out == _left_out_in_docs()
    assert len(left_out) <= 45  # 33 need --time/--tcal, 12 sideband (perf) files


def test_malsensor_ptdump_prints_the_reference_listing(capsys, tmp_path):
    from malsensor.daemon.cli import main

    require_data(VECTORS / "out")
    name = "ptdump-bad_opc-resync"  # a decode error and a resync, printed as ptdump prints them
    assert main(["ptdump", str(VECTORS / "out" / f"{name}.pt"), "--summary"]) == 0
    out, err = capsys.readouterr()
    assert normalise(out.splitlines()) == normalise((VECTORS / "out" / f"{name}-ptdump.exp").read_text().splitlines())
    assert '"errors": {"bad_opcode": 1}' in err
    assert main(["ptdump", str(tmp_path / "absent.pt")]) == 2


def test_the_ptdump_command_ends_with_its_listing_written(tmp_path):
    """The command leaves through ``os._exit`` (daemon/cli.py ``run``): its standard output must
    be whole by then, and a full one is an error with a message, not a traceback."""
    require_data(VECTORS / "out")
    name = "ptdump-bad_opc-resync"
    cmd = [sys.executable, "-m", "malsensor.daemon.cli", "ptdump", str(VECTORS / "out" / f"{name}.pt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert normalise(proc.stdout.splitlines()) == normalise((VECTORS / "out" / f"{name}-ptdump.exp").read_text().splitlines())
    with open("/dev/full", "w") as full:
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1 and "cannot write standard output: No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr
