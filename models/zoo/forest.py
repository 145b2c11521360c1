"""Random forest: fitted by scikit-learn, evaluated by a JAX traversal over node arrays.

Conversion keeps scikit-learn's arithmetic exactly: sklearn compares float32
features against float64 thresholds (``x <= t`` goes left), so each threshold is
rounded *down* to the largest float32 not above it, which makes ``x <= t32`` equal
``x <= t`` for every float32 ``x``. Leaf values are each tree's class fractions
divided by the number of trees, so the summed output equals ``predict_proba``
(float32 sums: within 1e-6).

Two traversal layouts (both walk all trees of a batch at once, (trees, batch)
index arrays, one ``fori_loop`` step per level; unrolling the levels lets XLA
fuse gathers into chains it recomputes, which measured 4x slower):

``perfect``  every tree padded to a complete binary tree of the forest's depth D:
             node ``i`` has children ``2i+1``/``2i+2``, so a step needs three gathers
             (feature, threshold, input value). Memory grows as 2^D per tree.
``sparse``   the trees' own nodes, renumbered breadth-first so that siblings are
             adjacent (right = left + 1): a step needs three gathers (packed
             child+feature, threshold, input value: the left child and the feature share one int32);
             memory is proportional to the nodes.

``traversal = "auto"`` picks ``perfect`` up to ``perfect_max_depth`` and ``sparse``
beyond. Measured (``bench/bench_forest.py --sweep``, UNSW binary, 100 trees, CPU time,
batch 4096): depth 4-6 both ~3.5-5 ms (a tie), depth 8 perfect 6.1 / sparse 5.6 ms,
depth 10 7.9 / 6.8, depth 12 9.5 / 8.1, and perfect's memory doubles per level;
hence ``perfect_max_depth = 6``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError
from malsensor.daemon.views.conn import CONN

from .base import ModelKind, register

TRAVERSALS = ("auto", "perfect", "sparse")


@dataclass
class ForestConfig:
    """Hyper-parameters (``[model]`` in etc/models/forest.toml)."""

    n_estimators: int = 100
    max_depth: int = 16            # 0 = unlimited
    min_samples_split: int = 2
    min_samples_leaf: int = 1
    max_features: str = "sqrt"     # sqrt | log2 | all | a fraction such as "0.5"
    criterion: str = "gini"        # gini | entropy | log_loss
    bootstrap: bool = True
    class_weight: str = "none"     # none | balanced | balanced_subsample
    trees_per_chunk: int = 25      # trees fitted between checkpoints (one "epoch")
    traversal: str = "auto"
    perfect_max_depth: int = 6
    n_jobs: int = 2
    # what the forest reads: "conn@1" (17 features per connection) or "device_bag@1" (one row per
    # device and window: the hashed set of its packets' sizes; device identification)
    view: str = "conn@1"
    bag_packets: int = 64              # view = "device_bag@1": the view's keys (daemon/views/device_bag.py)
    bag_bits: int = 1024
    bag_window: float = 600.0
    bag_late: float = 60.0


def _max_features(v: str) -> Any:
    if v in ("sqrt", "log2"):
        return v
    if v == "all":
        return None
    try:
        f = float(v)
    except ValueError:
        raise TrainError(f"max_features must be sqrt, log2, all or a fraction, not {v!r}") from None
    if not 0 < f <= 1:
        raise TrainError(f"max_features fraction must be in (0, 1], not {v!r}")
    return f


FOREST_VIEWS = ("conn@1", "device_bag@1")


def check_config(cfg: ForestConfig) -> None:
    if cfg.view not in FOREST_VIEWS:
        raise TrainError(f"view must be one of {', '.join(FOREST_VIEWS)}, not {cfg.view!r}")
    if cfg.view == "device_bag@1":
        view_info(cfg)   # the view's own bounds on its keys
    if cfg.n_estimators < 1:
        raise TrainError("n_estimators must be >= 1")
    if cfg.max_depth < 0:
        raise TrainError("max_depth must be >= 0 (0 = unlimited)")
    if cfg.traversal not in TRAVERSALS:
        raise TrainError(f"traversal must be one of {', '.join(TRAVERSALS)}, not {cfg.traversal!r}")
    if cfg.class_weight not in ("none", "balanced", "balanced_subsample"):
        raise TrainError(f"class_weight must be none, balanced or balanced_subsample, not {cfg.class_weight!r}")
    if cfg.criterion not in ("gini", "entropy", "log_loss"):
        raise TrainError(f"criterion must be gini, entropy or log_loss, not {cfg.criterion!r}")
    if cfg.trees_per_chunk < 1:
        raise TrainError("trees_per_chunk must be >= 1")
    _max_features(cfg.max_features)


def view_info(cfg: ForestConfig) -> ViewInfo:
    """The view the forest reads, with its options (TrainError naming a bad key)."""
    if cfg.view == "conn@1":
        return CONN.info()
    from malsensor.daemon.schema import specs_of
    from malsensor.daemon.views.device_bag import DEVICE_BAG, DeviceBagOptions

    o = DeviceBagOptions(bag_packets=cfg.bag_packets, bag_bits=cfg.bag_bits, bag_window=cfg.bag_window,
                         bag_late=cfg.bag_late)
    for spec in specs_of(DeviceBagOptions):
        v = getattr(o, spec.name)
        if (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
            raise TrainError(f"{spec.name} must be in {spec.min:g}..{spec.max:g}, not {v}")
    if o.bag_bits & (o.bag_bits - 1):
        raise TrainError(f"bag_bits must be a power of two, not {o.bag_bits}")
    return DEVICE_BAG.info(o)


def sklearn_forest(cfg: ForestConfig, n_trees: int, seed: int):
    """An unfitted scikit-learn forest for one chunk of trees."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=n_trees, max_depth=cfg.max_depth or None, min_samples_split=cfg.min_samples_split,
        min_samples_leaf=cfg.min_samples_leaf, max_features=_max_features(cfg.max_features),
        criterion=cfg.criterion, bootstrap=cfg.bootstrap,
        class_weight=None if cfg.class_weight == "none" else cfg.class_weight,
        n_jobs=cfg.n_jobs, random_state=seed)


