"""iTransformer for classification (Liu et al., ICLR 2024: "iTransformer: Inverted
Transformers Are Effective for Time Series Forecasting").

Inverted: each *variate* (feature) is a token. Its whole lookback series is
embedded by one linear layer into ``num_tokens_per_variate`` tokens of ``dim``;
attention runs across variates; a learned embedding per token tells the
variates apart (their meanings differ, unlike the channels of a forecasting set).
The classification head reads the flattened tokens after a final LayerNorm.

Input: ``conn`` (lookback_len = 1, one row of 17 features per connection) or
``conn_series`` (lookback_len > 1: the features at fixed packet counts, see
:mod:`malsensor.models.data.captures`).

Reversible instance norm (RevIN, Kim et al. 2022) normalises each variate over
its own lookback window; for classification nothing is "reversed", so each
variate's window mean and log standard deviation are appended to its series
before the embedding (the level information is kept, not thrown away). Over a
lookback of one step the window mean is the value itself and the deviation is 0,
so every normalised input is 0: that combination is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.views.conn import CONN, N_FEATURES as N_CONN
from malsensor.daemon.views.conn_series import CONN_SERIES, SeriesOptions

from ..errors import TrainError
from .base import GradientKind, opt, register


@dataclass
class ITransformerConfig:
    """Hyper-parameters (``[model]`` in etc/models/itransformer.toml)."""

    depth: int = 2
    dim: int = 32
    heads: int = 4
    dim_head: int = 8
    num_tokens_per_variate: int = 1
    num_variates: int = N_CONN
    lookback_len: int = 1
    use_reversible_instance_norm: bool = False
    ff_mult: int = 2
    dropout: float = opt(0.1, "dropout rate in attention and feed-forward blocks (training only)", min=0.0,
                         max=1.0, max_exclusive=True)


def _module(cfg: ITransformerConfig, n_classes: int):
    import flax.linen as nn
    import jax.numpy as jnp

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            h = nn.LayerNorm()(x)
            h = nn.MultiHeadDotProductAttention(num_heads=cfg.heads, qkv_features=cfg.heads * cfg.dim_head,
                                                out_features=cfg.dim, dropout_rate=cfg.dropout,
                                                deterministic=not train)(h, h)
            x = x + nn.Dropout(cfg.dropout, deterministic=not train)(h)
            h = nn.LayerNorm()(x)
            h = nn.Dense(cfg.dim * cfg.ff_mult)(h)
            h = nn.gelu(h)
            h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
            h = nn.Dense(cfg.dim)(h)
            return x + nn.Dropout(cfg.dropout, deterministic=not train)(h)

    class ITransformer(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            b = x.shape[0]
            if x.ndim == 2:                      # conn: (b, V) -> (b, 1, V)
                x = x[:, None, :]
            x = jnp.swapaxes(x, 1, 2)            # (b, V, L): one series per variate
            if cfg.use_reversible_instance_norm:
                mean = x.mean(axis=-1, keepdims=True)
                var = x.var(axis=-1, keepdims=True)
                gamma = self.param("revin_gamma", nn.initializers.ones, (cfg.num_variates, 1))
                beta = self.param("revin_beta", nn.initializers.zeros, (cfg.num_variates, 1))
                x = (x - mean) / jnp.sqrt(var + 1e-5) * gamma + beta
                x = jnp.concatenate([x, mean, 0.5 * jnp.log(var + 1e-5)], axis=-1)
            n_tok = cfg.num_variates * cfg.num_tokens_per_variate
            tok = nn.Dense(cfg.dim * cfg.num_tokens_per_variate, name="embed")(x)
            tok = tok.reshape((b, n_tok, cfg.dim))
            tok = nn.LayerNorm(name="embed_norm")(tok)
            tok = tok + self.param("variate_embedding", nn.initializers.normal(0.02), (n_tok, cfg.dim))
            for i in range(cfg.depth):
                tok = Block(name=f"block_{i}")(tok, train)
            tok = nn.LayerNorm(name="final_norm")(tok)
            return nn.Dense(n_classes, name="head")(tok.reshape((b, n_tok * cfg.dim)))

    return ITransformer()


@register
class ITransformer(GradientKind):
    name = "itransformer"
    config_cls = ITransformerConfig

    def view(self, cfg: ITransformerConfig) -> ViewInfo:
        return CONN.info() if cfg.lookback_len == 1 else CONN_SERIES.info(SeriesOptions(lookback=cfg.lookback_len))

    def check(self, cfg: ITransformerConfig) -> None:
        for k in ("depth", "dim", "heads", "dim_head", "num_tokens_per_variate", "lookback_len", "ff_mult"):
            if getattr(cfg, k) < 1:
                raise TrainError(f"itransformer: {k} must be >= 1")
        if cfg.num_variates != N_CONN:
            raise TrainError(f"itransformer: num_variates is {cfg.num_variates}, but the conn views have "
                             f"{N_CONN} features per step")
        if cfg.use_reversible_instance_norm and cfg.lookback_len == 1:
            raise TrainError("itransformer: use_reversible_instance_norm = true needs lookback_len > 1: "
                             "instance norm over a lookback of one step subtracts each value from itself, "
                             "so every input becomes 0. Set lookback_len > 1 (conn_series view) or turn "
                             "reversible instance norm off")

    def module(self, cfg: ITransformerConfig, n_classes: int):
        return _module(cfg, n_classes)
