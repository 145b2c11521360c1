"""Dataset shards of ``proc_volume@1`` volumes (what ``malsensor-train record-proc`` writes and
the view's trainer-side reader reads). No pickle anywhere.

A dataset is a folder::

    DIR/index.json                         the index (below)
    DIR/<label>-<utc time>.proc.npz        one shard per recording

A shard is an ``.npz`` (``numpy.savez``, every array a plain dtype, read with
``allow_pickle=False``) holding, for its n volumes:

    format_version  int64 (1,)        1
    x               float32 (n, D, H, 45)  the volumes (columns: daemon/proc/columns.py)
    pid, start      int64 (n, H)      each row's process (pid -1: padding; start: clock ticks after boot)
    comm            <U15 (n, H)       each row's process name
    start_ns, end_ns int64 (n,)       wall time of the window's first and last sample
    processes       int64 (n,)        processes in the window before the cap at H
    label           <U (n,)           the recording's label

``index.json``: ``{"format": "malsensor.proc_shards", "version": 1, "view": "proc_volume@1",
"steps": D, "processes": H, "columns": [...], "shards": [{"file", "label", "volumes",
"sha256", "bytes", "start_ns", "end_ns", "interval", "host"}, ...]}``. A shard listed there must
match its checksum; a shard not listed (copied in by hand) is read with a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import zipfile
from pathlib import Path

import numpy as np

from malsensor.daemon.proc.columns import COLUMNS, W
from malsensor.daemon.views.proc_volume import COMM_LEN

from ..errors import TrainError
from .table import Part

log = logging.getLogger("malsensor.train")
FORMAT = "malsensor.proc_shards"
VERSION = 1
SUFFIX = ".proc.npz"
INDEX = "index.json"
ARRAYS = ("format_version", "x", "pid", "start", "comm", "start_ns", "end_ns", "processes", "label")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_index(folder: Path) -> dict | None:
    p = folder / INDEX
    if not p.exists():
        return None
    try:
        idx = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainError(f"{p}: not a readable index ({e})") from None
    if not isinstance(idx, dict) or idx.get("format") != FORMAT:
        raise TrainError(f"{p}: format: expected {FORMAT!r}, got {idx.get('format') if isinstance(idx, dict) else idx!r}")
    if idx.get("version") != VERSION:
        raise TrainError(f"{p}: version: {idx.get('version')!r} is not known (this reader reads {VERSION})")
    return idx


def write_shard(folder: Path, label: str, vols: list, interval: float) -> Path:
    """Writes one shard of ``vols`` (daemon.proc.volume.Volume) and adds it to the index
    (both written to a temporary name, fsynced and renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    idx = read_index(folder)
    d, h, _ = vols[0].x.shape
    if idx is None:
        idx = {"format": FORMAT, "version": VERSION, "view": "proc_volume@1", "steps": d, "processes": h,
               "columns": list(COLUMNS), "shards": []}
    elif (idx.get("steps"), idx.get("processes")) != (d, h):
        raise TrainError(f"{folder / INDEX}: holds volumes of {idx.get('steps')} steps x {idx.get('processes')} "
                         f"processes; this recording makes {d} x {h}: record into another folder")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "unlabelled"
    stem = f"{safe}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
    listed = {s.get("file") for s in idx["shards"]}
    name, k = f"{stem}{SUFFIX}", 0
    while (folder / name).exists() or name in listed:  # two recordings in one second
        k += 1
        name = f"{stem}-{k}{SUFFIX}"
    path = folder / name
    arrays = {
        "format_version": np.array([VERSION], np.int64),
        "x": np.stack([v.x for v in vols]).astype(np.float32),
        "pid": np.stack([v.pid for v in vols]).astype(np.int64),
        "start": np.stack([v.start for v in vols]).astype(np.int64),
        "comm": np.array([[c[:COMM_LEN] for c in v.comm] for v in vols], dtype=f"U{COMM_LEN}"),
        "start_ns": np.array([v.wall_ns for v in vols], np.int64),
        "end_ns": np.array([v.end_ns for v in vols], np.int64),
        "processes": np.array([v.processes for v in vols], np.int64),
        "label": np.array([label] * len(vols)),
    }
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    idx["shards"].append({"file": name, "label": label, "volumes": len(vols), "sha256": _sha256(path),
                          "bytes": path.stat().st_size, "start_ns": int(arrays["start_ns"][0]),
                          "end_ns": int(arrays["end_ns"][-1]), "interval": interval, "host": socket.gethostname()})
    itmp = folder / f".{INDEX}.tmp"
    with open(itmp, "w", encoding="utf-8") as f:
        json.dump(idx, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(itmp, folder / INDEX)
    return path


def load_shard(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one shard, checked (TrainError naming the file and what is wrong)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [a for a in ARRAYS if a not in z.files]
            if missing:
                raise TrainError(f"{path}: not a proc shard: missing {', '.join(missing)}")
            got = {a: z[a] for a in ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise TrainError(f"{path}: not a readable shard ({type(e).__name__}: {e})") from None
    v = int(got["format_version"][0]) if got["format_version"].size else -1
    if v != VERSION:
        raise TrainError(f"{path}: format_version {v} is not known (this reader reads {VERSION})")
    x = got["x"]
    n = x.shape[0] if x.ndim == 4 else -1
    if x.ndim != 4 or x.shape[3] != W:
        raise TrainError(f"{path}: x has shape {list(x.shape)}, expected [n, steps, processes, {W}]")
    for a in ("pid", "start", "comm"):
        if got[a].shape != (n, x.shape[2]):
            raise TrainError(f"{path}: {a} has shape {list(got[a].shape)}, expected {[n, x.shape[2]]}")
    for a in ("start_ns", "end_ns", "processes", "label"):
        if got[a].shape != (n,):
            raise TrainError(f"{path}: {a} has shape {list(got[a].shape)}, expected [{n}]")
    return got


class ProcShardReader:
    """The trainer-side reader of ``proc_volume@1``: ``*.proc.npz`` shards."""

    description = "proc shards (*.proc.npz)"

    def file_type(self, path: Path) -> str | None:
        return "proc_shard" if path.name.endswith(SUFFIX) and not path.name.startswith(".") else None

    def read(self, path: Path, file_type: str, view, opts, stats) -> Part:
        try:
            got, interval = self._checked(Path(path), view)
        except TrainError as e:
            stats.bad(str(path), str(e).removeprefix(f"{path}: "), opts.skip_bad)
            return Part(str(path), np.zeros((0, *view.shape), np.float32), [])
        x = got["x"]
        bad = ~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
        if bad.any():
            stats.nonfinite_values += int(bad.sum())
            stats.bad(f"{path}: volume {int(np.flatnonzero(bad)[0])}", "non-finite values", opts.skip_bad)
            got = {k: v[~bad] if k != "format_version" else v for k, v in got.items()}
        stats.rows_read += int(got["x"].shape[0])
        return Part(str(path), got["x"], [str(s) for s in got["label"].tolist()],
                    ts=got["end_ns"].astype(np.float64) / 1e9, sample_interval=interval)

    def _checked(self, path: Path, view) -> tuple[dict[str, np.ndarray], float | None]:
        """The shard's arrays and its sample interval (from the index; None for a shard not listed)."""
        idx = read_index(path.parent)
        entry = None if idx is None else next((s for s in idx.get("shards", []) if s.get("file") == path.name), None)
        if entry is None:
            log.warning("%s: not listed in %s (read without a checksum)", path, path.parent / INDEX)
        elif entry.get("sha256") != _sha256(path):
            raise TrainError(f"{path}: sha256 differs from {path.parent / INDEX} (changed or truncated)")
        got = load_shard(path)
        if tuple(got["x"].shape[1:]) != tuple(view.shape):
            raise TrainError(f"{path}: volumes of shape {list(got['x'].shape[1:])}; the model reads "
                             f"{view.ref} with shape {list(view.shape)} (set the model's steps/processes)")
        interval = entry.get("interval") if entry is not None else None
        return got, float(interval) if isinstance(interval, (int, float)) and interval > 0 else None


READER = ProcShardReader()
