"""cnn3d's network: the layer shapes the spec gives, dropout only in training, and the checks."""
from __future__ import annotations

from pathlib import Path

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


def test_the_spec_sized_for_one_cgroups_volumes():
    """etc/models/cnn3d-proc.toml (docs/proc.md "A dataset where the label is in the volume"):
    8 x 32 x 45 volumes, batch norm, 92,234 trainable parameters for two classes."""
    import jax
    import jax.numpy as jnp

    from malsensor.models.spec import load_spec

    s = load_spec(Path(__file__).resolve().parents[1] / "etc" / "models" / "cnn3d-proc.toml")
    kind = get_kind("cnn3d")
    kind.check(s.model)
    assert kind.view(s.model).shape == (8, 32, 45) and s.model.norm == "batch" and s.data.split == "group"
    v = kind.module(s.model, 2).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 32, 45)), train=False)
    assert sum(x.size for x in jax.tree_util.tree_leaves(v["params"])) == 92234


def test_batch_norm_updates_running_stats_in_training_and_uses_them_at_evaluation():
    """norm = "batch": a training step moves the running mean towards the batch's mean (flax's
    momentum rule); evaluation is deterministic, uses the running statistics (a volume's output
    does not depend on the rest of its batch) and follows them when they change."""
    import jax
    import jax.numpy as jnp

    kind = get_kind("cnn3d")
    cfg = CNN3DConfig(steps=2, processes=8, filters=(4, 8), dense=(16,), dropout=0.0, norm="batch",
                      bn_momentum=0.9)
    m = kind.module(cfg, 2)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 2, 8, 45)) * 3 + 1).astype(np.float32)
    v = m.init({"params": jax.random.PRNGKey(0)}, x, train=False)
    params, stats = v["params"], v["batch_stats"]
    assert set(stats) == {"conv_norm_0", "conv_norm_1", "dense_norm_0"}
    assert not np.asarray(stats["conv_norm_0"]["mean"]).any() and (np.asarray(stats["conv_norm_0"]["var"]) == 1).all()

    # one training pass: running = 0.9 * old + 0.1 * the batch's statistics (over every axis but channels)
    _, upd = m.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats", "intermediates"],
                     capture_intermediates=lambda mdl, _: mdl.name == "conv_0")
    conv0 = np.asarray(upd["intermediates"]["conv_0"]["__call__"][0], np.float64)
    batch_mean = conv0.reshape(-1, conv0.shape[-1]).mean(axis=0)
    batch_var = conv0.reshape(-1, conv0.shape[-1]).var(axis=0)
    new = upd["batch_stats"]
    np.testing.assert_allclose(np.asarray(new["conv_norm_0"]["mean"]), 0.1 * batch_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new["conv_norm_0"]["var"]), 0.9 + 0.1 * batch_var, rtol=1e-4, atol=1e-5)

    def evaluate(s, batch):
        return np.asarray(m.apply({"params": params, "batch_stats": s}, jnp.asarray(batch), train=False))

    a, b = evaluate(new, x), evaluate(new, x)
    assert np.array_equal(a, b)                                   # deterministic
    np.testing.assert_allclose(evaluate(new, x[:1]), a[:1], rtol=1e-5, atol=1e-6)  # not the batch's statistics
    assert not np.allclose(evaluate(stats, x), a)                 # the running statistics are what it uses
    # train-mode output of one volume depends on its batch (batch statistics): the difference is real
    solo = m.apply({"params": params, "batch_stats": stats}, x[:1], train=True, mutable=["batch_stats"])[0]
    full = m.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])[0]
    assert not np.allclose(np.asarray(solo), np.asarray(full)[:1])
