"""Trace-level evaluation of a window model (Barnum's rule).

A trace is *flagged* for a class when any of its windows gives that class a probability above
``threshold`` (``eval_threshold``, 0.95 by default). With two classes that is Barnum's
verdict for the positive class (metrics.positive_class: the one not named benign/normal):
the report is the trace-level confusion matrix, precision, recall and F1. With more classes
(program identification) every class is scored one-vs-rest the same way, and each trace's
label is the class flagged by most windows (ties and traces nothing flags: the highest
mean window probability).
"""
from __future__ import annotations

import numpy as np

from .metrics import classification_report, positive_class


def trace_ids(groups: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One id per (file, label): a Barnum folder is one trace; a libxdc table holds one trace
    per case, each with its own label."""
    pairs = np.stack([groups.astype(np.int64), y.astype(np.int64)], axis=1)
    _, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def trace_report(trace: np.ndarray, y: np.ndarray, probs: np.ndarray, labels: list[str],
                 threshold: float = 0.95) -> dict:
    """Trace-level metrics from window probabilities ``probs`` (n, C), true window classes ``y``
    and the trace of each window."""
    c = len(labels)
    ids = np.unique(trace)
    t_true = np.empty(ids.size, np.int64)
    above = np.zeros((ids.size, c), np.int64)
    mean = np.zeros((ids.size, c))
    maxp = np.zeros((ids.size, c))
    for k, t in enumerate(ids):
        m = trace == t
        t_true[k] = np.bincount(y[m], minlength=c).argmax()
        above[k] = (probs[m] > threshold).sum(axis=0)
        mean[k] = probs[m].mean(axis=0)
        maxp[k] = probs[m].max(axis=0)
    if c == 2:
        pos = positive_class(labels)
        t_pred = np.where(above[:, pos] > 0, pos, 1 - pos)
    else:
        t_pred = np.array([max(range(c), key=lambda j: (above[k, j], mean[k, j])) for k in range(ids.size)])
    rep = classification_report(t_true, t_pred, labels)
    rep["threshold"] = threshold
    rep["traces"] = int(ids.size)
    rep["one_vs_rest"] = {}
    for j in range(c):
        flagged = above[:, j] > 0
        truth = t_true == j
        tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
        fn, tn = int((~flagged & truth).sum()), int((~flagged & ~truth).sum())
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        rep["one_vs_rest"][labels[j]] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": prec, "recall": rec,
                                         "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}
    rep["max_window_probability"] = {labels[j]: [float(v) for v in maxp[:, j]] for j in range(c)}
    return rep
