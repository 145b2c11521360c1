"""A small Intel PT encoder for tests: a branch sequence in, a valid packet stream out.

    enc = PtEncoder(choose=random.Random(1).choice)
    enc.psb(); enc.tnt(True); enc.tip(0x401000); enc.ovf(); enc.fup(0x7fff0000); enc.pgd(None)
    data, tokens = enc.finish()

Conditional branches are buffered and flushed as TNT.8 (up to 6 bits) or TNT.64 (up to
47) before the next packet that must follow them. Each IP packet uses a compression form
picked by ``choose`` among the forms that are valid against the last IP (SDM 33.4.2.2),
so a run covers every form. PSB (with its PSB+ header) and OVF reset the last IP; the
first IP packet after them carries a form with a full base (sext-48, update-48 from 0, full).
``tokens`` is what the decoder's token output must be: (kind, ip) per TIP/TIP.PGE/FUP and
per branch bit, in order.
"""
from __future__ import annotations

import random
import struct
from typing import Callable, Sequence

from malsensor.daemon.pt import packets as P

IPC_SIZE = {0: 0, 1: 2, 2: 4, 3: 6, 4: 6, 6: 8}
OPCODE = {P.TIP: 0x0d, P.TIP_PGE: 0x11, P.TIP_PGD: 0x01, P.FUP: 0x1d}
PSB_BYTES = bytes([0x02, 0x82] * 8)


def sext48(ip: int) -> int:
    ip &= 0xffffffffffff
    return ip | 0xffff000000000000 if ip >> 47 else ip


class PtEncoder:
    def __init__(self, choose: Callable[[Sequence], object] | None = None, tnt64: bool | None = None) -> None:
        self.choose = choose or random.Random(0).choice
        self.tnt64 = tnt64
        self.out = bytearray()
        self.tokens: list[tuple[int, int]] = []
        self.bits: list[bool] = []
        self.last_ip = 0
        self.have_base = False
        self.forms_used: set[int] = set()

    # ------------------------------------------------------------ branches
    def tnt(self, taken: bool) -> None:
        self.bits.append(bool(taken))
        self.tokens.append((P.TOK_TAKEN if taken else P.TOK_NOT_TAKEN, 0))
        limit = 47 if self.tnt64 else 6
        if len(self.bits) >= limit:
            self._flush()

    def tip(self, ip: int) -> None:
        self._ip_packet(P.TIP, ip)

    def pge(self, ip: int) -> None:
        self._ip_packet(P.TIP_PGE, ip)

    def fup(self, ip: int) -> None:
        self._ip_packet(P.FUP, ip)

    def pgd(self, ip: int | None) -> None:
        self._ip_packet(P.TIP_PGD, ip)

    # ------------------------------------------------------------ other packets
    def psb(self) -> None:
        """PSB, a PSB+ header (mode.exec, pip, cbr) and PSBEND; the last IP starts over from 0."""
        self._flush()
        self.out += PSB_BYTES
        self.out += bytes([0x99, 0x01])                                        # mode.exec cs.l
        self.out += bytes([0x02, 0x43]) + struct.pack("<Q", 0x1234 << 1)[:6]   # pip
        self.out += bytes([0x02, 0x03, 0x20, 0x00])                           # cbr
        self.out += bytes([0x02, 0x23])
        self.last_ip, self.have_base = 0, False

    def ovf(self) -> None:
        self._flush()
        self.out += bytes([0x02, 0xf3])
        self.last_ip, self.have_base = 0, False

    def filler(self) -> None:
        """A packet with no control flow: pad, mtc, cyc, tsc or mode.tsx."""
        self._flush()
        self.out += self.choose([b"\x00", b"\x59\x17", b"\x0f\x22", b"\x19" + bytes(range(1, 8)),
                                 b"\x99\x20", b"\x02\x62"])

    def finish(self) -> tuple[bytes, list[tuple[int, int]]]:
        self._flush()
        return bytes(self.out), list(self.tokens)

    # ------------------------------------------------------------ internals
    def _flush(self) -> None:
        bits, self.bits = self.bits, []
        while bits:
            if self.tnt64 or (self.tnt64 is None and len(bits) > 6 and self.choose([False, True])):
                part, bits = bits[:47], bits[47:]
                v = 1
                for b in part:
                    v = (v << 1) | b
                self.out += bytes([0x02, 0xa3]) + v.to_bytes(6, "little")
            else:
                part, bits = bits[:6], bits[6:]
                v = 1
                for b in part:
                    v = (v << 1) | b
                self.out.append(v << 1)

    def _forms(self, ip: int) -> list[int]:
        last = self.last_ip
        forms = [6]
        if sext48(ip) == ip:
            forms.append(3)
        if ip >> 48 == last >> 48:
            forms.append(4)
        if self.have_base:
            if ip >> 32 == last >> 32:
                forms.append(2)
            if ip >> 16 == last >> 16:
                forms.append(1)
        return forms

    def _ip_packet(self, ptype: int, ip: int | None) -> None:
        self._flush()
        if ip is None:
            self.out.append(OPCODE[ptype])
            self.forms_used.add(0)
            return
        ipc = int(self.choose(self._forms(ip)))
        self.forms_used.add(ipc)
        raw = ip & ((1 << (8 * IPC_SIZE[ipc])) - 1)
        self.out.append(OPCODE[ptype] | ipc << 5)
        self.out += raw.to_bytes(IPC_SIZE[ipc], "little")
        self.last_ip, self.have_base = ip, True
        if ptype != P.TIP_PGD:
            kind = {P.TIP: P.TOK_TIP, P.TIP_PGE: P.TOK_TIP_PGE, P.FUP: P.TOK_FUP}[ptype]
            self.tokens.append((kind, ip))


def random_program(rng: random.Random, n: int, psb_every: int | None = None) -> tuple[bytes, list, set[int]]:
    """A random branch sequence of ``n`` events encoded (data, expected tokens, IP forms used)."""
    enc = PtEncoder(choose=rng.choice)
    enc.psb()
    base = rng.choice([0x400000, 0x7fff_f780_0000, 0xffff_ffff_8100_0000, 0x0000_5555_5555_4000])
    ip = base
    enc.pge(ip)
    for i in range(n):
        r = rng.random()
        if psb_every and i % psb_every == psb_every - 1:
            enc.psb()
            enc.fup(ip)
        if r < 0.55:
            enc.tnt(rng.random() < 0.5)
        elif r < 0.75:
            ip = (ip & ~0xffff) | rng.randrange(0x10000) if rng.random() < 0.7 else \
                sext48(base + rng.randrange(1 << 32)) if rng.random() < 0.8 else rng.randrange(1 << 64)
            enc.tip(ip)
        elif r < 0.8:
            enc.fup(ip)
        elif r < 0.84:
            enc.pgd(ip if rng.random() < 0.5 else None)
            enc.pge(ip)
        elif r < 0.86:
            enc.ovf()
            enc.fup(ip)
        elif r < 0.88:
            enc.psb()
        else:
            enc.filler()
    data, tokens = enc.finish()
    return data, tokens, enc.forms_used
