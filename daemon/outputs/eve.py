"""Prediction events: EVE-style JSON objects and plain label lines, and the files they go to.

Every event has one envelope (``timestamp``, ``event_type``, ``host``, and ``prediction``
with the model's name and version, ``label``, ``probability``, ``alert`` and ``topk``)
plus the fields of its entity, written by the formatter registered for that entity
(:mod:`malsensor.daemon.outputs.events`). This module formats *connection* events, in a
numba kernel (``eve``: one object per line, shaped like Suricata's EVE so that log
shippers take it unchanged)::

    {"timestamp": "2024-05-01T10:00:00.123456+0000", "flow_id": 1234,
     "community_id": "1:wCb3OG7yAFWelaUydu0D+125CLM=", "event_type": "prediction", "host": "sensor1",
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
share it, and it fits a JSON number exactly. ``community_id`` is the connection's Community ID v1
(:mod:`.community_id`; the seed is ``[[output]] community_id_seed``), the same text Zeek's and
Suricata's logs carry for it, so analysts can pivot between them. ``label``: one JSON string per line, the
predicted label (``"unknown_<id>"`` when a class id has no label).

:class:`EventFile` writes whole lines only: one ``write`` per batch on an ``O_APPEND``
descriptor, and if the write fails part way (disk full) the file is cut back to where the
batch started, so a reader never sees a torn line and lines already written stay.
"""
from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from ..jit import njit

from ..flows import layout as L
from ..intrinsics import borrowed
from ..protocols import proto_name
from ..splitmix import mix64
from ..views.conn import CONN_COLUMNS
from .community_id import TEXT_LEN as COMMUNITY_ID_LEN
from .community_id import WORK_LEN as COMMUNITY_ID_WORK
from .community_id import check_seed, community_ids, put_community_id
from .jsontext import (FLOAT_MAX, INT_MAX, IP_MAX, MAC_MAX, TIME_MAX, TextTable, format_rows, put_float, put_int,
                       put_mac, put_text, put_time)
from .rows import END_REASON_TEXT, end_reason_name, format_ip, format_mac, put_endpoints

MASK52 = (1 << 52) - 1


@dataclass
class PredictionBatch:
    """Predictions of one model for a batch of entities (what a model worker hands the writer)."""

    model: str
    version: str
    trigger: str
    labels: Sequence[str]
    keys: np.ndarray         # what identifies each entity (connections: int64 flow records (n, layout.N_COLS))
    detail: np.ndarray       # what the event shows of the inputs (connections: float64 (n, 17) features)
    probs: np.ndarray        # float32 (n, n_classes)
    class_id: np.ndarray     # int64 (n,)
    topk: np.ndarray         # int64 (n, k), best first
    alert: np.ndarray        # bool (n,)
    t_ns: np.ndarray         # int64 (n,), monotonic ns when the entity left its source
    entity: str = "connection"  # picks the event formatter
    host: str = ""           # the sensor's name (the envelope's "host")

    @property
    def n(self) -> int:
        return int(self.keys.shape[0])

    def label_of(self, cid: int) -> str:
        return self.labels[cid] if 0 <= cid < len(self.labels) else f"unknown_{cid}"


_FLOW_ID_COLS = (L.SRC_HI, L.SRC_LO, L.DST_HI, L.DST_LO, L.KEY, L.FIRST_TS)


