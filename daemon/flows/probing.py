"""Open addressing with linear probing: what the flow table's index (table.py) and the
packet-sequence recorder's index (seq.py) share. Both delete by backward shift (no tombstones,
so probe chains never lengthen as flows come and go); only their hash functions differ."""
from __future__ import annotations

from ..jit import njit


def pow2_at_least(n: int) -> int:
    """The number of buckets for ``n`` entries' worth of room: a power of two (mask, not modulo), at least 2."""
    return 1 << max(1, (n - 1).bit_length())


@njit(cache=True, nogil=True, inline="always")
def moves_back(hole, j, home) -> bool:
    """Backward-shift deletion: whether the entry in bucket ``j``, whose hash puts it at
    ``home``, moves into the emptied bucket ``hole`` (its probe chain runs through the hole,
    allowing for the wrap-around at the end of the buckets)."""
    if j > hole:
        return home <= hole or home > j
    return home <= hole and home > j
