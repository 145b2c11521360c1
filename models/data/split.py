"""Seeded train/validation/test splits: stratified, by group (capture file) or by time.

``random``  stratified by label: every class is cut 60/20/20 on its own.
``group``   whole groups (capture files) go to one side; groups are dealt out per
            label (the label most of the group's rows carry) so that each label
            gets close to 60/20/20 of its rows and no capture lands on two sides.
``time``    rows sorted by timestamp, the first 60% train, next 20% validation,
            the last 20% test (what a deployment sees: the future is never trained on).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import TrainError
from .table import Dataset

SPLIT_MODES = ("auto", "random", "group", "time")


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mode: str

    def sizes(self) -> dict[str, int]:
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}


def _cut(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """Row counts for train and validation out of ``n`` (test gets the rest),
    keeping at least one row on each side with a nonzero fraction when n >= 3."""
    a = int(round(n * fractions[0]))
    b = int(round(n * fractions[1]))
    if n >= 3:
        need_val, need_test = int(fractions[1] > 0), int(fractions[2] > 0)   # a side asked for 0 stays empty
        a = min(max(a, 1), n - need_val - need_test)
        b = n - a if not need_test else min(max(b, need_val), n - a - need_test)
    else:
        a, b = n, 0
    return a, b


def split_dataset(ds: Dataset, mode: str = "auto", seed: int = 0,
                  fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Split:
    if mode not in SPLIT_MODES:
        raise TrainError(f"unknown split {mode!r} (allowed: {', '.join(SPLIT_MODES)})")
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise TrainError(f"split fractions {fractions} must be >= 0 and sum to 1")
    if mode == "auto":
        mode = "group" if ds.captures and len(ds.group_names) > 1 else "random"
    rng = np.random.default_rng(seed)
    if mode == "random":
        parts = ([], [], [])
        for lab in sorted(set(ds.y.tolist())):
            idx = np.flatnonzero(ds.y == lab)
            rng.shuffle(idx)
            a, b = _cut(idx.size, fractions)
            parts[0].append(idx[:a])
            parts[1].append(idx[a:a + b])
            parts[2].append(idx[a + b:])
        tr, va, te = (np.sort(np.concatenate(p)) for p in parts)
        return Split(tr, va, te, mode)
    if mode == "time":
        if ds.ts is None:
            raise TrainError("split by time needs timestamps ('ts' in every row, or captures)")
        order = np.argsort(ds.ts, kind="stable")
        a, b = _cut(order.size, fractions)
        return Split(np.sort(order[:a]), np.sort(order[a:a + b]), np.sort(order[a + b:]), mode)
    # group
    n_groups = len(ds.group_names)
    if n_groups < 3:
        raise TrainError(f"split by group needs at least 3 groups (capture files); the data has {n_groups}")
    sizes = np.bincount(ds.groups, minlength=n_groups)
    major = {}
    for g in np.unique(ds.groups):
        major[int(g)] = Counter(ds.y[ds.groups == g].tolist()).most_common(1)[0][0]
    assign = np.full(n_groups, 0, dtype=np.int8)
    for lab in sorted(set(major.values())):
        gl = np.array([g for g, m in major.items() if m == lab], dtype=np.int64)
        rng.shuffle(gl)
        total = sizes[gl].sum()
        target = np.array(fractions) * total
        got = np.zeros(3)
        # one group per side first (largest deficit), then fill by deficit
        for k, g in enumerate(gl):
            if k < 3 and gl.size >= 3:
                side = k
            else:
                side = int(np.argmax(target - got))
            assign[g] = side
            got[side] += sizes[g]
    side_of_row = assign[ds.groups]
    return Split(*(np.flatnonzero(side_of_row == s) for s in range(3)), mode)


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: ``balanced`` = n / (n_classes * count), ``sqrt`` = the square
    root of that (a milder correction), ``none`` = 1."""
    if mode == "none":
        return np.ones(n_classes, dtype=np.float32)
    if mode not in ("balanced", "sqrt"):
        raise TrainError(f"class_weight must be 'balanced', 'sqrt' or 'none', not {mode!r}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, y.size / (n_classes * np.maximum(counts, 1)), 0.0)
    if mode == "sqrt":
        w = np.sqrt(w)
    return w.astype(np.float32)