@njit(cache=True, nogil=True)
def flow_id(r: np.ndarray) -> int:
    """A record's stable 52-bit id (splitmix64 over the key columns and the first packet time)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for c in _FLOW_ID_COLS:
        h = mix64(h, np.uint64(r[c]))
    return np.int64(h & np.uint64(MASK52))


@njit(cache=True, nogil=True)
def _flow_ids(records: np.ndarray, out: np.ndarray) -> None:
    for i in range(records.shape[0]):
        out[i] = flow_id(records[i])


def flow_ids(records: np.ndarray) -> np.ndarray:
    """:func:`flow_id` of every record."""
    out = np.empty(records.shape[0], dtype=np.int64)
    _flow_ids(np.ascontiguousarray(records, dtype=np.int64), out)
    return out


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


def eve_event(pb: PredictionBatch, j: int, *, features: bool = True, community_id_seed: int = 0) -> dict:
    """Row ``j`` as an event dict: the reference that :func:`eve_lines` formats quickly."""
    r = pb.keys[j].tolist()
    key = r[L.KEY]
    p = pb.probs[j].astype(np.float64).tolist()
    c = int(pb.class_id[j])
    ts = _Timestamps()
    ev = {
        "timestamp": ts(r[L.LAST_TS]),
        "flow_id": int(flow_ids(pb.keys[j:j + 1])[0]),
        "community_id": community_ids(pb.keys[j:j + 1], community_id_seed)[0],
        "event_type": "prediction",
        "host": pb.host,
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
        ev["conn"] = {k: (v if np.isfinite(v) else None) for k, v in zip(CONN_COLUMNS, pb.detail[j].tolist())}
    return ev


# The fixed text of an event between its values (model, version and trigger go in per batch).
_EVE_HEAD = ['{"timestamp":"', '","flow_id":', ',"community_id":"', '","event_type":"prediction","src_ip":"',
             '","src_port":', ',"dest_ip":"', '","dest_port":', ',"proto":"', '","src_mac":"', '","dest_mac":"']
(_T_PRED, _T_CLASS, _T_PROB, _T_TOPK, _T_ITEM, _T_COMMA, _T_ITEM_END, _T_ALERT, _T_TRUE, _T_FALSE, _T_FLOW, _T_END,
 _T_REASON, _T_SPK, _T_DPK, _T_SBY, _T_DBY, _T_CLOSE) = range(10, 28)
_T_CONN = 28
_T_LINE_END = _T_CONN + len(CONN_COLUMNS)
_EVE_TAIL = (',"class_id":', ',"probability":', ',"topk":[', "[", ",", "]", '],"alert":', "true", "false")
_EVE_FLOW = ('","end":"', '","end_reason":"', '","pkts_toserver":', ',"pkts_toclient":', ',"bytes_toserver":',
             ',"bytes_toclient":', "}")
_EVE_CONN = [(',"conn":{' if k == 0 else ",") + f'"{c}":' for k, c in enumerate(CONN_COLUMNS)] + ["}", "}\n"]
_PROTOS = TextTable.of([proto_name(p) for p in range(256)])


@lru_cache(maxsize=64)
def _eve_text(model: str, version: str, trigger: str, host: str) -> TextTable:
    head = [t.replace('"prediction",', f'"prediction","host":{json.dumps(host)},') for t in _EVE_HEAD]
    pred = f'","prediction":{{"model":{json.dumps(model)},"version":{json.dumps(version)},"label":'
    flow = f',"trigger":{json.dumps(trigger)}}},"flow":{{"start":"'
    return TextTable.of(head + [pred, *_EVE_TAIL, flow, *_EVE_FLOW, *_EVE_CONN])


_UNKNOWN = np.frombuffer(b'"unknown_', dtype=np.uint8).copy()


@njit(cache=True, nogil=True)
def _put_label(buf, pos, labels, labels_off, c) -> int:
    """The JSON text of class ``c``'s label; ``"unknown_<c>"`` for a class the table lacks."""
    if 0 <= c < labels_off.shape[0] - 1:
        return put_text(buf, pos, labels, labels_off, c)
    buf[pos:pos + _UNKNOWN.shape[0]] = _UNKNOWN
    pos = put_int(buf, pos + _UNKNOWN.shape[0], c)
    buf[pos] = 34  # '"'
    return pos + 1


@njit(cache=True, nogil=True, inline="always")
def _prob(probs, j, c) -> float:
    return probs[j, c] if 0 <= c < probs.shape[1] else np.nan  # (null: no such column)


@njit(cache=True, nogil=True)
def _eve_kernel(rows, rec, ftr, probs, cls, topk, alert, features, text, text_off, labels, labels_off,
                protos, protos_off, reasons, reasons_off, cid_seed, buf) -> int:
    pos = 0
    cid_work = np.zeros(COMMUNITY_ID_WORK, dtype=np.int64)
    rec, ftr, probs, buf = borrowed(rec), borrowed(ftr), borrowed(probs), borrowed(buf)
    text, text_off, labels, labels_off = borrowed(text), borrowed(text_off), borrowed(labels), borrowed(labels_off)
    protos, protos_off = borrowed(protos), borrowed(protos_off)
    reasons, reasons_off = borrowed(reasons), borrowed(reasons_off)
    for j in rows:
        r = rec[j]
        key = r[L.KEY]
        pos = put_text(buf, pos, text, text_off, 0)
        pos = put_time(buf, pos, r[L.LAST_TS])
        pos = put_text(buf, pos, text, text_off, 1)
        pos = put_int(buf, pos, flow_id(r))
        pos = put_text(buf, pos, text, text_off, 2)
        pos = put_community_id(buf, pos, rec, j, cid_seed, borrowed(cid_work))  # cid_work lives on
        pos = put_endpoints(buf, pos, rec, j, text, text_off, 3)
        pos = put_text(buf, pos, text, text_off, 7)
        pos = put_text(buf, pos, protos, protos_off, (key >> 32) & 0xFF)
        pos = put_text(buf, pos, text, text_off, 8)
        pos = put_mac(buf, pos, r[L.SRC_MAC])
        pos = put_text(buf, pos, text, text_off, 9)
        pos = put_mac(buf, pos, r[L.DST_MAC])
        c = cls[j]
        pos = put_text(buf, pos, text, text_off, _T_PRED)
        pos = _put_label(buf, pos, labels, labels_off, c)
        pos = put_text(buf, pos, text, text_off, _T_CLASS)
        pos = put_int(buf, pos, c)
        pos = put_text(buf, pos, text, text_off, _T_PROB)
        pos = put_float(buf, pos, _prob(probs, j, c))
        pos = put_text(buf, pos, text, text_off, _T_TOPK)
        for k in range(topk.shape[1]):
            if k:
                pos = put_text(buf, pos, text, text_off, _T_COMMA)
            t = topk[j, k]
            pos = put_text(buf, pos, text, text_off, _T_ITEM)
            pos = _put_label(buf, pos, labels, labels_off, t)
            pos = put_text(buf, pos, text, text_off, _T_COMMA)
            pos = put_float(buf, pos, _prob(probs, j, t))
            pos = put_text(buf, pos, text, text_off, _T_ITEM_END)
        pos = put_text(buf, pos, text, text_off, _T_ALERT)
        pos = put_text(buf, pos, text, text_off, _T_TRUE if alert[j] else _T_FALSE)
        pos = put_text(buf, pos, text, text_off, _T_FLOW)
        pos = put_time(buf, pos, r[L.FIRST_TS])
        pos = put_text(buf, pos, text, text_off, _T_END)
        pos = put_time(buf, pos, r[L.LAST_TS])
        pos = put_text(buf, pos, text, text_off, _T_REASON)
        pos = put_text(buf, pos, reasons, reasons_off, r[L.END] & 0xFF)
        pos = put_text(buf, pos, text, text_off, _T_SPK)
        pos = put_int(buf, pos, r[L.S_PKTS])
        pos = put_text(buf, pos, text, text_off, _T_DPK)
        pos = put_int(buf, pos, r[L.D_PKTS])
        pos = put_text(buf, pos, text, text_off, _T_SBY)
        pos = put_int(buf, pos, r[L.S_IP_BYTES])
        pos = put_text(buf, pos, text, text_off, _T_DBY)
        pos = put_int(buf, pos, r[L.D_IP_BYTES])
        pos = put_text(buf, pos, text, text_off, _T_CLOSE)
        if features:
            f = ftr[j]
            for k in range(f.shape[0]):
                pos = put_text(buf, pos, text, text_off, _T_CONN + k)
                pos = put_float(buf, pos, f[k])
            pos = put_text(buf, pos, text, text_off, _T_LINE_END)
        pos = put_text(buf, pos, text, text_off, _T_LINE_END + 1)
    return pos


