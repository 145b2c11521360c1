"""Control-flow tokens of a decoded trace as 31-bit keys, and windows of them (numba).

A token is what Barnum fed its LSTM, without raw addresses:

* a TIP / TIP.PGE / FUP target -> (kind, module, offset of the target within the module);
  a target outside every module -> (kind, OUTSIDE), one token whatever the address;
* a TNT bit -> (taken or not-taken, the current module: that of the last known IP).

Each token is hashed (splitmix64 over kind, the module's name hash and the offset) to a
31-bit key, never 0 (0 pads short windows). The key travels as two float32 columns
(``hi`` = key >> 16, ``lo`` = key & 0xffff, both exact in float32) because model inputs
are float32; the artifact maps keys to vocabulary ids itself (see models/zoo/lstm.py).
"""
from __future__ import annotations

import hashlib

import numpy as np
from numba import njit

from ..splitmix import mix64
from .packets import TOK_FUP, TOK_NOT_TAKEN, TOK_TAKEN, TOK_TIP, TOK_TIP_PGE
from .samples import Modules

OUTSIDE = np.int64(0x0DDC0FFEE)   # the module hash of "outside every module"
KEY_MASK = 0x7FFFFFFF


def module_hash(name: str) -> int:
    """A stable 63-bit hash of a module's file name (its basename: the same library traced
    on two machines under different folders is the same module)."""
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or name
    return int.from_bytes(hashlib.blake2b(base.encode(), digest_size=8).digest(), "little") & 0x7FFFFFFFFFFFFFFF


@njit(cache=True, nogil=True)
def _module_of(ip: np.uint64, start: np.ndarray, end: np.ndarray) -> int:
    i = np.searchsorted(start, ip, side="right") - 1
    if i >= 0 and ip < end[i]:
        return i
    return -1


@njit(cache=True, nogil=True)
def token_keys(kind: np.ndarray, ip: np.ndarray, offset: np.ndarray, start: np.ndarray, end: np.ndarray,
               mod_hash: np.ndarray, tip_only: bool) -> tuple:
    """(keys int64, offsets int64) of the tokens, in trace order."""
    n = kind.size
    keys = np.empty(n, np.int64)
    offs = np.empty(n, np.int64)
    cur = np.int64(OUTSIDE)
    m = 0
    for i in range(n):
        k = kind[i]
        if k == TOK_TIP or k == TOK_TIP_PGE or k == TOK_FUP:
            j = _module_of(ip[i], start, end)
            if j >= 0:
                cur = mod_hash[j]
                h = mix64(mix64(np.uint64(k), np.uint64(cur)), ip[i] - start[j])
            else:
                cur = np.int64(OUTSIDE)
                h = mix64(mix64(np.uint64(k), np.uint64(OUTSIDE)), np.uint64(0))
        elif k == TOK_TAKEN or k == TOK_NOT_TAKEN:
            if tip_only:
                continue
            h = mix64(mix64(np.uint64(k), np.uint64(cur)), np.uint64(0xFFFFFFFFFFFFFFFF))
        else:
            continue
        key = np.int64(h & np.uint64(KEY_MASK))
        keys[m] = key if key != 0 else 1
        offs[m] = offset[i]
        m += 1
    return keys[:m], offs[:m]


@njit(cache=True, nogil=True)
def windows(keys: np.ndarray, offs: np.ndarray, seq_len: int, stride: int) -> tuple:
    """Windows of ``seq_len`` keys every ``stride`` tokens as (n, seq_len, 2) float32 (hi, lo),
    with the trace offset of each window's first token. A trace shorter than one window gives
    one window padded with key 0; the tail shorter than a window after the last full one is
    covered by a last window that ends on the last token."""
    n = keys.size
    if n <= seq_len:
        count = 1
    else:
        count = (n - seq_len) // stride + 1
        if (count - 1) * stride + seq_len < n:
            count += 1
    x = np.zeros((count, seq_len, 2), np.float32)
    w_off = np.zeros(count, np.int64)
    for w in range(count):
        s = w * stride
        if s + seq_len > n:
            s = max(n - seq_len, 0)
        w_off[w] = offs[s] if n > 0 else 0
        for t in range(min(seq_len, n - s)):
            key = keys[s + t]
            x[w, t, 0] = np.float32(key >> 16)
            x[w, t, 1] = np.float32(key & 0xFFFF)
    return x, w_off


def trace_windows(data: bytes, modules: Modules, seq_len: int, stride: int, tip_only: bool = False):
    """Decode a raw trace and cut its token windows: (x (n, seq_len, 2) float32, offsets (n,) int64,
    tokens, counters)."""
    from .decoder import decode

    r = decode(data, packets=False, tokens=True)
    tk = r.tokens
    hashes = np.asarray([module_hash(m) for m in modules.names], np.int64)
    keys, offs = token_keys(tk.kind, tk.ip, tk.offset, modules.start, modules.end, hashes, tip_only)
    x, w_off = windows(keys, offs, seq_len, stride)
    return x, w_off, int(keys.size), r.counters


def key_of(x: np.ndarray) -> np.ndarray:
    """The int64 keys back from (..., 2) float32 (hi, lo)."""
    return x[..., 0].astype(np.int64) * 65536 + x[..., 1].astype(np.int64)
