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


HIST_BINS = 20
HIST_PNG = "window_probabilities.png"
HIST_JSON = "window_probabilities.json"


def window_histograms(y: np.ndarray, probs: np.ndarray, labels: list[str], bins: int = HIST_BINS) -> dict:
    """Per class, the histogram of the window probabilities it is given, split by the windows'
    true class: ``own`` (windows of that class) and ``rest`` (every other window). With two classes
    only the positive class is shown (Barnum's picture: benign vs malicious windows on one axis).
    ``own + rest`` sums to the number of windows for every class."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    classes = [positive_class(labels)] if len(labels) == 2 else list(range(len(labels)))
    out = {"bins": edges.tolist(), "windows": int(y.size), "classes": {}}
    for j in classes:
        p = np.clip(probs[:, j].astype(np.float64), 0.0, 1.0)   # float32 rounding may give 1.0000001
        own = np.histogram(p[y == j], edges)[0]
        rest = np.histogram(p[y != j], edges)[0]
        out["classes"][labels[j]] = {"own": own.tolist(), "rest": rest.tolist()}
    return out


def plot_window_histograms(path, hist: dict, threshold: float, title: str) -> None:
    """One panel per class (log counts): its own windows against the rest, and the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(hist["bins"])
    names = list(hist["classes"])
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        h = hist["classes"][name]
        ax.stairs(h["own"], edges, fill=True, alpha=0.6, label=f"{name} windows ({sum(h['own'])})")
        ax.stairs(h["rest"], edges, fill=True, alpha=0.4, label=f"other windows ({sum(h['rest'])})")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold}")
        if max(h["own"] + h["rest"] + [0]) > 0:
            ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"P({name}) per window")
        ax.set_ylabel("windows")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_trace_eval(folder, y: np.ndarray, probs: np.ndarray, labels: list[str], threshold: float,
                     title: str) -> dict:
    """The eval stage's files beside its report: window_probabilities.json (the counts) and
    window_probabilities.png (their plot); returns the histograms."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hist = window_histograms(y, probs, labels)
    hist["threshold"] = threshold
    (folder / HIST_JSON).write_text(json.dumps(hist) + "\n")
    plot_window_histograms(folder / HIST_PNG, hist, threshold, title)
    return hist


def eval_stage(folder, groups: np.ndarray, y: np.ndarray, probs: np.ndarray, labels: list[str],
               threshold: float, title: str) -> dict:
    """Barnum's eval stage on labelled windows: the trace-level report (``trace_report``) with
    ``histograms`` (the counts behind window_probabilities.png, written into ``folder``)."""
    rep = trace_report(trace_ids(groups, y), y, probs, labels, threshold)
    rep["histograms"] = write_trace_eval(folder, y, probs, labels, threshold, title)
    return rep