# --------------------------------------------------------------------------- conversion

def threshold_f32(t: np.ndarray) -> np.ndarray:
    """Largest float32 <= t (float64): ``x <= result`` iff ``x <= t`` for float32 x."""
    t32 = t.astype(np.float32)
    up = t32.astype(np.float64) > t
    t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    return t32


FLT_MIN = np.float32(np.finfo(np.float32).tiny)     # smallest normal float32, 1.18e-38


def flush_safe(t32: np.ndarray) -> np.ndarray:
    """Thresholds that compare the same under XLA's flush of subnormals to zero.

    XLA's CPU backend flushes subnormal float32 operands to zero (measured: ``0 > -1.4e-45``
    is False there, True in numpy). XGBoost's split ``x < 0`` becomes ``x > -1.4e-45`` after
    ``threshold_f32``, which XLA evaluates as ``x > -0``: rows with x = 0 went left instead of
    right (pkt_seq's direction column, -1/+1 with 0 in padding, splits at exactly 0; 0.0964
    max |diff| vs predict_proba on IoT Sentinel). A negative subnormal threshold becomes
    ``-FLT_MIN`` and a positive one 0: for every normal float32 and zero, ``x > t`` (and
    ``x <= t``) then gives what the subnormal threshold gives in exact arithmetic. Subnormal
    inputs are flushed by XLA before any comparison, so no threshold can serve them."""
    sub = (t32 != 0) & (np.abs(t32) < FLT_MIN)
    out = t32.copy()
    out[sub & (t32 < 0)] = -FLT_MIN
    out[sub & (t32 > 0)] = 0
    return out


@dataclass
class TreeArrays:
    """One tree in scikit-learn's layout, with class fractions per node."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray     # (nodes, n_classes) float64 fractions
    depth: int

    @classmethod
    def from_sklearn(cls, est, n_classes: int, classes_map: np.ndarray | None = None) -> "TreeArrays":
        t = est.tree_
        v = np.asarray(t.value[:, 0, :], dtype=np.float64)
        s = v.sum(axis=1, keepdims=True)
        v = np.divide(v, s, out=np.zeros_like(v), where=s > 0)
        if v.shape[1] != n_classes:  # tree saw fewer classes: scatter into the forest's columns
            full = np.zeros((v.shape[0], n_classes))
            full[:, classes_map] = v
            v = full
        return cls(np.asarray(t.children_left), np.asarray(t.children_right), np.asarray(t.feature),
                   np.asarray(t.threshold), v, int(t.max_depth))

    def to_npz_dict(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}left": self.left.astype(np.int32), f"{prefix}right": self.right.astype(np.int32),
                f"{prefix}feature": self.feature.astype(np.int32), f"{prefix}threshold": self.threshold,
                f"{prefix}value": self.value, f"{prefix}depth": np.asarray(self.depth)}

    @classmethod
    def from_npz_dict(cls, d, prefix: str) -> "TreeArrays":
        return cls(d[f"{prefix}left"], d[f"{prefix}right"], d[f"{prefix}feature"], d[f"{prefix}threshold"],
                   d[f"{prefix}value"], int(d[f"{prefix}depth"]))


def _levels(tree: TreeArrays):
    """Breadth-first order (old node ids), each node's position in a complete tree, depth."""
    order = [np.array([0])]
    pos = [np.array([0])]
    dep = [np.array([0])]
    frontier, fpos, d = order[0], pos[0], 0
    while frontier.size:
        internal = tree.left[frontier] != -1
        f, p = frontier[internal], fpos[internal]
        ch = np.stack([tree.left[f], tree.right[f]], axis=1).ravel()
        cp = np.stack([2 * p + 1, 2 * p + 2], axis=1).ravel()
        d += 1
        if ch.size:
            order.append(ch)
            pos.append(cp)
            dep.append(np.full(ch.size, d))
        frontier, fpos = ch, cp
    return np.concatenate(order), np.concatenate(pos), np.concatenate(dep)


