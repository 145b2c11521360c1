"""Statistics: latency distribution, periodic records (log + JSONL) and the Prometheus endpoint.

The service provides one function that returns a snapshot of every counter (a plain dict,
see ``Service.snapshot``); the periodic reporter turns successive snapshots into rates,
and the Prometheus collector turns a snapshot into metric families at scrape time, so
the two never disagree.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

import numpy as np

from ..outputs.eve import EventFile

log = logging.getLogger("malsensor.stats")

BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyStats:
    """Time from a connection leaving the tracker to its event being written.

    A cumulative histogram (for Prometheus) plus a window of recent values (for the
    percentiles of each stats record; at most ``window_cap`` values are kept)."""

    def __init__(self, window_cap: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._edges = np.asarray(BUCKETS_S, dtype=np.float64) * 1e9
        self.bucket_counts = np.zeros(len(BUCKETS_S) + 1, dtype=np.int64)
        self.sum_s = 0.0
        self.count = 0
        self._window: list[np.ndarray] = []
        self._window_n = 0
        self.window_cap = window_cap

    def record(self, ns: np.ndarray) -> None:
        ns = np.asarray(ns, dtype=np.int64)
        if ns.size == 0:
            return
        idx = np.searchsorted(self._edges, ns, side="left")
        counts = np.bincount(idx, minlength=len(BUCKETS_S) + 1)
        with self._lock:
            self.bucket_counts += counts
            self.sum_s += float(ns.sum()) / 1e9
            self.count += int(ns.size)
            self._window.append(ns)
            self._window_n += ns.size
            while self._window_n > self.window_cap and len(self._window) > 1:
                self._window_n -= self._window.pop(0).size

    def take_window(self) -> np.ndarray:
        with self._lock:
            w = self._window
            self._window, self._window_n = [], 0
        return np.concatenate(w) if w else np.zeros(0, dtype=np.int64)

    def histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (le, count) buckets and the sum in seconds."""
        with self._lock:
            cum = np.cumsum(self.bucket_counts).tolist()
            s = self.sum_s
        out = [(repr(b), c) for b, c in zip(BUCKETS_S, cum[:-1])]
        out.append(("+Inf", cum[-1]))
        return out, s


def percentiles_ms(ns: np.ndarray) -> dict:
    if ns.size == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    p = np.percentile(ns, [50, 90, 99]) / 1e6
    return {"n": int(ns.size), "p50": round(float(p[0]), 3), "p90": round(float(p[1]), 3),
            "p99": round(float(p[2]), 3), "max": round(float(ns.max()) / 1e6, 3)}


def iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}+0000"


class StatsReporter:
    """Periodic stats records: rates over the interval, latency percentiles, per-model counters."""

    RATE_KEYS = ("packets", "wire_bytes", "kernel_packets", "kernel_drops", "connections", "snapshots",
                 "flows_evicted")

    def __init__(self, snapshot: Callable[[], dict], latency: LatencyStats, path: str = "", to_log: bool = True) -> None:
        self.snapshot = snapshot
        self.latency = latency
        self.to_log = to_log
        self.file = EventFile(path) if path else None
        self._prev: dict | None = None
        self._prev_t = time.monotonic()
        self.records = 0
        self._reported: str | None = None

    def reconfigure(self, path: str, to_log: bool) -> None:
        if self.file is not None and self.file.path != path:
            self.file.close()
            self.file = None
        if path and self.file is None:
            self.file = EventFile(path)
        self.to_log = to_log

    def reopen(self) -> None:
        if self.file is not None:
            self.file.open()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def tick(self) -> dict:
        """Build one record, write it to the stats file and the log; returns it."""
        now = time.monotonic()
        snap = self.snapshot()
        dt = max(now - self._prev_t, 1e-9)
        prev = self._prev or {}
        rec = {"timestamp": iso_now(), "interval_s": round(dt, 3)}
        rec.update(snap)
        for k in self.RATE_KEYS:
            if k in snap:
                rec[f"{k}_per_s"] = round((snap[k] - prev.get(k, 0)) / dt, 1)
        for name, m in snap.get("models", {}).items():
            pm = prev.get("models", {}).get(name, {})
            m["predictions_per_s"] = round((m["predictions"] - pm.get("predictions", 0)) / dt, 1)
        rec["latency_ms"] = percentiles_ms(self.latency.take_window())
        self._prev, self._prev_t = snap, now
        self.records += 1
        if self.file is not None:
            ok = self.file.write(json.dumps(rec, separators=(",", ":")) + "\n", 1)
            if not ok and self._reported != self.file.last_error:
                self._reported = self.file.last_error
                log.error("stats file: %s", self.file.last_error)
            elif ok:
                self._reported = None
        if self.to_log:
            log.info("%s", summary_line(rec))
        return rec


def summary_line(rec: dict) -> str:
    lat = rec.get("latency_ms", {})
    models = "; ".join(
        f"{n} {m.get('version') or '-'}: {m['predictions']:,} pred ({m.get('predictions_per_s', 0):,.0f}/s), "
        f"{m['alerts']:,} alerts, queue {m['queued']}, dropped {m['queue_dropped']:,}"
        for n, m in rec.get("models", {}).items())
    lat_s = f"latency p50 {lat['p50']} ms p99 {lat['p99']} ms" if lat.get("n") else "latency -"
    return (f"packets {rec.get('packets', 0):,} ({rec.get('packets_per_s', 0):,.0f}/s), kernel drops "
            f"{rec.get('kernel_drops', 0):,}, connections {rec.get('connections', 0):,} "
            f"({rec.get('connections_per_s', 0):,.0f}/s), flows {rec.get('flows_active', 0):,} "
            f"(evicted {rec.get('flows_evicted', 0):,}); {models or 'no models'}; "
            f"{lat_s}")


