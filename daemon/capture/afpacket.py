"""Live capture with AF_PACKET: TPACKET_V3 rings, PACKET_FANOUT threads, interface lifecycle.

Structure::

    LiveCapture
     ├─ LinkWatcher thread (netlink)  ── on_change ──► _Interface (one per name)
     │                                                   opens N rings in one fanout group,
     │                                                   hands one to each worker
     └─ _Worker threads, one per (interface, fanout member), each with its own consumer:
          wait for a retired block (poll, GIL released)
          batch = ring.next_batch()            numba walk of the block(s), GIL released
          consumer.consume(batch)              decode + track (numba, GIL released)
          ring.release()                       blocks back to the kernel

Each worker owns one consumer (a flow tracker, in practice) for the whole capture,
across link flaps and re-binds, so no connection state is lost when the interface
goes away for a while. The hash fanout mode hashes both directions of a flow the same
way (``__skb_get_hash_symmetric``) and, with ``PACKET_FANOUT_FLAG_DEFRAG``, keeps IP
fragments with their flow: a connection lives on exactly one worker, and is reported
exactly once. The ``lb`` and ``cpu`` modes spread packets without regard to flows:
with more than one worker a connection can then be split between trackers (each part
reported separately); they exist for consumers that do not track flows.

The consumer contract (:class:`BatchConsumer`): ``consume(batch)`` is called in the
worker thread; the batch (its arrays and the ring memory its ``buf`` points into) is
only valid during the call. ``idle(now_ns)`` is called when no packet arrived for
``poll_timeout_ms`` (lets a tracker expire idle flows on a quiet link) and ``finish()``
once when the worker ends (both do nothing unless a consumer overrides them).
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .batch import LINKTYPE_ETHERNET, BatchConsumer, PacketBatch
from .bpf import DLT_EN10MB, DLT_RAW, compile_filter
from .interfaces import LinkState, LinkWatcher
from .ring import (COUNTER_NAMES, N_COUNTERS, FanoutSpec, InterfaceGone, KernelStats, Ring,
                   RingConfig, RingError, realtime_ns, warm_up)

log = logging.getLogger("malsensor.capture")


ConsumerFactory = Callable[[str, int], BatchConsumer]
"""(interface name, fanout member index) -> the consumer of that worker."""


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """What to capture and how (the ``[capture]`` section; defaults in docs/capture.md)."""

    interfaces: tuple[str, ...]
    ring: RingConfig = field(default_factory=RingConfig)
    fanout: int = 1
    """Capture threads per interface, each with its own socket in one PACKET_FANOUT group."""
    fanout_mode: str = "hash"
    promisc: bool = True
    ignore_outgoing: bool = False
    """Do not capture packets this host sends (PACKET_IGNORE_OUTGOING): for a sensor on a
    gateway whose own traffic is not of interest. Off by default: off, the host's own
    connections are seen in both directions."""
    bpf: str | None = None
    """pcap filter expression (compiled by libpcap; see bpf.py for VLAN caveats)."""
    poll_timeout_ms: int = 100
    """Longest sleep in poll(): bounds how late stop requests and idle ticks are seen."""
    stats_interval_s: float = 1.0
    """How often each worker reads PACKET_STATISTICS into its running totals."""
    wait_for_interfaces: bool = True
    """Wait for a missing interface (log line, then capture when it appears). False:
    start fails with an error naming the interface."""

    def __post_init__(self) -> None:
        if not self.interfaces:
            raise ValueError("capture needs at least one interface")
        if not 1 <= self.fanout <= 64:
            raise ValueError("fanout must be within 1..64")
        FanoutSpec(self.fanout_mode).option()  # validates the mode name
        if self.poll_timeout_ms < 1:
            raise ValueError("poll_timeout_ms must be >= 1")

    @property
    def drain_s(self) -> float:
        """How long to wait for the kernel to retire a partly filled block."""
        return 2 * self.ring.retire_timeout_ms / 1000 + 0.05


@dataclass(slots=True)
class WorkerStats:
    interface: str
    member: int
    kernel: KernelStats = field(default_factory=KernelStats)
    ring: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    batches: int = 0
    consumed: int = 0
    """Packets handed to the consumer (less than ring packets only with a --count limit)."""
    binds: int = 0


@dataclass(slots=True)
class CaptureStats:
    workers: list[WorkerStats]

    @property
    def kernel(self) -> KernelStats:
        tot = KernelStats()
        for w in self.workers:
            tot.add(w.kernel)
        return tot

    def ring_total(self, name: str) -> int:
        return sum(w.ring[name] for w in self.workers)

    @property
    def consumed(self) -> int:
        return sum(w.consumed for w in self.workers)

    def summary(self) -> dict:
        k = self.kernel
        return {
            "kernel_packets": k.packets, "kernel_drops": k.drops, "kernel_freeze_q": k.freeze_q,
            "captured_packets": self.ring_total("packets"),
            "captured_wire_bytes": self.ring_total("wire_bytes"),
            "consumed_packets": self.consumed,
            "truncated": self.ring_total("truncated"), "vlan_tagged": self.ring_total("vlan"),
            "gso_superframes": self.ring_total("gso"), "ring_errors": self.ring_total("ring_errors"),
            "per_worker": [
                {"interface": w.interface, "member": w.member, "kernel_packets": w.kernel.packets,
                 "kernel_drops": w.kernel.drops, "captured_packets": w.ring["packets"],
                 "binds": w.binds}
                for w in self.workers
            ],
        }


def slice_batch(batch: PacketBatch, n: int) -> PacketBatch:
    return PacketBatch(buf=batch.buf, offset=batch.offset[:n], caplen=batch.caplen[:n],
                       wirelen=batch.wirelen[:n], ts_ns=batch.ts_ns[:n],
                       linktype=batch.linktype[:n], vlan=batch.vlan[:n])


_KEEP = object()


class _Worker(threading.Thread):
    def __init__(self, cap: "LiveCapture", interface: str, member: int, consumer: BatchConsumer):
        super().__init__(name=f"malsensor-cap-{interface}-{member}", daemon=True)
        self.cap = cap
        self.consumer = consumer
        self.stats = WorkerStats(interface, member)
        self.ring: Ring | None = None
        self._closed_counters = np.zeros(N_COUNTERS, dtype=np.int64)
        self._closed_kernel = KernelStats()
        self._new_drops = 0
        self._next_drop_log = 0.0
        self._lock = threading.Lock()
        self._next: object = _KEEP
        self._ack: threading.Event | None = None
        self._wake = threading.Event()
        self.error: BaseException | None = None

    # -- called from the interface manager -----------------------------------------------------
    def post(self, ring: Ring | None) -> threading.Event:
        """Replace the worker's ring (None: pause). The old ring is drained (its retired
        blocks consumed, a partly filled block waited for) and closed by the worker; the
        returned event is set when that is done."""
        ack = threading.Event()
        with self._lock:
            if self._ack is not None:  # a previous post not yet taken: supersede it
                if isinstance(self._next, Ring):
                    self._next.close()
                self._ack.set()
            self._next, self._ack = ring, ack
        self._wake.set()
        return ack

    # -- worker thread ------------------------------------------------------------------------
    def _take_post(self) -> None:
        with self._lock:
            nxt, ack = self._next, self._ack
            self._next, self._ack = _KEEP, None
        if nxt is _KEEP:
            return
        if self.ring is not None:
            self._drain(self.ring, time.monotonic() + self.cap.config.drain_s)
            self._close_ring()
        self.ring = nxt  # type: ignore[assignment]
        if self.ring is not None:
            self.stats.binds += 1
        if ack is not None:
            ack.set()

    def _close_ring(self) -> None:
        ring = self.ring
        if ring is None:
            return
        ring.close()  # reads the last PACKET_STATISTICS into ring.stats
        self._closed_kernel.add(ring.stats)
        self._closed_counters += ring.counters
        self.ring = None
        self._sync_counters()

    def _sync_counters(self) -> None:
        """Publish running totals: rings closed so far + the current ring."""
        ring = self.ring
        cur = self._closed_counters + (ring.counters if ring is not None else 0)
        self.stats.ring = {k: int(v) for k, v in zip(COUNTER_NAMES, cur)}
        k = KernelStats()
        k.add(self._closed_kernel)
        if ring is not None:
            k.add(ring.stats)
        self.stats.kernel = k

    def _read_stats(self) -> None:
        if self.ring is not None and not self.ring.closed:
            try:
                delta = self.ring.read_stats()
            except OSError:
                delta = None
            if delta is not None and delta.drops:
                self._new_drops += delta.drops
                now = time.monotonic()
                if now >= self._next_drop_log:  # at most one line per thread every 10 s
                    log.warning("%s: ring full, %d packets dropped by the kernel (total %d); "
                                "the consumer is slower than the traffic", self.name,
                                self._new_drops, self.stats.kernel.drops + delta.drops)
                    self._new_drops = 0
                    self._next_drop_log = now + 10.0
        self._sync_counters()

    def _process(self, ring: Ring) -> bool:
        """Consume the next retired blocks; False when none were ready."""
        batch = ring.next_batch()
        if batch is None:
            return False
        try:
            n = batch.n
            take = self.cap._reserve(n)
            if take:
                if take < n:
                    batch = slice_batch(batch, take)
                self.consumer.consume(batch)
                self.stats.consumed += take
            self.stats.batches += 1
        finally:
            del batch
            ring.release()
        return True

    def _drain(self, ring: Ring, deadline: float) -> None:
        """Consume everything the ring holds or gets until ``deadline``."""
        while not self.cap._halt.is_set():
            if self._process(ring):
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ring.wait(max(1, min(int(left * 1000), self.cap.config.poll_timeout_ms)))

    def run(self) -> None:
        cfg = self.cap.config
        next_stats = time.monotonic() + cfg.stats_interval_s
        try:
            while not self.cap._halt.is_set():
                self._take_post()
                if self.cap._stopping.is_set():
                    if self.ring is not None:
                        self._drain(self.ring, self.cap._drain_deadline)
                    break
                ring = self.ring
                if ring is None:
                    self._wake.wait(cfg.poll_timeout_ms / 1000)
                    self._wake.clear()
                    self.consumer.idle(realtime_ns())
                    continue
                if self._process(ring):
                    now = time.monotonic()
                else:
                    err = ring.wait(cfg.poll_timeout_ms)
                    if err and err != errno.ENETDOWN:
                        log.warning("%s: socket error %s", self.name, errno.errorcode.get(err, err))
                    now = time.monotonic()
                    if not ring.ready():
                        self.consumer.idle(realtime_ns())
                if now >= next_stats:
                    self._read_stats()
                    next_stats = now + cfg.stats_interval_s
        except BaseException as exc:
            self.error = exc
            log.exception("%s failed", self.name)
            self.cap._halt.set()
            self.cap._done.set()
        finally:
            self._close_ring()
            with self._lock:
                if isinstance(self._next, Ring):
                    self._next.close()
                if self._ack is not None:
                    self._ack.set()
                self._next, self._ack = _KEEP, None
            if self.error is None:
                try:
                    self.consumer.finish()
                except BaseException as exc:
                    self.error = exc
                    log.exception("%s: finishing the consumer failed", self.name)


class _Interface:
    """The sockets of one interface name: binds N rings (one fanout group) when the link is
    up, and takes them back from the workers when it goes down or away."""

    def __init__(self, cap: "LiveCapture", name: str, workers: list[_Worker]):
        self.cap = cap
        self.name = name
        self.workers = workers
        self.bound: LinkState | None = None
        self.last_index: int | None = None
        self.seen = False
        self._programs: dict[int, bytes | None] = {}

    def _program(self, linktype: int) -> bytes | None:
        if linktype not in self._programs:
            cfg = self.cap.config
            if cfg.bpf:
                dlt = DLT_EN10MB if linktype == LINKTYPE_ETHERNET else DLT_RAW
                self._programs[linktype] = compile_filter(cfg.bpf, cfg.ring.snaplen, dlt)
            else:
                self._programs[linktype] = None
        return self._programs[linktype]

    def on_link(self, state: LinkState | None) -> None:
        old = self.bound
        if state is None:
            if old is not None:
                log.warning("interface %s (index %d) disappeared: capture paused, waiting for it "
                            "to come back (flows are kept)", self.name, old.index)
                self.unbind()
            elif not self.seen:
                log.warning("interface %s does not exist (yet): waiting for it to appear", self.name)
            self.seen = True
            return
        self.seen = True
        if not state.up:
            if old is not None:
                log.warning("interface %s went down: capture paused until it is up again", self.name)
                self.unbind()
            else:
                log.warning("interface %s (index %d) is down: waiting for it to come up",
                            self.name, state.index)
            return
        if old is not None and old.index == state.index:
            return
        if old is not None:
            self.unbind()
        self.bind(state)

    def bind(self, state: LinkState) -> None:
        cfg = self.cap.config
        linktype = state.linktype
        if linktype is None:
            log.error("interface %s: hardware type %d is not supported (Ethernet, loopback, "
                      "tun/raw IP are); not capturing on it", self.name, state.arphrd)
            return
        program = self._program(linktype)
        rings: list[Ring] = []
        try:
            group: int | None = None
            for _ in self.workers:
                fan = FanoutSpec(cfg.fanout_mode, group) if cfg.fanout > 1 else None
                ring = Ring(state.index, cfg.ring, ifname=self.name, linktype=linktype,
                            promisc=cfg.promisc, ignore_outgoing=cfg.ignore_outgoing, fanout=fan)
                rings.append(ring)
                group = ring.fanout_id
            for ring in rings:  # every member has joined: start accepting packets
                ring.activate(program)
        except InterfaceGone as exc:
            for ring in rings:
                ring.close()
            log.warning("interface %s went away while binding (%s); waiting for it", self.name, exc)
            return
        except BaseException:
            for ring in rings:
                ring.close()
            raise
        acks = [w.post(r) for w, r in zip(self.workers, rings)]
        for a in acks:
            a.wait(5.0)
        if self.last_index is not None and self.last_index != state.index:
            log.warning("interface %s was re-created (index %d -> %d): re-bound, flows kept",
                        self.name, self.last_index, state.index)
        self.bound = state
        self.last_index = state.index
        log.info("capturing on %s (index %d, %d thread%s%s)", self.name, state.index,
                 len(rings), "s" if len(rings) > 1 else "",
                 f", fanout {cfg.fanout_mode} group {rings[0].fanout_id}" if cfg.fanout > 1 else "")
        self.cap._bound_event(self.name, state)

    def unbind(self) -> None:
        acks = [w.post(None) for w in self.workers]
        for a in acks:
            a.wait(self.cap.config.drain_s + 5.0)
        self.bound = None


class LiveCapture:
    """Capture on one or more interfaces with ``fanout`` threads each.

    ``consumer_factory(interface, member)`` makes the consumer of each worker. ``count``
    stops after exactly that many packets in total (across all workers). Use as::

        with LiveCapture(cfg, factory) as cap:
            cap.wait(duration)          # or until count is reached / stop() from elsewhere
        cap.stats().summary()
    """

    def __init__(self, config: CaptureConfig, consumer_factory: ConsumerFactory,
                 count: int | None = None) -> None:
        self.config = config
        self.count = count
        self._remaining = count
        self._count_lock = threading.Lock()
        self._halt = threading.Event()  # stop now, no draining
        self._stopping = threading.Event()  # stop after draining
        self._done = threading.Event()
        self._drain_deadline = 0.0
        self._bind_lock = threading.Lock()
        self.bind_events: list[tuple[str, int]] = []
        self._bound_cond = threading.Condition()
        self.workers: list[_Worker] = []
        self.interfaces: dict[str, _Interface] = {}
        for name in dict.fromkeys(config.interfaces):
            ws = [_Worker(self, name, m, consumer_factory(name, m)) for m in range(config.fanout)]
            self.workers.extend(ws)
            self.interfaces[name] = _Interface(self, name, ws)
        self.watcher = LinkWatcher(self.interfaces, self._on_link)
        self._started = False
        self.error: BaseException | None = None
        """Set when setting up a capture failed for good (the capture then stops)."""

    # -- control ------------------------------------------------------------------------------
    def start(self) -> "LiveCapture":
        if self._started:
            return self
        self._started = True
        try:  # fail early, in the caller's thread, without privileges
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        except PermissionError:
            raise RingError(errno.EPERM, "live capture needs root or the CAP_NET_RAW capability "
                            "(AF_PACKET sockets)") from None
        if self.config.bpf:
            compile_filter(self.config.bpf, self.config.ring.snaplen)  # a bad expression: now
        if self.config.fanout > 1 and self.config.fanout_mode != "hash":
            log.warning("fanout mode %s spreads the packets of one connection over %d threads: "
                        "each thread tracks only its share (use hash to keep connections whole)",
                        self.config.fanout_mode, self.config.fanout)
        warm_up()
        for w in self.workers:
            w.start()
        self.watcher.start()
        self.watcher.started_ok.wait(10.0)
        if self.watcher.error is not None:
            self.stop(drain=False)
            raise RingError(errno.EIO, f"watching network interfaces failed: {self.watcher.error}")
        if not self.config.wait_for_interfaces:
            missing = [n for n, i in self.interfaces.items() if i.bound is None]
            if missing:
                self.stop(drain=False)
                raise RingError(errno.ENODEV, f"interface(s) not available: {', '.join(missing)}")
        return self

    def _on_link(self, name: str, state: LinkState | None) -> None:
        if self._stopping.is_set() or self._halt.is_set():
            return
        with self._bind_lock:
            try:
                self.interfaces[name].on_link(state)
            except Exception as exc:  # cannot capture at all (permissions, memory): stop
                log.error("capture on %s failed: %s", name, exc)
                self.error = exc
                self._halt.set()
                self._done.set()

    def _bound_event(self, name: str, state: LinkState) -> None:
        with self._bound_cond:
            self.bind_events.append((name, state.index))
            self._bound_cond.notify_all()

    def finished(self) -> bool:
        """The capture stopped or will stop (a count reached, stop() called, a failure)."""
        return self._done.is_set()

    def halted(self) -> bool:
        """Stopped without draining (a count reached, or a failure)."""
        return self._halt.is_set()

    def wait_bound(self, n_events: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``n_events`` binds happened in total (tests, start-up)."""
        with self._bound_cond:
            return self._bound_cond.wait_for(lambda: len(self.bind_events) >= n_events, timeout)

    def _reserve(self, n: int) -> int:
        if self._remaining is None:
            return n
        with self._count_lock:
            take = min(n, self._remaining)
            self._remaining -= take
            if self._remaining == 0:
                self._halt.set()
                self._done.set()
        return take

    def wait(self, duration: float | None = None) -> None:
        """Block until ``duration`` seconds passed (None: forever), the count is reached or
        :meth:`stop` was called; then stop (draining) and join."""
        try:
            self._done.wait(duration)
        finally:
            self.stop(drain=True)
            self.join()

    def stop(self, drain: bool = True) -> None:
        """Stop the capture. ``drain``: first consume what the rings hold, waiting up to
        two retire timeouts for partly filled blocks."""
        self._drain_deadline = time.monotonic() + (self.config.drain_s if drain else 0.0)
        self._stopping.set()
        if not drain:
            self._halt.set()
        self._done.set()
        self.watcher.stop()
        for w in self.workers:
            w._wake.set()

    def join(self, timeout: float = 30.0) -> None:
        if self.watcher.is_alive():
            self.watcher.join(timeout)
        for w in self.workers:
            if w.is_alive():
                w.join(timeout)
        errors = [w.error for w in self.workers if w.error is not None]
        if self.error is not None:
            raise RingError(getattr(self.error, "errno", None) or errno.EIO,
                            f"live capture failed: {self.error}") from self.error
        if errors:
            raise RuntimeError(f"capture worker failed: {errors[0]!r}") from errors[0]

    def __enter__(self) -> "LiveCapture":
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.stop(drain=exc_type is None)
        self.join()

    def stats(self) -> CaptureStats:
        for w in self.workers:
            if not w.is_alive():
                w._sync_counters()
        return CaptureStats([w.stats for w in self.workers])
