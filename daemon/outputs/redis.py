"""The redis output: events to a redis list, channel or stream, shaped like Suricata's EVE redis output.

Each event is the exact line the file output writes (without its newline), pushed as Suricata
does: ``list``/``lpush`` = ``LPUSH key line`` (a consumer ``RPOP``s the oldest first),
``rpush`` = ``RPUSH``, ``channel``/``publish`` = ``PUBLISH key line``, ``stream``/``xadd`` =
``XADD key [MAXLEN ~|= N] * eve line``. With ``pipelining`` up to ``batch_size`` events go in
one round trip: one variadic ``LPUSH``/``RPUSH``, or a ``MULTI``/``EXEC`` block of ``PUBLISH`` or
``XADD`` (all or nothing).

Capture never waits for the server. The event writer hands each batch to :meth:`RedisOutput.write`,
which only appends it to a bounded in-memory queue; a thread of this output sends it. While the
server is down or slow (no reply within ``timeout``), events go to the :class:`~.spool.Spool` on
disk, in order, and are delivered oldest first once the server answers again (tried once a
second, as Suricata does), also after a restart of the daemon. What does not fit (the queue's
or the spool's byte bound) is dropped, counted by reason (``queue_full``, ``spool_full``,
``spool_error``) in the stats and metrics, and logged.

Delivery is at least once: a round trip whose reply is lost (the connection broke after the
server applied it) is sent again.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .spool import Spool

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime.config import OutputSection

log = logging.getLogger("malsensor.output")

RECONNECT_S = 1.0
"""Seconds between attempts while the server is unreachable (Suricata's rate)."""
REPORT_EVERY_S = 60.0
DROP_REASONS = ("queue_full", "spool_full", "spool_error")
SPOOL_READ_BYTES = 1 << 20
"""Most bytes read from the spool per round trip."""


class ByteQueue:
    """A FIFO of (bytes, events) bounded by bytes; ``put`` never waits."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[tuple[bytes, int]] = deque()
        self.bytes = 0
        self.events = 0
        self._cv = threading.Condition()

    def put(self, data: bytes, n: int) -> bool:
        with self._cv:
            if self.bytes + len(data) > self.max_bytes:
                return False
            self._items.append((data, n))
            self.bytes += len(data)
            self.events += n
            self._cv.notify()
        return True

    def take(self, timeout: float) -> list[tuple[bytes, int]]:
        """Everything waiting (after waiting up to ``timeout`` for something)."""
        with self._cv:
            if not self._items and timeout > 0:
                self._cv.wait(timeout)
            items = list(self._items)
            self._items.clear()
            self.bytes = self.events = 0
        return items

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


class RedisOutput:
    """One ``[[output]]`` with ``kind = "redis"``: the interface of :class:`~.eve.EventFile`
    (``open``, ``write``, ``close``, counters) over a sender thread and a spool."""

    def __init__(self, cfg: OutputSection) -> None:
        self.cfg = cfg
        self.target = cfg.target
        self.lines = 0               # events the server accepted
        self.bytes = 0
        self.errors = 0              # failed round trips and connection attempts
        self.last_error: str | None = None
        self.connected = False
        self._lost_before = 0        # carried over a reconfiguration
        self._dropped_queue = 0      # counted by the writer thread
        self._dropped_spool: dict[str, int] = {"spool_full": 0, "spool_error": 0}  # by the sender thread
        self.queue = ByteQueue(cfg.queue_max_bytes)
        self.spool = Spool(cfg.spool_dir, cfg.spool_max_bytes) if cfg.spool_max_bytes else None
        self._spool_usable = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._client = None
        self._next_try = 0.0
        self._reported: str | None = None
        self._reported_at = 0.0
        self._drop_reported_at = 0.0
        self._drops_unreported = 0

    # ------------------------------------------------------------------ counters

    @property
    def lost_lines(self) -> int:
        return self._lost_before + self._dropped_queue + sum(self._dropped_spool.values())

    @lost_lines.setter
    def lost_lines(self, v: int) -> None:  # the writer carries counters over a reconfiguration
        self._lost_before = v - self._dropped_queue - sum(self._dropped_spool.values())

    def counters(self) -> dict:
        """What the stats and metrics show beyond the file output's counters."""
        sp = self.spool
        return {"kind": "redis", "connected": self.connected, "queued": self.queue.events,
                "spooled": sp.events if sp else 0, "spool_bytes": sp.bytes if sp else 0,
                "dropped": {"queue_full": self._dropped_queue, **self._dropped_spool}}

    # ------------------------------------------------------------------ writer thread

    def open(self) -> bool:
        """Start the sender (once); at a reopen (SIGHUP) try the server now."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="malsensor-redis", daemon=True)
            self._thread.start()
        else:
            self._next_try = 0.0
            self.queue.wake()
        return True

    def write(self, text: str | bytes, n_lines: int) -> bool:
        """Queue whole lines for the sender; never waits. False (counted as lost) when the queue is full."""
        if not text:
            return True
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        if self.queue.put(data, n_lines):
            return True
        self._dropped_queue += n_lines
        self.last_error = (f"queue full ({self.cfg.queue_max_bytes} bytes waiting for the redis thread: the "
                           "server or the spool is slower than the events)")
        return False

    def close(self) -> None:
        """Stop the sender: what is queued goes to the spool (or to the server, within ``timeout``)."""
        t = self._thread
        if t is None:
            return
        self._stop.set()
        self.queue.wake()
        t.join(3 * self.cfg.timeout + 10.0)
        if t.is_alive():
            log.error("output %s: the redis thread did not stop in time; %d queued events are lost", self.target,
                      self.queue.events)
        self._thread = None

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        self._open_spool()
        try:
            while True:
                items = self.queue.take(0.2 if self._spooled() else 0.5)
                stopping = self._stop.is_set()
                for data, n in items:
                    self._take(data, n)
                if self._spooled() and (self._may_try() or stopping):
                    self._drain(time.monotonic() + (self.cfg.timeout if stopping else 0.5))
                if stopping and not self.queue.events:
                    break
        except Exception:  # a bug here must not take the daemon down; say it loudly
            log.exception("output %s: the redis thread failed", self.target)
        finally:
            if self._drops_unreported:
                log.error("output %s: %d more event(s) dropped (%d dropped in all)", self.target,
                          self._drops_unreported, self.lost_lines)
            if self.spool is not None:
                self.spool.close()
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # pragma: no cover
                    pass

    def _open_spool(self) -> None:
        if self.spool is None:
            return
        try:
            self.spool.open()
            self._spool_usable = True
        except OSError as e:
            self.last_error = f"spool {self.spool.dir}: {e.strerror or e}"
            log.error("output %s: cannot use the spool %s (%s): events the server cannot take now are dropped "
                      "and counted", self.target, self.spool.dir, e.strerror or e)
            return
        if self.spool.events:
            log.info("output %s: %d events (%d bytes) wait in the spool %s from an earlier run", self.target,
                     self.spool.events, self.spool.bytes, self.spool.dir)

    def _spooled(self) -> int:
        return self.spool.events if self._spool_usable and self.spool is not None else 0

    def _may_try(self) -> bool:
        return self.connected or time.monotonic() >= self._next_try

    def _take(self, data: bytes, n: int) -> None:
        """One batch from the writer: straight to the server unless older events wait or it is down."""
        if self._spooled() or not self._may_try():
            self._to_spool(data, n)
            return
        lines = data.split(b"\n")[:-1]
        sent = self._send_lines(lines)
        if sent < len(lines):
            rest = lines[sent:]
            self._to_spool(b"\n".join(rest) + b"\n", len(rest))

    def _send_lines(self, lines: list[bytes]) -> int:
        """Send in round trips of ``batch_size``; returns how many were accepted before a failure."""
        step = self.cfg.batch_size if self.cfg.pipelining else 1
        sent = 0
        while sent < len(lines):
            chunk = lines[sent:sent + step]
            if not self._send(chunk):
                break
            sent += len(chunk)
        return sent

    def _drain(self, deadline: float) -> None:
        """Deliver spooled events oldest first until the spool is empty, the server fails or the deadline."""
        sp = self.spool
        assert sp is not None
        step = self.cfg.batch_size if self.cfg.pipelining else 1
        before = sp.events
        while sp.events:
            # read a little more than ``step`` lines of the spool's mean size take
            lines, pos = sp.peek(step, min(SPOOL_READ_BYTES, step * (sp.bytes // max(sp.events, 1) * 5 // 4 + 64)))
            if not lines:
                break
            if not self._send(lines):
                return
            sp.commit(pos, len(lines))
            for data, n in self.queue.take(0.0):  # newer events queue up behind the spooled ones
                self._to_spool(data, n)
            if time.monotonic() >= deadline:
                break
        if before and not sp.events:
            log.info("output %s: the spool is delivered (%d events)", self.target, before)

    def _to_spool(self, data: bytes, n: int) -> None:
        if not self._spool_usable or self.spool is None:
            self._drop("spool_full" if self.spool is None else "spool_error", n,
                       "no spool (spool_max_bytes = 0)" if self.spool is None else self.last_error or "spool unusable")
            return
        try:
            kept = self.spool.append(data)
        except OSError as e:
            self._drop("spool_error", n, f"writing the spool {self.spool.dir}: {e.strerror or e}")
            return
        if kept < n:
            self._drop("spool_full", n - kept, f"spool {self.spool.dir} full ({self.spool.bytes} of "
                                               f"{self.spool.max_bytes} bytes)")

    def _drop(self, reason: str, n: int, why: str) -> None:
        self._dropped_spool[reason] += n
        self._drops_unreported += n
        now = time.monotonic()
        if now - self._drop_reported_at >= REPORT_EVERY_S:
            log.error("output %s: %s: %d event(s) dropped (%d dropped in all: %s)", self.target, why,
                      self._drops_unreported, self.lost_lines,
                      ", ".join(f"{k} {v}" for k, v in self.counters()["dropped"].items() if v))
            self._drop_reported_at = now
            self._drops_unreported = 0

    # ------------------------------------------------------------------ the server

    def _connection(self):
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            c = self.cfg
            unix = "/" in c.server
            self._client = redis.Redis(
                host="localhost" if unix else c.server, port=c.port, db=c.database, password=c.password or None,
                unix_socket_path=c.server if unix else None, socket_timeout=c.timeout,
                socket_connect_timeout=c.timeout, retry=Retry(NoBackoff(), 0), single_connection_client=True,
                client_name="malsensor")
        return self._client

    def _send(self, lines: list[bytes]) -> bool:
        """One round trip; on failure the server counts as down until the next try."""
        import redis

        c = self.cfg
        try:
            r = self._connection()
            if c.mode in ("list", "lpush"):
                r.lpush(c.key, *lines)
            elif c.mode == "rpush":
                r.rpush(c.key, *lines)
            else:
                stream = c.mode in ("stream", "xadd")
                maxlen = c.stream_maxlen or None
                target = r.pipeline(transaction=True) if len(lines) > 1 else r
                for line in lines:
                    if stream:
                        target.xadd(c.key, {"eve": line}, maxlen=maxlen, approximate=not c.stream_trim_exact)
                    else:
                        target.publish(c.key, line)
                if target is not r:
                    target.execute()
        except (redis.RedisError, OSError) as e:
            self._failed(e)
            return False
        self.lines += len(lines)
        self.bytes += sum(map(len, lines)) + len(lines)
        if not self.connected:
            self.connected = True
            if self._reported is not None:
                log.info("output %s: the server answers again; %d events wait in the spool", self.target,
                         self._spooled())
            self._reported = None
            self.last_error = None
        return True

    def _failed(self, e: Exception) -> None:
        self.errors += 1
        self.connected = False
        self._next_try = time.monotonic() + RECONNECT_S
        self.last_error = f"{type(e).__name__}: {e}"
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # pragma: no cover
                pass
            self._client = None
        now = time.monotonic()
        if self._reported != self.last_error or now - self._reported_at >= REPORT_EVERY_S:
            self._reported, self._reported_at = self.last_error, now
            where = (f"the spool {self.spool.dir} (at most {self.spool.max_bytes} bytes)"
                     if self._spool_usable and self.spool is not None else "nowhere (no spool): they are dropped")
            log.error("output %s: %s; events wait in %s and are delivered in order when it answers (tried "
                      "every %.0f s)", self.target, self.last_error, where, RECONNECT_S)
