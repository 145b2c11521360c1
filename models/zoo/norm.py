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


def fit_normaliser(x_train: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature (last axis) mean and std of signed_log1p(x) over every other axis."""
    z = signed_log1p_np(x_train.astype(np.float64)).reshape(-1, x_train.shape[-1])
    mean = z.mean(axis=0)
    std = z.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def normalise(norm: dict, x):
    import jax.numpy as jnp

    return (jnp.sign(x) * jnp.log1p(jnp.abs(x)) - norm["mean"]) / norm["std"]


def describe(norm: dict, columns: tuple[str, ...]) -> dict:
    return {"transform": TRANSFORM, "fitted_on": "train split", "columns": list(columns),
            "mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]}
