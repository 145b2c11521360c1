"""An LSTM over windows of processor-trace tokens (the ``pt_tokens@1`` view), as Barnum's
trace classifier: token embedding, stacked LSTM layers, a dense head on the last state.

The vocabulary: the ``max_vocab - 2`` most frequent token keys of the training split,
sorted, are the params leaf ``norm.vocab`` (int32). The exported function maps each key to
its id by binary search (id = position + 2), an unseen key to ``UNKNOWN`` (1) and the
padding key 0 to ``PAD`` (0). So the artifact is self-contained: the daemon feeds the view's
raw keys, never ids, and never raw 64-bit addresses.

Trace-level evaluation (Barnum): a trace is flagged when any of its windows gives a
positive class a probability above ``eval_threshold`` (models/pt_eval.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.views.pt_tokens import PT_TOKENS, PtTokensOptions

from ..errors import TrainError
from .base import GradientKind, opt, register

PAD = 0
UNKNOWN = 1


@dataclass
class LSTMConfig:
    """Hyper-parameters (``[model]`` in etc/models/lstm.toml)."""

    seq_len: int = opt(128, "tokens per window (the view's seq_len)", min=2, max=4096)
    tip_only: bool = opt(False, "tokens from TIP targets only (the view's tip_only)")
    max_vocab: int = opt(65536, "embedding rows: the most frequent training tokens + pad + unknown", min=3)
    embed: int = opt(64, "embedding width", min=1)
    units: int = opt(128, "LSTM units per layer", min=1)
    hidden_layers: int = opt(2, "stacked LSTM layers", min=1, max=8)
    dropout: float = opt(0.2, "dropout between layers and before the head (training only)", min=0.0, max=1.0,
                         max_exclusive=True)
    eval_threshold: float = opt(0.95, "a trace is flagged when a window's positive-class probability exceeds "
                                      "this", min=0.0, max=1.0)


def _module(cfg: LSTMConfig, n_classes: int):
    import flax.linen as nn

    class TraceLSTM(nn.Module):
        @nn.compact
        def __call__(self, ids, train: bool = False):
            h = nn.Embed(cfg.max_vocab, cfg.embed, name="embed")(ids)
            for i in range(cfg.hidden_layers):
                h = nn.RNN(nn.OptimizedLSTMCell(cfg.units), name=f"lstm_{i}")(h)
                h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
            return nn.Dense(n_classes, name="head")(h[:, -1, :])

    return TraceLSTM()


def keys_of(x):
    """Token keys (int32) from the view's (..., 2) float32 (hi, lo) columns."""
    import jax.numpy as jnp

    return x[..., 0].astype(jnp.int32) * 65536 + x[..., 1].astype(jnp.int32)


@register
class LSTM(GradientKind):
    name = "lstm"
    config_cls = LSTMConfig

    def view(self, cfg: LSTMConfig) -> ViewInfo:
        return PT_TOKENS.info(PtTokensOptions(seq_len=cfg.seq_len, tip_only=cfg.tip_only))

    def check(self, cfg: LSTMConfig) -> None:
        if cfg.max_vocab > 1 << 24:
            raise TrainError("lstm: max_vocab above 2^24 rows is not a sensible embedding")

    def module(self, cfg: LSTMConfig, n_classes: int):
        return _module(cfg, n_classes)

    def fit_inputs(self, cfg: LSTMConfig, x_train: np.ndarray) -> dict[str, np.ndarray]:
        k = x_train[..., 0].astype(np.int64) * 65536 + x_train[..., 1].astype(np.int64)
        keys, counts = np.unique(k[k != 0], return_counts=True)
        keep = max(cfg.max_vocab - 2, 1)
        if keys.size > keep:
            top = np.argsort(-counts, kind="stable")[:keep]
            keys = np.sort(keys[top])
        if keys.size == 0:
            keys = np.array([0x7FFFFFFF], np.int64)   # nothing to learn from: every token is unknown
        return {"vocab": keys.astype(np.int32)}

    def prepare_inputs(self, inputs: dict, x):
        import jax.numpy as jnp

        vocab = inputs["vocab"]
        key = keys_of(x)
        pos = jnp.clip(jnp.searchsorted(vocab, key), 0, vocab.shape[0] - 1)
        ids = jnp.where(vocab[pos] == key, pos + 2, UNKNOWN)
        return jnp.where(key == 0, PAD, ids).astype(jnp.int32)

    def describe_inputs(self, inputs: dict, columns: tuple[str, ...]) -> dict:
        return {"transform": "token_vocabulary", "fitted_on": "train split", "columns": list(columns),
                "vocabulary": int(inputs["vocab"].shape[0]), "pad_id": PAD, "unknown_id": UNKNOWN}
