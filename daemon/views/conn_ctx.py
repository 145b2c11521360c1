"""The ``conn_ctx@1`` view: the 17 ``conn`` features plus UNSW-NB15's connection context.

27 columns: :data:`~malsensor.daemon.views.conn.CONN_COLUMNS`, then the eight ``ct_*``
counters (:mod:`malsensor.daemon.views.context`, UNSW-NB15's definitions over the last
100 connections), then ``state`` (Argus's state name as its code, ``STATE_NAMES``) and
``service`` (``SERVICE_NAMES`` code, :mod:`malsensor.daemon.views.service`: by the first
payload bytes' signature where they name one, else by the responder's port). The ten added
columns carry UNSW-NB15's names, so the UNSW CSV trains the view directly (its text
``state``/``service`` values become the same codes; models/data/csvsrc.py).

One function computes the context, :class:`ConnContext`, used by the daemon's router and
by the trainer's capture reader (models/data/captures.py): connections enter the window
in the order the flow tracker finishes them. In the daemon there is one window per
capture thread (thread id), so with ``fanout`` > 1 each window covers the connections that
thread's share of the traffic finished; a replay (one thread) is exactly what the trainer
reads from the same capture (tests/test_conn_ctx.py checks that).

``state`` from a flow record (Argus 3's names; rule read off UNSW_NB15_82k.csv, where TCP
rows are FIN, CON or REQ and other protocols INT or CON, and Argus's man page):

* TCP: ``RST`` if a reset was seen, else ``FIN`` if a FIN was, else ``REQ`` if the responder
  sent nothing, else ``ACC`` if the SYN-ACK was not acknowledged, else ``CON``;
* any other protocol: ``CON`` if both sides sent packets, else ``INT``.
  (Argus's ICMP states ECO/ECR/URH... need the ICMP type, which the record does not keep.)

``ct_state_ttl`` reads ``sttl``/``dttl`` from the view's own TTL features (``s_ttl_mean``,
``d_ttl_mean``: the last TTL in ``argus`` semantics, as in UNSW; the mean, rounded, in
``malsensor`` semantics).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..flows import layout as L
from ..jit import njit
from ..schema import Checker, opt
from .base import EntityRows, register_view
from .conn import CONN_COLUMNS, N_FEATURES, ConnectionView, ConnRouter
from .context import CT_COLUMNS, STATE_CODE, STATE_NAMES, WINDOW, ContextWindow
from .pkt_seq import DeviceOptions, check_device_options
from .service import SERVICE_NAMES, record_services

CONN_CTX_VIEW = "conn_ctx"
CONN_CTX_VERSION = 1
CTX_COLUMNS = (*CT_COLUMNS, "state", "service")
CONN_CTX_COLUMNS = (*CONN_COLUMNS, *CTX_COLUMNS)
N_CTX_FEATURES = len(CONN_CTX_COLUMNS)
TEXT_COLUMNS = {"state": STATE_NAMES, "service": SERVICE_NAMES}   # coded columns: code = index

_RST, _FIN, _REQ, _ACC, _CON, _INT = (STATE_CODE[s] for s in ("RST", "FIN", "REQ", "ACC", "CON", "INT"))


@njit(cache=True, nogil=True)
def _states(rec: np.ndarray, out: np.ndarray) -> None:
    for i in range(rec.shape[0]):
        r = rec[i]
        st = r[L.STATE]
        answered = r[L.D_PKTS] > 0
        if ((r[L.KEY] >> 32) & 0xFF) == 6:
            if st & L.ST_RST:
                out[i] = _RST
            elif st & (L.ST_FIN_S | L.ST_FIN_D):
                out[i] = _FIN
            elif not answered:
                out[i] = _REQ
            elif (st & L.ST_SYNACK) and not (st & L.ST_ESTABLISHED):
                out[i] = _ACC
            else:
                out[i] = _CON
        else:
            out[i] = _CON if answered else _INT


def argus_states(rec: np.ndarray) -> np.ndarray:
    """Argus state codes (``STATE_NAMES`` indices) of flow records."""
    rec = np.ascontiguousarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
    out = np.empty(rec.shape[0], dtype=np.int8)
    _states(rec, out)
    return out


def address_ids(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """One int64 per address (IPv4 as ::ffff:a.b.c.d): equal addresses, equal ids; a 64-bit
    mix of the two halves, so IPv6 addresses collide only by chance (2**-64 a pair)."""
    with np.errstate(over="ignore"):
        return (hi.astype(np.int64) * np.int64(-7046029254386353131)) ^ lo.astype(np.int64)


class ConnContext:
    """The 10 context columns of finished connections, in the order they are handed in,
    carrying the last ``window`` connections from one call to the next."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = ContextWindow(window)

    def columns(self, rec: np.ndarray, conn: np.ndarray) -> np.ndarray:
        """float64 (n, 10): the ``ct_*`` counters, state and service of these records, whose
        ``conn`` features (n, 17) are ``conn``."""
        rec = np.ascontiguousarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
        state = argus_states(rec)
        key = rec[:, L.KEY]
        sport, dport = (key >> 16) & 0xFFFF, key & 0xFFFF
        service = record_services(rec)
        sttl = np.clip(np.rint(conn[:, 4]), 0, 255).astype(np.int64)
        dttl = np.clip(np.rint(conn[:, 5]), 0, 255).astype(np.int64)
        ct = self.window.update(address_ids(rec[:, L.SRC_HI], rec[:, L.SRC_LO]),
                                address_ids(rec[:, L.DST_HI], rec[:, L.DST_LO]),
                                sport, dport, service, state, sttl, dttl)
        out = np.empty((rec.shape[0], len(CTX_COLUMNS)), dtype=np.float64)
        out[:, :len(CT_COLUMNS)] = ct
        out[:, len(CT_COLUMNS)] = state
        out[:, len(CT_COLUMNS) + 1] = service
        return out

    def rows(self, rec: np.ndarray, conn: np.ndarray) -> np.ndarray:
        """float64 (n, 27): the ``conn_ctx@1`` rows."""
        return np.concatenate([np.asarray(conn, dtype=np.float64).reshape(-1, N_FEATURES),
                               self.columns(rec, conn)], axis=1)