# --------------------------------------------------------------------------- Prometheus


class PrometheusCollector:
    """prometheus_client collector over the service snapshot (evaluated at scrape time)."""

    def __init__(self, snapshot: Callable[[], dict], latency: LatencyStats) -> None:
        self.snapshot = snapshot
        self.latency = latency

    def describe(self):  # no describe-time collection (it would call snapshot at registration)
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        s = self.snapshot()

        def counter(name, doc, value, labels=None, lv=None):
            c = CounterMetricFamily(name, doc, labels=labels)
            if labels:
                for vals, v in lv:
                    c.add_metric(vals, v)
            else:
                c.add_metric([], value)
            return c

        yield counter("malsensor_packets", "Packets decoded", s["packets"])
        yield counter("malsensor_wire_bytes", "Bytes on the wire of decoded packets", s["wire_bytes"])
        yield counter("malsensor_kernel_packets", "Packets the kernel passed to the capture sockets",
                      s["kernel_packets"])
        yield counter("malsensor_kernel_drops", "Packets the kernel dropped (ring full)", s["kernel_drops"])
        yield counter("malsensor_connections", "Connections finished", s["connections"])
        yield counter("malsensor_snapshots", "Early snapshots of live connections", s["snapshots"])
        yield counter("malsensor_malformed_packets", "Packets not decodable, by reason", None, ["reason"],
                      [([r], v) for r, v in s.get("malformed_by_reason", {}).items()])
        yield counter("malsensor_flows_evicted", "Connections ended early because the flow table was full",
                      s.get("flows_evicted", 0))
        g = GaugeMetricFamily("malsensor_flows_active", "Connections tracked now")
        g.add_metric([], s["flows_active"])
        yield g
        models = s.get("models", {})
        for key, doc in (("predictions", "Predictions written"), ("alerts", "Predictions that are alerts"),
                         ("queue_dropped", "Connections dropped because the model's queue was full"),
                         ("unserved", "Connections that arrived while the model had no artifact"),
                         ("swaps", "Artifacts swapped in (including the first load)"),
                         ("rejected", "Artifacts rejected (corrupt, mismatched, canary failed)"),
                         ("batches", "Inference batches run")):
            yield counter(f"malsensor_model_{key}", doc, None, ["model"],
                          [([n], m[key]) for n, m in models.items()])
        yield counter("malsensor_model_view", "What each model's view counts (windows closed, closed early, "
                      "rows cut...)", None, ["model", "counter"],
                      [([n, k], v) for n, m in models.items() for k, v in m.get("view", {}).items()])
        q = GaugeMetricFamily("malsensor_model_queue_depth", "Connections waiting for the model", labels=["model"])
        info = GaugeMetricFamily("malsensor_model_info", "The artifact version each model serves (value 1)",
                                 labels=["model", "version", "kind"])
        for n, m in models.items():
            q.add_metric([n], m["queued"])
            if m.get("version"):
                info.add_metric([n, m["version"], m.get("kind") or ""], 1)
        yield q
        yield info
        outs = s.get("outputs", {})
        for key, doc in (("lines", "Events written"), ("errors", "Open/write failures"),
                         ("lost", "Events lost because the output failed")):
            yield counter(f"malsensor_output_{key}", doc, None, ["path"], [([p], o[key]) for p, o in outs.items()])
        yield counter("malsensor_output_dropped", "Events a redis output dropped, by reason (queue_full, spool_full, "
                      "spool_error)", None, ["path", "reason"],
                      [([p, r], v) for p, o in outs.items() for r, v in o.get("dropped", {}).items()])
        for key, doc in (("spooled", "Events waiting in a redis output's spool on disk"),
                         ("spool_bytes", "Bytes of a redis output's spool on disk"),
                         ("queued", "Events waiting in memory for a redis output's sender"),
                         ("connected", "1 while a redis output's server answers")):
            g = GaugeMetricFamily(f"malsensor_output_{key}", doc, labels=["path"])
            for p, o in outs.items():
                if o.get("kind") == "redis":
                    g.add_metric([p], float(o[key]))
            yield g
        yield counter("malsensor_config_reloads", "Configuration reloads by result", None, ["result"],
                      [([r], v) for r, v in s.get("reloads", {}).items()])
        h = HistogramMetricFamily("malsensor_event_latency_seconds",
                                  "Connection end (leaving the tracker) to event written")
        buckets, total = self.latency.histogram()
        h.add_metric([], buckets, total)
        yield h
        up = GaugeMetricFamily("malsensor_healthy", "1 when every pipeline stage makes progress")
        up.add_metric([], 1 if s.get("healthy", True) else 0)
        yield up


def start_metrics_server(listen: str, port: int, snapshot: Callable[[], dict], latency: LatencyStats):
    """Bind the endpoint (a thread of prometheus_client); returns (server, bound port)."""
    from prometheus_client import CollectorRegistry, make_wsgi_app

    from .metrics_server import serve

    reg = CollectorRegistry(auto_describe=False)
    reg.register(PrometheusCollector(snapshot, latency))
    server, _thread = serve(make_wsgi_app(reg), listen, port)  # bounded threads, timeouts
    return server, server.server_address[1]
