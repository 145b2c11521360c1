"""Layer stacks shared by the gradient kinds (flax; called inside a module's ``@nn.compact``)."""
from __future__ import annotations

from typing import Callable


def dense_head(x, widths, n_classes: int, *, activation: Callable, dropout: float, train: bool,
               norm: Callable | None = None):
    """``Dense(w) -> norm -> activation -> Dropout`` per width, then ``Dense(n_classes)``: the
    class scores. ``norm(x, i)`` normalises after the ``i``-th dense layer (it names its own
    parameters); None: no normalisation. The parameters are ``dense_{i}`` and ``head``, the
    names every published mlp and cnn3d artifact has."""
    import flax.linen as nn

    for i, w in enumerate(widths):
        x = nn.Dense(w, name=f"dense_{i}")(x)
        if norm is not None:
            x = norm(x, i)
        x = activation(x)
        x = nn.Dropout(dropout, deterministic=not train)(x)
    return nn.Dense(n_classes, name="head")(x)
