"""Fitting loops: optax for gradient kinds, chunked scikit-learn fits for the forest.

Both loops checkpoint at every epoch end (for the forest: every chunk of trees)
and every ``checkpoint_minutes``, and can resume from a checkpoint after a crash.
Resuming is exact: each epoch's shuffle comes from (seed, epoch), each step's
dropout key from (seed, global step), each tree chunk's seed from (seed, chunk).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import checkpoint as ckpt
from .errors import TrainError
from .metrics import classification_report, log_loss
from .progress import ProgressBar
from .spec import Spec
from .zoo import norm as N

log = logging.getLogger("malsensor.train")


@dataclass
class FitResult:
    params: Any                       # pytree of arrays for the exported function
    probs_fn: Callable[[Any, Any], Any]
    history: list[dict] = field(default_factory=list)
    normalisation: dict | None = None
    static: dict = field(default_factory=dict)
    best_epoch: int | None = None
    train_probs_fn: Callable[[np.ndarray], np.ndarray] | None = None   # trainer-side (flax/sklearn) reference
    sklearn_model: Any = None


@dataclass
class LoopContext:
    spec: Spec
    work: Path
    run_key: str
    resume: bool
    checkpoint_minutes: float
    skip_eval: bool
    progress: bool = True
    writer: Any = None                # tensorboardX SummaryWriter or None
    stop_after_epochs: int | None = None   # tests: simulate a crash after this many epochs
    dask: str | None = None                # scheduler address (kinds with ``dask = True``: gbdt)

    def resume_state(self) -> dict[str, Any] | None:
        """The checkpoint to go on from: None without ``--resume``, or (with a warning) when
        there is none yet."""
        if not self.resume:
            return None
        st = ckpt.load(self.work, self.run_key)
        if st is None:
            log.warning("no checkpoint in %s: starting from the beginning", self.work)
        return st


def _seed_int(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


# --------------------------------------------------------------------------- gradient models

def fit_gradient(kind, ctx: LoopContext, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray | None,
                 y_va: np.ndarray | None, n_classes: int, class_w: np.ndarray) -> FitResult:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import serialization

    spec, tc = ctx.spec, ctx.spec.train
    cfg = spec.model
    module = kind.module(cfg, n_classes)
    norm = kind.fit_inputs(cfg, x_tr)  # the normaliser (along the view's features), or the kind's own
    norm_j = {k: jnp.asarray(v) for k, v in norm.items()}
    n = x_tr.shape[0]
    bs = min(tc.batch_size, n)
    steps_per_epoch = -(-n // bs)
    total = steps_per_epoch * tc.epochs
    warm = max(0, min(int(tc.warmup_epochs * steps_per_epoch), total - 1))
    schedule = optax.warmup_cosine_decay_schedule(0.0 if warm else tc.lr, tc.lr, warm, total,
                                                  end_value=tc.lr * 0.01)
    tx = optax.chain(optax.clip_by_global_norm(tc.grad_clip) if tc.grad_clip > 0 else optax.identity(),
                     optax.adamw(schedule, weight_decay=tc.weight_decay))
    key = jax.random.PRNGKey(_seed_int(tc.seed, 0))
    variables = module.init({"params": key}, kind.prepare_inputs(norm_j, jnp.asarray(x_tr[:1])), train=False)
    net = variables["params"]
    # batch normalisation: flax's "batch_stats" collection (running mean and variance), updated by
    # every training step, used as it is at evaluation and exported with the params ({} otherwise)
    bstats = jax.tree_util.tree_map(jnp.asarray, dict(variables.get("batch_stats", {})))
    has_bs = bool(jax.tree_util.tree_leaves(bstats))
    opt_state = tx.init(net)
    cw = jnp.asarray(class_w)

    def variables_of(p, bs):
        return {"params": p, "batch_stats": bs} if has_bs else {"params": p}

    def logits_fn(p, bs, x, train, rng=None):
        """Logits, and the batch statistics after this batch (unchanged unless training)."""
        z = kind.prepare_inputs(norm_j, x)
        rngs = {"dropout": rng} if rng is not None else {}
        if train and has_bs:
            logits, upd = module.apply(variables_of(p, bs), z, train=True, rngs=rngs, mutable=["batch_stats"])
            return logits, upd["batch_stats"]
        return module.apply(variables_of(p, bs), z, train=train, rngs=rngs), bs

    def loss_fn(p, bs, x, y, valid, rng):
        logits, bs = logits_fn(p, bs, x, True, rng)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        w = cw[y] * valid
        return (ce * w).sum() / jnp.maximum(w.sum(), 1e-9), bs

    @jax.jit
    def train_step(p, bs, o, x, y, valid, step):
        rng = jax.random.fold_in(jax.random.PRNGKey(_seed_int(tc.seed, 1)), step)
        (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(p, bs, x, y, valid, rng)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), bs, o, loss

    @jax.jit
    def probs_j(p, bs, x):
        return jax.nn.softmax(logits_fn(p, bs, x, False)[0], axis=-1)

    def probs_np(p, bs, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], n_classes), dtype=np.float32)
        eb = tc.eval_batch_size
        for i in range(0, x.shape[0], eb):
            chunk = x[i:i + eb]
            k = chunk.shape[0]
            if k < eb and x.shape[0] > eb:
                chunk = np.concatenate([chunk, np.zeros((eb - k, *x.shape[1:]), np.float32)])
            out[i:i + k] = np.asarray(probs_j(p, bs, chunk))[:k]
        return out

    # ---- state, possibly from a checkpoint
    epoch, step_in_epoch, history = 0, 0, []
    best = {"score": -1.0, "loss": float("inf"), "epoch": None, "params": net, "batch_stats": bstats}
    stale = 0
    elapsed = 0.0
    st = ctx.resume_state()
    if st is not None:
        template = serialization.to_state_dict(net)
        trees = {"params": template, "best_params": template, "opt_state": serialization.to_state_dict(opt_state)}
        if has_bs:
            trees.update(batch_stats=serialization.to_state_dict(bstats),
                         best_batch_stats=serialization.to_state_dict(bstats))
        ckpt.check_state(ctx.work, st, ints={"epoch": (0, tc.epochs), "step_in_epoch": (0, steps_per_epoch),
                                             "best_epoch": (-1, max(tc.epochs - 1, 0)), "stale": (0, tc.epochs)},
                         numbers=("best_score", "best_loss", "elapsed"), maps=("history",), trees=trees)
        net = serialization.from_state_dict(net, st["params"])
        best_bs = bstats
        if has_bs:
            best_bs = serialization.from_state_dict(bstats, st["best_batch_stats"])
            bstats = serialization.from_state_dict(bstats, st["batch_stats"])
        opt_state = serialization.from_state_dict(opt_state, st["opt_state"])
        best = {"score": float(st["best_score"]), "loss": float(st["best_loss"]),
                "epoch": None if int(st["best_epoch"]) < 0 else int(st["best_epoch"]),
                "params": serialization.from_state_dict(net, st["best_params"]), "batch_stats": best_bs}
        epoch, step_in_epoch = int(st["epoch"]), int(st["step_in_epoch"])
        history = [dict(h) for h in _as_list(st["history"])]
        stale = int(st["stale"])
        elapsed = float(st["elapsed"])
        log.info("resuming from checkpoint: epoch %d, step %d of %d", epoch + 1, step_in_epoch, steps_per_epoch)

    def save(done_epoch: int, done_step: int) -> None:
        extra = {"batch_stats": serialization.to_state_dict(bstats),
                 "best_batch_stats": serialization.to_state_dict(best["batch_stats"])} if has_bs else {}
        ckpt.save(ctx.work, ctx.run_key, {**extra,
            "params": serialization.to_state_dict(net), "opt_state": serialization.to_state_dict(opt_state),
            "best_params": serialization.to_state_dict(best["params"]), "best_score": best["score"],
            "best_loss": best["loss"], "best_epoch": -1 if best["epoch"] is None else best["epoch"],
            "epoch": done_epoch, "step_in_epoch": done_step, "history": {str(i): h for i, h in enumerate(history)},
            "stale": stale, "elapsed": elapsed + (time.monotonic() - t_start)})

    t_start = time.monotonic()
    last_ckpt = time.monotonic()
    every = ctx.checkpoint_minutes * 60.0
    epochs_run = 0
    while epoch < tc.epochs:
        perm = np.random.default_rng([tc.seed, epoch]).permutation(n)
        losses = []
        t_ep = time.monotonic()
        with ProgressBar(f"epoch {epoch + 1}/{tc.epochs}", steps_per_epoch - step_in_epoch, enabled=ctx.progress,
                      unit="step") as bar:
            for s in range(step_in_epoch, steps_per_epoch):
                idx = perm[s * bs:(s + 1) * bs]
                k = idx.size
                valid = np.ones(bs, np.float32)
                if k < bs:                              # pad the last batch: one compiled shape
                    idx = np.concatenate([idx, idx[: bs - k] if k >= bs - k else np.resize(idx, bs - k)])
                    valid[k:] = 0.0
                net, bstats, opt_state, loss = train_step(net, bstats, opt_state, x_tr[idx], y_tr[idx], valid,
                                                          epoch * steps_per_epoch + s)
                losses.append(loss)
                bar.update(1, **({"loss": float(loss)} if (s + 1) % 50 == 0 else {}))
                if every > 0 and time.monotonic() - last_ckpt >= every and s + 1 < steps_per_epoch:
                    save(epoch, s + 1)
                    last_ckpt = time.monotonic()
        train_loss = float(np.mean([float(v) for v in losses])) if losses else float("nan")
        rec = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": time.monotonic() - t_ep,
               "lr": float(schedule(min((epoch + 1) * steps_per_epoch, total)))}
        if not ctx.skip_eval and x_va is not None and x_va.shape[0]:
            pv = probs_np(net, bstats, x_va)
            rep = classification_report(y_va, pv.argmax(1), [str(i) for i in range(n_classes)])
            rec.update(val_loss=log_loss(pv, y_va), val_accuracy=rep["accuracy"], val_macro_f1=rep["macro_f1"])
            better = rep["macro_f1"] > best["score"] + 1e-6 or (
                abs(rep["macro_f1"] - best["score"]) <= 1e-6 and rec["val_loss"] < best["loss"])
            if better:
                best = {"score": rep["macro_f1"], "loss": rec["val_loss"], "epoch": epoch + 1, "params": net,
                        "batch_stats": bstats}
                stale = 0
            else:
                stale += 1
        else:
            best = {"score": -1.0, "loss": float("inf"), "epoch": epoch + 1, "params": net, "batch_stats": bstats}
        history.append(rec)
        _log_epoch(ctx, rec)
        epoch += 1
        step_in_epoch = 0
        epochs_run += 1
        stop = tc.patience > 0 and stale >= tc.patience
        save(epoch if not stop else tc.epochs, 0)
        last_ckpt = time.monotonic()
        if stop:
            log.info("early stop: validation macro-F1 did not improve for %d epochs (best epoch %s)",
                     tc.patience, best["epoch"])
            break
        if ctx.stop_after_epochs is not None and epochs_run >= ctx.stop_after_epochs:
            raise _Interrupted()
    params = {"norm": norm_j, "net": best["params"]}
    if has_bs:
        params["batch_stats"] = best["batch_stats"]  # data in the artifact, like the weights

    def probs_fn(p, x):
        z = kind.prepare_inputs(p["norm"], x)
        v = {"params": p["net"], "batch_stats": p["batch_stats"]} if "batch_stats" in p else {"params": p["net"]}
        return jax.nn.softmax(module.apply(v, z, train=False), axis=-1)

    return FitResult(jax.tree_util.tree_map(np.asarray, params), probs_fn, history,
                     kind.describe_inputs(norm, kind.view(cfg).columns), {}, best["epoch"],
                     lambda x: probs_np(best["params"], best["batch_stats"], x))


class _Interrupted(Exception):
    """Raised by the test hook ``stop_after_epochs`` (a clean stand-in for a crash)."""


def _as_list(h) -> list:
    if isinstance(h, dict):
        return [h[k] for k in sorted(h, key=int)]
    return list(h)


def _log_epoch(ctx: LoopContext, rec: dict) -> None:
    parts = [f"epoch {rec['epoch']}"]
    for k in ("trees", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"):
        if k in rec:
            parts.append(f"{k} {rec[k]}" if isinstance(rec[k], int) else f"{k} {rec[k]:.4f}")
    log.info("  ".join(parts))
    if ctx.writer is not None:
        for k, v in rec.items():
            if k != "epoch" and isinstance(v, (int, float)):
                ctx.writer.add_scalar(k.replace("_", "/", 1), v, rec["epoch"])


# --------------------------------------------------------------------------- forest

def fit_forest(kind, ctx: LoopContext, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray | None,
               y_va: np.ndarray | None, n_classes: int) -> FitResult:
    """Fit ``n_estimators`` trees in chunks of ``trees_per_chunk`` (one chunk = one "epoch"
    for checkpoints and learning curves); chunk k is seeded by (seed, k)."""
    from .zoo.forest import TreeArrays, sklearn_forest

    cfg, tc = ctx.spec.model, ctx.spec.train
    if np.unique(y_tr).size != n_classes:
        raise TrainError("internal: every class must be present in the training split")
    chunks = [(i, min(cfg.trees_per_chunk, cfg.n_estimators - i)) for i in range(0, cfg.n_estimators, cfg.trees_per_chunk)]
    trees: list[TreeArrays] = []
    history: list[dict] = []
    val_sum = None if x_va is None else np.zeros((x_va.shape[0], n_classes))
    done = 0
    st = ctx.resume_state()
    if st is not None:
        ckpt.check_state(ctx.work, st, ints={"chunks_done": (0, len(chunks)), "n_trees": (0, cfg.n_estimators)},
                         maps=("history", "trees"))
        if int(st["n_trees"]) != sum(m for _, m in chunks[:int(st["chunks_done"])]):
            ckpt.check_state(ctx.work, st, ints={"n_trees": (sum(m for _, m in chunks[:int(st["chunks_done"])]),) * 2})
        done = int(st["chunks_done"])
        try:
            trees = [TreeArrays.from_npz_dict(st["trees"], f"{i}/") for i in range(int(st["n_trees"]))]
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise TrainError(f"{ctx.work / ckpt.FILE}: trees: {type(e).__name__}: {e}; remove it or run "
                             "without --resume") from None
        history = _as_list(st["history"])
        if val_sum is not None and "val_sum" in st:
            val_sum = np.array(st["val_sum"], dtype=np.float64)
        log.info("resuming from checkpoint: %d of %d chunks (%d trees) done", done, len(chunks), len(trees))
    sk_models = []
    with ProgressBar("trees", cfg.n_estimators, enabled=ctx.progress, unit="tree") as bar:
        bar.update(len(trees))
        for k in range(done, len(chunks)):
            start, m = chunks[k]
            t0 = time.monotonic()
            rf = sklearn_forest(cfg, m, _seed_int(tc.seed, k)).fit(x_tr, y_tr)
            sk_models.append(rf)
            trees.extend(TreeArrays.from_sklearn(e, n_classes) for e in rf.estimators_)
            rec = {"epoch": k + 1, "trees": len(trees), "seconds": time.monotonic() - t0}
            if val_sum is not None and not ctx.skip_eval and x_va.shape[0]:
                rf.set_params(n_jobs=cfg.n_jobs)
                val_sum += rf.predict_proba(x_va) * m
                pv = val_sum / len(trees)
                rep = classification_report(y_va, pv.argmax(1), [str(i) for i in range(n_classes)])
                rec.update(val_loss=log_loss(pv, y_va), val_accuracy=rep["accuracy"], val_macro_f1=rep["macro_f1"])
            history.append(rec)
            _log_epoch(ctx, rec)
            bar.update(m)
            state = {"chunks_done": k + 1, "n_trees": len(trees), "history": {str(i): h for i, h in enumerate(history)},
                     "trees": {kk: v for i, t in enumerate(trees) for kk, v in t.to_npz_dict(f"{i}/").items()}}
            if val_sum is not None:
                state["val_sum"] = val_sum
            ckpt.save(ctx.work, ctx.run_key, state)
            if ctx.stop_after_epochs is not None and k + 1 - done >= ctx.stop_after_epochs and k + 1 < len(chunks):
                raise _Interrupted()
    params, static = kind.layout(cfg, trees)
    sk = None
    if len(sk_models) == len(chunks):            # one process fitted every chunk: keep a combined sklearn forest
        sk = sk_models[0]
        sk.estimators_ = [e for m in sk_models for e in m.estimators_]
        sk.n_estimators = len(sk.estimators_)
        sk.set_params(n_jobs=1)

    def probs_fn(p, x):
        return kind.probs(cfg, static, p, x)

    return FitResult(params, probs_fn, history, {"transform": "none"}, static, len(chunks),
                     (lambda x: sk.predict_proba(x)) if sk is not None else None, sk)
