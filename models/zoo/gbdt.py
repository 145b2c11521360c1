"""Gradient-boosted trees: fitted by XGBoost, evaluated by the forest's JAX traversal.

Why XGBoost rather than LightGBM (bench/bench_gbdt_libs.py: UNSW CSV, 17 conn columns,
the trainer's seeded split; docs/training.md has the table): quality within a point or two
either way (binary accuracy 0.9365-0.9374 vs 0.9377-0.9397, 10-class macro-F1 0.47-0.50
vs 0.45-0.52), and XGBoost's trees fit the compiled traversal better:
they grow level-wise to ``max_depth`` (the traversal runs one step per level; LightGBM
grows leaf-wise and its 31-leaf trees reach depth 10-15), and its split thresholds are
float32 compared with float32 features, so the conversion is exact by construction.

Conversion keeps XGBoost's arithmetic:

* a split sends ``x`` left iff ``x < t`` (t float32). The traversal goes right iff
  ``x > t'``; with ``t'`` the largest float32 below ``t`` both agree for every float32
  ``x`` (the forest's ``threshold_f32`` applied to ``t`` less one float64 step). A split
  at exactly 0 makes ``t'`` the subnormal -1.4e-45, which XLA flushes to -0 (then ``x = 0``
  went left): the layouts replace subnormal thresholds (``forest.flush_safe``);
* XGBoost adds the trees' leaf values to the base margin one tree after another in
  float32, then applies the sigmoid (binary: ``[1 - p, p]``) or softmax. The exported
  function does the same additions in the same order (one loop step per boosting
  round), which keeps probabilities within 1e-7 of ``predict_proba``; a tree-parallel
  reduction rounds differently and measured up to 2e-6 away on 10-class UNSW.

Non-finite inputs are replaced by 0 before the model (as for every artifact), so
XGBoost's missing-value directions never apply.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.views.conn import CONN

from .. import checkpoint as ckpt
from ..errors import TrainError
from ..metrics import classification_report
from ..progress import ProgressBar
from .base import ModelKind, register
from .forest import (TRAVERSALS, TreeArrays, _levels, choose_traversal, perfect_layout, perfect_leaves,
                     sparse_layout, sparse_leaves)

log = logging.getLogger("malsensor.train")


@dataclass
class GBDTConfig:
    """Hyper-parameters (``[model]`` in etc/models/gbdt.toml); XGBoost's names and meanings."""

    n_estimators: int = 1000          # most boosting rounds (early stopping usually ends sooner)
    learning_rate: float = 0.1
    max_depth: int = 8                # 1..20: traversal steps per row
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 1.0
    reg_alpha: float = 0.0
    gamma: float = 0.0
    max_bin: int = 256
    early_stopping_rounds: int = 30   # rounds without a lower validation log loss; 0 = never stop early
    rounds_per_chunk: int = 25        # rounds fitted between checkpoints (one "epoch")
    traversal: str = "auto"           # auto | perfect | sparse (as the forest)
    # XGBoost's level-wise trees are nearly complete, so the perfect layout wins deeper than
    # for the forest: 190 depth-8 trees, batch 4096, best of 15: perfect 13.0 ms, sparse 23.8 ms
    perfect_max_depth: int = 8
    n_jobs: int = 2
    # what the trees read: "conn@1" (17 features), "conn_ctx@1" (+ UNSW-NB15's connection
    # context), "conn_profile@1" (+ the source device's profile), or a connection's first n_packets packets (pkt_seq@1, flattened packet by
    # packet: n_packets x 5 inputs; device identification)
    view: str = "conn@1"
    n_packets: int = 16               # view = "pkt_seq@1" only


GBDT_VIEWS = ("conn@1", "conn_ctx@1", "conn_profile@1", "pkt_seq@1")


