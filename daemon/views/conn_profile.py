"""The ``conn_profile@1`` view: ``conn_ctx@1`` plus the profile of the connection's source device.

62 columns: the 27 of :mod:`conn_ctx <malsensor.daemon.views.conn_ctx>`, then, over the
finished connections of the same source MAC so far (this one included):

* ``src_<f>_mean`` and ``src_<f>_std`` for each of the 17 conn features ``f``: the
  exponentially weighted mean and standard deviation with span ``SPAN`` (weight
  ``alpha = 2 / (SPAN + 1)``), a plain running mean and variance for the first ``SPAN``
  connections (weight ``max(alpha, 1 / n)`` for the n-th), so the first connection's
  profile is itself with a deviation of 0;
* ``src_conns``: how many connections the profile holds, at most ``SPAN`` (a sensor that
  runs for weeks would otherwise see counts no training capture has).

Why (issue 14, device identification; docs/devices.md): a connection says little about the
device that made it (DNS, NTP and DHCP look alike from every device), its device's recent
connections say more. On the IoT Sentinel rows and split (etc/models/gbdt-iot-profile.toml,
README quality section): per connection 0.86 accuracy / 0.77 macro-F1 against 0.76 / 0.66 on
conn_ctx@1, per device capture one capture behind (0.8533 against 0.8667): the profile repeats
what pooling a device's connections already does.

The key is the source MAC, as device events pool by it: one profile per device on the
sensor's segment. Behind a router every remote host has the router's MAC, so this view is for
a sensor on the devices' own segment. Non-finite features count as 0 (what the trainer's
cleaning and the daemon's inference make of them). A thread's table holds
:data:`MAX_SOURCES` devices; the next new one clears it (every profile starts again, counted
in ``SourceProfiles.resets`` and logged), which keeps the trainer and the daemon on the same
arithmetic without an eviction order to agree on.

Like the ``ct_*`` counters, the profiles live per capture thread (:class:`ConnCtxRouter`):
with ``fanout`` > 1 a device's connections are spread over the threads' profiles; a replay
(one thread) is exactly what the trainer's capture reader computes (tests/test_conn_profile.py).
"""
from __future__ import annotations

import logging

import numpy as np

from ..flows import layout as L
from ..jit import njit
from ..splitmix import mix64
from .base import register_view
from .conn import CONN_COLUMNS, N_FEATURES
from .conn_ctx import CONN_CTX_COLUMNS, ConnContext, ConnCtxView

log = logging.getLogger("malsensor.views.conn_profile")

CONN_PROFILE_VIEW = "conn_profile"
CONN_PROFILE_VERSION = 1
SPAN = 32   # chosen on validation before this view existed (docs/devices.md): macro-F1 0.7578, span 16 0.7564
MAX_SOURCES = 12_288   # per capture thread: 16,384 slots at 3/4: 4.7 MB (float64 sums)
PROFILE_COLUMNS = (*(f"src_{c}_mean" for c in CONN_COLUMNS), *(f"src_{c}_std" for c in CONN_COLUMNS), "src_conns")
CONN_PROFILE_COLUMNS = (*CONN_CTX_COLUMNS, *PROFILE_COLUMNS)


