"""``malsensor``: extract connection features from captures, and inspect things.

    malsensor extract CAPTURE [--semantics malsensor|argus] [--filter tcp,udp] [-o OUT] [--format jsonl|csv|parquet]
    malsensor ptdump TRACE [--lastip] [--raw] [--no-offset] [--summary]

Start-up matters here (a small capture takes milliseconds): import only what the command needs.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys

# numpy's OpenBLAS starts a thread per core at import (~40 ms of the ~0.35 s start-up measured on
# the 2-core VM, and futex waits at exit); no command here multiplies matrices
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from dataclasses import fields
from typing import IO

from .flows.config import TrackerConfig
from .logs import LEVELS, setup_logging

log = logging.getLogger("malsensor")

# how capture files at rest are read (daemon/capture/pcapfile.py read_capture's file_io): direct
# I/O a few chunks ahead by default; MALSENSOR_FILE_IO=map or =read, to compare
FILE_IO = os.environ.get("MALSENSOR_FILE_IO", "direct")


def _tracking_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "connection tracking",
        "defaults as in etc/malsensor.toml [tracking]; with --semantics argus, Argus's own lifecycle "
        "(docs/features.md): midstream on, every timeout 3600 s")
    d = TrackerConfig()
    g.add_argument("--max-flows", type=int, help=f"bound on tracked connections ({d.max_flows})")
    g.add_argument("--midstream", action="store_true", default=None,
                   help="also track TCP connections seen without their SYN")
    for name in ("tcp_idle_timeout", "udp_idle_timeout", "other_idle_timeout", "active_timeout",
                 "handshake_timeout", "close_linger"):
        g.add_argument("--" + name.replace("_", "-"), type=float, metavar="SECONDS", help=f"({getattr(d, name)})")


def _tracker_config(a: argparse.Namespace) -> TrackerConfig:
    """Raises ValueError (one line per problem) for an option out of its [tracking] range."""
    names = {f.name for f in fields(TrackerConfig)}
    given = {k: v for k, v in vars(a).items() if k in names and v is not None}
    if not given:  # nothing to range-check: spare the start-up the config module (~20 ms of imports)
        return TrackerConfig.for_semantics(a.semantics)
    from .runtime.config import ConfigError, tracker_from_options

    try:
        return tracker_from_options(a.semantics, given)
    except ConfigError as e:
        raise ValueError(str(e)) from None


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer 0..65535")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="malsensor", description=__doc__.splitlines()[0])
    p.add_argument("-l", "--log-level", default="info", choices=LEVELS)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("extract", help="connections and their 17 conn features from a capture",
                       description="Write one row per connection (JSONL, CSV or Parquet) and a summary on stderr.")
    e.add_argument("capture", nargs="?", help="pcap or pcapng file, optionally gzip-compressed "
                                              "(- = standard input; a FIFO works too)")
    e.add_argument("--semantics", choices=("malsensor", "argus"), default="malsensor",
                   help="feature definitions (docs/features.md): malsensor (default) or argus (UNSW-NB15)")
    e.add_argument("--filter", dest="protocols", metavar="PROTOS",
                   help="only connections of these IP protocols: tcp,udp,icmp,icmp6 or numbers")
    e.add_argument("-o", "--output", default="-", help="output file (default: standard output)")
    e.add_argument("--format", choices=("jsonl", "csv", "parquet"),
                   help="row format (default: from the output's extension: .parquet, .csv, otherwise jsonl)")
    e.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON to FILE")
    e.add_argument("-l", "--log-level", dest="log_level_sub", choices=LEVELS, help="as before the command")
    e.add_argument("--community-id-seed", type=_seed, default=0, metavar="SEED",
                   help="seed (0..65535) of each row's community_id (Community ID v1; default 0, as Zeek "
                        "and Suricata)")
    _tracking_args(e)
    from .capture.liveargs import add_live_arguments  # numba-free: the parser must not cost start-up

    add_live_arguments(e)
    from .pt.cli import add_parser as add_ptdump_parser  # `malsensor ptdump` (daemon/pt/cli.py)

    add_ptdump_parser(sub)
    return p


def _open_output(path: str, direct: bool = False) -> IO[bytes]:
    """Rows are written as bytes (the formatter makes UTF-8 directly). ``direct``: to a regular
    file with direct I/O, in 2 MiB blocks (daemon/direct_io.py DirectFileWriter), for the rows of
    a capture file: a live capture's rows must show as they come."""
    if path == "-":
        sys.stdout.flush()
        return sys.stdout.buffer
    if direct and FILE_IO == "direct":
        from .direct_io import DirectFileWriter

        out = DirectFileWriter.open(path)
        if isinstance(out, DirectFileWriter):
            log.debug("%s: written with direct I/O, %d KiB at a time, on a thread", path, out.block >> 10)
        return out  # type: ignore[return-value]
    return open(path, "wb")


