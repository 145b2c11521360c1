"""JSONL rows: the extractor's output and the ``s_mac`` + ``fts`` format other tools use.

One JSON object per line. Features come from ``fts`` (the view's values in column
order) or from the named columns; for ``conn_series`` from ``series`` (a list of
``lookback_len`` lists of 17 values). ``null`` is a missing value. A label comes
from the key given with ``--label`` (default: ``label`` when the row has it,
otherwise ``s_mac``), or from a labeller (MAC table, IP list, folder).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from .table import DataStats, Part

DEFAULT_LABEL_KEYS = ("label", "s_mac")


def _num(v: object) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(repr(v))
    try:
        return float(v)
    except OverflowError:  # an integer of hundreds of digits
        raise ValueError(_show(v)) from None


def _show(v: object) -> str:
    """A value for a message: short (a 400-digit integer is described, not printed)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** 30:
        return f"an integer of {len(str(abs(v)))} digits"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _vector(row: dict, view: ViewInfo, series: bool) -> np.ndarray:
    """The row's values for ``view`` (``series``: a (steps, columns) series under the key
    "series"; else one value per column) or ValueError with the reason."""
    ncol = len(view.columns)
    if series:
        series = row.get("series")
        if series is None:
            raise ValueError(f"no 'series' key: view {view.ref} needs {view.shape[0]} snapshots of "
                             f"{ncol} values per row")
        if not isinstance(series, list) or len(series) != view.shape[0]:
            got = len(series) if isinstance(series, list) else type(series).__name__
            raise ValueError(f"'series' has {got} snapshots, expected {view.shape[0]} ({view.ref})")
        out = np.empty(view.shape, dtype=np.float64)
        for t, snap in enumerate(series):
            if not isinstance(snap, list) or len(snap) != ncol:
                got = len(snap) if isinstance(snap, list) else type(snap).__name__
                raise ValueError(f"series[{t}] has {got} values, expected {ncol}")
            for j, v in enumerate(snap):
                try:
                    out[t, j] = _num(v)
                except ValueError:
                    raise ValueError(f"series[{t}][{j}] is {_show(v)}, not a number") from None
        return out
    fts = row.get("fts")
    out = np.empty(ncol, dtype=np.float64)
    if fts is not None:
        if not isinstance(fts, list):
            raise ValueError(f"'fts' is a {type(fts).__name__}, expected a list of {ncol} numbers")
        if len(fts) != ncol:
            raise ValueError(f"'fts' has {len(fts)} values, expected {ncol} ({view.ref}: "
                             f"{', '.join(view.columns)})")
        for j, v in enumerate(fts):
            try:
                out[j] = _num(v)
            except ValueError:
                raise ValueError(f"fts[{j}] ({view.columns[j]}) is {_show(v)}, not a number") from None
        return out
    missing = [c for c in view.columns if c not in row]
    if missing:
        if len(missing) == ncol:
            raise ValueError(f"no features: expected 'fts' ({ncol} values) or the named columns "
                             f"{', '.join(view.columns)}")
        raise ValueError(f"missing feature keys: {', '.join(missing)}")
    for j, c in enumerate(view.columns):
        try:
            out[j] = _num(row[c])
        except ValueError:
            raise ValueError(f"{c} is {_show(row[c])}, not a number") from None
    return out


def _opt_str(v: object) -> str | None:
    """Address and MAC columns: text, or None for anything else (a nested value is no address)."""
    return v if isinstance(v, str) else (None if v is None or isinstance(v, (list, dict)) else str(v))


def read_jsonl(path: Path, view: ViewInfo, label_key: str | None, stats: DataStats, skip_bad: bool,
               series: bool = False) -> Part:
    """Read one JSONL file into a :class:`Part` (malformed lines raise or are counted)."""
    xs: list[np.ndarray] = []
    labels: list[str | None] = []
    cols: dict[str, list[str | None]] = {"src_mac": [], "dest_mac": [], "src_ip": [], "dest_ip": []}
    ts: list[float] = []
    have_label = False
    try:
        f = open(path, "rb")
    except OSError as e:
        from ..errors import TrainError

        raise TrainError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            stats.rows_read += 1
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                stats.bad(where, f"invalid JSON ({getattr(e, 'msg', e)})", skip_bad)
                continue
            except RecursionError:
                stats.bad(where, "invalid JSON (nested too deep)", skip_bad)
                continue
            except ValueError as e:  # an integer beyond Python's digit limit
                stats.bad(where, f"invalid JSON ({e})", skip_bad)
                continue
            if not isinstance(row, dict):
                stats.bad(where, f"expected a JSON object, got {type(row).__name__}", skip_bad)
                continue
            try:
                vec = _vector(row, view, series)
            except ValueError as e:
                stats.bad(where, str(e), skip_bad)
                continue
            key = label_key or next((k for k in DEFAULT_LABEL_KEYS if k in row), None)
            lab = row.get(key) if key else None
            if lab is not None and (isinstance(lab, bool) or not isinstance(lab, (str, int, float))):
                stats.bad(where, f"label {key!r} is a JSON {type(lab).__name__}, expected a string or number",
                          skip_bad)
                continue
            if lab is not None:
                have_label = True
            xs.append(vec)
            labels.append(_opt_str(lab))
            src_mac = row.get("src_mac", row.get("s_mac"))
            cols["src_mac"].append(_opt_str(src_mac))
            cols["dest_mac"].append(_opt_str(row.get("dest_mac", row.get("d_mac"))))
            cols["src_ip"].append(_opt_str(row.get("src_ip")))
            cols["dest_ip"].append(_opt_str(row.get("dest_ip")))
            t = row.get("ts")
            ts.append(_ts_seconds(t))
    x = np.stack(xs) if xs else np.zeros((0, *view.shape), dtype=np.float64)
    tsa = np.asarray(ts, dtype=np.float64)
    return Part(str(path), x, labels if have_label else None, cols["src_mac"], cols["dest_mac"],
                cols["src_ip"], cols["dest_ip"], None if (len(tsa) == 0 or np.isnan(tsa).any()) else tsa)


def _ts_seconds(t: object) -> float:
    """Row timestamps: epoch seconds (number) or ISO 8601 text; NaN when absent."""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        try:
            return float(t)
        except OverflowError:
            return math.nan
    if isinstance(t, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return math.nan
    return math.nan
