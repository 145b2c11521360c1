"""The ``pt_tokens@1`` view: windows of control-flow tokens of a processor trace.

A window is ``seq_len`` tokens (daemon/pt/tokens.py: TIP targets as (module, offset), TNT
bits as taken/not-taken tagged with the current module; ``tip_only`` drops the TNT bits),
each token a 31-bit key carried as two float32 columns (hi, lo): shape ``(seq_len, 2)``.

Where the vocabulary lives: in the artifact's params (a sorted table of the keys seen in
training, a leaf of ``params.msgpack``), applied inside the exported function
(models/zoo/lstm.py: key -> id by binary search, unseen -> the unknown id). So the daemon
feeds raw keys and needs no extra file, the canary covers the lookup, and a hot reload
swaps vocabulary and weights together, atomically.

``tip_only`` changes what a token is, so it is recorded in the artifact: the columns are
``token_hi, token_lo`` (TIP and TNT) or ``tip_hi, tip_lo`` (TIP only). ``stride`` and
``windowing`` only say where live windows start (the trainer cuts non-overlapping chunks,
see models/data/pt_samples.py).

Live: the ``pt_spool`` source hands one decoded trace a batch (:class:`PtTraceBatch`); the
router cuts its windows and registers the trace's window count (daemon/pt/pending.py) so
that the ``trace`` formatter writes one event per trace.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..artifact import ViewInfo
from ..pt import pending
from ..pt.samples import Modules
from ..pt.tokens import token_keys, windows
from ..schema import Checker, opt
from .base import EntityRows, Router, View, register_view

PRODUCT = "pt_samples"
KEY_COLS = 4   # keys of a routed row: trace seq, router id, window index, window offset in the trace


@dataclass
class PtTraceBatch:
    """One decoded trace (what ``pt_spool`` hands over)."""

    seq: int                 # daemon/pt/pending.py id
    kind: np.ndarray         # tokens: uint8 TOK_*
    ip: np.ndarray           # uint64
    offset: np.ndarray       # int64
    modules: Modules
    module_hashes: np.ndarray
    product: ClassVar[str] = PRODUCT

    def counts(self) -> dict[str, int]:
        return {"traces": 1}


@dataclass(frozen=True)
class PtTokensOptions:
    seq_len: int = opt(128, "tokens per window", min=2, max=4096)
    stride: int = opt(1, "tokens between the starts of two windows (windowing = slide)", min=1,
                      max=1 << 20)
    windowing: str = opt("slide", "slide: a window every stride tokens; chunk: non-overlapping windows",
                         choices=("slide", "chunk"))
    tip_only: bool = opt(False, "tokens from TIP/TIP.PGE/FUP targets only (drop TNT bits)")
    top_windows: int = opt(5, "offsets of the highest-scoring windows an event shows", min=0, max=100)
    max_windows: int = opt(65536, "bound on one trace's windows (memory: seq_len x 8 bytes each); a longer "
                                  "trace is covered with a larger stride", min=1, max=1 << 24)

    @property
    def step(self) -> int:
        return self.seq_len if self.windowing == "chunk" else self.stride


_router_ids = itertools.count(1)


class PtTokensRouter(Router):
    trigger = "trace"

    def __init__(self, options: PtTokensOptions) -> None:
        self.o = options
        self.id = next(_router_ids)

    def route(self, batch: PtTraceBatch) -> EntityRows | None:
        o = self.o
        keys, offs = token_keys(batch.kind, batch.ip, batch.offset, batch.modules.start, batch.modules.end,
                                batch.module_hashes, o.tip_only)
        step = o.step
        if keys.size > o.seq_len and (keys.size - o.seq_len) // step + 2 > o.max_windows:
            # a huge trace at stride 1 would need GBs: widen the stride so max_windows cover it
            step = max(step, -(-(keys.size - o.seq_len) // max(o.max_windows - 2, 1)))
        x, w_off = windows(keys, offs, o.seq_len, step)
        n = x.shape[0]
        k = np.empty((n, KEY_COLS), np.int64)
        k[:, 0] = batch.seq
        k[:, 1] = self.id
        k[:, 2] = np.arange(n)
        k[:, 3] = w_off
        pending.add_route(batch.seq, self.id, n, o.top_windows)
        return EntityRows(k, x)


class PtTokensView(View):
    name = "pt_tokens"
    version = 1
    entity = "trace"
    consumes = PRODUCT
    axes = ("token", "key_part")
    feature_axis = -1
    columns = ("token_hi", "token_lo")
    options = PtTokensOptions
    reader = "malsensor.models.data.pt_samples:READER"
    description = "windows of processor-trace control-flow tokens (module, offset) as 31-bit keys"

    def shape(self, options: PtTokensOptions) -> tuple[int, ...]:
        return (options.seq_len, 2)

    def info(self, options: PtTokensOptions | None = None) -> ViewInfo:
        o = self.options() if options is None else options
        cols = ("tip_hi", "tip_lo") if o.tip_only else ("token_hi", "token_lo")
        return ViewInfo(self.name, self.version, self.shape(o), self.dtype, cols, self.feature_axis)

    def options_for(self, info: ViewInfo) -> PtTokensOptions:
        (seq_len,) = self.sized_axes(info, ("seq_len",), 2)
        return PtTokensOptions(seq_len=seq_len, tip_only=tuple(info.columns) == ("tip_hi", "tip_lo"))

    def check(self, options: PtTokensOptions, ck: Checker, path) -> None:
        if options.windowing == "slide" and options.stride > options.seq_len:
            ck.problem((*path, "stride"), f"{options.stride} is above seq_len {options.seq_len}: tokens "
                                          "between windows would never be seen")

    def router(self, options: PtTokensOptions, facts) -> PtTokensRouter:
        return PtTokensRouter(options)


PT_TOKENS = register_view(PtTokensView())