def _close_output(out: IO[bytes]) -> None:
    """Flush (standard output) or close (a file); a full disk shows here at the latest."""
    if out is sys.stdout.buffer:
        out.flush()
    elif not out.closed:
        try:
            out.close()
        except OSError:
            out.close()  # the file object is closed even when the final flush failed
            raise


def _print_summary(summary: dict, stream: IO[str]) -> None:
    lines = [f"packets {summary['packets']:,}  connections {summary['connections']:,}  "
             f"ip {summary['ok']:,}  not-ip {summary['not_ip']:,}  fragments {summary['fragment']:,}  "
             f"malformed {summary['malformed']:,}"]
    for reason, n in sorted(summary["malformed_by_reason"].items()):
        lines.append(f"  malformed {reason}: {n:,}")
    if "kernel" in summary:
        k = summary["kernel"]
        lines.append(f"kernel packets {k['packets']:,}  kernel drops {k['drops']:,}")
    t = summary["tracker"]
    lines.append(f"tracker: created {t['flows_created']:,}  evicted {t['flows_evicted']:,}  "
                 f"tcp midstream ignored {t['tcp_midstream_ignored']:,}  "
                 f"bytes/flow {t['bytes_per_flow']:.0f}")
    if summary.get("truncated_at") is not None:
        lines.append(f"capture truncated at byte offset {summary['truncated_at']:,}")
    stream.write("\n".join(lines) + "\n")


def _row_format(a: argparse.Namespace) -> str:
    if a.format:
        return a.format
    from .outputs.rows import format_for_path

    return format_for_path(a.output)


class ImportsWithoutGC:
    """No garbage collection while the modules load: their ~100 k objects are none of them
    garbage, and the collections that walk them were ~8 % of a small capture's extract (perf:
    gc_collect_main, visit_decref). :meth:`done` turns it back on (as it was) once a command
    has imported what it needs, before the packets; calling it again does nothing."""

    def __init__(self) -> None:
        self._restore = gc.isenabled()
        gc.disable()

    def done(self) -> None:
        if self._restore:
            gc.enable()
            self._restore = False


def cmd_extract(a: argparse.Namespace, imports: ImportsWithoutGC | None = None) -> int:
    from .capture.pcapfile import FILE_IO_WAYS, CaptureFormatError, ReaderStats, read_capture
    from .outputs.rows import RowWriter
    from .pipeline import OFFLINE_EMIT_ROWS, ConnPipeline, parse_protocols
    from .progress import Progress

    try:
        protocols = parse_protocols(a.protocols)
        tracking = _tracker_config(a)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if a.interface:
        if imports:
            imports.done()  # a live capture runs for long
        return _extract_live(a, tracking, protocols)
    if not a.capture:
        log.error("extract needs a capture file or --interface")
        return 2
    if FILE_IO not in FILE_IO_WAYS:
        log.error("MALSENSOR_FILE_IO=%s: must be one of %s", FILE_IO, ", ".join(FILE_IO_WAYS))
        return 2
    try:
        size = _capture_size(a.capture)
    except OSError as exc:
        log.error("cannot read capture %s: %s", a.capture, exc.strerror)
        return 2
    problem = _clobbers_input(a)
    if problem:
        log.error("%s", problem)
        return 2
    # every batch is written before the next is asked for: the pipeline reuses its row buffer
    pipe = ConnPipeline(tracking, a.semantics, protocols, emit_rows=OFFLINE_EMIT_ROWS, reuse_rows=True)
    stats = ReaderStats()
    status = 0
    try:
        fmt = _row_format(a)
        out = _open_output(a.output, direct=fmt != "parquet")  # Parquet: pyarrow's own writer, a tenth the bytes
    except OSError as exc:
        log.error("cannot write %s: %s", a.output, exc.strerror)
        return 2
    writer = RowWriter(out, fmt, a.community_id_seed)
    progress = Progress(f"extract {os.path.basename(a.capture) if a.capture != '-' else 'stdin'}", size)
    if imports:
        imports.done()  # pyarrow's imports too
    try:
        try:
            for batch in read_capture(a.capture, stats=stats, reuse_buffers=True, file_io=FILE_IO):
                for cb in pipe.feed(batch):
                    _write_connections(writer, cb)
                progress.update(min(stats.bytes, size) if size else stats.bytes)
        except CaptureFormatError as exc:
            log.error("%s", exc)
            status = 1
        for cb in pipe.finish():
            _write_connections(writer, cb)
        writer.close()
        _close_output(out)
    except OSError as exc:  # output full or gone: say where it stopped, keep the summary
        log.error("cannot write %s: %s (%d rows written before)", a.output, exc.strerror or exc, writer.count)
        status = 1
        try:
            _close_output(out)  # the file descriptor (and a direct writer's thread) let go
        except OSError:
            pass
    finally:
        progress.close()
    summary = pipe.summary()
    summary["truncated_at"] = stats.truncated_at
    _print_summary(summary, sys.stderr)
    return _write_summary_json(a.summary_json, summary) or status


