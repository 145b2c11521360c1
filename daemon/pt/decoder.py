"""Intel PT packet decoding of a whole buffer: structure-of-arrays out, counters, tokens.

    result = decode(data)                    # every packet (PtPackets) + counters
    result = decode(data, tokens=True)       # + per TIP/TIP.PGE/FUP its IP, per TNT its bits in order
    for chunk in decode_chunks(data, ...):   # the same over a big trace, a bounded chunk of output at a time

Python runs once per chunk of output (default 1 M packets); the walking is
:func:`kernel.decode_into` (numba).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from . import kernel as K
from . import packets as P

__all__ = ["PtPackets", "PtTokens", "PtCounters", "PtDecoded", "Errata", "decode", "decode_chunks",
           "errata_for_cpu"]

DEFAULT_CHUNK = 1 << 20


@dataclass
class PtPackets:
    """One row per packet (and per decode error, type ERROR); column meanings in packets.COLUMNS."""

    offset: np.ndarray   # int64: byte offset of the packet in the trace
    type: np.ndarray     # uint8: packets.PAD ... packets.ERROR
    size: np.ndarray     # uint8: bytes
    payload: np.ndarray  # uint64
    aux: np.ndarray      # int32
    ip: np.ndarray       # uint64: reconstructed IP (IP packets), else 0

    def __len__(self) -> int:
        return int(self.offset.size)

    @classmethod
    def empty(cls, n: int) -> "PtPackets":
        return cls(np.empty(n, np.int64), np.empty(n, np.uint8), np.empty(n, np.uint8),
                   np.empty(n, np.uint64), np.empty(n, np.int32), np.empty(n, np.uint64))

    def head(self, n: int) -> "PtPackets":
        return PtPackets(self.offset[:n], self.type[:n], self.size[:n], self.payload[:n], self.aux[:n],
                         self.ip[:n])

    @classmethod
    def concat(cls, parts: list["PtPackets"]) -> "PtPackets":
        if not parts:
            return cls.empty(0)
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("offset", "type", "size", "payload", "aux", "ip")))


@dataclass
class PtTokens:
    """Control-flow tokens in trace order: kind (packets.TOK_*), ip (0 for TNT bits), offset of the packet."""

    kind: np.ndarray    # uint8
    ip: np.ndarray      # uint64
    offset: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.kind.size)

    @classmethod
    def empty(cls, n: int) -> "PtTokens":
        return cls(np.empty(n, np.uint8), np.empty(n, np.uint64), np.empty(n, np.int64))

    def head(self, n: int) -> "PtTokens":
        return PtTokens(self.kind[:n], self.ip[:n], self.offset[:n])

    @classmethod
    def concat(cls, parts: list["PtTokens"]) -> "PtTokens":
        if not parts:
            return cls.empty(0)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("kind", "ip", "offset")))


@dataclass
class PtCounters:
    """What one decode saw. ``bytes_in == bytes_decoded + bytes_skipped`` always."""

    bytes_in: int = 0
    bytes_decoded: int = 0
    bytes_skipped: int = 0
    resyncs: int = 0
    packets: dict[str, int] = field(default_factory=dict)  # by packets.NAMES, errors excluded
    errors: dict[str, int] = field(default_factory=dict)   # by packets.ERROR_NAMES

    @property
    def n_packets(self) -> int:
        return sum(self.packets.values())

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict:
        return {"bytes_in": self.bytes_in, "bytes_decoded": self.bytes_decoded,
                "bytes_skipped": self.bytes_skipped, "resyncs": self.resyncs,
                "packets": dict(self.packets), "errors": dict(self.errors)}


@dataclass(frozen=True)
class Errata:
    """CPU errata that change packet decoding (libipt applies them per CPU model)."""

    skd007: bool = False
    skz84: bool = False

    @property
    def mask(self) -> int:
        return (K.ERRATUM_SKD007 if self.skd007 else 0) | (K.ERRATUM_SKZ84 if self.skz84 else 0)


_SKD007_MODELS = {0x4e, 0x5e, 0x8e, 0x9e, 0xa5, 0xa6}
_SKZ84_MODELS = {0x55, 0x6a, 0x6c, 0x8f, 0xcf, 0xad, 0xae}
_KNOWN_MODELS = _SKD007_MODELS | _SKZ84_MODELS | {
    0x3d, 0x47, 0x4f, 0x56, 0x66, 0x7d, 0x7e, 0x8c, 0x8d, 0xa7, 0xa8, 0x97, 0x9a, 0xba, 0xb7, 0xbf, 0xc5,
    0xc6, 0xb5, 0xaa, 0xac, 0xbd, 0xcc, 0xd5, 0x5c, 0x5f, 0x7a, 0x86, 0x96, 0x9c, 0xb6, 0xaf, 0xdd}


def errata_for_cpu(family: int, model: int) -> Errata | None:
    """The packet-level errata of an Intel CPU (libipt's pt_cpu_errata table); None for an unknown CPU."""
    if family == 6 and model in _KNOWN_MODELS:
        return Errata(skd007=model in _SKD007_MODELS, skz84=model in _SKZ84_MODELS)
    if (family == 0x12 and model in (1, 3)) or (family == 0x13 and model == 1):
        return Errata(skz84=family == 0x13)
    return None


@dataclass
class PtDecoded:
    packets: PtPackets | None
    tokens: PtTokens | None
    counters: PtCounters


class _Walk:
    """Kernel state and counters across the chunks of one trace."""

    def __init__(self, data: np.ndarray, no_sync: bool, errata: Errata) -> None:
        self.data = data
        self.state = K.new_state(no_sync)
        self.type_counts = np.zeros(P.N_TYPES, np.int64)
        self.error_counts = np.zeros(P.N_ERRORS, np.int64)
        self.errata = errata.mask

    @property
    def done(self) -> bool:
        return self.state[K.S_PHASE] == K.PH_DONE

    def step(self, pk: PtPackets | None, tk: PtTokens | None) -> tuple[int, int]:
        dummy_p = pk or _DUMMY_P
        dummy_t = tk or _DUMMY_T
        return K.decode_into(self.data, self.state, self.type_counts, self.error_counts, self.errata,
                             pk is not None, dummy_p.offset, dummy_p.type, dummy_p.size, dummy_p.payload,
                             dummy_p.aux, dummy_p.ip, tk is not None, dummy_t.kind, dummy_t.ip, dummy_t.offset)

    def counters(self) -> PtCounters:
        s = self.state
        return PtCounters(
            bytes_in=int(self.data.size), bytes_decoded=int(s[K.S_DECODED]), bytes_skipped=int(s[K.S_SKIPPED]),
            resyncs=int(s[K.S_RESYNCS]),
            packets={P.NAMES[t]: int(c) for t, c in enumerate(self.type_counts) if c and t != P.ERROR},
            errors={P.ERROR_NAMES[k]: int(c) for k, c in enumerate(self.error_counts) if c})


_DUMMY_P = PtPackets.empty(1)
_DUMMY_T = PtTokens.empty(65)


def as_bytes(data) -> np.ndarray:
    """A uint8 view of bytes, bytearray, memoryview or an array (no copy where possible)."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(data, np.uint8)


def decode_chunks(data, *, packets: bool = True, tokens: bool = False, no_sync: bool = False,
                  errata: Errata = Errata(), chunk: int = DEFAULT_CHUNK,
                  ) -> Iterator[tuple[PtPackets | None, PtTokens | None, PtCounters]]:
    """Decode ``data`` a bounded chunk of output at a time; the output arrays are reused between chunks
    (copy what you keep). The counters of each yield cover the trace up to that point."""
    walk = _Walk(as_bytes(data), no_sync, errata)
    pk = PtPackets.empty(chunk) if packets else None
    tk = PtTokens.empty(max(chunk, 128)) if tokens else None
    while not walk.done:
        npk, ntk = walk.step(pk, tk)
        yield (pk.head(npk) if pk else None, tk.head(ntk) if tk else None, walk.counters())


def decode(data, *, packets: bool = True, tokens: bool = False, no_sync: bool = False,
           errata: Errata = Errata(), chunk: int = DEFAULT_CHUNK) -> PtDecoded:
    """Decode a whole trace into one :class:`PtDecoded` (arrays sized to the trace)."""
    buf = as_bytes(data)
    # packets never outnumber bytes + errors; size the first chunk to the trace when it is small
    size = min(chunk, buf.size + 1)
    pparts: list[PtPackets] = []
    tparts: list[PtTokens] = []
    counters = PtCounters(bytes_in=int(buf.size), bytes_skipped=int(buf.size))
    for pk, tk, counters in decode_chunks(buf, packets=packets, tokens=tokens, no_sync=no_sync, errata=errata,
                                          chunk=size):
        if pk is not None:
            pparts.append(PtPackets(*(a.copy() for a in (pk.offset, pk.type, pk.size, pk.payload, pk.aux,
                                                         pk.ip))))
        if tk is not None:
            tparts.append(PtTokens(tk.kind.copy(), tk.ip.copy(), tk.offset.copy()))
    return PtDecoded(PtPackets.concat(pparts) if packets else None,
                     PtTokens.concat(tparts) if tokens else None, counters)
