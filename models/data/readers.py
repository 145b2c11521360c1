"""Trainer-side readers of the connection views (``conn@1``, ``conn_series@1``).

A view names its reader (``View.reader``, ``"module:attribute"``); the trainer imports it
and asks it which files it reads and how. The connection views read JSONL rows (what
``malsensor extract`` writes), CSV and Parquet tables (UNSW-NB15, or any table with the 17
feature names) and captures, which go through the sensor's own extractor. A
``conn_series@1`` model reads JSONL ``series`` rows and captures only: a table holds one
row per connection, not a series.
"""
from __future__ import annotations

from pathlib import Path

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.views.conn_series import CONN_SERIES_VIEW

from ..errors import TrainError
from .captures import is_capture, read_capture_file
from .csvsrc import read_csv
from .jsonl import read_jsonl
from .table import DataStats, Part

ROW_SUFFIXES = (".jsonl", ".ndjson", ".json")
TABLE_NAMES = {"csv": "CSV", "parquet": "Parquet"}


class ConnectionReader:
    description = "jsonl, csv, parquet, pcap, pcapng"

    def file_type(self, path: Path) -> str | None:
        """What kind of data file ``path`` is (by name), or None if this reader does not read it."""
        name = path.name.lower()
        if name.endswith(ROW_SUFFIXES):
            return "jsonl"
        if name.endswith(".csv"):
            return "csv"
        if name.endswith((".parquet", ".pq")):
            return "parquet"
        if is_capture(path):
            return "capture"
        return None

    def read(self, path: Path, file_type: str, view: ViewInfo, opts, stats: DataStats) -> Part:
        series = view.name == CONN_SERIES_VIEW
        column = opts.labels.column
        if file_type == "jsonl":
            return read_jsonl(path, view, column, stats, opts.skip_bad, series=series)
        if file_type == "capture":
            return read_capture_file(path, view, stats, opts.semantics, view.shape[0] if series else 0)
        if series:
            raise TrainError(f"{path}: a {TABLE_NAMES[file_type]} table holds one row per connection; the model reads "
                             f"{view.describe()}, which needs captures or JSONL 'series'")
        if file_type == "csv":
            return read_csv(path, view, column, stats, opts.skip_bad)
        from .parquetsrc import read_parquet  # pyarrow only when a Parquet file is read

        return read_parquet(path, view, column, stats)


CONNECTION_READER = ConnectionReader()