def _write_connections(writer, cb) -> None:
    """The rows of the finished connections of ``cb`` (snapshots left out; copied only if any)."""
    snap = cb.is_snapshot
    if snap.any():
        cb = cb.select(~snap)
    writer.write_batch(cb.records, cb.features)


def _capture_size(path: str) -> int | None:
    """Bytes of a regular file (for progress); None for standard input, a FIFO or a device."""
    if path == "-":
        return None
    st = os.stat(path)
    import stat as stat_mod

    return st.st_size if stat_mod.S_ISREG(st.st_mode) else None


def _clobbers_input(a: argparse.Namespace) -> str | None:
    """Refuse an output (or summary) that is the capture being read: opening it for writing
    would truncate the capture before a byte of it is read."""
    if a.capture in (None, "-"):
        return None
    for opt, path in (("-o", a.output), ("--summary-json", a.summary_json)):
        if path and path != "-" and os.path.exists(path) and os.path.samefile(path, a.capture):
            return f"{opt} {path} is the capture being read ({a.capture}); refusing to overwrite it"
    if a.summary_json and os.path.isdir(a.summary_json):
        return f"--summary-json {a.summary_json} is a directory"
    return None


def _write_summary_json(path: str | None, summary: dict) -> int:
    """0, or 1 after a one-line error when the summary cannot be written."""
    if not path:
        return 0
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    except OSError as exc:
        log.error("cannot write summary %s: %s", path, exc.strerror or exc)
        return 1
    return 0


def _extract_live(a: argparse.Namespace, tracking: TrackerConfig, protocols) -> int:
    """``extract --interface IF[,IF...]``: live capture (daemon/capture/live.py)."""
    from .capture.live import extract_live
    from .outputs.rows import RowWriter

    try:
        out = _open_output(a.output)
    except OSError as exc:
        log.error("cannot write %s: %s", a.output, exc.strerror)
        return 2
    try:
        writer = RowWriter(out, _row_format(a), a.community_id_seed)
        summary = extract_live(a, writer.write_batch, tracking, protocols)
        writer.close()
        _close_output(out)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    _print_summary(summary, sys.stderr)
    return _write_summary_json(a.summary_json, summary)


def main(argv: list[str] | None = None) -> int:
    imports = ImportsWithoutGC()
    try:
        a = build_parser().parse_args(argv)
        setup_logging(getattr(a, "log_level_sub", None) or a.log_level)
        if a.command == "extract":
            return cmd_extract(a, imports)
        if a.command == "ptdump":
            from .pt.cli import cmd_ptdump

            imports.done()
            return cmd_ptdump(a)
        return 2  # pragma: no cover - argparse enforces the subcommands
    finally:
        imports.done()


def run() -> None:
    """The ``malsensor`` command: :func:`main`, then the process ends without the interpreter's
    teardown (as mypy's ``hard_exit``). By then every output is closed and the logs are flushed
    here; what the teardown would add is freeing modules and arrays that the exit frees anyway:
    ~0.02 of the ~0.10 CPU-s of a small ``extract`` (``http_espn.pcapng``, eight runs each)."""
    rc = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # `| head` closed it: nothing more to say
        pass
    except OSError as exc:  # Python's own exit returns 120 when standard output cannot be flushed
        log.error("cannot write standard output: %s", exc.strerror or exc)
        rc = rc or 120
    logging.shutdown()
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(rc)


if __name__ == "__main__":  # pragma: no cover
    run()
