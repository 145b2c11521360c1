"""Logging setup: the journal (structured fields) under systemd, stderr otherwise."""
from __future__ import annotations

import logging
import os
import sys

LEVELS = ("debug", "info", "warning", "error", "critical")


def _under_systemd() -> bool:
    # systemd sets JOURNAL_STREAM for services whose stderr goes to the journal
    return bool(os.environ.get("JOURNAL_STREAM")) or bool(os.environ.get("INVOCATION_ID"))


def setup_logging(level: str = "info", *, journal: bool | None = None) -> None:
    """Configure the root logger once for a command-line program or the daemon."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (allowed: {', '.join(LEVELS)})")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    use_journal = _under_systemd() if journal is None else journal
    handler: logging.Handler | None = None
    if use_journal:
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="malsensor")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        except ImportError:  # pragma: no cover - systemd-python is a dependency
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
