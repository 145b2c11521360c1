"""``fit``: data -> split -> train -> export -> verify -> publish -> report."""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from malsensor.daemon import artifact as A

from . import checkpoint as ckpt
from .data.labels import LabelSpec
from .data.load import DataOptions, load_dataset
from .data.split import class_weights, split_dataset
from .data.table import Dataset
from .errors import TrainError
from .metrics import classification_report, log_loss
from .publish import export_model, new_version, predict_in_batches, publish
from .report import open_writer, plot_confusion, plot_curves, write_json
from .spec import Spec, load_spec
from .train import FitResult, LoopContext, _Interrupted
from .zoo.base import get_kind

log = logging.getLogger("malsensor.train")


@dataclass
class FitOptions:
    model: str
    data: list[str]
    out: Path
    name: str
    label: str | None = None
    label_from: str = "auto"
    macs: Path | None = None
    ips: Path | None = None
    batch_size: int | None = None
    epochs: int | None = None
    lr: float | None = None
    seed: int | None = None
    split: str | None = None
    dedup: bool | None = None
    skip_bad: bool | None = None
    semantics: str = "malsensor"
    checkpoint_minutes: float = 5.0
    resume: bool = False
    skip_test: bool = False
    skip_eval: bool = False
    reports: Path = Path("reports")
    platforms: tuple[str, ...] = ("cpu",)
    progress: bool = True
    merge: dict[str, str] = field(default_factory=dict)
    stop_after_epochs: int | None = None     # tests: interrupt after N epochs (as a crash would)
    workers: int = 0                         # processes reading pt samples (0: auto)
    dask: str | None = None                  # gbdt: scheduler address, boost with xgboost.dask
    split_ratios: str | None = None          # "TRAIN,VAL,TEST" percentages; None = the spec's (60,20,20)
    refit: bool | None = None                # None = the spec's [data] refit