@dataclass(frozen=True)
class ConnCtxOptions(DeviceOptions):
    """The keys ``conn_ctx@1`` adds to a ``[[model]]`` table (device pooling too: IoT device
    identification reads this view, README quality section)."""

    trigger: str = opt("end", "conn_ctx models classify a connection at its end (its context counts "
                              "finished connections): \"end\" only", choices=("end", "early"))
    early_packets: int = opt(0, "not used by conn_ctx (0)", min=0, max=1_000_000)
    lookback: int = opt(0, "not used by conn_ctx (0)", min=0, max=64)


class ConnCtxRouter(ConnRouter):
    """Finished connections (the ``end`` trigger of :class:`ConnRouter`) with their context; one
    ``context`` (:class:`ConnContext` or a subclass: what carries from batch to batch) per
    capture thread."""

    def __init__(self, context: type[ConnContext] = ConnContext) -> None:
        super().__init__()
        self._new = context
        self._contexts: dict[int, ConnContext] = {}
        self._lock = threading.Lock()

    def _context(self) -> ConnContext:
        tid = threading.get_ident()
        with self._lock:
            ctx = self._contexts.get(tid)
            if ctx is None:
                ctx = self._contexts[tid] = self._new()
            return ctx

    def route(self, cb) -> EntityRows | None:
        m = self.selected(cb)
        if not m.any():
            return None
        rec, feat = (cb.records, cb.features) if m.all() else (cb.records[m], cb.features[m])
        x = self._context().rows(rec, feat)   # only this thread touches its context
        return EntityRows(rec, x, feat)   # events show the 17 conn features (the EVE conn object)


class ConnCtxView(ConnectionView):
    name = CONN_CTX_VIEW
    version = CONN_CTX_VERSION
    axes = ("feature",)
    columns = CONN_CTX_COLUMNS
    options = ConnCtxOptions
    description = "17 conn features + UNSW-NB15's connection context (ct_* over the last 100, state, service)"
    context = ConnContext   # what computes the rows from finished connections, daemon and trainer alike

    def shape(self, options) -> tuple[int, ...]:
        return (N_CTX_FEATURES,)

    def check(self, o: ConnCtxOptions, ck: Checker, path) -> None:
        if o.trigger != "end":
            ck.problem((*path, "trigger"), f"a {self.ref} model classifies finished connections: trigger must "
                                           "be \"end\"")
        if o.early_packets:
            ck.problem((*path, "early_packets"), f"early_packets is not used with view = \"{self.ref}\"")
        if o.lookback:
            ck.problem((*path, "lookback"), "lookback is only used with view = \"conn_series@1\"")
        check_device_options(o, ck, path)

    def router(self, o: ConnCtxOptions, facts) -> ConnCtxRouter:
        return ConnCtxRouter(self.context)


CONN_CTX = register_view(ConnCtxView())
