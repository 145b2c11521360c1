"""Live connection extraction: AF_PACKET capture threads, each feeding its own pipeline.

:func:`capture_connections` is what ``malsensor extract --interface IF`` runs: one
:class:`~malsensor.daemon.pipeline.ConnPipeline` (decoder + flow tracker + ``conn``
view) per capture thread, finished connections handed to ``on_rows`` in the calling
thread (so the writer needs no locking and nothing slow runs in a capture thread).
The summary has the same keys as a file extraction's plus ``kernel`` (packets seen by
the socket filters, drops, queue freezes) and ``capture`` (ring-level counters).
"""
from __future__ import annotations

import argparse
import logging
import queue
import threading
import time
from typing import Callable

from ..flows.config import TrackerConfig
from .afpacket import CaptureConfig, LiveCapture
from .batch import PacketBatch
from .consumer import PipelineConsumer
from .liveargs import add_live_arguments  # noqa: F401 (moved: numba-free for the CLI's parser)
from .ring import RingConfig

log = logging.getLogger("malsensor.capture")


def warm_up_pipeline(tracking: TrackerConfig, semantics: str) -> None:
    """Run every numba kernel of the decode/track/feature chain once (compiling it or loading
    it from the cache) before any socket is bound: a first batch must not wait seconds
    for the compiler while the ring fills up."""
    from .warm import warm_connections

    warm_connections(tracking, semantics, files=False)


def capture_connections(config: CaptureConfig, on_rows: Callable, *,
                        tracking: TrackerConfig = TrackerConfig(), semantics: str = "malsensor",
                        protocols: frozenset[int] | None = None, duration: float | None = None,
                        count: int | None = None, include_snapshots: bool = False,
                        stop: threading.Event | None = None,
                        started: Callable[[LiveCapture], None] | None = None,
                        tap: Callable[[PacketBatch], None] | None = None) -> dict:
    """Capture live until ``duration`` seconds, ``count`` packets, or ``stop`` is set (or
    Ctrl-C); call ``on_rows(conn_batch)`` for every batch of finished connections (in this
    thread); return the summary (pipeline counters summed over threads + kernel stats).

    ``started(capture)`` is called once the capture threads run (tests use it to wait for
    the sockets to be bound before sending traffic). ``tap(batch)`` sees every batch before
    its pipeline does, in the capture thread (tests record packet times with it; it must
    copy what it keeps and be quick).
    """
    from ..pipeline import ConnPipeline

    rows: queue.Queue = queue.Queue()
    pipes: list[ConnPipeline] = []
    lag_ns = int(config.drain_s * 1e9)

    def emit(cb) -> None:
        if not include_snapshots:
            snap = cb.is_snapshot
            if snap.any():
                cb = cb.select(~snap)
                if cb.n == 0:
                    return
        rows.put(cb)

    def factory(interface: str, member: int) -> PipelineConsumer:
        p = ConnPipeline(tracking, semantics, protocols)
        pipes.append(p)
        return PipelineConsumer(f"{interface}/{member}", p, emit, lag_ns=lag_ns, tap=tap)

    warm_up_pipeline(tracking, semantics)
    cap = LiveCapture(config, factory, count=count)
    deadline = None if duration is None else time.monotonic() + duration
    interrupted = False
    cap.start()
    try:
        if started is not None:
            started(cap)
        while not cap.finished():
            if stop is not None and stop.is_set():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                on_rows(rows.get(timeout=0.05))
            except queue.Empty:
                pass
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: stopping the capture")
    finally:
        cap.stop(drain=True)
        # keep writing while the workers drain and flush their trackers
        while any(w.is_alive() for w in cap.workers):
            try:
                on_rows(rows.get(timeout=0.05))
            except queue.Empty:
                pass
        cap.join()
        while True:
            try:
                on_rows(rows.get_nowait())
            except queue.Empty:
                break
    summary = merge_summaries([p.summary() for p in pipes])
    st = cap.stats().summary()
    summary["kernel"] = {"packets": st["kernel_packets"], "drops": st["kernel_drops"],
                         "freeze_q": st["kernel_freeze_q"]}
    summary["capture"] = st
    summary["interrupted"] = interrupted
    if st["kernel_drops"]:
        log.warning("the kernel dropped %d of %d packets (ring full): connection features of "
                    "this capture are incomplete", st["kernel_drops"], st["kernel_packets"])
    return summary


def merge_summaries(parts: list[dict]) -> dict:
    """Sum the per-thread pipeline summaries (numbers add up; ``max_flows``-like settings and
    ``bytes_per_flow`` are per thread and kept as they are)."""
    if not parts:
        return {}
    out: dict = {}
    keep = {"max_flows", "bytes_per_flow"}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, dict):
                sub = out.setdefault(k, {})
                for kk, vv in v.items():
                    sub[kk] = vv if kk in keep else sub.get(kk, 0) + vv
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
            else:
                out[k] = v
    return out


# ----------------------------------------------------------------------------- command line
def capture_config_from_args(a: argparse.Namespace) -> CaptureConfig:
    names = tuple(x.strip() for x in a.interface.split(",") if x.strip())
    ring = RingConfig(block_size=a.block_size, block_count=a.block_count,
                      retire_timeout_ms=a.retire_timeout, snaplen=a.snaplen)
    return CaptureConfig(interfaces=names, ring=ring, fanout=a.fanout, fanout_mode=a.fanout_mode,
                         promisc=not a.no_promisc, ignore_outgoing=a.ignore_outgoing, bpf=a.bpf)


def extract_live(a: argparse.Namespace, write_batch: Callable, tracking: TrackerConfig,
                 protocols: frozenset[int] | None) -> dict:
    """``malsensor extract --interface ...``: rows through ``write_batch(records, features)``;
    returns the summary. Raises ValueError for bad options, OSError for capture set-up."""
    if a.capture:
        raise ValueError("give either a capture file or --interface, not both")
    if a.count is not None and a.count < 1:
        raise ValueError("--count must be >= 1")
    if a.duration is not None and a.duration <= 0:
        raise ValueError("--duration must be > 0")
    config = capture_config_from_args(a)
    return capture_connections(config, lambda cb: write_batch(cb.records, cb.features),
                               tracking=tracking, semantics=a.semantics, protocols=protocols,
                               duration=a.duration, count=a.count)
