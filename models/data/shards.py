"""Dataset folders: the rows of many input files as Parquet shards plus a manifest.

``malsensor-train dataset`` (models/dataset.py) writes one shard per input file; every
command that reads data (fit, evaluate, predict) accepts the folder in place of the inputs
and gets the same rows, in the same order, with the same group (source file) names, so
splits by capture and data digests do not change.

Folder layout::

    DIR/manifest.json            format, view, options key, one entry per input file, totals
    DIR/shards/<key>.parquet     the rows of one input file

A shard holds the rows as the file's reader produced them, before cleaning (cleaning,
deduplication and label merges stay in ``load_dataset``, so they apply the same way to a
folder and to the inputs):

| column | Arrow type | what |
|---|---|---|
| ``fts`` | fixed_size_list<double>[prod(view shape)] | raw view values, NaN where missing |
| ``label`` | string | the label given at build time, null where none |
| ``src_mac``, ``dest_mac``, ``src_ip``, ``dest_ip`` | string | when the source has them (relabelling by MAC or IP) |
| ``ts`` | double | epoch seconds, when the source has timestamps |

The shard's Parquet metadata (key ``malsensor``) repeats its manifest entry (source file,
digest, options key, counts), so a build that was interrupted before writing the manifest
reuses the shards it finished.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo, options_doc

from ..errors import TrainError
from .table import DataStats, Part

log = logging.getLogger("malsensor.train.data")

FORMAT = "malsensor-dataset/1"
MANIFEST = "manifest.json"
SHARDS = "shards"
META_KEY = b"malsensor"
STRING_COLUMNS = ("src_mac", "dest_mac", "src_ip", "dest_ip")


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the reuse key of its shard)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def shard_name(source: str) -> str:
    """The shard of an input file, named by its absolute path (stable across rebuilds)."""
    return f"{SHARDS}/{hashlib.sha256(str(Path(source).absolute()).encode()).hexdigest()[:24]}.parquet"


def view_doc(view: ViewInfo) -> dict:
    """What identifies a view's rows: with the options the shape does not say (a window length,
    packets per connection), as JSON gives them back."""
    doc = {"name": view.name, "version": view.version, "shape": list(view.shape), "columns": list(view.columns)}
    options = options_doc(view.options)
    if options is not None:
        doc["options"] = options
    return doc


# --------------------------------------------------------------------------- writing

def write_shard(path: Path, part: Part, labels: list[str | None] | None, entry: dict) -> None:
    """The rows of ``part`` (with ``labels``) as one Parquet file, written to a temporary name
    and renamed (a reader never sees half a shard)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = part.n
    width = int(np.prod(part.x.shape[1:])) if part.x.ndim > 1 else 1
    flat = np.ascontiguousarray(part.x, dtype=np.float64).reshape(n * width)
    cols = {"fts": pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float64()), width),
            "label": pa.array(labels if labels is not None else [None] * n, type=pa.string())}
    for c in STRING_COLUMNS:
        v = getattr(part, c)
        if v is not None:
            cols[c] = pa.array(v, type=pa.string())
    if part.ts is not None:
        cols["ts"] = pa.array(np.asarray(part.ts, dtype=np.float64), type=pa.float64())
    table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(entry).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def shard_entry(path: Path) -> dict | None:
    """The manifest entry stored in a shard's metadata, or None (no shard, unreadable, foreign)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])
    except (OSError, KeyError, ValueError):
        return None
    except Exception:  # pyarrow's ArrowInvalid for a damaged file: rebuild it
        return None


# --------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class ShardRef:
    """One shard of a dataset folder, standing in for the input file it came from: ``str()``
    gives that file's name (the group name splits and reports use)."""

    path: Path
    entry: dict
    dataset: Path

    def __str__(self) -> str:
        return self.entry["file"]


def read_manifest(folder: Path) -> dict:
    p = folder / MANIFEST
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise TrainError(f"{p}: cannot read the dataset manifest: {e.strerror or e}") from None
    except ValueError as e:
        raise TrainError(f"{p}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TrainError(f"{p}: not a dataset manifest (format {doc.get('format') if isinstance(doc, dict) else '?'!r}, "
                         f"expected {FORMAT!r})")
    return doc


def dataset_shards(folder: Path) -> list[ShardRef]:
    """The shards of a dataset folder in input order (what ``list_files`` yields for it)."""
    doc = read_manifest(folder)
    failed = doc.get("failed") or []
    if failed:
        log.warning("dataset %s: %d input file(s) failed when it was built and are missing (first: %s: %s)",
                    folder, len(failed), failed[0].get("file"), failed[0].get("error"))
    out = []
    for e in doc.get("files") or []:
        try:
            out.append(ShardRef(folder / e["shard"], e, folder))
        except (KeyError, TypeError):
            raise TrainError(f"{folder / MANIFEST}: an entry without 'shard': {e!r}") from None
    if not out:
        raise TrainError(f"{folder}: the dataset holds no shards")
    return out


def read_shard(ref: ShardRef, view: ViewInfo, label_col: str | None, stats: DataStats) -> Part:
    """One shard as the :class:`Part` its input file gave at build time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    e = ref.entry
    want = view_doc(view)
    if e.get("view") != want:
        got = e.get("view") or {}
        raise TrainError(f"{ref.dataset}: built for view {got.get('name')}@{got.get('version')} shape "
                         f"{got.get('shape')}, but the model reads {view.describe()}: rebuild it with "
                         f"`malsensor-train dataset --view {view.ref}`")
    built_col = e.get("label_column")
    if label_col is not None and label_col not in ("label", built_col):
        raise TrainError(f"{ref.dataset}: labelled from column {built_col!r} when it was built; rebuild it with "
                         f"`malsensor-train dataset --label {label_col}` for labels from {label_col!r}")
    try:
        table = pq.read_table(ref.path)
    except (OSError, pa.ArrowException, ValueError) as e2:
        raise TrainError(f"{ref.path}: cannot read the shard of {e['file']}: {e2}") from None
    n = table.num_rows
    if n != e.get("rows_in_shard", n):
        raise TrainError(f"{ref.path}: {n} rows, the manifest says {e.get('rows_in_shard')}: rebuild the dataset")
    width = int(np.prod(view.shape))
    col = table.column("fts").combine_chunks()
    x = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if x.size != n * width:
        raise TrainError(f"{ref.path}: 'fts' holds {x.size} values for {n} rows, expected {width} a row")
    x = x.reshape((n, *view.shape))
    names = table.column_names
    s = e.get("stats") or {}
    stats.rows_read += int(s.get("rows_read", n))
    stats.bad_rows += int(s.get("bad_rows", 0))
    for ex in s.get("bad_examples") or []:
        if len(stats.bad_examples) < 5:
            stats.bad_examples.append(ex)
    stats.merged_labels.update(s.get("merged_labels") or {})

    def strings(c):
        return table.column(c).to_pylist() if c in names else None

    ts = table.column("ts").to_numpy(zero_copy_only=False) if "ts" in names else None
    labels = strings("label")
    if labels is not None and all(v is None for v in labels) and e.get("unlabelled", 0) == n:
        labels = None   # a build without labels: "no label column", as the input file would say
    return Part(e["file"], x, labels, strings("src_mac"), strings("dest_mac"), strings("src_ip"),
                strings("dest_ip"), ts, folder_label=e.get("folder_label"), is_capture=bool(e.get("is_capture")),
                semantics=e.get("semantics"))
