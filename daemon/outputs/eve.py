"""Prediction events: EVE-style JSON objects and plain label lines, and the files they go to.

``eve`` (one object per line, shaped like Suricata's EVE so that log shippers take it
unchanged)::

    {"timestamp": "2024-05-01T10:00:00.123456+0000", "flow_id": 1234, "event_type": "prediction",
     "src_ip": ..., "src_port": ..., "dest_ip": ..., "dest_port": ..., "proto": "TCP",
     "src_mac": ..., "dest_mac": ...,
     "prediction": {"model", "version", "label", "class_id", "probability", "topk": [[label, p], ...],
                    "alert", "trigger"},
     "flow": {"start", "end", "end_reason", "pkts_toserver", "pkts_toclient", "bytes_toserver",
              "bytes_toclient"},
     "conn": {"dur": ..., ... the 17 features}}

``timestamp`` is the time of the connection's last packet (when the prediction became
possible), UTC, in Suricata's format. ``flow_id`` is a 52-bit hash of the 5-tuple and the
first packet time: the early (snapshot) prediction and the end prediction of one connection
share it, and it fits a JSON number exactly. ``label``: one JSON string per line, the
predicted label (``"unknown_<id>"`` when a class id has no label).

:class:`EventFile` writes whole lines only: one ``write`` per batch on an ``O_APPEND``
descriptor, and if the write fails part way (disk full) the file is cut back to where the
batch started, so a reader never sees a torn line and lines already written stay.
"""
from __future__ import annotations

import errno
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..flows import layout as L
from ..views.conn import CONN_COLUMNS
from .rows import end_reason_name, format_ip, format_mac

PROTO_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH", 58: "IPv6-ICMP",
               132: "SCTP"}
MASK52 = (1 << 52) - 1


@dataclass
class PredictionBatch:
    """Predictions of one model for a batch of connections (what a model worker hands the writer)."""

    model: str
    version: str
    trigger: str
    labels: Sequence[str]
    records: np.ndarray      # int64 (n, layout.N_COLS)
    features: np.ndarray     # float64 (n, 17)
    probs: np.ndarray        # float32 (n, n_classes)
    class_id: np.ndarray     # int64 (n,)
    topk: np.ndarray         # int64 (n, k), best first
    alert: np.ndarray        # bool (n,)
    t_ns: np.ndarray         # int64 (n,), monotonic ns when the connection left the tracker

    @property
    def n(self) -> int:
        return int(self.records.shape[0])

    def label_of(self, cid: int) -> str:
        return self.labels[cid] if 0 <= cid < len(self.labels) else f"unknown_{cid}"


