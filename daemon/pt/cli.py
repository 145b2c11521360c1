"""``malsensor ptdump TRACE``: the packet listing of a raw Intel PT trace, as libipt's ptdump prints it."""
from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from ..logs import LEVELS

log = logging.getLogger("malsensor")

_FLAGS = (
    ("--no-offset", "show_offset", False, "do not print the offset column"),
    ("--raw", "raw", True, "print the packet bytes in hex"),
    ("--lastip", "lastip", True, "print the reconstructed IP of IP packets (last-IP tracking)"),
    ("--exec-mode", "exec_mode", True, "print the execution mode of mode.exec packets"),
    ("--no-pad", "no_pad", True, "do not print pad packets"),
    ("--no-timing", "no_timing", True, "do not print timing packets (tsc, cbr, tma, mtc, cyc)"),
    ("--no-cyc", "no_cyc", True, "do not print cyc packets"),
    ("--no-sync", "no_sync", True, "start at offset 0 instead of the first PSB"),
    ("--quiet", "quiet", True, "print no packets (only errors, and the summary if asked)"),
)


def add_parser(sub) -> None:
    p = sub.add_parser("ptdump", help="packet listing of a raw Intel PT trace (libipt ptdump's format)",
                       description="One packet a line: offset, mnemonic, payload (docs/pt.md).")
    p.add_argument("trace", help="raw Intel PT byte stream")
    for flag, dest, value, text in _FLAGS:
        p.add_argument(flag, dest=dest, action="store_const", const=value, default=not value, help=text)
    p.add_argument("-l", "--log-level", dest="log_level_sub", choices=LEVELS, help="as before the command")
    p.add_argument("--cpu", metavar="FAMILY/MODEL", help="apply this CPU's packet errata (SKD007, SKZ84)")
    p.add_argument("--summary", action="store_true",
                   help="print the counters (packets by type, errors by kind, bytes) as JSON on stderr")


def _errata(cpu: str | None):
    from .decoder import Errata, errata_for_cpu  # (numba: only when the command runs)

    if not cpu:
        return Errata()
    try:
        family, model = (int(x, 0) for x in cpu.split("/")[:2])
    except ValueError:
        raise ValueError(f"--cpu: {cpu!r} is not FAMILY/MODEL") from None
    found = errata_for_cpu(family, model)
    if found is None:
        print("[0: failed to determine errata: unknown cpu]")  # as ptdump; it goes on without errata
        return Errata()
    return found


def cmd_ptdump(a: argparse.Namespace) -> int:
    from .decoder import decode
    from .listing import ListingOptions, listing_lines

    try:
        data = np.fromfile(a.trace, np.uint8)
    except OSError as exc:
        log.error("cannot read trace %s: %s", a.trace, exc.strerror or exc)
        return 2
    try:
        errata = _errata(a.cpu)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    opts = ListingOptions(errata=errata, **{dest: getattr(a, dest) for _f, dest, _v, _t in _FLAGS})
    out = sys.stdout
    try:
        for line in listing_lines(data, opts):
            out.write(line + "\n")
        out.flush()
    except BrokenPipeError:  # `| head`: stop quietly
        return 0
    except OSError as exc:  # a full disk
        log.error("cannot write standard output: %s", exc.strerror or exc)
        return 1
    if a.summary:
        counters = decode(data, packets=False, no_sync=opts.no_sync, errata=errata).counters
        json.dump(counters.as_dict(), sys.stderr)
        sys.stderr.write("\n")
    return 0
