"""The daemon's sources: what feeds the views, by kind (``[[source]] kind = "..."``).

A source kind is a :class:`Source` subclass in a module of this package named after the
kind (``afpacket``, ``pcap``), registered in :data:`SOURCES`. It declares the keys of
its ``[[source]]`` table (a dataclass, validated by the one schema checker), what it
produces (the product a view consumes: ``"connections"``), whether it ends by itself
(``finite``: a file; the daemon exits after it and waits for room in full queues rather
than dropping), and it runs its own threads. The service only calls the methods below:
it never reaches into a source's internals, so a new kind needs no edit elsewhere.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

from ..flows.config import TrackerConfig
from ..plugins import Registry
from ..runtime.tomlpos import KeyPath
from ..schema import Checker

Dispatch = Callable[[Any, Callable[[], None] | None], None]
log = logging.getLogger("malsensor.sources")


@dataclass
class SourceContext:
    """What a source gets from the service.

    ``dispatch(batch, beat)`` hands a batch of the source's product to the models (from the
    source's thread; ``beat`` is called while it waits for room). ``emit_at_stop()``: whether
    entities still open at a stop are emitted ([service] on_stop). Connection sources run
    their trackers with ``tracking`` (snapshot points included), ``semantics`` and ``protocols``."""

    dispatch: Dispatch
    emit_at_stop: Callable[[], bool] = lambda: True
    tracking: TrackerConfig = field(default_factory=TrackerConfig)
    semantics: str = "malsensor"
    protocols: frozenset[int] | None = None


@dataclass
class Heartbeat:
    name: str           # a thread, as logs and health messages name it
    at: float           # time.monotonic() of its last progress
    finished: bool = False


class Source:
    kind: ClassVar[str]
    produces: ClassVar[str]
    config: ClassVar[type]              # the dataclass of its [[source]] keys
    finite: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, cfg: Any, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.error: str | None = None    # why the source stopped early (finite sources)
        self.done = threading.Event()    # set once the source will hand over nothing more
        self.on_done: Callable[[], None] | None = None

    # ------------------------------------------------------------ configuration time
    @classmethod
    def check(cls, cfgs: Sequence[tuple[Any, KeyPath]], ck: Checker) -> None:
        """Rules over every table of this kind (a duplicate interface, a bad filter...)."""

    @classmethod
    def facts(cls, ctx: SourceContext) -> Mapping[str, Any]:
        """What the views' routers need to know about this kind's batches."""
        return {}

    @classmethod
    def preload(cls) -> None:
        """Import what the source needs later, while the daemon still runs privileged."""

    @classmethod
    def warm(cls, ctx: SourceContext) -> list:
        """Compile the source's kernels before the daemon reports ready; returns sample batches
        of its product (the service warms the event formatters with them)."""
        return []

    # ------------------------------------------------------------ running
    def describe(self) -> str:
        return self.kind

    def start(self) -> None:
        raise NotImplementedError

    def wait_running(self, timeout: float) -> bool:
        """True once the source is receiving (False: still waiting, it keeps trying)."""
        return True

    def stop(self) -> None:
        raise NotImplementedError

    def join(self, timeout: float) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def failed(self) -> str | None:
        """A fatal error: the daemon stops (exit status 1)."""
        return None

    def heartbeats(self) -> list[Heartbeat]:
        return []

    def stats(self) -> dict:
        """Counters, summed over sources by the service (numbers add; dicts merge)."""
        return {}

    def health(self, now: float, stall: float) -> str | None:
        """Why the source is unhealthy, or None."""
        err = self.failed()
        if err:
            return err
        if self.finite and not self.alive() and not self.done.is_set():
            return f"{self.describe()}: thread died"
        if self.alive():
            for hb in self.heartbeats():
                if not hb.finished and now - hb.at > stall:
                    return f"capture thread {hb.name} made no progress for {now - hb.at:.0f}s"
        return None


class ThreadSource(Source):
    """A source that runs in one thread of its own: a subclass writes :meth:`run` (which
    returns once ``stop_event`` is set or its input is used up) and nothing else of the
    lifecycle. An exception out of ``run`` becomes ``error`` with a traceback in the log;
    either way ``done`` is set and ``on_done`` called, so the service sees the end."""

    thread_name: ClassVar[str]           # as logs and heartbeats name it

    def __init__(self, cfg: Any, ctx: SourceContext) -> None:
        super().__init__(cfg, ctx)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)

    def run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as e:  # reported through failed()/health and the exit status
            self.error = f"{type(e).__name__}: {e}"
            log.exception("%s failed", self.describe())
        finally:
            self.done.set()
            if self.on_done is not None:
                self.on_done()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("%s: thread %s did not stop within %.0fs (blocked reading?); what it held is "
                        "not classified", self.describe(), self.thread_name, timeout)

    def alive(self) -> bool:
        return self.thread.is_alive()


SOURCES: Registry[type[Source]] = Registry("source kind", "malsensor.daemon.sources")


def register_source(cls: type[Source]) -> type[Source]:
    SOURCES.register(cls.kind, cls)
    return cls