def eve_lines(pb: PredictionBatch, *, features: bool = True, select: np.ndarray | None = None,
              community_id_seed: int = 0) -> bytes:
    """EVE lines (UTF-8, with the final newline) for the rows of ``pb`` (or the rows in ``select``).

    Equal, once parsed, to :func:`eve_event` for each row (non-finite features are ``null``);
    every value of the batch is formatted by one numba kernel (about 1-2 µs per event)."""
    rows = np.arange(pb.n, dtype=np.int64) if select is None else np.flatnonzero(select).astype(np.int64)
    if rows.size == 0:
        return b""
    text = _eve_text(pb.model, pb.version, pb.trigger, pb.host)
    n_labels = pb.probs.shape[1]  # class ids come from the probabilities' columns (checked by the kernel)
    labels = TextTable.of([json.dumps(pb.label_of(c)) for c in range(n_labels)])
    k = pb.topk.shape[1] if pb.topk.ndim == 2 else 0
    per_event = (int(text.off[-1]) + (k + 1) * (labels.longest + FLOAT_MAX + 8) + 20 * FLOAT_MAX + 3 * TIME_MAX
                 + 2 * IP_MAX + 2 * MAC_MAX + 8 * INT_MAX + _PROTOS.longest + END_REASON_TEXT.longest
                 + COMMUNITY_ID_LEN)
    args = (np.ascontiguousarray(pb.keys, dtype=np.int64), np.ascontiguousarray(pb.detail, dtype=np.float64),
            np.ascontiguousarray(pb.probs, dtype=np.float64), np.asarray(pb.class_id, dtype=np.int64),
            np.ascontiguousarray(pb.topk, dtype=np.int64).reshape(pb.n, k), np.asarray(pb.alert, dtype=np.bool_),
            features, text.blob, text.off, labels.blob, labels.off, _PROTOS.blob, _PROTOS.off,
            END_REASON_TEXT.blob, END_REASON_TEXT.off, check_seed(community_id_seed))
    return format_rows(rows.size, per_event, lambda a, b, buf: _eve_kernel(rows[a:b], *args, buf))


def label_lines(pb: PredictionBatch, select: np.ndarray | None = None) -> bytes:
    """One JSON string per row: the predicted label (UTF-8 lines)."""
    cls = pb.class_id if select is None else pb.class_id[select]
    if cls.size == 0:
        return b""
    cache: dict[int, str] = {}
    out = []
    for c in cls.tolist():
        s = cache.get(c)
        if s is None:
            s = cache[c] = json.dumps(pb.label_of(c))
        out.append(s)
    return ("\n".join(out) + "\n").encode()


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

    def write(self, text: str | bytes, n_lines: int) -> bool:
        """Append whole lines (str, or UTF-8 bytes). On failure nothing of this call stays in the file."""
        if not text:
            return True
        if self.fd is None:
            if time.monotonic() < self._next_open or not self.open():
                self.lost_lines += n_lines
                return False
        data = text if isinstance(text, bytes) else text.encode("utf-8")
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
