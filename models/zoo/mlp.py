"""A multi-layer perceptron on the ``conn`` view: the baseline network."""
from __future__ import annotations

from dataclasses import dataclass

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError
from malsensor.daemon.views.conn import CONN

from .base import GradientKind, opt, register
from .layers import dense_head

ACTIVATIONS = ("gelu", "relu", "silu", "tanh")


@dataclass
class MLPConfig:
    """Hyper-parameters (``[model]`` in etc/models/mlp.toml)."""

    hidden: tuple[int, ...] = (256, 256, 128)
    dropout: float = opt(0.1, "dropout rate after each hidden layer (training only)", min=0.0, max=1.0,
                         max_exclusive=True)
    activation: str = "gelu"
    layer_norm: bool = True


def _module(cfg: MLPConfig, n_classes: int):
    import flax.linen as nn

    act = getattr(nn, cfg.activation)

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = x.reshape((x.shape[0], -1))
            norm = (lambda x, i: nn.LayerNorm(name=f"norm_{i}")(x)) if cfg.layer_norm else None
            return dense_head(x, cfg.hidden, n_classes, activation=act, dropout=cfg.dropout, train=train,
                              norm=norm)

    return MLP()


@register
class MLP(GradientKind):
    name = "mlp"
    config_cls = MLPConfig

    def view(self, cfg: MLPConfig) -> ViewInfo:
        return CONN.info()

    def check(self, cfg: MLPConfig) -> None:
        if not cfg.hidden or any(h < 1 for h in cfg.hidden):
            raise TrainError("mlp: hidden must be a non-empty list of positive layer widths")
        if cfg.activation not in ACTIVATIONS:
            raise TrainError(f"mlp: activation must be one of {', '.join(ACTIVATIONS)}")

    def module(self, cfg: MLPConfig, n_classes: int):
        return _module(cfg, n_classes)
