"""Capture sources of the daemon: live AF_PACKET interfaces, or a capture file replayed.

Each capture thread owns one :class:`PipelineConsumer` (decoder + flow tracker + ``conn``
view, the very code ``malsensor extract`` runs) that hands finished connections to the
dispatcher from that thread. Heartbeats let the health check see a stuck thread.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..flows import layout as L
from ..flows.config import TrackerConfig
from ..pipeline import ConnPipeline
from .config import Config, InterfaceSection, ring_config
from .inference import Dispatcher
from .pacing import Pacer

log = logging.getLogger("malsensor.capture")


class PipelineConsumer:
    """One capture thread's pipeline; the afpacket ``BatchConsumer`` contract (consume, idle,
    finish) is what both sources call."""

    def __init__(self, name: str, pipeline: ConnPipeline, dispatcher: Dispatcher, *, lag_ns: int,
                 emit_at_stop: Callable[[], bool], stop_reason: int = L.END_SHUTDOWN) -> None:
        self.name = name
        self.pipe = pipeline
        self.dispatcher = dispatcher
        self.lag_ns = lag_ns
        self.emit_at_stop = emit_at_stop
        self.stop_reason = stop_reason
        self.heartbeat = time.monotonic()
        self.finished = False
        self.dropped_at_stop = 0
        self.pacer: Pacer | None = None  # a paced replay (--rate): every batch goes through it
        self.stop_pacing = threading.Event()

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _send(self, cbs) -> None:
        for cb in cbs:
            if self.pacer is None:
                self.dispatcher.dispatch(cb, beat=self.beat)
                continue
            for part in self.pacer.pace(cb, self.stop_pacing, self.beat):
                self.dispatcher.dispatch(part, beat=self.beat)

    def consume(self, batch) -> None:
        self.heartbeat = time.monotonic()
        self._send(self.pipe.feed(batch))

    def idle(self, now_ns: int) -> None:
        self.heartbeat = time.monotonic()
        # packets still in a partly filled ring block are up to a retire timeout older than
        # now: sweep that far behind so that they never arrive after their connection ended
        self._send(self.pipe.expire(now_ns - self.lag_ns))

    def finish(self, reason: int | None = None) -> None:
        self.heartbeat = time.monotonic()
        if reason is not None or self.emit_at_stop():  # an explicit reason (end of file) always emits
            self._send(self.pipe.finish(self.stop_reason if reason is None else reason))
        else:
            self.dropped_at_stop += self.pipe.tracker.active
            for _ in self.pipe.finish(self.stop_reason):
                pass
        self.finished = True


def default_route_interface() -> str | None:
    """The interface of the IPv4 default route (else the IPv6 one), from /proc."""
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) > 7 and parts[1] == "00000000" and parts[7] == "00000000":
                    return parts[0]
    except OSError:
        pass
    try:
        with open("/proc/net/ipv6_route") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 10 and parts[0] == "0" * 32 and parts[1] == "00" and parts[9] != "lo":
                    return parts[9]
    except OSError:
        pass
    return None


PACED_CHUNK = 64 << 10  # bytes of capture read at a time when the replay is paced


class ReplaySource:
    """Replays a capture file ``repeat`` times (0 = until stopped) in one thread."""

    kind = "replay"

    def __init__(self, cfg: Config, tracking: TrackerConfig, dispatcher: Dispatcher,
                 emit_at_stop: Callable[[], bool]) -> None:
        self.path = cfg.replay.file
        self.repeat = cfg.replay.repeat
        self.pause = cfg.replay.pause
        self.rate = cfg.replay.rate
        self.stop_event = threading.Event()
        pipe = ConnPipeline(tracking, cfg.tracking.semantics, cfg.protocol_numbers())
        self.consumer = PipelineConsumer("replay", pipe, dispatcher, lag_ns=0, emit_at_stop=emit_at_stop)
        if self.rate:  # one schedule for every pass, end-of-file flushes included
            self.consumer.pacer = Pacer(self.rate)
            self.consumer.stop_pacing = self.stop_event
        self.consumers = [self.consumer]
        self.thread = threading.Thread(target=self._run, name="malsensor-replay", daemon=True)
        self.passes = 0
        self.error: str | None = None
        self.done = threading.Event()
        self.started = threading.Event()
        self.stopped_early = False
        self.on_done: Callable[[], None] | None = None

    def describe(self) -> str:
        return f"replay {self.path}"

    def start(self) -> None:
        self.thread.start()

    def wait_running(self, timeout: float) -> bool:
        return self.started.wait(timeout)

    def _run(self) -> None:
        from ..capture.pcapfile import CaptureFormatError, read_capture

        c = self.consumer
        try:
            self.started.set()
            while not self.stop_event.is_set() and (self.repeat == 0 or self.passes < self.repeat):
                if self.passes and self.pause:
                    end = time.monotonic() + self.pause
                    while not self.stop_event.is_set() and time.monotonic() < end:
                        c.beat()
                        self.stop_event.wait(min(0.2, max(end - time.monotonic(), 0)))
                    if self.stop_event.is_set():
                        break
                try:
                    chunk = PACED_CHUNK if self.rate else 2 << 20
                    # (reuse: the pipeline is done with a batch before it asks for the next;
                    # pacing happens as the consumer hands connections on: pacing.py)
                    for batch in read_capture(self.path, chunk_bytes=chunk, reuse_buffers=True):
                        c.consume(batch)
                        if self.stop_event.is_set():
                            break
                except CaptureFormatError as e:
                    self.error = str(e)
                    log.error("replay: %s", e)
                except OSError as e:
                    self.error = f"cannot read {self.path}: {e.strerror or e}"
                    log.error("replay: %s", self.error)
                    break
                if self.stop_event.is_set():
                    self.stopped_early = True
                    break
                self.passes += 1
                c.finish(L.END_EOF)  # end of the file: every connection ends ("eof")
            c.finish()
        except BaseException as e:  # pragma: no cover - reported through health and exit status
            self.error = f"{type(e).__name__}: {e}"
            log.exception("replay failed")
        finally:
            self.done.set()
            if self.on_done is not None:
                self.on_done()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def kernel(self) -> tuple[int, int]:
        return 0, 0


class LiveSource:
    """AF_PACKET capture: one LiveCapture (with its fanout threads) per [[interface]] table."""

    kind = "live"

    def __init__(self, cfg: Config, tracking: TrackerConfig, dispatcher: Dispatcher,
                 emit_at_stop: Callable[[], bool]) -> None:
        from ..capture.afpacket import CaptureConfig, LiveCapture

        self.consumers: list[PipelineConsumer] = []
        self.captures: list = []
        self.names: list[str] = []
        self.error: str | None = None
        self.done = threading.Event()
        for itf in cfg.interfaces:
            name = self._resolve(itf)
            self.names.append(name)
            cc = CaptureConfig(interfaces=(name,), ring=ring_config(itf), fanout=itf.threads,
                               fanout_mode=itf.fanout, promisc=itf.promiscuous,
                               ignore_outgoing=itf.ignore_outgoing, bpf=itf.bpf or None)
            lag_ns = int(cc.drain_s * 1e9)

            def factory(ifname: str, member: int, _lag=lag_ns) -> PipelineConsumer:
                pipe = ConnPipeline(tracking, cfg.tracking.semantics, cfg.protocol_numbers())
                c = PipelineConsumer(f"{ifname}/{member}", pipe, dispatcher, lag_ns=_lag, emit_at_stop=emit_at_stop)
                self.consumers.append(c)
                return c

            self.captures.append(LiveCapture(cc, factory))

    @staticmethod
    def _resolve(itf: InterfaceSection) -> str:
        if itf.name != "default":
            return itf.name
        name = default_route_interface()
        if name is None:
            raise RuntimeError("interface \"default\": this host has no default route; name the interface "
                               "in [[interface]] name")
        log.info("interface \"default\" is %s (the default route's)", name)
        return name

    def describe(self) -> str:
        return "capturing on " + ", ".join(self.names)

    def start(self) -> None:
        for cap in self.captures:
            cap.start()

    def wait_running(self, timeout: float) -> bool:
        """True once every interface is bound (False: some still waited for)."""
        end = time.monotonic() + timeout
        return all(cap.wait_bound(1, max(end - time.monotonic(), 0.0)) for cap in self.captures)

    def stop(self) -> None:
        for cap in self.captures:
            cap.stop(drain=True)

    def join(self, timeout: float = 60.0) -> None:
        for cap in self.captures:
            try:
                cap.join(timeout)
            except RuntimeError as e:
                self.error = str(e)
        self.done.set()

    def alive(self) -> bool:
        return all(w.is_alive() for cap in self.captures for w in cap.workers) and not any(
            cap._halt.is_set() for cap in self.captures)

    def failed(self) -> str | None:
        for cap in self.captures:
            for w in cap.workers:
                if w.error is not None:
                    return f"capture thread {w.name} failed: {w.error!r}"
        return None

    def kernel(self) -> tuple[int, int]:
        pk = dr = 0
        for cap in self.captures:
            k = cap.stats().kernel
            pk += k.packets
            dr += k.drops
        return pk, dr


# --------------------------------------------------------------------------- warm-up


def _tiny_frames() -> list[bytes]:
    """Two Ethernet/IPv4/TCP frames (SYN, SYN-ACK) and one Ethernet/IPv4/UDP frame."""
    import struct

    def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, src, dst)
        return h + payload

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    eth_ab = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    eth_ba = b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + b"\x08\x00"
    syn = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 65535, 0, 0)
    synack = struct.pack("!HHIIBBHHH", 80, 40000, 9, 2, 0x50, 0x12, 65535, 0, 0)
    dgram = struct.pack("!HHHH", 5353, 53, 12, 0) + b"warm"
    return [eth_ab + ipv4(a, b, 6, syn), eth_ba + ipv4(b, a, 6, synack), eth_ab + ipv4(a, b, 17, dgram)]


def _pcap_bytes(frames: list[bytes]) -> bytes:
    import struct

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f)
    return b"".join(out)


def _pcapng_bytes(frames: list[bytes]) -> bytes:
    import struct

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
           block(1, struct.pack("<HHI", 1, 0, 65535))]
    for i, f in enumerate(frames):
        ts = (1_700_000_000 + i) * 1_000_000
        out.append(block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f))
    return b"".join(out)


def warm_pipeline(tracking: TrackerConfig, semantics: str, live: bool) -> int:
    """Run the capture-file readers, decoder, tracker (with snapshots, sweeps and flushes), the
    feature views and the event formatter once over a few packets: every numba kernel is
    compiled or loaded from its cache, and every lazy import done, before the daemon gives up
    its privileges (and before it reports ready). Returns the connections seen (2)."""
    import dataclasses
    import os
    import tempfile

    import numpy as np

    from ..capture.pcapfile import read_capture
    from ..outputs.eve import PredictionBatch, eve_lines, label_lines

    frames = _tiny_frames()
    n = 0
    tk = dataclasses.replace(tracking, snapshot_packets=(1,), max_flows=64)
    for data in (_pcap_bytes(frames), _pcapng_bytes(frames)):
        fd, path = tempfile.mkstemp(prefix="malsensord-warm-", suffix=".cap")
        try:
            os.write(fd, data)
            os.close(fd)
            pipe = ConnPipeline(tk, semantics)
            cbs = []
            for batch in read_capture(path):
                cbs.extend(pipe.feed(batch))
            cbs.extend(pipe.expire(2_000_000_000 * 1_000_000_000))
            cbs.extend(pipe.finish())
        finally:
            os.unlink(path)
        rec = np.concatenate([c.records for c in cbs])
        ft = np.concatenate([c.features for c in cbs])
        k = rec.shape[0]
        n = int((~np.concatenate([c.is_snapshot for c in cbs])).sum())
        probs = np.full((k, 2), 0.5, dtype=np.float32)
        pb = PredictionBatch("warm", "0", "end", ["a", "b"], rec, ft, probs, np.zeros(k, np.int64),
                             np.zeros((k, 2), np.int64), np.zeros(k, bool), np.zeros(k, np.int64))
        eve_lines(pb)
        label_lines(pb)
    if live:
        from ..capture.ring import warm_up

        warm_up()
    return n
