"""UNSW-NB15's eight connection-context counters (``ct_*``), computed in numba.

Groundwork for the ``conn_ctx@1`` view (issue 14, section 1): pure functions over
arrays of finished connections in connection order; no flow table, no view registry.
Definitions (../shared/data/unsw_nb15/NUSW-NB15_features.csv; docs/features.md):

``ct_srv_src``        connections with the same service and source address
``ct_srv_dst``        connections with the same service and destination address
``ct_dst_ltm``        connections with the same destination address
``ct_src_ltm``        connections with the same source address
``ct_src_dport_ltm``  connections with the same source address and destination port
``ct_dst_sport_ltm``  connections with the same destination address and source port
``ct_dst_src_ltm``    connections with the same source and destination addresses

each "in 100 connections according to the last time": among the last ``window`` (100)
connections in the order their records end, the current one included (so every
counter is 1..100; the CSVs' minimum is 1). :class:`ContextWindow` keeps those
connections in a ring between calls, so a stream cut into batches gets the same
counters as one call over all of it.

``ct_state_ttl`` is "No. for each state according to specific range of values for
source/destination time to live": the features file gives no ranges, so the rule
below (:data:`STATE_TTL_RULES`) was read off ``UNSW_NB15_82k.csv``: grouping its 65,870
rows by (state, sttl, dttl) gives one value per group except three groups, and the
rule reproduces the column on 99.85 % of the rows (tests/test_context_counters.py
measures it). It marks the testbed's TTL patterns (sttl 62/254 with dttl 252/253 or 0),
so it carries over to another network only as far as its TTLs do.
"""
from __future__ import annotations

import numpy as np
from numba import njit

WINDOW = 100
CT_COLUMNS = ("ct_srv_src", "ct_state_ttl", "ct_dst_ltm", "ct_src_dport_ltm", "ct_dst_sport_ltm",
              "ct_dst_src_ltm", "ct_src_ltm", "ct_srv_dst")      # the UNSW_NB15_82k.csv column order
WINDOWED = tuple(c for c in CT_COLUMNS if c != "ct_state_ttl")

# Argus's state names (the UNSW `state` column); the code is the index, "-" (0) = none/unknown
STATE_NAMES = ("-", "ACC", "CLO", "CON", "ECO", "ECR", "FIN", "INT", "MAS", "PAR", "REQ", "RST", "TST",
               "TXD", "URH", "URN", "no")
STATE_CODE = {s: i for i, s in enumerate(STATE_NAMES)}

# (states, source TTLs, destination TTLs, value); the first rule that matches wins, else 0.
# Read off UNSW_NB15_82k.csv: every (state, sttl, dttl) group with a nonzero majority value.
# CON 254/60 is split there (86 rows 0, 83 rows 3) but 3 in all 8 such rows of the raw
# sample, so 3 (91 of 177 rows over both files).
STATE_TTL_RULES = (
    (("FIN",), (62, 254, 255), (252, 253), 1),
    (("INT",), (0, 62, 254), (0,), 2),
    (("CON",), (62,), (252, 253), 3),
    (("CON",), (254,), (60,), 3),
    (("CON", "ACC"), (254,), (252,), 4),
    (("CLO",), (254,), (252,), 5),
    (("REQ",), (254,), (0,), 6),
)


def state_codes(names) -> np.ndarray:
    """Argus state names -> codes (unknown names and "" -> 0, the "-" state)."""
    return np.array([STATE_CODE.get(str(s).strip(), 0) for s in names], dtype=np.int8)


def _rule_table() -> np.ndarray:
    """(states, 256, 256) int8 lookup: value of (state, sttl, dttl)."""
    t = np.zeros((len(STATE_NAMES), 256, 256), dtype=np.int8)
    for states, sttls, dttls, value in reversed(STATE_TTL_RULES):   # first rule wins
        for s in states:
            for a in sttls:
                t[STATE_CODE[s], a, list(dttls)] = value
    return t


_TABLE = _rule_table()


@njit(cache=True, nogil=True)
def _state_ttl(table: np.ndarray, state: np.ndarray, sttl: np.ndarray, dttl: np.ndarray,
               out: np.ndarray) -> None:
    for i in range(state.shape[0]):
        s, a, d = state[i], sttl[i], dttl[i]
        if 0 <= s < table.shape[0] and 0 <= a < 256 and 0 <= d < 256:
            out[i] = table[s, a, d]
        else:
            out[i] = 0