@dataclass
class FitOutcome:
    artifact: Path
    version: str
    report_dir: Path
    metrics: dict
    result: FitResult
    dataset: Dataset
    labels: list[str]
    test_idx: np.ndarray


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("malsensor", "jax", "jaxlib", "numpy", "msgpack", "flax", "optax", "scikit-learn", "xgboost"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def data_options(opts: FitOptions, spec: Spec, require_labels: bool = True) -> DataOptions:
    label = opts.label if opts.label is not None else (spec.data.label or None)
    mode = opts.label_from
    if mode == "auto" and label is not None and not opts.macs and not opts.ips:
        mode = "column"
    return DataOptions(LabelSpec(mode, label, opts.macs, opts.ips),
                       spec.data.skip_bad if opts.skip_bad is None else opts.skip_bad,
                       spec.data.dedup if opts.dedup is None else opts.dedup,
                       opts.semantics, require_labels, opts.merge, opts.workers)


def describe_dataset(ds: Dataset) -> None:
    s = ds.stats
    log.info("data: %d rows from %d file(s), %d labels; view %s", ds.n, s.files, len(set(ds.y.tolist())),
             ds.view.describe())
    log.info("data: read %d rows, malformed skipped %d, unlabelled dropped %d, missing values %d, "
             "non-finite values %d, duplicate rows %d (with conflicting labels %d, dropped %d)",
             s.rows_read, s.bad_rows, s.unlabelled, s.missing_values, s.nonfinite_values, s.duplicates,
             s.conflicting_duplicates, s.duplicates_dropped)
    for d, merged in sorted(s.merged_labels.items()):
        log.info("data: %s shares its MAC with another device: merged into label %r", d, merged)


def run_fit(opts: FitOptions) -> FitOutcome:
    t_all = time.monotonic()
    spec = load_spec(opts.model).with_train(batch_size=opts.batch_size, epochs=opts.epochs, lr=opts.lr,
                                              seed=opts.seed)
    kind = get_kind(spec.kind)
    kind.check(spec.model)
    tc = spec.train
    if tc.epochs < 1 or tc.batch_size < 1 or tc.lr <= 0:
        raise TrainError("epochs and batch size must be >= 1 and the learning rate > 0")
    view = kind.view(spec.model)
    log.info("model %s (%s) reads view %s", spec.kind, spec.source, view.describe())

    t0 = time.monotonic()
    ds = load_dataset(opts.data, view, data_options(opts, spec), progress=_file_progress(opts.progress))
    t_load = time.monotonic() - t0
    describe_dataset(ds)
    all_labels = sorted(set(ds.y.tolist()))
    if len(all_labels) < 2:
        raise TrainError(f"the data has a single class ({all_labels[0]!r}, {ds.n} rows): a classifier needs "
                         "at least two labels")
    split_mode = opts.split or spec.data.split
    fractions = parse_split_ratios(opts.split_ratios if opts.split_ratios is not None else spec.data.split_ratios)
    split = split_dataset(ds, split_mode, tc.seed, fractions)
    refit = spec.data.refit if opts.refit is None else opts.refit
    labels = sorted(set(ds.y[split.train].tolist()))
    if len(labels) < 2:
        raise TrainError(f"the training split has a single class ({labels[0]!r}): a classifier needs at least two")
    missing = sorted(set(all_labels) - set(labels))
    code = {lab: i for i, lab in enumerate(labels)}
    y_all = np.array([code.get(v, -1) for v in ds.y], dtype=np.int32)
    if missing:
        log.warning("labels without training rows (their validation/test rows are left out): %s", ", ".join(missing))
    tr = split.train
    va = split.val[y_all[split.val] >= 0]
    te = split.test[y_all[split.test] >= 0]
    log.info("split %s: train %d, validation %d, test %d rows", split.mode, tr.size, va.size, te.size)
    for side, idx in (("validation", va), ("test", te)):
        if idx.size == 0:  # a 3-row dataset published with no evaluation at all
            log.warning("the %s split is empty (%d rows in all): the published metrics say nothing about "
                        "this model; give it more data", side, ds.n)
    counts = np.bincount(y_all[tr], minlength=len(labels))
    log.info("training rows per label: %s", ", ".join(f"{lab} {c}" for lab, c in zip(labels, counts)))

    model_dir = opts.out / opts.name
    work = ckpt.work_dir(opts.out, opts.name)
    key = ckpt.run_key(spec.as_dict(), ds.digest(), {"mode": split.mode, "seed": tc.seed, "sizes": split.sizes(),
                                                      "skip_eval": opts.skip_eval})
    version = _run_version(work, key, model_dir, opts.resume)
    report_dir = opts.reports / opts.name / version
    writer = open_writer(report_dir / "tensorboard")
    if opts.dask and not getattr(kind, "dask", False):
        raise TrainError(f"--dask: model kind {spec.kind} does not train on Dask (gbdt does)")
    ctx = LoopContext(spec, work, key, opts.resume, opts.checkpoint_minutes, opts.skip_eval, opts.progress,
                      writer, opts.stop_after_epochs, opts.dask)
    x_va = ds.x[va] if va.size else None
    y_va = y_all[va] if va.size else None
    t0 = time.monotonic()
    try:
        cw = class_weights(y_all[tr], len(labels), tc.class_weight)
        result = kind.fit(ctx, ds.x[tr], y_all[tr], x_va, y_va, len(labels), cw)
    except _Interrupted:
        if writer is not None:
            writer.close()
        raise
    t_fit = time.monotonic() - t0
    log.info("fitted in %.1f s", t_fit)
    selection_val = None
    trained_on = {"splits": ["train"], "rows": int(tr.size)}
    if refit and va.size:
        # score the selected model on validation before refitting: afterwards those rows are seen
        if not opts.skip_eval:
            import jax

            sel = jax.jit(result.probs_fn)     # params as arguments (traced), as export_model does
            params = jax.tree_util.tree_map(jax.numpy.asarray, result.params)
            pv = predict_in_batches(lambda x: np.asarray(sel(params, x), dtype=np.float64), ds.x[va],
                                    tc.eval_batch_size, len(labels))
            selection_val = classification_report(y_all[va], pv.argmax(1), labels, log_loss(pv, y_all[va]))
        spec_r = kind.refit_spec(spec, result)
        both = np.sort(np.concatenate([tr, va]))
        log.info("refit: the chosen configuration on train + validation (%d rows)", both.size)
        ctx_r = LoopContext(spec_r, work, key + ":refit", False, opts.checkpoint_minutes, True, opts.progress,
                            None, None)
        t0 = time.monotonic()
        cw = class_weights(y_all[both], len(labels), tc.class_weight)
        result = kind.fit(ctx_r, ds.x[both], y_all[both], None, None, len(labels), cw)
        t_fit += time.monotonic() - t0
        trained_on = {"splits": ["train", "val"], "rows": int(both.size), "refit": spec_r.as_dict()["model"]}
        log.info("refitted in %.1f s", time.monotonic() - t0)

    t0 = time.monotonic()
    exported = export_model(result.probs_fn, result.params, view, opts.platforms)
    t_export = time.monotonic() - t0
    n_cls = len(labels)
    eb = tc.eval_batch_size
    metrics: dict = {}
    curves_ok = bool(result.history)
    if selection_val is not None:
        metrics["val"] = selection_val        # the selected model's (the artifact has seen these rows)
    elif va.size and not opts.skip_eval and not (refit and va.size):
        pv = predict_in_batches(exported.call, ds.x[va], eb, n_cls)
        metrics["val"] = classification_report(y_all[va], pv.argmax(1), labels, log_loss(pv, y_all[va]))
    test_probs = None
    if te.size and not opts.skip_test:
        test_probs = predict_in_batches(exported.call, ds.x[te], eb, n_cls)
        metrics["test"] = classification_report(y_all[te], test_probs.argmax(1), labels,
                                                log_loss(test_probs, y_all[te]))
        m = metrics["test"]
        log.info("test: n %d  accuracy %.4f  macro-F1 %.4f  weighted-F1 %.4f", m["n"], m["accuracy"],
                 m["macro_f1"], m["weighted_f1"])
        threshold = spec.as_dict()["model"].get("eval_threshold")
        if threshold is not None:  # window models of whole traces (lstm): Barnum's trace-level eval stage
            from .pt_eval import eval_stage

            m["traces"] = t = eval_stage(report_dir, ds.groups[te], y_all[te], test_probs, labels, float(threshold),
                                         f"{opts.name} {version}: test windows ({te.size})")
            log.info("test traces (flagged when a window's probability > %s): %d, accuracy %.4f  macro-F1 %.4f",
                     threshold, t["traces"], t["accuracy"], t["macro_f1"])
    # canary: real rows (test, else validation, else training) plus an all-zero row
    pool = te if te.size else va if va.size else tr
    rng = np.random.default_rng(tc.seed)
    pick = np.sort(rng.choice(pool, size=min(tc.canary_rows, pool.size), replace=False))
    canary_x = np.concatenate([ds.x[pick], np.zeros((1, *view.shape), np.float32)])
    canary_p = exported.call(canary_x)
    check = {}
    if result.train_probs_fn is not None:
        ref = result.train_probs_fn(canary_x)
        check["max_abs_diff_vs_trainer"] = float(np.abs(ref.astype(np.float64) - canary_p).max())
        log.info("exported function vs trainer (%s): max |diff| %.3g on the canary rows",
                 getattr(kind, "reference", f"{spec.kind} as fitted"), check["max_abs_diff_vs_trainer"])

    view_options = A.options_doc(view.options)
    meta = {
        "format": A.FORMAT,
        "kind": spec.kind,
        "name": opts.name,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "description": spec.description,
        "view": {"name": view.name, "version": view.version, "shape": list(view.shape), "dtype": view.dtype,
                 "columns": list(view.columns), "feature_axis": view.feature_axis,
                 "semantics": ds.semantics or opts.semantics,
                 # a sampled source's interval (proc shards): the daemon refuses the model under another one
                 **({"sample_interval_s": ds.sample_interval} if ds.sample_interval else {}),
                 # the view's keys its shape does not give (a window length...): likewise
                 **({"options": view_options} if view_options is not None else {})},
        "input": {"non_finite": "replaced by 0 inside the exported function (as in training)"},
        "output": {"kind": "probabilities", "n_classes": n_cls},
        "hyper": spec.as_dict(),
        "model_static": result.static,
        "normalisation": result.normalisation,
        "data": {"digest": ds.digest(), "files": len(ds.group_names), "sources": _sources(ds.group_names),
                 "rows": ds.n, "labels": ds.label_counts(), "stats": ds.stats.as_dict(),
                 "split": {"mode": split.mode, "seed": tc.seed, "fractions": list(fractions),
                           "sizes": {"train": int(tr.size), "val": int(va.size), "test": int(te.size)}},
                 "trained_on": trained_on,
                 "labels_without_training_rows": missing,
                 "label_source": _label_source(data_options(opts, spec))},
        "training": {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                     "seconds": {"load": round(t_load, 3), "fit": round(t_fit, 3), "export": round(t_export, 3)}},
        "metrics": {k: _short(v) for k, v in metrics.items()},
        "export": {"platforms": list(exported.platforms), "batch_dim": A.BATCH_DIM,
                   "params": {"leaves": len(exported.leaves), "values": int(sum(v.size for v in exported.leaves))},
                   **check},
        "canary": {"rows": int(canary_x.shape[0]), "atol": A.DEFAULT_CANARY_ATOL},
        "versions": library_versions(),
    }
    path = publish(opts.out, opts.name, version, exported, labels, canary_x, canary_p, meta)
    log.info("published %s (current -> %s)", path, version)

    # report folder
    report = {"artifact": str(path), "version": version, "kind": spec.kind, "spec": spec.as_dict(),
              "labels": labels, "metrics": metrics, "history": result.history, "data": meta["data"],
              "training": meta["training"], "export": meta["export"],
              "seconds_total": round(time.monotonic() - t_all, 3)}
    write_json(report_dir / "metrics.json", report)
    if "test" in metrics or "val" in metrics:
        which = "test" if "test" in metrics else "val"
        m = metrics[which]
        plot_confusion(report_dir / "confusion.png", labels, m["confusion"]["matrix"],
                       f"{opts.name} {version} ({which}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f})")
        if writer is not None:
            for k in ("accuracy", "macro_f1", "weighted_f1"):
                writer.add_scalar(f"{which}/{k}", m[k], len(result.history))
    if curves_ok:
        plot_curves(report_dir / "learning_curves.png", result.history,
                    "epoch (forests: a chunk of trees)")
    if writer is not None:
        writer.close()
    ckpt.clear(work)
    return FitOutcome(path, version, report_dir, metrics, result, ds, labels, te)


def parse_split_ratios(text: str) -> tuple[float, float, float]:
    """"60,20,20" -> (0.6, 0.2, 0.2); "" -> the default. Percentages or fractions, summing to 100 (or 1)."""
    if not text or not str(text).strip():
        return (0.6, 0.2, 0.2)
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise TrainError(f"split ratios {text!r}: expected three numbers TRAIN,VAL,TEST such as 80,20,0") from None
    if len(vals) != 3 or min(vals) < 0:
        raise TrainError(f"split ratios {text!r}: expected three numbers >= 0, TRAIN,VAL,TEST such as 80,20,0")
    total = sum(vals)
    if not (abs(total - 100) < 1e-6 or abs(total - 1) < 1e-9) or vals[0] == 0:
        raise TrainError(f"split ratios {text!r}: they must sum to 100 (or 1), with a nonzero training share")
    return tuple(v / total for v in vals)  # type: ignore[return-value]


def _run_version(work: Path, key: str, model_dir: Path, resume: bool) -> str:
    """The version this run publishes: kept across --resume so the report folder is one."""
    run = work / "run.json"
    if resume and run.exists():
        try:
            doc = json.loads(run.read_text())
            if doc.get("run_key") == key and not (model_dir / doc["version"]).exists():
                return str(doc["version"])
        except (OSError, ValueError, KeyError):
            pass
    if not resume and work.exists():
        ckpt.clear(work)
    work.mkdir(parents=True, exist_ok=True)
    version = new_version(model_dir)
    from .fsutil import atomic_write

    atomic_write(run, json.dumps({"run_key": key, "version": version}).encode())
    return version


def _file_progress(enabled: bool):
    """A load_dataset progress callback: a bar (or log lines) once there are several files."""
    from .progress import ProgressBar

    state: dict = {}

    def cb(i: int, total: int, path) -> None:
        if total < 2:
            return
        if "bar" not in state:
            state["bar"] = ProgressBar("reading data", total, enabled=enabled, unit="file")
        state["bar"].update(1)
        if i == total:
            state["bar"].close()

    return cb


def _label_source(d: DataOptions) -> dict:
    """How the training rows got their labels (evaluate/predict default to the same)."""
    ls = d.labels
    out = {"mode": ls.mode, "column": ls.column}
    if ls.macs:
        out["macs"] = str(ls.macs)
    if ls.ips:
        out["ips"] = str(ls.ips)
    return out


def _sources(names: list[str], limit: int = 20) -> list[str]:
    return names[:limit] + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


def _short(m: dict) -> dict:
    """A copy of one split's metrics for meta.json (the whole report, per-class table included)."""
    return {k: v for k, v in m.items()}


def print_summary(out: FitOutcome, stream=sys.stdout) -> None:
    m = out.metrics.get("test") or out.metrics.get("val")
    line = f"published {out.artifact}"
    if m:
        which = "test" if "test" in out.metrics else "val"
        line += f"\n{which}: n {m['n']}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}"
        if "traces" in m:
            t = m["traces"]
            line += (f"\n{which} traces: {t['traces']} (flagged when a window's probability > {t['threshold']})  "
                     f"accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}")
    line += f"\nreport: {out.report_dir}"
    print(line, file=stream)
