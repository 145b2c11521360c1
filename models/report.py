"""The report folder every run writes: metrics.json, confusion.png, learning_curves.png,
and TensorBoard event files (tensorboardX)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("malsensor.train")


def open_writer(folder: Path):
    """A tensorboardX SummaryWriter writing into ``folder`` (None if tensorboardX is missing)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # pragma: no cover - part of the train extra
        log.warning("tensorboardX is not installed: no TensorBoard events")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(logdir=str(folder), flush_secs=10)


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=_default) + "\n", encoding="utf-8")


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def plot_confusion(path: Path, labels: list[str], matrix: list[list[int]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(labels)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, history: list[dict], xlabel: str = "epoch") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [h["epoch"] for h in history]
    for key, ax in (("train_loss", a1), ("val_loss", a1), ("val_accuracy", a2), ("val_macro_f1", a2)):
        ys = [h.get(key) for h in history]
        if any(v is not None for v in ys):
            ax.plot(ep, [np.nan if v is None else v for v in ys], marker="o", label=key)
    a1.set_xlabel(xlabel)
    a1.set_ylabel("loss")
    a2.set_xlabel(xlabel)
    a2.set_ylabel("score")
    for a in (a1, a2):
        if a.lines:
            a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
