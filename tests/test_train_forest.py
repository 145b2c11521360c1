"""The forest's JAX traversal reproduces scikit-learn's predict_proba (to 1e-6)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train_data import unsw_subset

from malsensor.models.data.csvsrc import read_csv
from malsensor.models.data.table import DataStats
from malsensor.daemon.views.conn import CONN
from malsensor.models.zoo import forest as F


@pytest.fixture(scope="module")
def unsw(tmp_path_factory):
    path = unsw_subset(tmp_path_factory.mktemp("unsw"), per_class=150)
    part = read_csv(path, CONN.info(), "attack_cat", DataStats(), False)
    return part.x.astype(np.float32), np.asarray(part.label)


def _jax_probs(rf, x, traversal):
    import jax

    n_cls = len(rf.classes_)
    trees = [F.TreeArrays.from_sklearn(e, n_cls) for e in rf.estimators_]
    depth = max(t.depth for t in trees)
    if traversal == "perfect":
        arrays = F.perfect_layout(trees, len(trees))
        fn = jax.jit(lambda p, v: F.perfect_probs(p, v, depth))
    else:
        arrays = F.sparse_layout(trees, len(trees), x.shape[1])
        fn = jax.jit(lambda p, v: F.sparse_probs(p, v, depth))
    return np.asarray(fn(arrays, x)), trees


def _tie_inputs(trees, x, rng):
    """Rows whose values sit exactly on (and one float32 step around) split thresholds."""
    rows = []
    for t in trees[:5]:
        internal = np.flatnonzero(t.left != -1)[:40]
        for node in internal:
            base = x[rng.integers(0, x.shape[0])].copy()
            thr = t.threshold[node]
            for v in (np.float32(thr), F.threshold_f32(np.array([thr]))[0],
                      np.nextafter(np.float32(thr), np.float32(np.inf))):
                r = base.copy()
                r[t.feature[node]] = v
                rows.append(r)
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("max_depth,traversal", [(6, "perfect"), (6, "sparse"), (0, "sparse"), (12, "perfect")])
def test_probabilities_equal_sklearn(unsw, max_depth, traversal):
    x, y = unsw
    cfg = F.ForestConfig(n_estimators=12, max_depth=max_depth, n_jobs=1)
    rf = F.sklearn_forest(cfg, cfg.n_estimators, seed=3).fit(x, y)
    got, trees = _jax_probs(rf, x, traversal)
    ref = rf.predict_proba(x)
    assert got.shape == ref.shape == (x.shape[0], 10)
    assert np.abs(got - ref).max() <= 1e-6
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    ties = _tie_inputs(trees, x, np.random.default_rng(0))
    got_t, _ = _jax_probs(rf, ties, traversal)
    assert np.abs(got_t - rf.predict_proba(ties)).max() <= 1e-6


def test_binary_forest_with_balanced_weights(unsw):
    x, y = unsw
    yb = (y != "Normal").astype(int)
    cfg = F.ForestConfig(n_estimators=8, max_depth=0, class_weight="balanced", n_jobs=1)
    rf = F.sklearn_forest(cfg, cfg.n_estimators, seed=1).fit(x, yb)
    got, _ = _jax_probs(rf, x, "sparse")
    assert np.abs(got - rf.predict_proba(x)).max() <= 1e-6


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e30, max_value=1e30),
       st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=8))
def test_threshold_rounding_keeps_every_comparison(t, xs):
    t32 = F.threshold_f32(np.array([t]))[0]
    assert t32.dtype == np.float32 and float(t32) <= t
    for v in list(xs) + [float(np.float32(t)), float(t32), float(np.nextafter(t32, np.float32(np.inf)))]:
        x32 = np.float32(v)
        assert (float(x32) <= t) == bool(x32 <= t32)


def test_auto_traversal_by_depth():
    cfg = F.ForestConfig()
    assert F.choose_traversal(cfg, cfg.perfect_max_depth) == "perfect"
    assert F.choose_traversal(cfg, cfg.perfect_max_depth + 1) == "sparse"
    assert F.choose_traversal(F.ForestConfig(traversal="sparse"), 3) == "sparse"