def flow_ids(records: np.ndarray) -> np.ndarray:
    """Stable 52-bit ids (splitmix64 over the key columns and the first packet time)."""
    cols = (L.SRC_HI, L.SRC_LO, L.DST_HI, L.DST_LO, L.KEY, L.FIRST_TS)
    h = np.full(records.shape[0], 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in cols:
            h ^= records[:, c].astype(np.uint64)
            h += np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return (h & np.uint64(MASK52)).astype(np.int64)


class _Timestamps:
    """Epoch ns -> ``YYYY-MM-DDTHH:MM:SS.uuuuuu+0000`` with the per-second prefix cached."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, ts_ns: int) -> str:
        sec, ns = divmod(ts_ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{ns // 1000:06d}+0000"


_PREFIXES: dict[int, str] = {}


def _timestamps(ts_ns: np.ndarray) -> list[str]:
    """Vectorised :class:`_Timestamps` over a column (one strftime per distinct second)."""
    sec, ns = np.divmod(ts_ns, 1_000_000_000)
    pre = _PREFIXES
    if len(pre) > 4096:
        pre.clear()
    for s in np.unique(sec).tolist():
        if s not in pre:
            pre[s] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    return [f"{pre[s]}.{u:06d}+0000" for s, u in zip(sec.tolist(), (ns // 1000).tolist())]


def proto_name(p: int) -> str:
    return PROTO_NAMES.get(p, str(p))


def eve_event(pb: PredictionBatch, j: int, *, features: bool = True) -> dict:
    """Row ``j`` as an event dict: the reference that :func:`eve_lines` formats quickly."""
    r = pb.records[j].tolist()
    key = r[L.KEY]
    p = pb.probs[j].astype(np.float64).tolist()
    c = int(pb.class_id[j])
    ts = _Timestamps()
    ev = {
        "timestamp": ts(r[L.LAST_TS]),
        "flow_id": int(flow_ids(pb.records[j:j + 1])[0]),
        "event_type": "prediction",
        "src_ip": format_ip(r[L.SRC_HI], r[L.SRC_LO]),
        "src_port": (key >> 16) & 0xFFFF,
        "dest_ip": format_ip(r[L.DST_HI], r[L.DST_LO]),
        "dest_port": key & 0xFFFF,
        "proto": proto_name((key >> 32) & 0xFF),
        "src_mac": format_mac(r[L.SRC_MAC]),
        "dest_mac": format_mac(r[L.DST_MAC]),
        "prediction": {
            "model": pb.model, "version": pb.version, "label": pb.label_of(c), "class_id": c,
            "probability": p[c], "topk": [[pb.label_of(k), p[k]] for k in pb.topk[j].tolist()],
            "alert": bool(pb.alert[j]), "trigger": pb.trigger,
        },
        "flow": {
            "start": ts(r[L.FIRST_TS]), "end": ts(r[L.LAST_TS]), "end_reason": end_reason_name(r[L.END]),
            "pkts_toserver": r[L.S_PKTS], "pkts_toclient": r[L.D_PKTS],
            "bytes_toserver": r[L.S_IP_BYTES], "bytes_toclient": r[L.D_IP_BYTES],
        },
    }
    if features:
        ev["conn"] = {k: (v if np.isfinite(v) else None) for k, v in zip(CONN_COLUMNS, pb.features[j].tolist())}
    return ev


_PREFIX = ('{{"timestamp":"{}","flow_id":{},"event_type":"prediction","src_ip":"{}","src_port":{},'
           '"dest_ip":"{}","dest_port":{},"proto":"{}","src_mac":"{}","dest_mac":"{}","prediction":')
_PRED = '{{"model":{},"version":{},"label":{},"class_id":{},"probability":{},"topk":[{}],"alert":{},"trigger":{}}}'
_FLOW = (',"flow":{{"start":"{}","end":"{}","end_reason":"{}","pkts_toserver":{},"pkts_toclient":{},'
         '"bytes_toserver":{},"bytes_toclient":{}}}')
_CONN = ',"conn":{{' + ",".join(f'"{c}":{{}}' for c in CONN_COLUMNS) + "}}"
_KEY_COLS = [L.SERIAL, L.FIRST_TS, L.LAST_TS, L.SRC_LO, L.DST_LO, L.KEY, L.END]


class _Cache(dict):
    """A small memo for address/MAC text (a sensor sees the same hosts over and over)."""

    LIMIT = 65536

    def get_or(self, key, make):
        v = self.get(key)
        if v is None:
            if len(self) >= self.LIMIT:
                self.clear()
            v = self[key] = make(*key) if isinstance(key, tuple) else make(key)
        return v


_IPS = _Cache()
_MACS = _Cache()


class PartsCache:
    """The text of a connection that does not depend on the model (addresses, times, the flow and
    conn objects), kept for a while so that the second model's event for the same connection
    reuses it: with two models, most of the formatting is done once per connection.

    Keyed by (serial, first/last time, addresses, ports, end): the early (snapshot) and end rows
    of one connection differ. Two generations of at most ``generation`` rows each are kept.
    Not thread-safe: the writer thread owns it."""

    def __init__(self, generation: int = 16384) -> None:
        self.generation = generation
        self._cur: dict = {}
        self._old: dict = {}
        self.hits = 0
        self.misses = 0

    def get(self, key):
        v = self._cur.get(key)
        if v is None:
            v = self._old.get(key)
        return v

    def put(self, key, value) -> None:
        if len(self._cur) >= self.generation:
            self._old, self._cur = self._cur, {}
        self._cur[key] = value


def _conn_texts(ftr: np.ndarray) -> list[str]:
    conn = _CONN.format
    if np.isfinite(ftr).all():
        return [conn(*r) for r in ftr.tolist()]
    rows = np.where(np.isfinite(ftr), ftr, np.nan).tolist()  # JSON has no NaN/Infinity: null
    return [conn(*("null" if v != v else repr(v) for v in r)) for r in rows]


def _parts(rec: np.ndarray, ftr: np.ndarray | None) -> list[list]:
    """[prefix, flow, conn-or-None] per row."""
    fid = flow_ids(rec).tolist()
    key = rec[:, L.KEY]
    sport = ((key >> 16) & 0xFFFF).tolist()
    dport = (key & 0xFFFF).tolist()
    proto = [proto_name(p) for p in ((key >> 32) & 0xFF).tolist()]
    ip = _IPS.get_or
    src = [ip((h, lo), format_ip) for h, lo in zip(rec[:, L.SRC_HI].tolist(), rec[:, L.SRC_LO].tolist())]
    dst = [ip((h, lo), format_ip) for h, lo in zip(rec[:, L.DST_HI].tolist(), rec[:, L.DST_LO].tolist())]
    mac = _MACS.get_or
    smac = [mac(m, format_mac) for m in rec[:, L.SRC_MAC].tolist()]
    dmac = [mac(m, format_mac) for m in rec[:, L.DST_MAC].tolist()]
    last = _timestamps(rec[:, L.LAST_TS])
    first = _timestamps(rec[:, L.FIRST_TS])
    reason = [end_reason_name(e) for e in rec[:, L.END].tolist()]
    spk, dpk = rec[:, L.S_PKTS].tolist(), rec[:, L.D_PKTS].tolist()
    sby, dby = rec[:, L.S_IP_BYTES].tolist(), rec[:, L.D_IP_BYTES].tolist()
    prefix, flow = _PREFIX.format, _FLOW.format
    conns = _conn_texts(ftr) if ftr is not None else [None] * rec.shape[0]
    return [[prefix(last[j], fid[j], src[j], sport[j], dst[j], dport[j], proto[j], smac[j], dmac[j]),
             flow(first[j], last[j], reason[j], spk[j], dpk[j], sby[j], dby[j]), conns[j]]
            for j in range(rec.shape[0])]


def eve_lines(pb: PredictionBatch, *, features: bool = True, select: np.ndarray | None = None,
              cache: PartsCache | None = None) -> str:
    """EVE lines (with the final newline) for the rows of ``pb`` (or the rows in ``select``).

    Equal, once parsed, to :func:`eve_event` for each row; built from format templates (a few
    microseconds per event instead of a JSON encoder walking dicts), the model-independent
    parts taken from ``cache`` when another model's event already made them."""
    idx = np.arange(pb.n) if select is None else np.flatnonzero(select)
    if idx.size == 0:
        return ""
    rec = pb.records[idx]
    if cache is None:
        parts = _parts(rec, pb.features[idx] if features else None)
    else:
        keys = list(map(tuple, rec[:, _KEY_COLS].tolist()))
        parts = [cache.get(k) for k in keys]
        miss = [j for j, pt in enumerate(parts) if pt is None]
        cache.hits += len(parts) - len(miss)
        cache.misses += len(miss)
        if miss:
            sel = idx[miss]
            for j, pt in zip(miss, _parts(pb.records[sel], pb.features[sel] if features else None)):
                parts[j] = pt
                cache.put(keys[j], pt)
        if features:
            lack = [j for j, pt in enumerate(parts) if pt[2] is None]
            if lack:
                for j, text in zip(lack, _conn_texts(pb.features[idx[lack]])):
                    parts[j][2] = text
    probs = pb.probs[idx].astype(np.float64).tolist()
    cls = pb.class_id[idx].tolist()
    top = pb.topk[idx].tolist()
    alert = ["true" if a else "false" for a in pb.alert[idx].tolist()]
    jlab: dict[int, str] = {}

    def lab(c: int) -> str:
        t = jlab.get(c)
        if t is None:
            t = jlab[c] = json.dumps(pb.label_of(c))
        return t

    model, version, trigger = json.dumps(pb.model), json.dumps(pb.version), json.dumps(pb.trigger)
    pred = _PRED.format
    out = []
    for j, pt in enumerate(parts):
        p = probs[j]
        c = cls[j]
        topk = ",".join(f"[{lab(k)},{p[k]!r}]" for k in top[j])
        line = pt[0] + pred(model, version, lab(c), c, repr(p[c]), topk, alert[j], trigger) + pt[1]
        out.append(line + pt[2] + "}" if features else line + "}")
    return "\n".join(out) + "\n"


def label_lines(pb: PredictionBatch, select: np.ndarray | None = None) -> str:
    """One JSON string per row: the predicted label."""
    cls = pb.class_id if select is None else pb.class_id[select]
    if cls.size == 0:
        return ""
    cache: dict[int, str] = {}
    out = []
    for c in cls.tolist():
        s = cache.get(c)
        if s is None:
            s = cache[c] = json.dumps(pb.label_of(c))
        out.append(s)
    return "\n".join(out) + "\n"


class EventFile:
    """An append-only events file written in whole lines; reopened by path on demand.

    Not thread-safe: one writer thread owns it. Failures (cannot open, disk full) are
    counted and remembered in ``last_error``; the caller decides how loudly to report.
    """

    RETRY_OPEN_S = 5.0

    def __init__(self, path: str, mode: int = 0o640) -> None:
        self.path = path
        self.mode = mode
        self.fd: int | None = None
        self.lines = 0
        self.bytes = 0
        self.errors = 0
        self.lost_lines = 0
        self.last_error: str | None = None
        self._next_open = 0.0
        self._lock = threading.Lock()

    def open(self) -> bool:
        """(Re)open the file; False (and ``last_error``) when it cannot be opened."""
        self.close()
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.mode)
        except OSError as e:
            self.fd = None
            self.errors += 1
            self.last_error = f"cannot open {self.path}: {e.strerror or e}"
            self._next_open = time.monotonic() + self.RETRY_OPEN_S
            return False
        self.last_error = None
        return True

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def write(self, text: str, n_lines: int) -> bool:
        """Append whole lines. On failure nothing of this call stays in the file."""
        if not text:
            return True
        if self.fd is None:
            if time.monotonic() < self._next_open or not self.open():
                self.lost_lines += n_lines
                return False
        data = text.encode("utf-8")
        fd = self.fd
        assert fd is not None
        try:
            start = os.fstat(fd).st_size
        except OSError as e:
            return self._failed(e, n_lines)
        done = 0
        try:
            while done < len(data):
                k = os.write(fd, data[done:] if done else data)
                if k <= 0:  # pragma: no cover - regular files do not return 0
                    raise OSError(errno.EIO, "short write")
                done += k
        except OSError as e:
            if done:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
            return self._failed(e, n_lines)
        self.lines += n_lines
        self.bytes += len(data)
        return True

    def _failed(self, e: OSError, n_lines: int) -> bool:
        self.errors += 1
        self.lost_lines += n_lines
        self.last_error = f"writing {self.path}: {e.strerror or e}"
        return False