def check_config(cfg: GBDTConfig) -> None:
    if cfg.n_estimators < 1:
        raise TrainError("n_estimators must be >= 1")
    if not 1 <= cfg.max_depth <= 20:
        raise TrainError(f"max_depth must be in 1..20 (one traversal step per level), not {cfg.max_depth}")
    if not cfg.learning_rate > 0:
        raise TrainError("learning_rate must be > 0")
    for k in ("subsample", "colsample_bytree"):
        if not 0 < getattr(cfg, k) <= 1:
            raise TrainError(f"{k} must be in (0, 1], not {getattr(cfg, k)}")
    for k in ("min_child_weight", "reg_lambda", "reg_alpha", "gamma"):
        if getattr(cfg, k) < 0:
            raise TrainError(f"{k} must be >= 0, not {getattr(cfg, k)}")
    if cfg.max_bin < 2:
        raise TrainError("max_bin must be >= 2")
    if cfg.early_stopping_rounds < 0:
        raise TrainError("early_stopping_rounds must be >= 0 (0 = never stop early)")
    if cfg.rounds_per_chunk < 1:
        raise TrainError("rounds_per_chunk must be >= 1")
    if cfg.traversal not in TRAVERSALS:
        raise TrainError(f"traversal must be one of {', '.join(TRAVERSALS)}, not {cfg.traversal!r}")
    if cfg.n_jobs < 1:
        raise TrainError("n_jobs must be >= 1")
    if cfg.view not in GBDT_VIEWS:
        raise TrainError(f"view must be one of {', '.join(GBDT_VIEWS)}, not {cfg.view!r}")
    if cfg.view == "pkt_seq@1":
        from malsensor.daemon.views.pkt_seq import N_PACKETS_MAX

        if not 1 <= cfg.n_packets <= N_PACKETS_MAX:
            raise TrainError(f"n_packets must be in 1..{N_PACKETS_MAX}, not {cfg.n_packets}")


def flat(x):
    """Rows as the trees see them: one vector per row (pkt_seq's (N, 5) packet by packet)."""
    return x.reshape(x.shape[0], -1) if x.ndim > 2 else x


def xgb_params(cfg: GBDTConfig, n_classes: int, seed: int) -> dict[str, Any]:
    p = {"objective": "binary:logistic" if n_classes == 2 else "multi:softprob",
         "eval_metric": "logloss" if n_classes == 2 else "mlogloss",
         "eta": cfg.learning_rate, "max_depth": cfg.max_depth, "min_child_weight": cfg.min_child_weight,
         "subsample": cfg.subsample, "colsample_bytree": cfg.colsample_bytree, "lambda": cfg.reg_lambda,
         "alpha": cfg.reg_alpha, "gamma": cfg.gamma, "max_bin": cfg.max_bin, "tree_method": "hist",
         "nthread": cfg.n_jobs, "seed": seed, "verbosity": 1}
    if n_classes > 2:
        p["num_class"] = n_classes
    return p


# --------------------------------------------------------------------------- conversion

@dataclass
class Boosted:
    """An XGBoost model as arrays: trees in boosting order (``groups`` per round)."""

    trees: list[TreeArrays]
    groups: int                 # trees per round: 1 (binary:logistic) or n_classes (multi:softprob)
    base: np.ndarray            # (groups,) float32 base margin
    objective: str


def _floats(v: str) -> list[float]:
    """XGBoost writes base_score as "5E-1" (before 3.0) or "[5E-1]" / "[a,b,c]"."""
    return [float(s) for s in v.strip("[]").split(",")]


