"""Source kind ``pcap``: replay a capture file (pcap or pcapng, optionally gzip) ``repeat``
times in one thread, through the same pipeline as live capture."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import MISSING, dataclass
from typing import ClassVar

from ..flows import layout as L
from ..runtime.pacing import Pacer
from ..schema import opt
from . import SourceContext, ThreadSource, register_source
from ._connections import ConnectionSource

log = logging.getLogger("malsensor.capture")

PACED_CHUNK = 64 << 10  # bytes of capture read at a time when the replay is paced
CHUNK = 2 << 20         # otherwise (measured: fresh 8 MiB buffers cost ~20 % more CPU in page faults)


@dataclass(frozen=True)
class PcapConfig:
    """[[source]] kind = "pcap": replay a capture file instead of capturing live."""

    kind: ClassVar[str] = "pcap"
    file: str = opt(MISSING, "pcap or pcapng file (optionally gzip-compressed)", path=True)
    repeat: int = opt(1, "passes over the file (0 = forever); the daemon exits after the last", min=0,
                      max=1_000_000)
    pause: float = opt(0.0, "seconds to wait between passes", min=0.0, max=86400.0)
    rate: float = opt(0.0, "pace the replay to this many finished connections per second (0 = as fast as "
                           "possible)", min=0.0, max=1e9)


@register_source
class PcapSource(ConnectionSource, ThreadSource):
    kind = "pcap"
    config = PcapConfig
    finite = True
    thread_name = "malsensor-replay"
    description = "a capture file replayed through the live pipeline"

    def __init__(self, cfg: PcapConfig, ctx: SourceContext) -> None:
        super().__init__(cfg, ctx)
        self.path = cfg.file
        self.consumer = self.new_consumer("replay")
        self.passes = 0
        if cfg.rate:  # one schedule for every pass, end-of-file flushes included (runtime/pacing.py)
            pacer, plain, c = Pacer(cfg.rate), self.consumer.emit, self.consumer

            def paced(cb) -> None:
                for part in pacer.pace(cb, self.stop_event, c.beat):
                    plain(part)

            self.consumer.emit = paced
        self.started = threading.Event()
        self.stopped_early = False

    @classmethod
    def preload(cls) -> None:
        from ..capture import pcapfile  # noqa: F401

    def describe(self) -> str:
        return f"replay {self.path}"

    def wait_running(self, timeout: float) -> bool:
        return self.started.wait(timeout)

    def _wait(self, seconds: float) -> bool:
        """Sleep (beating) up to ``seconds``; False when a stop came first."""
        end = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < end:
            self.consumer.beat()
            self.stop_event.wait(min(0.2, max(end - time.monotonic(), 0)))
        return not self.stop_event.is_set()

    def run(self) -> None:
        from ..capture.pcapfile import CaptureFormatError, read_capture

        c = self.consumer
        cfg = self.cfg
        self.started.set()
        while not self.stop_event.is_set() and (cfg.repeat == 0 or self.passes < cfg.repeat):
            if self.passes and cfg.pause and not self._wait(cfg.pause):
                break
            try:
                # (reuse: the pipeline is done with a batch before it asks for the next; pacing
                # happens as the consumer hands connections on)
                for batch in read_capture(self.path, chunk_bytes=PACED_CHUNK if cfg.rate else CHUNK,
                                          reuse_buffers=True):
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

    def stats(self) -> dict:
        out = super().stats()
        out["passes"] = self.passes
        return out