def perfect_layout(trees: list[TreeArrays], n_trees_total: int) -> dict[str, np.ndarray]:
    """Complete-binary-tree arrays: feature/threshold (T, 2^D - 1), leaf id per bottom
    position (T, 2^D), leaf values (leaves, C) already divided by the tree count."""
    depth = max(1, max(t.depth for t in trees))
    ni = (1 << depth) - 1
    n_t = len(trees)
    feat = np.zeros((n_t, ni), dtype=np.int32)
    thr = np.full((n_t, ni), np.inf, dtype=np.float32)   # padding: always go left
    leaf_map = np.zeros((n_t, ni + 1), dtype=np.int32)
    values = []
    n_leaves = 0
    for ti, t in enumerate(trees):
        order, pos, dep = _levels(t)
        is_leaf = t.left[order] == -1
        ip, io = pos[~is_leaf], order[~is_leaf]
        feat[ti, ip] = t.feature[io]
        thr[ti, ip] = flush_safe(threshold_f32(t.threshold[io]))
        lo, lp, ld = order[is_leaf], pos[is_leaf], dep[is_leaf]
        bottom = (lp + 1) * (1 << (depth - ld)) - 1 - ni   # leftmost descendant at depth D
        leaf_map[ti, bottom] = n_leaves + np.arange(lo.size, dtype=np.int32)
        values.append(t.value[lo])
        n_leaves += lo.size
    val = (np.concatenate(values) / n_trees_total).astype(np.float32)
    return {"feature": feat, "threshold": thr, "leaf_map": leaf_map, "values": val}


def sparse_layout(trees: list[TreeArrays], n_trees_total: int,
                  n_features: int | None = None) -> dict[str, np.ndarray]:
    """All trees' nodes in one array, breadth-first per tree (siblings adjacent).

    ``packed`` = left child << bits | feature (one gather per step instead of two)."""
    feats, thrs, lefts, slots, values, roots = [], [], [], [], [], []
    off = 0
    n_leaves = 0
    for t in trees:
        order, _, _ = _levels(t)
        n = order.size
        new_id = np.empty(n, dtype=np.int64)
        new_id[order] = np.arange(n)
        is_leaf = t.left[order] == -1
        f = t.feature[order].astype(np.int32)
        th = flush_safe(threshold_f32(t.threshold[order]))
        f[is_leaf] = 0
        th[is_leaf] = np.inf                                    # leaves loop on themselves
        left = np.where(is_leaf, np.arange(n), new_id[np.maximum(t.left[order], 0)]) + off
        slot = np.zeros(n, dtype=np.int32)
        slot[is_leaf] = n_leaves + np.arange(int(is_leaf.sum()), dtype=np.int32)
        values.append(t.value[order[is_leaf]])
        n_leaves += int(is_leaf.sum())
        feats.append(f), thrs.append(th), lefts.append(left.astype(np.int32)), slots.append(slot)
        roots.append(off)
        off += n
    n_features = int(max(int(f.max(initial=0)) for f in feats)) + 1 if n_features is None else n_features
    bits = feature_bits(n_features)
    left = np.concatenate(lefts).astype(np.int64)
    if left.max(initial=0) >= 1 << (31 - bits):
        raise TrainError(f"the forest has {left.size} nodes: too many for the packed sparse layout")
    return {"packed": ((left << bits) | np.concatenate(feats)).astype(np.int32),
            "threshold": np.concatenate(thrs), "leaf_slot": np.concatenate(slots),
            "values": (np.concatenate(values) / n_trees_total).astype(np.float32),
            "roots": np.asarray(roots, dtype=np.int32)}


def feature_bits(n_features: int) -> int:
    return max(1, int(np.ceil(np.log2(max(n_features, 2)))))


def choose_traversal(cfg: ForestConfig, depth: int) -> str:
    if cfg.traversal != "auto":
        return cfg.traversal
    return "perfect" if depth <= cfg.perfect_max_depth else "sparse"


