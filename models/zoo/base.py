"""The model interface every kind implements, and the registry of kinds.

A model kind is: a config dataclass (its hyper-parameters, ``[model]`` in a
TOML spec), the view it reads, and a pure JAX function ``probs(params, x)``
that maps a raw batch of that view to class probabilities. How the params are
produced is the only fork:

* gradient kinds (``fitted = False``: mlp, itransformer, later lstm, cnn3d) give a
  flax module; the shared training loop fits it with optax, and the artifact
  function is softmax(module(normalise(x))).
* fitted kinds (``fitted = True``: forest) produce their params by their own
  fitting code.

Everything after that (export, artifact, daemon) only sees ``probs``.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError

REGISTRY: dict[str, "ModelKind"] = {}


class ModelKind:
    name: ClassVar[str]
    config_cls: ClassVar[type]
    fitted: ClassVar[bool] = False

    def view(self, cfg: Any) -> ViewInfo:
        raise NotImplementedError

    def check(self, cfg: Any) -> None:
        """Raise TrainError for invalid hyper-parameter combinations."""

    # gradient kinds
    def module(self, cfg: Any, n_classes: int):
        """A flax.linen module: ``module.apply({'params': p}, x, train=bool) -> logits``."""
        raise NotImplementedError

    # fitted kinds
    def probs(self, cfg: Any, static: dict, params: Any, x):
        raise NotImplementedError


def register(cls: type[ModelKind]) -> type[ModelKind]:
    REGISTRY[cls.name] = cls()
    return cls


def get_kind(name: str) -> ModelKind:
    from . import forest, gbdt, itransformer, mlp  # noqa: F401  (registration)

    if name not in REGISTRY:
        raise TrainError(f"unknown model kind {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def build_config(cls: type, values: dict, where: str) -> Any:
    """A config dataclass from a TOML table: unknown keys and wrong types are errors."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TrainError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(known)})")
    out = {}
    defaults = cls()
    for k, v in values.items():
        d = getattr(defaults, k)
        out[k] = _coerce(v, d, f"{where}.{k}")
    return cls(**out)


def _coerce(v: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise TrainError(f"{where}: expected true or false, got {v!r}")
        return v
    if isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TrainError(f"{where}: expected an integer, got {v!r}")
        return v
    if isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TrainError(f"{where}: expected a number, got {v!r}")
        return float(v)
    if isinstance(default, str):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        if not isinstance(v, str):
            raise TrainError(f"{where}: expected a string, got {v!r}")
        return v
    if isinstance(default, tuple):
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise TrainError(f"{where}: expected a list of integers, got {v!r}")
        return tuple(v)
    return v
