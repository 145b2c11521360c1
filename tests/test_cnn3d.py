"""cnn3d's network: the layer shapes the spec gives, dropout only in training, and the checks."""
from __future__ import annotations

import numpy as np
import pytest

from malsensor.models.errors import TrainError
from malsensor.models.zoo.base import get_kind
from malsensor.models.zoo.cnn3d import CNN3DConfig


def test_layers_and_dropout_only_in_training():
    import jax

    kind = get_kind("cnn3d")
    cfg = CNN3DConfig(steps=4, processes=20, filters=(32, 64), dense=(1024, 512), dropout=0.5)
    assert kind.view(cfg).shape == (4, 20, 45) and kind.view(cfg).feature_axis == 2
    m = kind.module(cfg, 3)
    x = np.random.default_rng(0).normal(size=(2, 4, 20, 45)).astype(np.float32)
    params = m.init({"params": jax.random.PRNGKey(0)}, x, train=False)["params"]
    shapes = {k: tuple(v["kernel"].shape) for k, v in params.items()}
    # conv 32 spans the 4 steps; pools halve processes and metrics: 20x45 -> 10x22 -> 5x11
    assert shapes == {"conv_0": (4, 3, 3, 1, 32), "conv_1": (1, 3, 3, 32, 64), "dense_0": (5 * 11 * 64, 1024),
                      "dense_1": (1024, 512), "head": (512, 3)}
    a = m.apply({"params": params}, x, train=False)
    b = m.apply({"params": params}, x, train=False)
    assert a.shape == (2, 3) and np.array_equal(np.asarray(a), np.asarray(b))
    t1 = m.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    t2 = m.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(np.asarray(t1), np.asarray(t2))


def test_checks():
    kind = get_kind("cnn3d")
    with pytest.raises(TrainError, match="filters must be a non-empty list"):
        kind.check(CNN3DConfig(filters=()))
    with pytest.raises(TrainError, match="3 process rows cannot be pooled 2 times by 2"):
        kind.check(CNN3DConfig(processes=3))


def test_the_shipped_spec_is_the_network_of_the_issue():
    from pathlib import Path

    from malsensor.models.spec import load_spec

    s = load_spec(Path(__file__).resolve().parents[1] / "etc" / "models" / "cnn3d.toml")
    assert s.kind == "cnn3d" and s.model == CNN3DConfig()
    assert (s.model.filters, s.model.dense, s.model.steps, s.model.processes) == ((32, 64), (1024, 512), 8, 120)
    assert s.train.weight_decay == 0.0 and s.data.split == "group"
    assert load_spec("cnn3d").kind == "cnn3d"
