"""A whole modality that lives in the test tree only: one source kind, one view, one model
kind, one event formatter, each registered through the product's registries (imported as a
plugin: ``MALSENSOR_PLUGINS=synth_modality``). tests/test_modality_seam.py trains a model on
it with ``malsensor-train fit`` and serves it with ``malsensord``; nothing in the product
names it.

The data: ``*.synth`` files, one JSON object per line, ``{"id": 7, "label": "up",
"values": [[...3 steps...] x 4 features]}`` - a (4 features, 3 steps) matrix per sample, the
features on axis 0 (so normalisation along the wrong axis would show).
"""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from malsensor.daemon.outputs.events import JsonFormatter, register_formatter
from malsensor.daemon.schema import opt
from malsensor.daemon.sources import ThreadSource, register_source
from malsensor.daemon.views.base import EntityRows, Router, View, register_view

SHAPE = (4, 3)
PRODUCT = "synth_samples"


def read_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """ids (n,), values (n, 4, 3), labels of a .synth file."""
    ids, xs, labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                ids.append(int(row["id"]))
                xs.append(np.asarray(row["values"], dtype=np.float64).reshape(SHAPE))
                labels.append(row.get("label"))
    return np.asarray(ids, dtype=np.int64), np.stack(xs) if xs else np.zeros((0, *SHAPE)), labels


# ------------------------------------------------------------------ source kind "synthdir"


@dataclass
class SynthBatch:
    ids: np.ndarray
    x: np.ndarray
    product: ClassVar[str] = PRODUCT

    def counts(self) -> dict[str, int]:
        return {"samples": int(self.ids.shape[0])}


@dataclass(frozen=True)
class SynthConfig:
    kind: ClassVar[str] = "synthdir"
    file: str = opt(MISSING, "a .synth file", path=True)
    batch: int = opt(16, "samples per batch", min=1)


@register_source
class SynthSource(ThreadSource):
    kind = "synthdir"
    produces = PRODUCT
    config = SynthConfig
    finite = True
    thread_name = "synth-source"

    def __init__(self, cfg: SynthConfig, ctx) -> None:
        super().__init__(cfg, ctx)
        self.beat = 0.0
        self.sent = 0

    def run(self) -> None:
        ids, x, _ = read_samples(self.cfg.file)
        for i in range(0, ids.shape[0], self.cfg.batch):
            self.ctx.dispatch(SynthBatch(ids[i:i + self.cfg.batch], x[i:i + self.cfg.batch]), None)
            self.sent += min(self.cfg.batch, ids.shape[0] - i)

    def describe(self) -> str:
        return f"synth samples from {self.cfg.file}"

    def stats(self) -> dict:
        return {"synth_samples_sent": self.sent}


# ------------------------------------------------------------------ view "synth@1"


@dataclass(frozen=True)
class SynthOptions:
    min_first: float = opt(-1e9, "classify only samples whose first value is above this")


class SynthRouter(Router):
    def __init__(self, min_first: float) -> None:
        self.min_first = min_first

    def route(self, batch: SynthBatch) -> EntityRows | None:
        keep = batch.x[:, 0, 0] > self.min_first
        if not keep.any():
            return None
        return EntityRows(batch.ids[keep], batch.x[keep].astype(np.float32))


class SynthView(View):
    name = "synth"
    version = 1
    entity = "synth_sample"
    consumes = PRODUCT
    axes = ("feature", "step")
    feature_axis = 0
    columns = ("a", "b", "c", "d")
    options = SynthOptions
    reader = "synth_modality:READER"

    def shape(self, options) -> tuple[int, ...]:
        return SHAPE

    def router(self, options: SynthOptions, facts) -> SynthRouter:
        return SynthRouter(options.min_first)


SYNTH = register_view(SynthView())


class SynthReader:
    description = ".synth"

    def file_type(self, path: Path) -> str | None:
        return "synth" if path.name.endswith(".synth") else None

    def read(self, path: Path, file_type: str, view, opts, stats):
        from malsensor.models.data.table import Part

        _, x, labels = read_samples(path)
        stats.rows_read += len(labels)
        return Part(str(path), x, labels)


READER = SynthReader()


# ------------------------------------------------------------------ formatter of entity "synth_sample"


class SynthFormatter(JsonFormatter):
    entity = "synth_sample"
    event_type = "sample"

    def fields(self, pb, j: int, features: bool) -> dict:
        out = {"sample": {"id": int(pb.keys[j])}}
        if features:
            out["sample"]["values"] = pb.detail[j].tolist()
        return out


register_formatter(SynthFormatter())


# ------------------------------------------------------------------ model kind "synthlin" (trainer side)


def _register_kind() -> None:
    try:
        from malsensor.models.zoo.base import ModelKind, register
    except ImportError:  # the daemon alone (no trainer installed) needs no model kinds
        return

    @dataclass
    class SynthLinConfig:
        ridge: float = opt(1e-3, "ridge penalty of the least-squares fit", min=0.0)

    @register
    class SynthLin(ModelKind):
        """Least squares onto one-hot labels over the flattened sample, then a softmax."""

        name = "synthlin"
        config_cls = SynthLinConfig

        def view(self, cfg):
            return SYNTH.info()

        def fit(self, ctx, x_tr, y_tr, x_va, y_va, n_classes, class_weights):
            from malsensor.models.train import FitResult

            a = np.concatenate([x_tr.reshape(x_tr.shape[0], -1), np.ones((x_tr.shape[0], 1))], axis=1)
            t = np.eye(n_classes)[y_tr] * 4.0 - 2.0
            w = np.linalg.solve(a.T @ a + ctx.spec.model.ridge * np.eye(a.shape[1]), a.T @ t)
            params = {"w": w[:-1].astype(np.float32), "b": w[-1].astype(np.float32)}

            def probs_fn(p, x):
                import jax

                return jax.nn.softmax(x.reshape(x.shape[0], -1) @ p["w"] + p["b"], axis=-1)

            def reference(x):
                z = x.reshape(x.shape[0], -1) @ params["w"] + params["b"]
                e = np.exp(z - z.max(axis=1, keepdims=True))
                return e / e.sum(axis=1, keepdims=True)

            return FitResult(params, probs_fn, [], {"transform": "none"}, {}, 0, reference)


_register_kind()
