"""Assemble a :class:`Dataset` for a view from files and folders.

The view's trainer-side reader (``View.reader``) says which files it reads and how; the
connection views' (data/readers.py) recognise files by name: ``*.jsonl``/``*.ndjson``/
``*.json`` rows, ``*.csv`` and ``*.parquet``/``*.pq`` tables, captures (``*.pcap``,
``*.pcapng``, ``*.cap``, optionally ``.gz``). A dataset folder (``malsensor-train dataset``,
data/shards.py) stands for the files it was built from. A folder is searched recursively (sorted, so
the order and the digest are reproducible).
Cleaning, applied and counted here: missing and non-finite values become 0 (what
the daemon's views emit for undefined values, and what the exported model does to
non-finite inputs), unlabelled rows are dropped, duplicate rows are counted (and
dropped with ``dedup``).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError
from .labels import Labeller, LabelSpec
from .shards import dataset_shards, is_dataset_dir, read_shard
from .table import DataStats, Dataset

log = logging.getLogger("malsensor.train.data")


@dataclass(frozen=True)
class DataOptions:
    labels: LabelSpec = field(default_factory=LabelSpec)
    skip_bad: bool = False
    dedup: bool = False
    semantics: str = "malsensor"          # for captures run through the extractor
    require_labels: bool = True           # predict may run on unlabelled rows
    merge: dict[str, str] = field(default_factory=dict)  # label -> replacement
    workers: int = 0                      # readers with read_all (pt samples): processes, 0 = one per core


def view_reader(view: ViewInfo):
    """The trainer-side reader the view names (``View.reader``: ``module:attribute``, or the
    object itself), from the view registry."""
    from malsensor.daemon.views.base import VIEWS

    spec = VIEWS.find(view.ref)
    if spec is None:
        raise TrainError(f"view {view.ref} is not registered (views: {', '.join(VIEWS.names())})")
    reader = spec.reader
    if isinstance(reader, str):
        if not reader:
            raise TrainError(f"view {view.ref} names no trainer-side reader: it cannot be read from files")
        module, _, attr = reader.partition(":")
        try:
            reader = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise TrainError(f"view {view.ref}: its reader {spec.reader!r} cannot be loaded ({e})") from None
    return reader


def list_files(paths: Sequence[str | Path], reader) -> list[tuple[Path, str]]:
    """Every data file under ``paths`` that ``reader`` reads, with its file type; folders are
    walked recursively."""
    what = getattr(reader, "description", "data")
    out: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if is_dataset_dir(p):  # a `malsensor-train dataset` folder: its shards stand for its inputs
            out.extend((ref, "shard") for ref in dataset_shards(p))
        elif p.is_dir():
            found = [(f, t) for f in sorted(p.rglob("*")) if f.is_file() and (t := reader.file_type(f))
                     and not f.name.startswith(".") and not _is_table(f)]
            if not found:
                raise TrainError(f"{p}: no data files ({what}) in this folder")
            out.extend(found)
        elif p.is_file():
            t = reader.file_type(p)
            if t is None:
                raise TrainError(f"{p}: unknown data file type (expected {what})")
            out.append((p, t))
        else:
            raise TrainError(f"{p}: no such file or folder")
    return out


def _is_table(f: Path) -> bool:
    """Side tables that live beside captures (device_macs.csv) are not data."""
    if f.suffix.lower() != ".csv":
        return False
    try:
        with open(f, encoding="utf-8-sig") as fh:
            head = fh.readline().strip().lower()
    except OSError:
        return False
    return head in ("device,mac", "mac,device", "ip,label")


def load_dataset(paths: Sequence[str | Path], view: ViewInfo, opts: DataOptions = DataOptions(),
                 progress=None) -> Dataset:
    """Read, label and clean every file under ``paths`` for ``view``."""
    stats = DataStats()
    reader = view_reader(view)
    files = list_files(paths, reader)
    stats.files = len(files)
    # a reader may read its files in parallel (read_all: the parts in file order), else one by
    # one; a dataset folder's shards (data/shards.py) are read as they are

    def one_by_one():
        for f, t in files:
            yield read_shard(f, view, opts.labels.column, stats) if t == "shard" else \
                reader.read(f, t, view, opts, stats)

    parts = reader.read_all(files, view, opts, stats) \
        if hasattr(reader, "read_all") and not any(t == "shard" for _, t in files) else one_by_one()
    with contextlib.closing(parts):
        return _assemble(paths, files, parts, view, opts, stats, progress)


def _assemble(paths, files, parts, view: ViewInfo, opts: DataOptions, stats: DataStats, progress) -> Dataset:
    ls = opts.labels
    wanted = opts.require_labels or ls.mode != "auto" or ls.macs is not None or ls.ips is not None
    labeller = Labeller(ls, stats) if wanted else None
    xs, ys, gs, names, tss = [], [], [], [], []
    semantics = set()
    intervals = set()
    captures = False
    for gi, ((f, file_type), part) in enumerate(zip(files, parts)):
        if progress is not None:
            progress(gi + 1, len(files), f)
        if part.n == 0:
            continue
        captures |= part.is_capture
        if part.semantics:
            semantics.add(part.semantics)
        if part.sample_interval:
            intervals.add(part.sample_interval)
        if labeller is not None:
            try:
                labs = labeller.labels(part)
            except TrainError:
                if opts.require_labels:
                    raise
                labs = [None] * part.n
        else:
            labs = part.label if part.label is not None else [None] * part.n
        lab = np.asarray([opts.merge.get(v, v) if v is not None else None for v in labs], dtype=object)
        keep = lab != None  # noqa: E711 (elementwise)
        if opts.require_labels:
            stats.unlabelled += int((~keep).sum())
        else:
            keep = np.ones(part.n, dtype=bool)
            lab = np.where(keep & (lab == None), "", lab)  # noqa: E711
        if not keep.any():
            continue
        xs.append(part.x[keep])
        ys.append(lab[keep])
        gs.append(np.full(int(keep.sum()), len(names), dtype=np.int32))
        names.append(str(f))
        tss.append(part.ts[keep] if part.ts is not None else None)
    if not xs:
        what = "labelled rows" if opts.require_labels else "rows"
        extra = f" ({stats.unlabelled} rows had no label)" if stats.unlabelled else ""
        extra += f" ({stats.bad_rows} malformed rows skipped)" if stats.bad_rows else ""
        raise TrainError(f"empty dataset: no {what} in {', '.join(map(str, paths))}{extra}")
    x = np.concatenate(xs)
    y = np.concatenate(ys).astype(object)
    groups = np.concatenate(gs)
    ts = np.concatenate(tss) if all(t is not None for t in tss) else None

    missing = np.isnan(x)
    stats.missing_values = int(missing.sum())
    nonfinite = ~np.isfinite(x) & ~missing
    stats.nonfinite_values = int(nonfinite.sum())
    x = np.where(np.isfinite(x), x, 0.0)
    big = np.abs(x) > np.finfo(np.float32).max
    if big.any():
        stats.nonfinite_values += int(big.sum())
        x = np.where(big, 0.0, x)
    x32 = x.astype(np.float32)

    x32, y, groups, ts = _duplicates(x32, y, groups, ts, stats, opts.dedup)
    if semantics and len(semantics) > 1:
        raise TrainError(f"the data mixes feature semantics {sorted(semantics)}: train on one at a time")
    if len(intervals) > 1:  # rates are per second, but a volume of D samples spans D intervals
        raise TrainError(f"the data mixes sample intervals {sorted(intervals)} s: record at one interval "
                         f"(record-proc --interval) or train on one at a time")
    return Dataset(x32, y, groups, names, view, stats, ts, semantics.pop() if semantics else None, captures,
                   intervals.pop() if intervals else None)


def _duplicates(x: np.ndarray, y: np.ndarray, groups: np.ndarray, ts, stats: DataStats, dedup: bool):
    """Count identical feature rows (and those with different labels); drop repeats if asked."""
    flat = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    keyv = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, first, inv = np.unique(keyv, return_index=True, return_inverse=True)
    stats.duplicates = int(x.shape[0] - first.shape[0])
    # rows whose feature vector appears with more than one label
    lab_codes = np.unique(y.astype(str), return_inverse=True)[1]
    pair = np.unique(np.stack([inv, lab_codes], axis=1), axis=0)
    per_key = np.bincount(pair[:, 0], minlength=first.shape[0])
    stats.conflicting_duplicates = int((per_key[inv] > 1).sum())
    if not dedup or stats.duplicates == 0:
        return x, y, groups, ts
    # keep the first row of every (features, label) pair
    _, keep = np.unique(np.stack([inv, lab_codes], axis=1), axis=0, return_index=True)
    keep = np.sort(keep)
    stats.duplicates_dropped = int(x.shape[0] - keep.shape[0])
    return x[keep], y[keep], groups[keep], None if ts is None else ts[keep]
