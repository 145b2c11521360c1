"""The daemon's main loop: start-up order, signals, reload, health, shutdown.

Start-up (the order matters)::

    metrics port bound -> privileges dropped (capture capabilities kept) -> output files opened
    -> every model loaded, canary-checked, compiled and warmed for each batch size
    -> model workers + writer + artifact watcher started -> capture started and bound
    -> READY=1

The main thread then only waits for signals and timers: SIGHUP reloads the configuration
(RELOADING=1 ... READY=1), SIGTERM/SIGINT stop (STOPPING=1), WATCHDOG=1 goes out at half
the systemd watchdog interval *only while the health check passes*, STATUS= and the stats
records go out periodically.

Shutdown: capture stops (each capture thread flushes its tracker: open connections are
classified with end_reason "shutdown" or dropped, per ``[service] on_stop``), the model
queues are closed and drained, the writer writes what it has and closes the files; exit 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

import numpy as np

from ..artifact import log_text
from ..decode import MALFORMED_REASONS
from ..logs import setup_logging
from ..views.conn_series import SERIES_POINTS
from .config import Config, ConfigError, check_sources, load_config
from .inference import ConnQueue, Dispatcher, ModelWorker, Route, SeriesRoute
from .notify import Notifier
from .privileges import PrivilegeError, drop_privileges
from .registry import ModelRegistry, ModelSlot, Watcher, describe_models
from .sources import LiveSource, ReplaySource, warm_pipeline
from .stats import LatencyStats, StatsReporter, start_metrics_server
from .writer import EventWriter

log = logging.getLogger("malsensor.main")

SHUTDOWN_TIMEOUT_S = 30.0  # inside the unit's TimeoutStopSec=45
CAPTURE_STOP_S = 10.0
VIEW_SHAPE = (17,)


class Service:
    def __init__(self, cfg: Config, config_path: str | None = None,
                 overrides: argparse.Namespace | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.overrides = overrides
        self.notifier = Notifier()
        self.latency = LatencyStats()
        self.abort = threading.Event()  # stop waiting on full queues (shutdown took too long)
        self.replay = bool(cfg.replay.file)
        self.dispatcher = Dispatcher(block=self.replay, stop=self.abort)
        self.tracking = cfg.tracker_config()
        self.registry = ModelRegistry(cfg.inference.batch_sizes, VIEW_SHAPE, semantics=cfg.tracking.semantics)
        self.queues: dict[str, ConnQueue] = {}
        self.series: dict[str, SeriesRoute] = {}  # conn_series models' assemblers, kept across reloads
        self.workers: dict[str, ModelWorker] = {}
        self.retired_workers: list[ModelWorker] = []
        self.writer = EventWriter(cfg.outputs, self.latency)
        self.stats = StatsReporter(self.snapshot, self.latency, cfg.stats.path, cfg.stats.log)
        self.watcher: Watcher | None = None
        self.source: Any = None
        self.reloads = {"ok": 0, "rejected": 0}
        self.started_at = time.monotonic()
        self.metrics_port: int | None = None
        self.source_started = time.monotonic()
        self.source_cpu0 = time.process_time()
        self._sig = {"term": False, "hup": False}
        self._wake_r: socket.socket | None = None
        self._healthy = True
        self._health_reason = ""
        self._status_prev: tuple[float, dict] | None = None

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> None:
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        self._wake_r, self._wake_w = r, w
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)

        def on_term(signum, frame):
            self._sig["term"] = True

        def on_hup(signum, frame):
            self._sig["hup"] = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def _wake_main(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (AttributeError, OSError):
            pass

    def _wait(self, timeout: float) -> None:
        assert self._wake_r is not None
        try:
            select.select([self._wake_r], [], [], max(timeout, 0.0))
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            pass
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ------------------------------------------------------------------ models

    def _max_delay(self) -> float:
        return self.cfg.inference.max_delay_ms / 1000.0

    def _start_worker(self, slot: ModelSlot) -> None:
        q = ConnQueue(self.cfg.inference.queue_size)
        w = ModelWorker(slot, q, self.cfg.inference.batch_sizes, self._max_delay, self.writer.submit)
        self.queues[slot.name] = q
        self.workers[slot.name] = w
        w.start()

    def _routes(self) -> list[Route]:
        snaps = self.tracking.snapshot_packets
        routes = []
        for m in self.cfg.models:
            slot = self.registry.slots.get(m.name)
            if slot is None or m.name not in self.queues:
                continue
            idx = snaps.index(m.early_packets) if m.trigger == "early" else -1
            series = None
            if m.is_series:
                series = self.series.get(m.name)
                if series is None or series.lookback != m.lookback or series.snapshot_points != snaps:
                    series = self.series[m.name] = SeriesRoute(m.lookback, snaps)
            routes.append(Route(slot, self.queues[m.name], m.trigger, m.early_packets, idx, series))
        for name in [n for n in self.series if not any(m.name == n and m.is_series for m in self.cfg.models)]:
            del self.series[name]
        return routes

    def _retire(self, name: str) -> None:
        """Stop routing to a model, let its worker finish what is queued, then forget it."""
        q = self.queues.pop(name, None)
        w = self.workers.pop(name, None)
        if q is not None:
            q.close()
        if w is not None:
            self.retired_workers.append(w)
        self.registry.remove(name)

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        cfg = self.cfg
        if cfg.metrics.enabled:
            try:
                _, self.metrics_port = start_metrics_server(cfg.metrics.listen, cfg.metrics.port, self.snapshot,
                                                            self.latency)
                log.info("metrics on http://%s:%d/metrics", cfg.metrics.listen, self.metrics_port)
            except OSError as e:
                raise StartError(f"[metrics] cannot listen on {cfg.metrics.listen}:{cfg.metrics.port}: "
                                 f"{e.strerror or e}") from None
        if cfg.service.user and os.geteuid() == 0:
            preload(live=not self.replay)
        # numba kernels compiled or loaded from the cache now, not by the first packets
        warm_pipeline(self.tracking, cfg.tracking.semantics, live=not self.replay)
        try:
            done = drop_privileges(cfg.service.user, cfg.service.group)
        except PrivilegeError as e:
            raise StartError(str(e)) from None
        if done:
            log.info("%s", done)
        for err in self.writer.open_all():
            log.error("output: %s; its events are counted as lost until it can be written", err)
        self.stats.reopen()
        self.notifier.status("loading models")
        for m in cfg.models:
            slot = self.registry.add(m)
            ok = self.registry.load_into(slot, reason="start")
            if not ok and self.replay and cfg.replay.repeat != 0:
                # a finite replay without one of its models would silently miss its events; a
                # service (live, or replay forever) waits for the artifact to be published
                raise StartError(f"model {m.name}: {slot.last_error}")
            self._start_worker(slot)
        self.dispatcher.set_routes(self._routes())
        self.writer.start()
        self.watcher = Watcher(self.registry, cfg.inference.watch_interval)
        self.watcher.start()
        src_cls = ReplaySource if self.replay else LiveSource
        settle_gc()  # before capture starts: the collection itself pauses every thread
        self.source_started = time.monotonic()
        self.source_cpu0 = time.process_time()
        try:
            self.source = src_cls(cfg, self.tracking, self.dispatcher, self._emit_at_stop)
            if self.replay:
                self.source.on_done = self._wake_main
            self.source.start()
        except (OSError, RuntimeError, ValueError) as e:
            raise StartError(f"capture: {e}") from None
        if not self.source.wait_running(10.0):
            log.warning("%s: not every interface is up yet; capturing as they appear", self.source.describe())
        log.info("malsensord ready: %s; models: %s", self.source.describe(), describe_models(self.registry))

    def _emit_at_stop(self) -> bool:
        return self.cfg.service.on_stop == "emit"

    # ------------------------------------------------------------------ health, status, snapshot

    def health(self) -> tuple[bool, str]:
        """Every stage makes progress: capture threads, model workers, the writer."""
        now = time.monotonic()
        stall = self.cfg.service.watchdog_stall
        src = self.source
        if src is not None:
            if src.kind == "live":
                err = src.failed()
                if err:
                    return False, err
            elif not src.alive() and not src.done.is_set():
                return False, "replay thread died"
            for c in src.consumers:
                if not c.finished and now - c.heartbeat > stall and src.alive():
                    return False, f"capture thread {c.name} made no progress for {now - c.heartbeat:.0f}s"
        for name, w in self.workers.items():
            if not w.is_alive():
                return False, f"model worker {name} died"
            if w.busy_since is not None and now - w.busy_since > stall:
                return False, f"model {name} has been running one batch for {now - w.busy_since:.0f}s"
            if now - w.heartbeat > stall:
                return False, f"model worker {name} made no progress for {now - w.heartbeat:.0f}s"
        wr = self.writer
        if not wr.is_alive():
            return False, "event writer died"
        if now - wr.heartbeat > stall:
            return False, f"event writer made no progress for {now - wr.heartbeat:.0f}s"
        return True, ""

    def snapshot(self) -> dict:
        src = self.source
        consumers = src.consumers if src is not None else []
        packets = wire = 0
        flows = evicted = 0
        status = np.zeros(256, dtype=np.int64)
        for c in consumers:
            pc = c.pipe.counters
            packets += pc.packets
            wire += pc.wire_bytes
            status += pc.status
            flows += c.pipe.tracker.active
            evicted += c.pipe.tracker.stats()["flows_evicted"]
        kp, kd = src.kernel() if src is not None else (0, 0)
        models = {}
        for name, slot in list(self.registry.slots.items()):
            q = self.queues.get(name)
            w = self.workers.get(name)
            cur = slot.current
            wc = w.counters if w is not None else None
            models[name] = {
                "version": cur.version if cur is not None else None,
                "kind": cur.artifact.kind if cur is not None else None,
                "queued": len(q) if q is not None else 0,
                "queue_accepted": q.accepted if q is not None else 0,
                "queue_dropped": q.dropped if q is not None else 0,
                "series_open": len(self.series[name]) if name in self.series else 0,  # conn_series: partial series held
                "predictions": wc.predictions if wc else 0,
                "alerts": wc.alerts if wc else 0,
                "batches": wc.batches if wc else 0,
                "unserved": wc.unserved if wc else 0,
                "errors": wc.errors if wc else 0,
                "swaps": slot.counters.swaps,
                "rejected": slot.counters.rejected,
                "last_error": slot.last_error,
            }
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "packets": packets, "wire_bytes": wire,
            "kernel_packets": kp, "kernel_drops": kd,
            "connections": self.dispatcher.connections, "snapshots": self.dispatcher.snapshots,
            "flows_active": flows, "flows_evicted": evicted,
            "malformed_by_reason": {n: int(status[c]) for c, n in MALFORMED_REASONS.items() if status[c]},
            "models": models,
            "events": self.writer.events,
            "outputs": self.writer.counters(),
            "reloads": dict(self.reloads),
            "healthy": self._healthy,
        }

    def status_text(self) -> str:
        now = time.monotonic()
        s = self.snapshot()
        prev = self._status_prev
        self._status_prev = (now, s)
        if prev is None:
            rates = ""
        else:
            dt = max(now - prev[0], 1e-9)
            rates = (f" {(s['packets'] - prev[1]['packets']) / dt:,.0f} pkt/s,"
                     f" {(s['connections'] - prev[1]['connections']) / dt:,.0f} conn/s,")
        src = self.source.describe() if self.source is not None else "starting"
        models = ", ".join(f"{n} {m['version'] or '(none)'}" for n, m in s["models"].items()) or "none"
        drops = sum(m["queue_dropped"] for m in s["models"].values())
        text = (f"{src}:{rates} {s['connections']:,} connections, kernel drops {s['kernel_drops']:,}, "
                f"queue drops {drops:,}; models: {models}")
        if not self._healthy:
            text += f"; UNHEALTHY: {self._health_reason}"
        return text

    # ------------------------------------------------------------------ reload

    def reload(self) -> bool:
        """SIGHUP: re-read the configuration and apply it; an invalid one is rejected."""
        self.notifier.reloading()
        log.info("reloading configuration %s", self.config_path)
        try:
            if self.config_path is None:
                raise ConfigError([])
            new = load_config(self.config_path)
            if self.overrides is not None:
                from .main import apply_overrides

                new = apply_overrides(new, self.overrides)
            errs = check_sources(new)
            if errs:
                raise ValueError("; ".join(errs))
            self._check_reloadable(new)
        except (ConfigError, ValueError) as e:
            self.reloads["rejected"] += 1
            msgs = [str(p) for p in e.problems] if isinstance(e, ConfigError) else [str(e)]
            for m in msgs:
                log.error("reload rejected: %s", m)
            log.error("configuration reload rejected (%d problem%s); still running the previous one",
                      len(msgs), "" if len(msgs) == 1 else "s")
            # SIGHUP also means "reopen your files" (logrotate): do that with the running outputs
            self.writer.reopen().wait(30.0)
            self.stats.reopen()
            self.notifier.ready(f"reload rejected: {msgs[0] if msgs else 'invalid configuration'}; "
                                f"running the previous configuration")
            return False
        self._apply(new)
        self.reloads["ok"] += 1
        refreeze_gc()
        log.info("configuration reloaded; models: %s", describe_models(self.registry))
        self.notifier.ready(self.status_text())
        return True

    def _check_reloadable(self, new: Config) -> None:
        snaps = set(self.tracking.snapshot_packets)
        for m in new.models:
            if m.trigger == "early" and m.early_packets not in snaps:
                raise ValueError(f"model {m.name}: early_packets = {m.early_packets} needs a snapshot point the "
                                 f"running flow tables do not have ({sorted(snaps) or 'none'}); restart to apply")
            if m.is_series and not set(SERIES_POINTS[:m.lookback]) <= snaps:
                raise ValueError(f"model {m.name}: lookback = {m.lookback} needs snapshot points "
                                 f"{list(SERIES_POINTS[:m.lookback])} the running flow tables do not all have "
                                 f"({sorted(snaps) or 'none'}); restart to apply")

    def _apply(self, new: Config) -> None:
        old = self.cfg
        restart = [name for name, a, b in (
            ("[[interface]]", old.interfaces, new.interfaces), ("[replay]", old.replay, new.replay),
            ("[tracking]", old.tracking, new.tracking), ("[metrics]", old.metrics, new.metrics),
            ("[service] user/group", (old.service.user, old.service.group), (new.service.user, new.service.group)),
            ("[inference] batch_sizes/queue_size", (old.inference.batch_sizes, old.inference.queue_size),
             (new.inference.batch_sizes, new.inference.queue_size))) if a != b]
        if restart:
            log.warning("changes to %s take effect at the next restart; the running values stay",
                        ", ".join(restart))
        merged = dataclasses.replace(
            new, interfaces=old.interfaces, replay=old.replay, tracking=old.tracking, metrics=old.metrics,
            service=dataclasses.replace(new.service, user=old.service.user, group=old.service.group),
            inference=dataclasses.replace(new.inference, batch_sizes=old.inference.batch_sizes,
                                          queue_size=old.inference.queue_size))
        if new.logging.level != old.logging.level:
            logging.getLogger().setLevel(new.logging.level.upper())
        # models: removed, added, changed
        new_names = {m.name for m in new.models}
        for name in [n for n in self.registry.slots if n not in new_names]:
            log.info("model %s removed by the configuration", name)
            self._retire(name)
        self.cfg = merged  # routes and workers read settings from here
        loc = ("models_dir", "artifact", "path", "view", "labels")
        for m in new.models:
            slot = self.registry.slots.get(m.name)
            if slot is None:
                slot = self.registry.add(m)
                self.registry.load_into(slot, reason="added by reload")
                self._start_worker(slot)
                continue
            if any(getattr(slot.cfg, k) != getattr(m, k) for k in loc):
                trial = ModelSlot(m)
                if self.registry.load_into(trial, reason="reload"):
                    slot.cfg = m
                    slot.current = trial.current
                    slot.counters.swaps += 1
                else:
                    slot.counters.rejected += 1
                    slot.last_error = trial.last_error
                    log.error("model %s: new settings not applied (artifact rejected); keeping the running ones",
                              m.name)
                    continue
            else:
                slot.cfg = m
            if not slot.watched or slot.current is None:
                self.registry.check_all(include_fixed=True, reason="reload")
        self.dispatcher.set_routes(self._routes())
        if self.watcher is not None:
            self.watcher.interval = merged.inference.watch_interval
        # outputs: new list, every file reopened (logrotate)
        self.writer.reconfigure(merged.outputs).wait(30.0)
        self.stats.reconfigure(merged.stats.path, merged.stats.log)
        self.stats.reopen()
        self._join_retired(0.0)

    def _join_retired(self, timeout: float) -> None:
        for w in list(self.retired_workers):
            w.join(timeout)
            if not w.is_alive():
                self.retired_workers.remove(w)

    # ------------------------------------------------------------------ loop and stop

    def loop(self) -> None:
        wd = self.notifier.watchdog_interval
        now = time.monotonic()
        next_wd = now if wd else float("inf")
        next_status = now + self.cfg.service.status_interval
        next_stats = now + self.cfg.stats.interval
        while True:
            now = time.monotonic()
            self._wait(min(next_wd, next_status, next_stats, now + 1.0) - now)
            if self._sig["term"]:
                log.info("stop requested")
                return
            if self._sig["hup"]:
                self._sig["hup"] = False
                self.reload()
                next_status = time.monotonic()
            src = self.source
            if src is not None and src.kind == "replay" and src.done.is_set():
                return
            if src is not None and src.kind == "live" and src.failed():
                log.error("%s; stopping", src.failed())
                raise StartError(src.failed())
            now = time.monotonic()
            if now >= next_wd:
                ok, why = self.health()
                if ok != self._healthy or why != self._health_reason:
                    if ok:
                        log.info("health check passes again")
                    else:
                        log.error("health check failed: %s; not sending WATCHDOG=1", why)
                self._healthy, self._health_reason = ok, why
                if ok:
                    self.notifier.watchdog()
                next_wd = now + (wd or float("inf"))
            if now >= next_status:
                self.notifier.status(self.status_text())
                next_status = now + self.cfg.service.status_interval
            if now >= next_stats:
                self.stats.tick()
                next_stats = now + self.cfg.stats.interval
            self._join_retired(0.0)

    def shutdown(self, bounded: bool = True) -> None:
        """Stop capture, drain the queues through the models, flush and close the outputs.

        ``bounded`` (a stop request): all of it within SHUTDOWN_TIMEOUT_S, inside the unit's
        TimeoutStopSec; what could not be written by then is counted and logged, never lost
        silently. Unbounded (a replay that reached its end): everything is written."""
        self.notifier.stopping("stopping: draining capture, models and outputs")
        limit = SHUTDOWN_TIMEOUT_S if bounded else None
        deadline = time.monotonic() + (limit if limit is not None else 0.0)

        def left(cap: float | None = None) -> float | None:
            if limit is None:
                return cap
            rest = max(deadline - time.monotonic(), 1.0)
            return rest if cap is None else min(cap, rest)

        timer = None
        if limit is not None:  # replay only: stop waiting for room in full queues half way
            timer = threading.Timer(limit / 2, self.abort.set)
            timer.daemon = True
            timer.start()
        if self.watcher is not None:
            self.watcher.stop()  # (joined below: a load in progress must finish before exit)
        if self.source is not None:
            self.source.stop()
            self.source.join(left(CAPTURE_STOP_S))
            if self.source.kind == "replay" and self.source.alive():
                log.warning("the replay thread did not stop within %.0fs (blocked reading?); its open "
                            "connections are not classified", CAPTURE_STOP_S)
        for q in self.queues.values():
            q.close()
        for w in list(self.workers.values()) + self.retired_workers:
            w.join(left())
        if self.writer.is_alive():
            self.writer.stop(left())
        if self.watcher is not None and self.watcher.is_alive():
            # exiting while XLA compiles in another thread aborts the process
            self.watcher.join(left())
        if timer is not None:
            timer.cancel()
        unwritten = self._unwritten()
        if unwritten:
            log.error("stop deadline (%.0fs) reached: %d connections still queued for the models or the "
                      "writer were not written", SHUTDOWN_TIMEOUT_S, unwritten)
        rec = self.stats.tick()
        self.stats.close()
        dropped = sum(c.dropped_at_stop for c in (self.source.consumers if self.source else []))
        written, lost = self.writer.line_totals()  # lines that reached the files, not predictions made
        log.info("stopped: %d connections, %d events written, %d lost (%d predictions)%s", rec["connections"],
                 written, lost, self.writer.events,
                 f", {dropped} open connections dropped (on_stop = drop)" if dropped else "")

    def _unwritten(self) -> int:
        """Rows still waiting in a model queue or (as predictions) for the writer."""
        n = sum(len(q) for q in self.queues.values())
        if self.writer.is_alive():
            with self.writer.q.mutex:
                n += sum(getattr(item, "n", 0) for item in self.writer.q.queue)
        return n


def refreeze_gc() -> None:
    """After a swap or reload: let the collector see the frozen objects again (a replaced model
    may hold reference cycles), collect, freeze what is alive."""
    gc.unfreeze()
    settle_gc()


def settle_gc() -> None:
    """Collect once and move every object alive now (modules, JAX, compiled models) out of the
    cyclic collector's reach: its full collections otherwise walk them all, stopping every
    thread for tens of milliseconds (measured: 100 ms event latency spikes)."""
    gc.collect()
    gc.freeze()


def preload(live: bool) -> None:
    """Import (and initialise) what the daemon runs later, while it can still read everything:
    after the switch to an unprivileged user, code in a root-only location (a Python under
    /root, say) could not be loaded any more."""
    if live:
        from pyroute2 import IPRSocket

        from ..capture import afpacket, bpf, interfaces  # noqa: F401

        bpf.compile_filter("tcp")  # loads libpcap
        interfaces.lookup("lo")  # netlink request and reply parsing
        sock = IPRSocket()  # the link watcher's event socket
        sock.bind(groups=interfaces.RTMGRP_LINK)
        sock.close()
    import jax
    import jax.numpy as jnp
    from jax import export  # noqa: F401

    import numpy as _np

    # a whole export -> serialize -> deserialize -> call round trip walks the code paths (and
    # their lazy imports) that loading and running an artifact takes
    (b,) = export.symbolic_shape("b")
    exp = export.export(jax.jit(lambda w, x: jax.nn.softmax(jnp.tanh(x) @ w, axis=-1)))(
        jax.ShapeDtypeStruct((4, 2), jnp.float32), jax.ShapeDtypeStruct((b, 4), jnp.float32))
    again = export.deserialize(bytearray(exp.serialize()))
    jax.block_until_ready(jax.jit(again.call)(jnp.ones((4, 2), jnp.float32), _np.zeros((3, 4), _np.float32)))
    import msgpack  # noqa: F401

    from .. import artifact  # noqa: F401
    from ..capture import pcapfile  # noqa: F401


class StartError(Exception):
    """The daemon cannot start (or must stop); the message says why."""


def _setup_logging(cfg: Config) -> None:
    j = {"auto": None, "yes": True, "no": False}[cfg.logging.journal]
    setup_logging(cfg.logging.level, journal=j)
    # JAX reports every accelerator plugin it does not find at INFO: not news for a sensor
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def run_service(cfg: Config, config_path: str | None = None, argv_overrides: argparse.Namespace | None = None) -> int:
    """``malsensord`` after the configuration validated: run until stopped (or the replay ends)."""
    _setup_logging(cfg)
    svc = Service(cfg, config_path, argv_overrides)
    svc._install_signals()
    status = 0
    try:
        svc.start()
    except StartError as e:
        log.error("cannot start: %s", log_text(str(e), 2000))  # one line, whatever a path holds
        svc.notifier.status(f"failed to start: {e}")
        try:
            svc.shutdown()
        except Exception:  # pragma: no cover
            pass
        return 1
    svc.notifier.ready(svc.status_text())
    t0 = svc.source_started
    try:
        svc.loop()
    except StartError:
        status = 1
    # a replay that reached its end writes everything; a stop request has a deadline
    svc.shutdown(bounded=not (svc.replay and svc.source is not None and svc.source.done.is_set()
                              and not svc._sig["term"]))
    if svc.replay:
        src = svc.source
        if src.error:
            status = 1
        s = svc.snapshot()
        el = time.monotonic() - t0
        cpu = time.process_time() - svc.source_cpu0
        preds = ", ".join(f"{n} {m['predictions']}" for n, m in s["models"].items()) or "none"
        drops = sum(m["queue_dropped"] for m in s["models"].values())
        print(f"{s['connections']} connections processed ({s['packets']} packets, {src.passes} pass"
              f"{'es' if src.passes != 1 else ''}, {el:.2f} s, {cpu:.2f} CPU s; predictions: {preds}; queue drops {drops})",
              file=sys.stdout, flush=True)
    return status
