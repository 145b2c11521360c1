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
import logging
import os
import select
import signal
import socket
import sys
import threading
import time

import numpy as np

from ..artifact import log_text
from ..capture.live import merge_summaries
from ..jit import off_main_thread
from ..logs import setup_logging
from ..outputs.eve import PredictionBatch, label_lines
from ..outputs.events import FORMATTERS
from ..sources import SOURCES, Source, SourceContext
from ..views.base import Router
from .config import Config, ConfigError, check_sources, load_config
from .inference import Dispatcher, EntityQueue, ModelWorker, Route
from .notify import Notifier
from .overrides import apply_overrides
from .privileges import PrivilegeError, drop_privileges
from .registry import ModelRegistry, ModelSlot, Watcher, describe_models, refreeze_gc, settle_gc
from .stats import LatencyStats, StatsReporter, start_metrics_server
from .writer import EventWriter

log = logging.getLogger("malsensor.main")

SHUTDOWN_TIMEOUT_S = 30.0  # inside the unit's TimeoutStopSec=45
CAPTURE_STOP_S = 10.0


class Service:
    def __init__(self, cfg: Config, config_path: str | None = None,
                 overrides: argparse.Namespace | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.overrides = overrides
        self.notifier = Notifier()
        self.latency = LatencyStats()
        self.abort = threading.Event()  # stop waiting on full queues (shutdown took too long)
        self.kinds = [SOURCES.get(s.kind) for s in cfg.sources]
        # sources that end by themselves (files) wait for room in full queues instead of dropping
        self.finite = bool(self.kinds) and all(k.finite for k in self.kinds)
        self.dispatcher = Dispatcher(block=self.finite, stop=self.abort)
        self.tracking = cfg.tracker_config()
        self.context = SourceContext(self.dispatcher.dispatch, self._emit_at_stop, self.tracking,
                                     cfg.tracking.semantics, cfg.protocol_numbers())
        self.host = cfg.service.host or socket.gethostname()
        self.registry = ModelRegistry(cfg.inference.batch_sizes, semantics=cfg.tracking.semantics,
                                      sample_intervals=[s.interval for s in cfg.sources_of("procfs")])
        self.queues: dict[str, EntityQueue] = {}
        self.routers: dict[str, tuple[tuple, Router]] = {}  # (router key, router), kept across reloads
        self.workers: dict[str, ModelWorker] = {}
        self.devices: dict = {}  # model name -> DeviceAggregator (pkt_seq device_window)
        self.retired_workers: list[ModelWorker] = []
        self.writer = EventWriter(cfg.outputs, self.latency)
        self.stats = StatsReporter(self.snapshot, self.latency, cfg.stats.path, cfg.stats.log)
        self.watcher: Watcher | None = None
        self.sources: list[Source] = []
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
        q = EntityQueue(self.cfg.inference.queue_size)
        name = slot.name
        emit = self.writer.submit
        window = getattr(slot.cfg.options, "device_window", 0.0)
        if window:  # per-device verdicts pooled over the model's predictions (runtime/devices.py)
            from .devices import DeviceAggregator

            o = slot.cfg.options
            emit = self.devices[name] = DeviceAggregator(window, o.device_pool, self.writer.submit,
                                                         tuple(slot.cfg.benign_labels), slot.cfg.alert_threshold,
                                                         o.device_min_connections)
        w = ModelWorker(slot, q, self.cfg.inference.batch_sizes, self._max_delay, emit, self.host,
                        lambda: self.routers.get(name, (None, None))[1])
        self.queues[slot.name] = q
        self.workers[slot.name] = w
        w.start()

    def _facts(self, product: str) -> dict:
        """What the running sources of ``product`` tell the views' routers."""
        out: dict = {}
        for k in self.kinds:
            if k.produces == product:
                out.update(k.facts(self.context))
        return out

    def _routes(self) -> list[Route]:
        routes = []
        for m in self.cfg.models:
            slot = self.registry.slots.get(m.name)
            if slot is None or m.name not in self.queues:
                continue
            view = m.view_spec()
            facts = self._facts(view.consumes)
            key = view.router_key(m.options, facts)
            held = self.routers.get(m.name)
            if held is None or held[0] != key:  # a new router (a stateful one keeps what it holds otherwise)
                held = self.routers[m.name] = (key, view.router(m.options, facts))
            routes.append(Route(slot, self.queues[m.name], held[1], view.consumes))
        for name in [n for n in self.routers if not any(m.name == n for m in self.cfg.models)]:
            del self.routers[name]
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
            preload(self.kinds)
        # kernels compiled or loaded from their caches now, not by the first packets
        self._warm()
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
            if not ok and self.finite and not any(getattr(c, "repeat", 1) == 0 for c in cfg.sources):
                # a finite replay without one of its models would silently miss its events; a
                # service (live, or replay forever) waits for the artifact to be published
                raise StartError(f"model {m.name}: {slot.last_error}")
            self._start_worker(slot)
        self.dispatcher.set_routes(self._routes())
        self.writer.start()
        self.watcher = Watcher(self.registry, cfg.inference.watch_interval)
        self.watcher.start()
        settle_gc()  # before capture starts: the collection itself pauses every thread
        self.source_started = time.monotonic()
        self.source_cpu0 = time.process_time()
        try:
            for sc, kind in zip(cfg.sources, self.kinds):
                src = kind(sc, self.context)
                src.on_done = self._wake_main
                self.sources.append(src)
            for src in self.sources:
                src.start()
        except (OSError, RuntimeError, ValueError) as e:
            raise StartError(f"capture: {e}") from None
        end = time.monotonic() + 10.0
        for src in self.sources:
            if not src.wait_running(max(end - time.monotonic(), 0.0)):
                log.warning("%s: not up yet; it starts as soon as it can", src.describe())
        log.info("malsensord ready: %s; models: %s", self.describe_sources(), describe_models(self.registry))

    def describe_sources(self) -> str:
        return "; ".join(s.describe() for s in self.sources) or "no source"

    def _warm(self) -> None:
        """Every source kind's kernels, then every model's router and event formatter, once, off
        the main thread: the threads that run them call numba's JIT kernels (daemon/jit.py)."""
        off_main_thread(self._warm_kernels)

    def _warm_kernels(self) -> None:
        samples: dict[str, list] = {}
        for kind in dict.fromkeys(self.kinds):
            samples.setdefault(kind.produces, []).extend(kind.warm(self.context))
        for m in self.cfg.models:
            view = m.view_spec()
            router = view.router(m.options, self._facts(view.consumes))  # a throw-away one: no state kept
            fmt = FORMATTERS.get(view.entity)
            for batch in samples.get(view.consumes, []):
                rows = router.route(batch)
                if rows is None or rows.n == 0:
                    continue
                n = rows.n
                detail = rows.x if rows.detail is None else rows.detail
                pb = PredictionBatch("warm", "0", router.trigger, ["a", "b"], rows.keys, detail,
                                     np.full((n, 2), 0.5, np.float32), np.zeros(n, np.int64), np.zeros((n, 2), np.int64),
                                     np.zeros(n, bool), np.zeros(n, np.int64), view.entity, self.host)
                fmt.eve_lines(pb)
                label_lines(pb)
                break

    def _emit_at_stop(self) -> bool:
        return self.cfg.service.on_stop == "emit"

    # ------------------------------------------------------------------ health, status, snapshot

    def health(self) -> tuple[bool, str]:
        """Every stage makes progress: capture threads, model workers, the writer."""
        now = time.monotonic()
        stall = self.cfg.service.watchdog_stall
        for src in self.sources:
            why = src.health(now, stall)
            if why:
                return False, why
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
        src = merge_summaries([s.stats() for s in self.sources])
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
                "pending": self.routers[name][1].pending() if name in self.routers else 0,  # held by the view
                "view": self.routers[name][1].counters() if name in self.routers else {},
                "predictions": wc.predictions if wc else 0,
                "alerts": wc.alerts if wc else 0,
                "batches": wc.batches if wc else 0,
                "unserved": wc.unserved if wc else 0,
                "errors": wc.errors if wc else 0,
                "swaps": slot.counters.swaps,
                "rejected": slot.counters.rejected,
                "last_error": slot.last_error,
            }
        counts = self.dispatcher.counts
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "packets": src.get("packets", 0), "wire_bytes": src.get("wire_bytes", 0),
            "kernel_packets": src.get("kernel_packets", 0), "kernel_drops": src.get("kernel_drops", 0),
            "connections": counts.get("connections", 0), "snapshots": counts.get("snapshots", 0),
            "entities": dict(counts),
            "flows_active": src.get("flows_active", 0), "flows_evicted": src.get("flows_evicted", 0),
            "malformed_by_reason": src.get("malformed_by_reason", {}),
            "sources": src,
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
        src = self.describe_sources() if self.sources else "starting"
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
            view = m.view_spec()
            if view.consumes == "connections" and not view.snapshot_points(m.options) <= snaps:
                need = sorted(view.snapshot_points(m.options))
                raise ValueError(f"model {m.name}: view {view.ref} needs the snapshot points {need}, which the "
                                 f"running flow tables do not all have ({sorted(snaps) or 'none'}); restart to apply")
            if view.consumes == "connections" and view.seq_packets(m.options) > self.tracking.seq_packets:
                raise ValueError(f"model {m.name}: view {view.ref} needs the first {view.seq_packets(m.options)} "
                                 f"packets of each connection, the running flow tables keep "
                                 f"{self.tracking.seq_packets}; restart to apply")

    def _apply(self, new: Config) -> None:
        old = self.cfg
        restart = [name for name, a, b in (
            ("[[source]]", old.sources, new.sources),
            ("[tracking]", old.tracking, new.tracking), ("[metrics]", old.metrics, new.metrics),
            ("[service] user/group", (old.service.user, old.service.group), (new.service.user, new.service.group)),
            ("[inference] batch_sizes/queue_size", (old.inference.batch_sizes, old.inference.queue_size),
             (new.inference.batch_sizes, new.inference.queue_size))) if a != b]
        if restart:
            log.warning("changes to %s take effect at the next restart; the running values stay",
                        ", ".join(restart))
        merged = dataclasses.replace(
            new, sources=old.sources, tracking=old.tracking, metrics=old.metrics,
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
        loc = ("models_dir", "artifact", "path", "view", "labels", "options")
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
            if self.finite and self.sources and all(src.done.is_set() for src in self.sources):
                return
            for src in self.sources:
                err = src.failed()
                if err:
                    log.error("%s; stopping", err)
                    raise StartError(err)
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
        for src in self.sources:
            src.stop()
        for src in self.sources:
            src.join(left(CAPTURE_STOP_S))
        if self._emit_at_stop():
            self.dispatcher.finish()  # windowed views close their open windows
        for q in self.queues.values():
            q.close()
        for w in list(self.workers.values()) + self.retired_workers:
            w.join(left())
        for agg in self.devices.values():  # the device windows still open
            pb = agg.flush()
            if pb is not None:
                self.writer.submit(pb)
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
        dropped = rec.get("sources", {}).get("dropped_at_stop", 0)
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


def preload(kinds: list[type[Source]]) -> None:
    """Import (and initialise) what the daemon runs later, while it can still read everything:
    after the switch to an unprivileged user, code in a root-only location (a Python under
    /root, say) could not be loaded any more."""
    for kind in dict.fromkeys(kinds):
        kind.preload()
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
    for notice in cfg.notices:
        log.warning("%s", notice)
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
    ended = svc.finite and bool(svc.sources) and all(src.done.is_set() for src in svc.sources)
    svc.shutdown(bounded=not (ended and not svc._sig["term"]))
    if svc.finite:
        if any(src.error for src in svc.sources):
            status = 1
        s = svc.snapshot()
        el = time.monotonic() - t0
        cpu = time.process_time() - svc.source_cpu0
        passes = s["sources"].get("passes", 0)
        preds = ", ".join(f"{n} {m['predictions']}" for n, m in s["models"].items()) or "none"
        drops = sum(m["queue_dropped"] for m in s["models"].values())
        what = ", ".join(f"{n} {k}" for k, n in s["entities"].items() if k != "snapshots") or "0 connections"
        print(f"{what} processed ({s['packets']} packets, {passes} pass"
              f"{'es' if passes != 1 else ''}, {el:.2f} s, {cpu:.2f} CPU s; predictions: {preds}; queue drops {drops})",
              file=sys.stdout, flush=True)
    return status