def from_xgboost(booster) -> Boosted:
    """The trees, base margin and objective of a fitted ``xgboost.Booster``.

    Reads the model's own JSON (``save_raw("json")``): ``split_conditions`` holds the
    float32 threshold of an internal node and the (learning-rate-scaled) value of a leaf."""
    doc = json.loads(bytes(booster.save_raw("json")))
    learner = doc["learner"]
    obj = learner["objective"]["name"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise TrainError(f"only gbtree boosters convert, not {gb.get('name')!r}")
    model = gb["model"]
    if int(model["gbtree_model_param"].get("num_parallel_tree", "1")) != 1:
        raise TrainError("num_parallel_tree > 1 (boosted random forests) does not convert")
    mp = learner["learner_model_param"]
    n_cls = int(mp.get("num_class", "0"))
    groups = max(1, n_cls)
    base = np.asarray(_floats(mp["base_score"]), dtype=np.float32)
    if obj == "binary:logistic":
        # XGBoost stores the base score as a probability and turns it into a margin with
        # float32 ops and C's logf: -logf(1.0f/p - 1.0f). numpy's float32 log is 1 ulp off
        # for some p (measured: margins 2e-6 apart after 150 rounds); the float64 log
        # rounded to float32 matches XGBoost's margins exactly on UNSW.
        t = (np.float32(1) / base - np.float32(1)).astype(np.float32)
        base = (-np.log(t.astype(np.float64))).astype(np.float32)
    elif obj != "multi:softprob":
        raise TrainError(f"objective {obj!r} does not convert (binary:logistic or multi:softprob)")
    if base.size == 1 and groups > 1:
        base = np.full(groups, base[0], dtype=np.float32)
    info = np.asarray(model["tree_info"], dtype=np.int64)
    if info.size % groups or not np.array_equal(info, np.tile(np.arange(groups), info.size // groups)):
        raise TrainError("the booster's trees are not in round order (one tree per class per round)")
    trees = []
    for t in model["trees"]:
        left = np.asarray(t["left_children"], dtype=np.int64)
        right = np.asarray(t["right_children"], dtype=np.int64)
        cond = np.asarray(t["split_conditions"], dtype=np.float32)
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise TrainError("categorical splits do not convert")
        leaf = left == -1
        # x < t  <=>  x <= (t less one float64 step): threshold_f32 then rounds down to float32
        thr = np.nextafter(cond.astype(np.float64), -np.inf)
        value = np.where(leaf, cond.astype(np.float64), 0.0)[:, None]
        ta = TreeArrays(left, right, np.asarray(t["split_indices"], dtype=np.int64), thr, value, 0)
        ta.depth = int(_levels(ta)[2].max())
        trees.append(ta)
    return Boosted(trees, groups, base, obj)


def layout(cfg: GBDTConfig, model: Boosted, n_features: int) -> tuple[dict, dict]:
    """Parameters and static settings of the exported function."""
    depth = max(1, max(t.depth for t in model.trees))
    traversal = choose_traversal(cfg, depth)
    if traversal == "perfect" and depth > 20:
        raise TrainError(f"traversal 'perfect' needs 2^depth nodes per tree; depth {depth} is too deep")
    arrays = (perfect_layout(model.trees, 1) if traversal == "perfect"
              else sparse_layout(model.trees, 1, n_features))
    arrays["values"] = arrays["values"][:, 0]
    arrays["base"] = model.base
    static = {"traversal": traversal, "depth": depth, "trees": len(model.trees),
              "rounds": len(model.trees) // model.groups, "groups": model.groups, "objective": model.objective,
              "nodes": int(sum(t.left.size for t in model.trees)),
              "leaves": int(sum(int((t.left == -1).sum()) for t in model.trees))}
    return arrays, static


# --------------------------------------------------------------------------- JAX evaluation

def margins(static: dict, p: dict, x):
    """base + the trees' leaf values, added round after round in float32 (XGBoost's order)."""
    import jax
    import jax.numpy as jnp

    leaves = (perfect_leaves if static["traversal"] == "perfect" else sparse_leaves)(p, x, static["depth"])
    g, r = static["groups"], static["rounds"]
    v = p["values"][leaves].reshape(r, g, x.shape[0])          # (rounds, groups, batch)

    def add(i, m):
        return m + v[i]

    m0 = jnp.broadcast_to(p["base"][:, None], (g, x.shape[0]))
    # unrolled by 8: the loop's per-step overhead showed at batch 1 (0.33 vs 0.30 ms CPU, 190 rounds)
    return jax.lax.fori_loop(0, r, add, m0, unroll=8).T          # (batch, groups)


def gbdt_probs(static: dict, p: dict, x):
    import jax.numpy as jnp

    m = margins(static, p, x)
    if static["groups"] == 1:
        one = jnp.float32(1)
        pos = one / (one + jnp.exp(-m[:, 0]))                     # XGBoost: 1 / (1 + expf(-x))
        return jnp.stack([one - pos, pos], axis=1)
    z = jnp.exp(m - m.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def booster_proba(booster, x: np.ndarray) -> np.ndarray:
    """XGBoost's own probabilities (what ``XGBClassifier.predict_proba`` returns)."""
    import xgboost as xgb

    p = booster.predict(xgb.DMatrix(flat(np.asarray(x))))
    if p.ndim == 1:
        return np.vstack([1.0 - p, p]).T
    return p


# --------------------------------------------------------------------------- fitting

def fit_gbdt(kind: "GBDT", ctx, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray | None,
             y_va: np.ndarray | None, n_classes: int, class_weights: np.ndarray):
    """Boost ``rounds_per_chunk`` rounds at a time (one chunk = one "epoch" for checkpoints
    and learning curves), stopping ``early_stopping_rounds`` rounds after the lowest
    validation log loss (XGBoost's own rule, over the library's per-round metric); the
    published model keeps the rounds up to that best one."""
    try:
        import xgboost as xgb
    except ImportError:
        raise TrainError("model kind gbdt needs XGBoost: install the train extra (pip install 'malsensor[train]')") \
            from None

    from ..train import FitResult, _as_list, _Interrupted, _log_epoch, _seed_int

    cfg, tc = ctx.spec.model, ctx.spec.train
    if np.unique(y_tr).size != n_classes:
        raise TrainError("internal: every class must be present in the training split")
    params = xgb_params(cfg, n_classes, _seed_int(tc.seed, 0))
    x_tr = flat(x_tr)
    x_va = None if x_va is None else flat(x_va)
    metric = params["eval_metric"]
    weights = np.asarray(class_weights, np.float32)[y_tr]
    use_val = x_va is not None and x_va.shape[0] > 0 and not ctx.skip_eval
    if ctx.dask:
        boost, close = dask_booster(ctx.dask, params, x_tr, y_tr, weights, x_va if use_val else None, y_va)
    else:
        dtrain = xgb.DMatrix(x_tr, label=y_tr, weight=weights, nthread=cfg.n_jobs)
        dval = xgb.DMatrix(x_va, label=y_va, nthread=cfg.n_jobs) if use_val else None

        def boost(m: int, booster):
            evals_result: dict = {}
            booster = xgb.train(params, dtrain, num_boost_round=m, xgb_model=booster,
                                evals=[(dval, "val")] if use_val else [], evals_result=evals_result,
                                verbose_eval=False)
            return booster, evals_result

        def close():
            pass

    raw: bytes | None = None
    rounds, history = 0, []
    best = {"loss": float("inf"), "round": 0}
    stopped = False
    st = ctx.resume_state()
    if st is not None:
        raw = bytes(st["booster"])
        rounds = int(st["rounds"])
        history = [dict(h) for h in _as_list(st["history"])]
        best = {"loss": float(st["best_loss"]), "round": int(st["best_round"])}
        stopped = bool(st["stopped"])
        log.info("resuming from checkpoint: %d of %d rounds done", rounds, cfg.n_estimators)
    booster = xgb.Booster(model_file=bytearray(raw)) if raw is not None else None
    chunks_run = 0
    try:
        with ProgressBar("boosting rounds", cfg.n_estimators, enabled=ctx.progress, unit="round") as bar:
            bar.update(rounds)
            while rounds < cfg.n_estimators and not stopped:
                m = min(cfg.rounds_per_chunk, cfg.n_estimators - rounds)
                t0 = time.monotonic()
                booster, evals_result = boost(m, booster)
                rec: dict[str, Any] = {"epoch": len(history) + 1, "rounds": rounds + m,
                                       "trees": (rounds + m) * (1 if n_classes == 2 else n_classes)}
                if use_val:
                    for i, loss in enumerate(evals_result["val"][metric]):
                        if loss < best["loss"]:                     # XGBoost's EarlyStopping: strictly lower
                            best = {"loss": float(loss), "round": rounds + i + 1}
                    pv = booster_proba(booster, x_va)
                    rep = classification_report(y_va, pv.argmax(1), [str(i) for i in range(n_classes)])
                    rec.update(val_loss=float(evals_result["val"][metric][-1]), val_accuracy=rep["accuracy"],
                               val_macro_f1=rep["macro_f1"])
                rounds += m
                if not use_val:
                    best = {"loss": float("nan"), "round": rounds}
                stopped = (use_val and cfg.early_stopping_rounds > 0
                           and rounds - best["round"] >= cfg.early_stopping_rounds)
                rec["seconds"] = time.monotonic() - t0
                history.append(rec)
                _log_epoch(ctx, rec)
                bar.update(m)
                ckpt.save(ctx.work, ctx.run_key, {
                    "booster": bytes(booster.save_raw("json")), "rounds": rounds, "stopped": stopped,
                    "best_loss": best["loss"], "best_round": best["round"],
                    "history": {str(i): h for i, h in enumerate(history)}})
                chunks_run += 1
                if stopped:
                    log.info("early stop: validation %s did not improve for %d rounds (best round %d of %d)",
                             metric, rounds - best["round"], best["round"], rounds)
                if (ctx.stop_after_epochs is not None and chunks_run >= ctx.stop_after_epochs
                        and rounds < cfg.n_estimators and not stopped):
                    raise _Interrupted()
    finally:
        close()                                    # the Dask client, when there is one
    keep = best["round"] or rounds                 # 0: no validation loss was ever finite
    final = booster[:keep] if keep < rounds else booster
    model = from_xgboost(final)
    params_arr, static = layout(cfg, model, x_tr.shape[1])
    static.update(library=f"xgboost {xgb.__version__}", rounds_trained=rounds, best_round=best["round"])
    if ctx.dask:
        static["dask"] = ctx.dask
    log.info("gbdt: %d rounds kept of %d trained (%d trees, depth %d, %s traversal)", static["rounds"], rounds,
             static["trees"], static["depth"], static["traversal"])

    def probs_fn(p, x):
        return kind.probs(cfg, static, p, x)

    best_epoch = next((h["epoch"] for h in history if h["rounds"] >= best["round"]), len(history))
    return FitResult(params_arr, probs_fn, history, {"transform": "none"}, static, best_epoch,
                     lambda x: booster_proba(final, x), final)


def dask_booster(address: str, params: dict, x_tr: np.ndarray, y_tr: np.ndarray, weights: np.ndarray,
                 x_va: np.ndarray | None, y_va: np.ndarray | None):
    """``boost(rounds, booster) -> (booster, evals_result)`` on a Dask cluster (``xgboost.dask``),
    and ``close()``. The rows are cut into two partitions per worker and sent to the cluster
    once; each chunk of rounds continues the previous booster (``xgb_model``), as the local
    loop does, so checkpoints, early stopping and ``--resume`` work the same. Distributed
    ``hist`` merges the workers' quantile sketches, so the trees are not bit-identical to a
    local fit (tests/test_dataset_dask.py bounds the accuracy difference)."""
    try:
        import dask.array as da
        import xgboost.dask as dxgb
        from distributed import Client
    except ImportError as e:
        raise TrainError(f"--dask needs dask.distributed and pandas: install the train extra ({e})") from None
    try:
        client = Client(address)  # connect timeout: distributed.comm.timeouts.connect (30 s)
    except (OSError, TimeoutError) as e:
        raise TrainError(f"--dask {address}: cannot reach the scheduler ({e})") from None
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    log.info("gbdt on dask %s: %d worker(s), %d training rows", address, n_workers, x_tr.shape[0])

    def arrays(x, *cols):
        rows = max(1, -(-x.shape[0] // (2 * n_workers)))
        return [da.from_array(x, chunks=(rows, x.shape[1]))] + [da.from_array(c, chunks=rows) for c in cols]

    X, y, w = arrays(x_tr, y_tr, weights)
    dtrain = dxgb.DaskDMatrix(client, X, y, weight=w)
    dval = None
    if x_va is not None:
        Xv, yv = arrays(x_va, y_va)
        dval = dxgb.DaskDMatrix(client, Xv, yv)
    p = {k: v for k, v in params.items() if k != "nthread"}    # the workers' own threads

    def boost(m: int, booster):
        out = dxgb.train(client, p, dtrain, num_boost_round=m, xgb_model=booster,
                         evals=[(dval, "val")] if dval is not None else [], verbose_eval=False)
        return out["booster"], out["history"]

    return boost, client.close


@register
class GBDT(ModelKind):
    name = "gbdt"
    config_cls = GBDTConfig
    fitted = True
    dask = True                        # fit --dask: xgboost.dask
    reference = "XGBoost predict_proba"

    def view(self, cfg: GBDTConfig) -> ViewInfo:
        if cfg.view in ("conn_ctx@1", "conn_profile@1"):
            from malsensor.daemon.views.base import get_view

            return get_view(cfg.view).info()
        if cfg.view == "pkt_seq@1":
            from malsensor.daemon.views.pkt_seq import PKT_SEQ, PktSeqOptions

            return PKT_SEQ.info(PktSeqOptions(n_packets=cfg.n_packets))
        return CONN.info()

    def check(self, cfg: GBDTConfig) -> None:
        check_config(cfg)

    def refit_spec(self, spec, result):
        """Refit with the boosting rounds early stopping kept, and no early stopping."""
        from dataclasses import replace

        rounds = int(result.static.get("rounds") or spec.model.n_estimators)
        return replace(spec, model=replace(spec.model, n_estimators=max(1, rounds), early_stopping_rounds=0))

    def probs(self, cfg: GBDTConfig, static: dict, params: dict, x):
        return gbdt_probs(static, params, flat(x))

    def fit(self, ctx, x_tr, y_tr, x_va, y_va, n_classes: int, class_weights: np.ndarray):
        return fit_gbdt(self, ctx, x_tr, y_tr, x_va, y_va, n_classes, class_weights)