# --------------------------------------------------------------------------- JAX evaluation

def perfect_probs(p: dict, x, depth: int):
    return leaf_sum(p["values"], perfect_leaves(p, x, depth))


def perfect_leaves(p: dict, x, depth: int):
    """The leaf (a row of ``values``) each tree reaches for each row: (trees, batch) int32."""
    import jax
    import jax.numpy as jnp

    feat, thr, leaf_map = p["feature"], p["threshold"], p["leaf_map"]
    n_t, ni = feat.shape
    b, n_f = x.shape
    f_flat, t_flat = feat.reshape(-1), thr.reshape(-1)
    x_flat = x.reshape(-1)
    x_base = (jnp.arange(b, dtype=jnp.int32) * n_f)[None, :]
    t_base = (jnp.arange(n_t, dtype=jnp.int32) * ni)[:, None]

    def step(_, idx):
        g = t_base + idx
        xv = x_flat[x_base + f_flat[g]]
        return 2 * idx + 1 + (xv > t_flat[g]).astype(jnp.int32)

    idx = jax.lax.fori_loop(0, depth, step, jnp.zeros((n_t, b), dtype=jnp.int32))
    return leaf_map.reshape(-1)[(jnp.arange(n_t, dtype=jnp.int32) * (ni + 1))[:, None] + idx - ni]


def sparse_probs(p: dict, x, depth: int):
    return leaf_sum(p["values"], sparse_leaves(p, x, depth))


def sparse_leaves(p: dict, x, depth: int):
    """The leaf (a row of ``values``) each tree reaches for each row: (trees, batch) int32."""
    import jax
    import jax.numpy as jnp

    packed, thr, slot, roots = p["packed"], p["threshold"], p["leaf_slot"], p["roots"]
    b, n_f = x.shape
    bits = feature_bits(n_f)
    mask = (1 << bits) - 1
    x_flat = x.reshape(-1)
    x_base = (jnp.arange(b, dtype=jnp.int32) * n_f)[None, :]

    def step(_, node):
        k = packed[node]
        xv = x_flat[x_base + (k & mask)]
        return (k >> bits) + (xv > thr[node]).astype(jnp.int32)

    node = jax.lax.fori_loop(0, depth, step, jnp.broadcast_to(roots[:, None], (roots.shape[0], b)))
    return slot[node]


def leaf_sum(values, leaf):
    """sum over trees of values[leaf[t, b], c] -> (b, c).

    One scalar gather + reduction per class: gathering (trees, batch, classes) rows at
    once and summing measured 3x slower for 10 classes at batch 4096 (49 vs 17 ms), and
    the per-class reduction also rounds less (1e-7 vs 7e-7 from predict_proba)."""
    import jax.numpy as jnp

    vt = values.T
    return jnp.stack([vt[c][leaf].sum(axis=0) for c in range(values.shape[1])], axis=1)


@register
class Forest(ModelKind):
    name = "forest"
    config_cls = ForestConfig
    fitted = True

    def view(self, cfg: ForestConfig) -> ViewInfo:
        return view_info(cfg)

    def check(self, cfg: ForestConfig) -> None:
        check_config(cfg)

    def fit(self, ctx, x_tr, y_tr, x_va, y_va, n_classes, class_weights):
        """Trees in chunks (one chunk = one "epoch" of checkpoints and learning curves); the
        forest weighs classes itself (``class_weight`` of its config)."""
        from ..train import fit_forest

        return fit_forest(self, ctx, x_tr, y_tr, x_va, y_va, n_classes)

    def probs(self, cfg: ForestConfig, static: dict, params: dict, x):
        if static["traversal"] == "perfect":
            return perfect_probs(params, x, static["depth"])
        return sparse_probs(params, x, static["depth"])

    def layout(self, cfg: ForestConfig, trees: list[TreeArrays]) -> tuple[dict, dict]:
        """Parameters and static settings for the exported function."""
        depth = max(1, max(t.depth for t in trees))
        traversal = choose_traversal(cfg, depth)
        if traversal == "perfect" and depth > 20:
            raise TrainError(f"traversal 'perfect' needs 2^depth nodes per tree; depth {depth} is too deep "
                             "(use traversal = 'sparse' or 'auto', or limit max_depth)")
        n_f = self.view(cfg).shape[-1]
        arrays = (perfect_layout(trees, len(trees)) if traversal == "perfect"
                  else sparse_layout(trees, len(trees), n_f))
        return arrays, {"traversal": traversal, "depth": depth, "trees": len(trees),
                        "nodes": int(sum(t.left.size for t in trees)),
                        "leaves": int(sum(int((t.left == -1).sum()) for t in trees))}