@njit(cache=True, nogil=True)
def _update(keys, x, slot_key, slot_used, slot_n, mean, var, state, alpha, span, max_sources, out) -> None:
    """Fold each row of ``x`` into its key's profile (in order), writing the profile after it
    to ``out``. Open addressing, linear probing; ``state`` = [sources held, resets]."""
    mask = slot_key.shape[0] - 1
    nf = x.shape[1]
    for i in range(x.shape[0]):
        k = keys[i]
        s = np.int64(mix64(np.uint64(0), np.uint64(k)) & np.uint64(mask))
        while slot_used[s] and slot_key[s] != k:
            s = (s + 1) & mask
        if not slot_used[s]:
            if state[0] >= max_sources:   # full: every profile starts again
                slot_used[:] = False
                state[0] = 0
                state[1] += 1
                s = np.int64(mix64(np.uint64(0), np.uint64(k)) & np.uint64(mask))
            slot_used[s] = True
            slot_key[s] = k
            slot_n[s] = 0
            mean[s, :] = 0.0
            var[s, :] = 0.0
            state[0] += 1
        n = slot_n[s] + 1
        slot_n[s] = n
        a = max(alpha, 1.0 / n)
        for f in range(nf):
            v = x[i, f]
            if not np.isfinite(v):
                v = 0.0
            d = v - mean[s, f]
            mean[s, f] += a * d
            var[s, f] = (1.0 - a) * (var[s, f] + a * d * d)
            out[i, f] = mean[s, f]
            out[i, nf + f] = np.sqrt(var[s, f])
        out[i, 2 * nf] = min(n, span)


class SourceProfiles:
    """The profiles of one stream of finished connections, carried from batch to batch."""

    def __init__(self, span: int = SPAN, max_sources: int = MAX_SOURCES) -> None:
        if span < 1 or max_sources < 1:
            raise ValueError(f"span and max_sources must be >= 1, not {span}, {max_sources}")
        slots = 1 << int(np.ceil(np.log2(max_sources * 4 / 3)))
        self.span, self.max_sources = span, max_sources
        self.alpha = 2.0 / (span + 1)
        self.slot_key = np.zeros(slots, dtype=np.int64)
        self.slot_used = np.zeros(slots, dtype=np.bool_)
        self.slot_n = np.zeros(slots, dtype=np.int64)
        self.mean = np.zeros((slots, N_FEATURES), dtype=np.float64)
        self.var = np.zeros((slots, N_FEATURES), dtype=np.float64)
        self.state = np.zeros(2, dtype=np.int64)

    @property
    def resets(self) -> int:
        return int(self.state[1])

    def update(self, keys: np.ndarray, conn: np.ndarray) -> np.ndarray:
        """float64 (n, 35): the profile of each row's key after the row, rows in order."""
        conn = np.ascontiguousarray(conn, dtype=np.float64).reshape(-1, N_FEATURES)
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if keys.shape != (conn.shape[0],):
            raise ValueError(f"{keys.shape[0] if keys.ndim else 0} keys for {conn.shape[0]} rows")
        out = np.empty((conn.shape[0], len(PROFILE_COLUMNS)), dtype=np.float64)
        before = self.resets
        _update(keys, conn, self.slot_key, self.slot_used, self.slot_n, self.mean, self.var, self.state,
                self.alpha, self.span, self.max_sources, out)
        if self.resets != before:
            log.warning("conn_profile: more than %d source MACs in one capture thread: every profile started "
                        "again (%d times so far)", self.max_sources, self.resets)
        return out


class ConnProfile(ConnContext):
    """The ``conn_profile@1`` rows: the connection context, then the source device's profile."""

    def __init__(self) -> None:
        super().__init__()
        self.profiles = SourceProfiles()

    def rows(self, rec: np.ndarray, conn: np.ndarray) -> np.ndarray:
        """float64 (n, 62): the ``conn_profile@1`` rows."""
        rec = np.ascontiguousarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
        return np.concatenate([super().rows(rec, conn), self.profiles.update(rec[:, L.SRC_MAC], conn)], axis=1)


class ConnProfileView(ConnCtxView):
    name = CONN_PROFILE_VIEW
    version = CONN_PROFILE_VERSION
    columns = CONN_PROFILE_COLUMNS
    description = (f"conn_ctx@1 + the source MAC's profile (EW mean and deviation of the 17 conn features over "
                   f"its connections, span {SPAN})")
    context = ConnProfile

    def shape(self, options) -> tuple[int, ...]:
        return (len(CONN_PROFILE_COLUMNS),)


CONN_PROFILE = register_view(ConnProfileView())