def ct_state_ttl(state: np.ndarray, sttl: np.ndarray, dttl: np.ndarray) -> np.ndarray:
    """``ct_state_ttl`` of each connection (state codes from :func:`state_codes`)."""
    out = np.empty(state.shape[0], dtype=np.int32)
    _state_ttl(_TABLE, np.ascontiguousarray(state, np.int64), np.ascontiguousarray(sttl, np.int64),
               np.ascontiguousarray(dttl, np.int64), out)
    return out


@njit(cache=True, nogil=True)
def _windowed(ring: np.ndarray, fill: np.ndarray, keys: np.ndarray, out: np.ndarray) -> None:
    """For each connection i (in order): store it in the ring, then count the ring's
    connections (the current one included) sharing each key. ``ring`` is (5, window):
    src, dst, sport, dport, service rows; ``fill`` = [next slot, slots used].

    A plain scan of the <= 100 ring slots per connection, branch-free (the compares are
    summed as integers, which lets LLVM vectorise the scan): no hashing and no
    eviction bookkeeping, and exact for any window."""
    w = ring.shape[1]
    pos, used = fill[0], fill[1]
    r_src, r_dst, r_sport, r_dport, r_srv = ring[0], ring[1], ring[2], ring[3], ring[4]
    for i in range(keys.shape[0]):
        src, dst, sport, dport, srv = keys[i, 0], keys[i, 1], keys[i, 2], keys[i, 3], keys[i, 4]
        r_src[pos], r_dst[pos], r_sport[pos], r_dport[pos], r_srv[pos] = src, dst, sport, dport, srv
        pos = pos + 1 if pos + 1 < w else 0
        if used < w:
            used += 1
        srv_src = srv_dst = n_dst = n_src = src_dport = dst_sport = dst_src = 0
        for j in range(used):
            s = np.int32(r_src[j] == src)
            d = np.int32(r_dst[j] == dst)
            v = np.int32(r_srv[j] == srv)
            n_src += s
            n_dst += d
            srv_src += v & s
            srv_dst += v & d
            dst_src += s & d
            src_dport += s & np.int32(r_dport[j] == dport)
            dst_sport += d & np.int32(r_sport[j] == sport)
        out[i, 0] = srv_src
        out[i, 2] = n_dst
        out[i, 3] = src_dport
        out[i, 4] = dst_sport
        out[i, 5] = dst_src
        out[i, 6] = n_src
        out[i, 7] = srv_dst
    fill[0], fill[1] = pos, used


class ContextWindow:
    """The last ``window`` connections, carried from one batch to the next.

    Addresses, ports and services are any integer ids (equality is all that counts:
    e.g. IPv4 addresses as integers, IPv6 as a hash, services as indices)."""

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window}")
        self.ring = np.zeros((5, window), dtype=np.int64)
        self.fill = np.zeros(2, dtype=np.int64)

    def update(self, src, dst, sport, dport, service, state, sttl, dttl) -> np.ndarray:
        """The eight counters of these connections, (n, 8) int32 in :data:`CT_COLUMNS` order."""
        n = len(src)
        keys = np.empty((n, 5), dtype=np.int64)
        for k, a in enumerate((src, dst, sport, dport, service)):
            a = np.asarray(a)
            if a.shape != (n,):
                raise ValueError(f"{CT_INPUTS[k]}: {a.shape[0] if a.ndim else 0} values, expected {n}")
            keys[:, k] = a
        out = np.empty((n, len(CT_COLUMNS)), dtype=np.int32)
        _windowed(self.ring, self.fill, keys, out)
        out[:, 1] = ct_state_ttl(np.asarray(state), np.asarray(sttl), np.asarray(dttl))
        return out


CT_INPUTS = ("src", "dst", "sport", "dport", "service", "state", "sttl", "dttl")


def context_counters(src, dst, sport, dport, service, state, sttl, dttl, window: int = WINDOW) -> np.ndarray:
    """The eight ``ct_*`` counters of connections in order, from an empty window."""
    return ContextWindow(window).update(src, dst, sport, dport, service, state, sttl, dttl)
