"""What every data source produces: parts (one per file) and the assembled dataset."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError

MAX_EXAMPLES = 5


@dataclass
class DataStats:
    """Counters reported with every dataset (and stored in meta.json / metrics.json)."""

    rows_read: int = 0
    bad_rows: int = 0
    bad_examples: list[str] = field(default_factory=list)
    unlabelled: int = 0
    missing_values: int = 0
    nonfinite_values: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    duplicates_dropped: int = 0
    merged_labels: dict[str, str] = field(default_factory=dict)
    files: int = 0

    def bad(self, where: str, problem: str, skip: bool) -> None:
        """One malformed row: an error naming file and line, or counted when skipping."""
        msg = f"{where}: {problem}"
        if not skip:
            raise TrainError(msg + " (use --skip-bad to count and skip malformed rows)")
        self.bad_rows += 1
        if len(self.bad_examples) < MAX_EXAMPLES:
            self.bad_examples.append(msg)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Part:
    """Rows read from one file, before labelling.

    ``x`` holds the view's raw values (float64, NaN where missing); the string
    columns are what labellers may need (None where the source does not have them).
    """

    source: str
    x: np.ndarray
    label: list[str | None] | None = None
    src_mac: list[str | None] | None = None
    dest_mac: list[str | None] | None = None
    src_ip: list[str | None] | None = None
    dest_ip: list[str | None] | None = None
    ts: np.ndarray | None = None
    folder_label: str | None = None
    is_capture: bool = False
    semantics: str | None = None
    sample_interval: float | None = None  # seconds between the samples of a sampled source (/proc)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Dataset:
    """Labelled rows of one view, cleaned, with provenance for splits and reports."""

    x: np.ndarray                # (n, *view.shape) float32, finite
    y: np.ndarray                # (n,) label strings (dtype object)
    groups: np.ndarray           # (n,) int32: index into ``group_names`` (source file)
    group_names: list[str]
    view: ViewInfo
    stats: DataStats
    ts: np.ndarray | None = None  # (n,) float64 seconds when every source has timestamps
    semantics: str | None = None
    captures: bool = False
    sample_interval: float | None = None  # the sources' one sample interval, where they have one

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.y.tolist()).items()))

    def digest(self) -> str:
        """sha256 over features, labels and groups: identifies the training data."""
        h = hashlib.sha256()
        h.update(repr((self.view.ref, self.view.shape)).encode())
        h.update(np.ascontiguousarray(self.x, dtype="<f4").tobytes())
        h.update("\x00".join(self.y.tolist()).encode())
        h.update(np.ascontiguousarray(self.groups, dtype="<i4").tobytes())
        return "sha256:" + h.hexdigest()

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.x[idx], self.y[idx], self.groups[idx], self.group_names, self.view, self.stats,
                       None if self.ts is None else self.ts[idx], self.semantics, self.captures,
                       self.sample_interval)
