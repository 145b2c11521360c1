"""Shared test helpers.

A test that cannot run here (missing tool, not root, missing shared data) skips
with the reason; under ``MALSENSOR_STRICT_TESTS=1`` (set by .ci/run) it fails
instead, so a green CI means the whole suite ran.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PCAPS = DATA / "pcap"
STRICT = os.environ.get("MALSENSOR_STRICT_TESTS") == "1"


def _unavailable(reason: str) -> None:
    if STRICT:
        pytest.fail(f"MALSENSOR_STRICT_TESTS=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of an external tool, or skip (fail when strict)."""
    path = shutil.which(name)
    if path is None:
        _unavailable(f"tool {name!r} is not installed")
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        _unavailable("the test needs root (network namespaces, raw sockets)")


def require_data(path: str | os.PathLike) -> Path:
    """A file or folder from ../shared/data, or skip (fail when strict)."""
    p = Path(path)
    if not p.is_absolute():
        p = DATA / p
    if not p.exists():
        _unavailable(f"shared data {p} is absent")
    return p


def fuzz_cases(default: int) -> int:
    """Cases a fuzz harness runs: ``default`` (bounded, for every test run) unless
    MALSENSOR_FUZZ_CASES says otherwise (``make fuzz`` sets it to thousands)."""
    v = os.environ.get("MALSENSOR_FUZZ_CASES")
    return int(v) if v else default


def fuzz_seed() -> int:
    """The first case's seed: MALSENSOR_FUZZ_SEED, so that a failure can be replayed."""
    return int(os.environ.get("MALSENSOR_FUZZ_SEED", "0"))


@pytest.fixture
def pcaps_dir() -> Path:
    return require_data(PCAPS)
