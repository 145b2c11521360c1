"""Input normalisation for gradient models, fitted on the training split only.

Connection features span many orders of magnitude (bytes, bit/s, seconds), so
each value goes through a signed log1p, then a per-feature z-score whose mean
and standard deviation come from the training rows. Both numbers are leaves of
the artifact's params (the exported function normalises raw inputs itself) and
are written to meta.json.
"""
from __future__ import annotations

import numpy as np

TRANSFORM = "signed_log1p_zscore"


def signed_log1p_np(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_normaliser(x_train: np.ndarray, feature_axis: int = -1) -> dict[str, np.ndarray]:
    """Per-feature mean and std of signed_log1p(x) over every other axis. ``feature_axis`` is the
    view's (an axis of one sample; ``x_train`` has the batch axis in front). The arrays are
    shaped to broadcast against a batch: (F,) for the last axis, (F, 1, ...) for an earlier one."""
    ndim = x_train.ndim - 1
    axis = feature_axis % ndim
    z = np.moveaxis(signed_log1p_np(x_train.astype(np.float64)), axis + 1, -1)
    z = z.reshape(-1, z.shape[-1])
    mean = z.mean(axis=0)
    std = z.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    shape = (-1,) + (1,) * (ndim - 1 - axis)
    return {"mean": mean.astype(np.float32).reshape(shape), "std": std.astype(np.float32).reshape(shape)}


def normalise(norm: dict, x):
    import jax.numpy as jnp

    return (jnp.sign(x) * jnp.log1p(jnp.abs(x)) - norm["mean"]) / norm["std"]


def describe(norm: dict, columns: tuple[str, ...]) -> dict:
    return {"transform": TRANSFORM, "fitted_on": "train split", "columns": list(columns),
            "mean": [float(v) for v in np.ravel(norm["mean"])], "std": [float(v) for v in np.ravel(norm["std"])]}
