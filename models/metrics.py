"""Classification metrics in plain numpy (the numbers ``evaluate --json`` prints)."""
from __future__ import annotations

import numpy as np

NEGATIVE_NAMES = frozenset(("0", "normal", "benign", "false", "negative", "no"))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def positive_class(labels: list[str]) -> int:
    """For two classes: the one that is not named like 'normal'/'benign'/'0' (else index 1)."""
    neg = [i for i, s in enumerate(labels) if s.strip().lower() in NEGATIVE_NAMES]
    return 1 - neg[0] if len(neg) == 1 else 1


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                          loss: float | None = None) -> dict:
    """n, accuracy, macro_f1, weighted_f1, per_class, confusion and, for two classes, tp/tn/fp/fn.

    Macro averages run over the classes present in ``y_true`` or ``y_pred`` (as
    scikit-learn does with the labels it sees)."""
    c = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = confusion(y_true, y_pred, c)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    present = (support > 0) | (predicted > 0)
    n = int(y_true.size)
    out = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "per_class": {labels[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                  "f1": float(f1[i]), "support": int(support[i])} for i in range(c)},
        "confusion": {"labels": list(labels), "matrix": cm.tolist()},
    }
    if loss is not None:
        out["loss"] = float(loss)
    if c == 2:
        pos = positive_class(labels)
        neg = 1 - pos
        out.update(positive=labels[pos], tp=int(cm[pos, pos]), tn=int(cm[neg, neg]),
                   fp=int(cm[neg, pos]), fn=int(cm[pos, neg]))
    return out


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs[np.arange(y.size), y].astype(np.float64), 1e-12, 1.0)
    return float(-np.log(p).mean()) if y.size else 0.0
