"""The event formatter of entity ``connection``: the numba EVE kernel of :mod:`.eve`
(5-tuple, MACs, ``flow_id``, ``community_id``, the ``flow`` counters and the 17 ``conn`` features)."""
from __future__ import annotations

import numpy as np

from .eve import PredictionBatch, eve_lines
from .events import Formatter, register_formatter


class ConnectionFormatter(Formatter):
    entity = "connection"
    event_type = "prediction"

    def eve_lines(self, pb: PredictionBatch, *, features: bool = True, select: np.ndarray | None = None,
                  community_id_seed: int = 0, **_options) -> bytes:
        return eve_lines(pb, features=features, select=select, community_id_seed=community_id_seed)


CONNECTION = register_formatter(ConnectionFormatter())
