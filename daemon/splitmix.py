"""splitmix64's mixing step, the one 64-bit hash the kernels share: an event's ``flow_id``
(daemon/outputs/eve.py, over a record's key columns) and a processor-trace token's key
(daemon/pt/tokens.py, over kind, module and offset)."""
from __future__ import annotations

import numpy as np

from .jit import njit


@njit(cache=True, nogil=True)
def mix64(h: np.uint64, v: np.uint64) -> np.uint64:
    """``h`` with ``v`` mixed in: xor, add the increment, then splitmix64's finaliser."""
    h ^= v
    h += np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h
