"""The live-capture options of ``malsensor extract``, in a module that imports neither numba nor
the capture code (building the parser must not cost the start-up of a file extraction)."""
from __future__ import annotations

import argparse

from .ringconfig import RingConfig


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    """The live-capture options of ``malsensor extract`` (added to its parser by cli.py)."""
    g = p.add_argument_group("live capture (instead of a capture file; root or CAP_NET_RAW)")
    r = RingConfig()
    g.add_argument("-i", "--interface", metavar="IF[,IF...]",
                   help="capture on these interfaces (waits for ones that do not exist yet)")
    g.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    g.add_argument("--count", type=int, metavar="N", help="stop after N packets (in total)")
    g.add_argument("--fanout", type=int, default=1, metavar="N",
                   help="capture threads per interface (PACKET_FANOUT group; default 1)")
    g.add_argument("--fanout-mode", choices=("hash", "lb", "cpu"), default="hash",
                   help="hash (default) keeps each connection on one thread")
    g.add_argument("--bpf", metavar="EXPR", help="pcap filter expression (compiled by libpcap)")
    g.add_argument("--no-promisc", action="store_true", help="do not put interfaces in promiscuous mode")
    g.add_argument("--ignore-outgoing", action="store_true", help="skip packets this host sends")
    g.add_argument("--snaplen", type=int, default=r.snaplen, help="bytes kept per packet (%(default)s)")
    g.add_argument("--block-size", type=int, default=r.block_size, help="ring block bytes (%(default)s)")
    g.add_argument("--block-count", type=int, default=r.block_count, help="ring blocks (%(default)s)")
    g.add_argument("--retire-timeout", type=int, default=r.retire_timeout_ms, metavar="MS",
                   help="hand over a partly filled block after this many ms (%(default)s)")
