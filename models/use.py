"""``evaluate``, ``predict`` and ``inspect``: run a published artifact with the daemon's loader."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import Artifact, ArtifactError, ViewInfo, load_artifact, with_options_doc

from .data.labels import LabelSpec
from .data.load import DataOptions, load_dataset
from .data.table import Dataset
from .errors import TrainError
from .metrics import classification_report, log_loss
from .publish import predict_in_batches
from malsensor.daemon.views.base import VIEWS

log = logging.getLogger("malsensor.train")
EVAL_BATCH = 4096


@dataclass
class DataArgs:
    paths: list[str]
    label: str | None = None
    label_from: str = "auto"
    macs: Path | None = None
    ips: Path | None = None
    skip_bad: bool = False
    semantics: str | None = None
    workers: int = 0                  # processes reading pt samples (0: auto)


def open_artifact(path: str | Path) -> Artifact:
    try:
        return load_artifact(path)
    except ArtifactError as e:
        raise TrainError(f"artifact {e}") from None


def data_view(art: Artifact) -> ViewInfo:
    """The view the trainer must build from data for this artifact (or a clear refusal): the
    registered view of that name@version, with the options that give the artifact's shape and
    those ``meta.json`` recorded (a window length, packets per connection: the rows must be
    built as they were for training)."""
    v = art.view
    view = VIEWS.find(v.ref)
    if view is None:
        raise TrainError(f"the artifact reads view {v.describe()}, which this trainer cannot build from "
                         f"data (views: {', '.join(VIEWS.names())})")
    trained = art.meta.get("view", {}).get("options")
    try:
        known = view.info(with_options_doc(view.options_for(v), trained))
    except (ValueError, TypeError) as e:
        raise TrainError(f"view mismatch: {e}") from None
    if known.shape != v.shape or (v.columns and tuple(v.columns) != tuple(known.columns)):
        raise TrainError(f"view mismatch: the artifact reads {v.describe()} with columns "
                         f"{', '.join(v.columns) or '?'}, but this trainer's {known.ref} is shape "
                         f"{list(known.shape)} with {len(known.columns)} columns {', '.join(known.columns)}")
    return known


def load_for(art: Artifact, d: DataArgs, require_labels: bool) -> Dataset:
    mode = d.label_from
    label = d.label
    src = art.meta.get("data", {}).get("label_source") or {}
    if label is None and mode == "auto" and not d.macs and not d.ips and src.get("column"):
        label = src["column"]           # the column the model was trained on
    if mode == "auto" and label and not d.macs and not d.ips:
        mode = "column"
    semantics = d.semantics or art.meta.get("view", {}).get("semantics") or "malsensor"
    opts = DataOptions(LabelSpec(mode, label, d.macs, d.ips), d.skip_bad, False, semantics, require_labels,
                       workers=d.workers)
    ds = load_dataset(d.paths, data_view(art), opts)
    want = art.meta.get("view", {}).get("semantics")
    if want and ds.semantics and ds.semantics != want:
        log.warning("the artifact was trained on %s-semantics features but the data are %s-semantics "
                    "(see docs/features.md): expect degraded results", want, ds.semantics)
    return ds


def evaluate(art: Artifact, d: DataArgs, report: Path | None = None) -> dict:
    """Metrics of ``art`` on labelled data; with ``report``, the folder gets evaluation.json (and,
    for window models of traces, the window-probability histograms beside it)."""
    ds = load_for(art, d, require_labels=True)
    index = {lab: i for i, lab in enumerate(art.labels)}
    unseen = sorted(set(ds.y.tolist()) - set(index))
    if unseen:
        counts = {u: int((ds.y == u).sum()) for u in unseen}
        raise TrainError("the data has labels the model never saw: " +
                         ", ".join(f"{u!r} ({c} rows)" for u, c in counts.items()) +
                         f"; the model knows {', '.join(map(repr, art.labels))}")
    y = np.array([index[v] for v in ds.y], dtype=np.int64)
    probs = predict_in_batches(art.predict_proba, ds.x, EVAL_BATCH, art.n_classes)
    out = classification_report(y, probs.argmax(1), art.labels, log_loss(probs, y))
    out["artifact"] = str(art.path)
    out["version"] = art.version
    threshold = (art.meta.get("hyper", {}).get("model") or {}).get("eval_threshold")
    if threshold is not None:  # window models of whole traces (lstm): Barnum's trace-level verdict
        from .pt_eval import eval_stage, trace_ids, trace_report

        if report is not None:
            out["traces"] = eval_stage(report, ds.groups, y, probs, list(art.labels), float(threshold),
                                       f"{art.meta.get('name', '')} {art.version}: {ds.n} windows")
        else:
            out["traces"] = trace_report(trace_ids(ds.groups, y), y, probs, list(art.labels), float(threshold))
    out["data"] = {"files": ds.stats.files, "rows_read": ds.stats.rows_read, "bad_rows": ds.stats.bad_rows,
                   "unlabelled": ds.stats.unlabelled, "nonfinite_values": ds.stats.nonfinite_values,
                   "missing_values": ds.stats.missing_values, "duplicates": ds.stats.duplicates}
    if report is not None:
        from .report import write_json

        write_json(Path(report) / "evaluation.json", out)
    return out


def print_evaluation(rep: dict, stream=sys.stdout) -> None:
    w = max([len(k) for k in rep["per_class"]] + [5])
    lines = [f"artifact {rep['artifact']} (version {rep['version']})",
             f"n {rep['n']}  accuracy {rep['accuracy']:.4f}  macro-F1 {rep['macro_f1']:.4f}  "
             f"weighted-F1 {rep['weighted_f1']:.4f}  log-loss {rep['loss']:.4f}"]
    if "tp" in rep:
        lines.append(f"positive {rep['positive']!r}: tp {rep['tp']}  tn {rep['tn']}  fp {rep['fp']}  fn {rep['fn']}")
    lines.append(f"{'label':<{w}}  precision  recall     f1  support")
    for lab, m in rep["per_class"].items():
        lines.append(f"{lab:<{w}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:.4f}  {m['support']:7d}")
    if "traces" in rep:
        t = rep["traces"]
        lines.append(f"traces {t['traces']} (flagged when a window's probability > {t['threshold']}): "
                     f"accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}"
                     + (f"  tp {t['tp']}  tn {t['tn']}  fp {t['fp']}  fn {t['fn']}" if "tp" in t else ""))
        for lab, m in t["one_vs_rest"].items():
            lines.append(f"  {lab:<{w}}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  f1 {m['f1']:.4f}")
    stream.write("\n".join(lines) + "\n")


def predict(art: Artifact, d: DataArgs, topk: int, stream=sys.stdout) -> int:
    """One JSON object per row: pred, true (when known), topk [[label, p], ...]."""
    ds = load_for(art, d, require_labels=False)
    probs = predict_in_batches(art.predict_proba, ds.x, EVAL_BATCH, art.n_classes)
    k = max(1, min(topk, art.n_classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    labels = art.labels
    for i in range(ds.n):
        row = {"pred": labels[int(order[i, 0])]}
        if ds.y[i]:
            row["true"] = ds.y[i]
        row["topk"] = [[labels[int(j)], float(probs[i, j])] for j in order[i]]
        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    return ds.n


def inspect(art: Artifact, stream=sys.stdout, as_json: bool = False) -> None:
    s = art.summary()
    if as_json:
        stream.write(json.dumps(s, indent=2) + "\n")
        return
    v = s["view"]
    lines = [f"artifact  {s['path']}", f"name      {s['name']}  version {s['version']}  kind {s['kind']}",
             f"created   {s['created']}",
             f"view      {v['name']}@{v['version']} shape {v['shape']} {v['dtype']}"
             f"{' semantics ' + art.meta['view']['semantics'] if art.meta.get('view', {}).get('semantics') else ''}",
             f"labels    {len(s['labels'])}: {', '.join(s['labels'])}",
             f"params    {s['params']['leaves']} arrays, {s['params']['values']:,} values, {s['params']['bytes']:,} bytes"]
    for which, m in (s.get("metrics") or {}).items():
        lines.append(f"{which:<9} n {m['n']}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    d = s.get("data") or {}
    if d:
        lines.append(f"data      {d.get('rows')} rows, {d.get('files')} file(s), digest {d.get('digest')}")
    if s.get("hyper"):
        lines.append(f"hyper     {json.dumps(s['hyper'].get('model', {}))}")
    lines.append("versions  " + ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items()))
    stream.write("\n".join(lines) + "\n")
