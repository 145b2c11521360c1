"""The model interface every kind implements, and the registry of kinds (found by name).

A model kind is a module of this package named after it (``forest``, ``mlp``,
``itransformer``; a plugin may register more): a config dataclass (its hyper-parameters,
``[model]`` in a TOML spec, validated by the daemon's one schema checker), the view it
reads, a pure JAX function from a raw batch of that view to class probabilities, and its own
``fit()``. How the params come about is the kind's business:

* gradient kinds (:class:`GradientKind`: mlp, itransformer, later lstm, cnn3d) give a flax
  module; their ``fit`` is the shared optax loop, and the artifact function is
  softmax(module(normalise(x)));
* other kinds (forest) fit themselves.

Everything after ``fit`` (export, artifact, daemon) only sees the probabilities function.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.plugins import Registry, RegistryError
from malsensor.daemon.schema import Checker, opt  # noqa: F401 (opt: for the kinds' configs)

from ..errors import TrainError


class ModelKind:
    name: ClassVar[str]
    config_cls: ClassVar[type]
    fitted: ClassVar[bool] = True   # False: a flax module trained by the shared gradient loop

    def view(self, cfg: Any) -> ViewInfo:
        raise NotImplementedError

    def check(self, cfg: Any) -> None:
        """Raise TrainError for invalid hyper-parameter combinations."""

    def refit_spec(self, spec, result):
        """The spec that refits the selected model on train + validation (``fit --refit``): no
        validation rows are left, so whatever early stopping chose is fixed. Gradient kinds run
        the best epoch's count of epochs; fitted kinds refit the same configuration."""
        if not self.fitted:
            from dataclasses import replace

            return replace(spec, train=replace(spec.train, epochs=max(1, int(result.best_epoch or 1)), patience=0))
        return spec

    def fit(self, ctx, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray | None, y_va: np.ndarray | None,
            n_classes: int, class_weights: np.ndarray):
        """Fit on the training split (validation rows for model selection); a
        :class:`malsensor.models.train.FitResult`."""
        raise NotImplementedError


class GradientKind(ModelKind):
    fitted = False

    def module(self, cfg: Any, n_classes: int):
        """A flax.linen module: ``module.apply({'params': p}, x, train=bool) -> logits``."""
        raise NotImplementedError

    # How raw view values become the module's input, inside the exported function. The default
    # is the normaliser (signed log1p + z-score along the view's feature axis, fitted on the
    # training split); a kind whose inputs are not magnitudes (token keys) overrides all three.
    # What fit_inputs returns is the "norm" leaf of the artifact's params.
    def fit_inputs(self, cfg: Any, x_train: np.ndarray) -> dict[str, np.ndarray]:
        from . import norm as N

        return N.fit_normaliser(x_train, self.view(cfg).feature_axis)

    def prepare_inputs(self, inputs: dict, x):
        from . import norm as N

        return N.normalise(inputs, x)

    def describe_inputs(self, inputs: dict, columns: tuple[str, ...]) -> dict:
        from . import norm as N

        return N.describe(inputs, columns)

    def fit(self, ctx, x_tr, y_tr, x_va, y_va, n_classes, class_weights):
        from ..train import fit_gradient

        return fit_gradient(self, ctx, x_tr, y_tr, x_va, y_va, n_classes, class_weights)


KINDS: Registry[ModelKind] = Registry("model kind", "malsensor.models.zoo")


def register(cls: type[ModelKind]) -> type[ModelKind]:
    KINDS.register(cls.name, cls())
    return cls


def get_kind(name: str) -> ModelKind:
    try:
        return KINDS.get(name)
    except RegistryError as e:
        raise TrainError(str(e)) from None


def build_config(cls: type, values: Any, where: str, path: tuple = (), lines: dict | None = None) -> Any:
    """A config dataclass from a TOML table, through the daemon's schema checker: unknown keys,
    wrong types and values out of range are errors naming ``where`` (file), line and key."""
    ck = Checker(where, lines)
    got = ck.build(cls, values, path)
    if ck.problems:
        raise TrainError("; ".join(map(str, ck.problems)))
    return got
