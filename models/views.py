"""Feature views the trainer reads, as :class:`ViewInfo` records.

``conn@1``: the 17 per-connection features (column order fixed by the daemon's
``views/conn.py``). ``conn_series@1``: the same 17 features snapshotted at fixed
points of a connection's life, ``(lookback_len, 17)`` per connection; it exists so
that sequence models (iTransformer with lookback_len > 1) and early classification
share one interface with ``conn``.
"""
from __future__ import annotations

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.views.conn import CONN_COLUMNS, CONN_VERSION, CONN_VIEW  # the daemon owns the order
from malsensor.daemon.views.conn_series import CONN_SERIES_VERSION, CONN_SERIES_VIEW, check_lookback

N_CONN = len(CONN_COLUMNS)


def conn_view() -> ViewInfo:
    return ViewInfo(CONN_VIEW, CONN_VERSION, (N_CONN,), "float32", tuple(CONN_COLUMNS))


def conn_series_view(lookback_len: int) -> ViewInfo:
    check_lookback(lookback_len)
    return ViewInfo(CONN_SERIES_VIEW, CONN_SERIES_VERSION, (int(lookback_len), N_CONN), "float32",
                    tuple(CONN_COLUMNS))


def view_by_name(name: str, shape: tuple[int, ...] | None = None) -> ViewInfo:
    if name == CONN_VIEW:
        return conn_view()
    if name == CONN_SERIES_VIEW:
        if not shape:
            raise ValueError("conn_series needs a lookback length")
        return conn_series_view(shape[0])
    raise ValueError(f"unknown view {name!r} (known: {CONN_VIEW}, {CONN_SERIES_VIEW})")
