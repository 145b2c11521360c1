"""Parquet rows: what ``malsensor extract --format parquet`` writes (daemon/outputs/parquet.py),
or any Parquet table with the view's columns.

Features come from ``fts`` (a list column of the view's values in column order) or from
columns named like the view's features; a null is a missing value. The label comes from
the column given with ``--label`` (default: ``label`` when present, otherwise ``s_mac``),
or from a labeller (MAC table, IP list, folder), which reads ``src_mac``/``dest_mac``/
``src_ip``/``dest_ip``. ``ts`` is a timestamp column or epoch seconds. Types are checked
per column: a feature column that is not numeric is an error naming the file and column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError
from .jsonl import DEFAULT_LABEL_KEYS
from .table import DataStats, Part


def _floats(pa, pc, col, where: str) -> np.ndarray:
    """A numeric (or boolean) column as float64, NaN for nulls."""
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_decimal(t)):
        raise TrainError(f"{where}: type {t} is not numeric")
    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)


def _strings(pa, pc, table, name: str | None) -> list[str | None] | None:
    if name is None or name not in table.column_names:
        return None
    col = table.column(name)
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
    return col.to_pylist()


def _seconds(pa, pc, col) -> np.ndarray | None:
    t = col.type
    if pa.types.is_timestamp(t):
        ns = pc.cast(col, pa.timestamp("ns", tz=t.tz)).cast(pa.int64())
        return ns.to_numpy(zero_copy_only=False).astype(np.float64) / 1e9 if col.null_count == 0 else None
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        v = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        return None if np.isnan(v).any() else v
    return None


def read_parquet(path: Path, view: ViewInfo, label_col: str | None, stats: DataStats) -> Part:
    """Read one Parquet file into a :class:`Part`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError as e:  # pyarrow raises ArrowInvalid (an OSError... or ValueError) for non-Parquet data
        raise TrainError(f"{path}: cannot read as Parquet: {e}") from None
    except (pa.ArrowException, ValueError) as e:
        raise TrainError(f"{path}: cannot read as Parquet: {e}") from None
    n = table.num_rows
    stats.rows_read += n
    ncol = len(view.columns)
    names = table.column_names
    if "fts" in names:
        col = table.column("fts").combine_chunks()
        if not (pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type)
                or pa.types.is_large_list(col.type)):
            raise TrainError(f"{path}: column 'fts' has type {col.type}, expected a list of {ncol} numbers")
        sizes = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero((sizes != ncol) | np.isnan(sizes.astype(np.float64)))
        if wrong.size:
            i = int(wrong[0])
            raise TrainError(f"{path}: row {i}: 'fts' has {col[i].as_py() and len(col[i].as_py())} values, "
                             f"expected {ncol} ({view.ref}: {', '.join(view.columns)})")
        x = _floats(pa, pc, pc.list_flatten(col), f"{path}: column 'fts'").reshape(n, ncol)
    else:
        missing = [c for c in view.columns if c not in names]
        if missing:
            raise TrainError(f"{path}: no features: expected 'fts' ({ncol} values) or the columns "
                             f"{', '.join(view.columns)} (missing {', '.join(missing[:5])})")
        x = np.empty((n, ncol), dtype=np.float64)
        for j, c in enumerate(view.columns):
            x[:, j] = _floats(pa, pc, table.column(c), f"{path}: column {c!r}")
    if label_col is not None and label_col not in names:
        raise TrainError(f"{path}: no label column {label_col!r} (columns: {', '.join(names)})")
    lab_name = label_col or next((k for k in DEFAULT_LABEL_KEYS if k in names), None)
    labels = _strings(pa, pc, table, lab_name)
    src_mac = _strings(pa, pc, table, "src_mac" if "src_mac" in names else "s_mac")
    dest_mac = _strings(pa, pc, table, "dest_mac" if "dest_mac" in names else "d_mac")
    ts = _seconds(pa, pc, table.column("ts")) if "ts" in names and n else None
    return Part(str(path), x, labels, src_mac, dest_mac, _strings(pa, pc, table, "src_ip"),
                _strings(pa, pc, table, "dest_ip"), ts)
