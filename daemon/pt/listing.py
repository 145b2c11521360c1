"""The packet listing of libipt's ``ptdump``: one packet a line (offset, mnemonic, payload).

It reproduces ``ptdump``'s columns (ptdump/src/ptdump.c, print_buffer: a 16-digit hex
offset, the mnemonic padded to 9, the payload padded to 24 when a tracking column
follows) and its options without timing or sideband: ``--no-offset``, ``--raw``,
``--lastip``, ``--exec-mode``, ``--no-pad``, ``--no-timing``, ``--no-cyc``,
``--no-sync``, ``--quiet``. A decode error prints as ptdump prints it
(``[OFFSET: error decoding packet: MESSAGE]``) and the listing goes on at the next PSB.

The text is made in Python, one line per packet: a listing is read by people or
diffed by tests, a few thousand lines; decoding stays in the numba kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from . import packets as P
from .decoder import Errata, PtPackets, as_bytes, decode_chunks

__all__ = ["ListingOptions", "listing_lines"]


@dataclass(frozen=True)
class ListingOptions:
    show_offset: bool = True
    raw: bool = False
    lastip: bool = False
    exec_mode: bool = False
    no_pad: bool = False
    no_timing: bool = False
    no_cyc: bool = False
    no_sync: bool = False
    quiet: bool = False
    errata: Errata = Errata()


_CFE_TYPES = {1: "intr", 2: "iret", 3: "smi", 4: "rsm", 5: "sipi", 6: "init", 7: "vmentry", 8: "vmexit",
              9: "vmexit_intr", 10: "shutdown", 12: "uintr", 13: "uiret", 14: "swintr", 15: "syscall"}
_CFE_WITH_VECTOR = {1, 9, 12, 14}
_EVD_TYPES = {0: "cr2", 1: "vmxq", 2: "vmxr"}
_TIMING = {P.TSC, P.CBR, P.TMA, P.MTC, P.CYC}


def _ip_payload(ipc: int, raw: int) -> str:
    if ipc == 0:
        return "0: ????????????????"
    if ipc == 1:
        return f"1: ????????????{raw:04x}"
    if ipc == 2:
        return f"2: ????????{raw:08x}"
    if ipc == 4:
        return f"4: ????{raw:012x}"
    if ipc == 3:
        return f"3: {(raw | 0xffff000000000000) if raw >> 47 else raw:016x}"
    return f"{ipc:x}: {raw:016x}"


def _tnt(bits: int, count: int) -> str:
    return "".join("!" if (bits >> b) & 1 else "." for b in range(count - 1, -1, -1))


class _LastIp:
    """ptdump's --lastip tracking (libipt pt_last_ip): reset only when decoding resynchronises."""

    def __init__(self) -> None:
        self.ip, self.have, self.suppressed = 0, False, False

    def update(self, ipc: int, raw: int) -> None:
        if ipc == 0:
            self.suppressed = True
            return
        if ipc == 3:
            self.ip = (raw | 0xffff000000000000) if raw >> 47 else raw
        elif ipc == 6:
            self.ip = raw
        else:
            mask = {1: 0xffff, 2: 0xffffffff, 4: 0xffffffffffff}[ipc]
            self.ip = (self.ip & ~mask) | raw
        self.have, self.suppressed = True, False


def _payload(t: int, payload: int, aux: int, opts: ListingOptions) -> tuple[str, str, str, bool]:
    """(standard payload, tracking id, tracking payload, extended) of one packet."""
    if t in P.IP_TYPES:
        return _ip_payload(aux & 0xff, payload), "", "", False
    if t in (P.TNT_8, P.TNT_64):
        return _tnt(payload, aux), "", "", True
    if t == P.PIP:
        return f"{payload:x}{', nr' if aux else ''}", "cr3", f"{payload:016x}", False
    if t == P.VMCS:
        return f"{payload:x}", "vmcs", f"{payload:016x}", False
    if t == P.MODE_EXEC:
        csd, csl, iflag = ("cs.d" if payload & 2 else ""), ("cs.l" if payload & 1 else ""), payload & 4
        text = csd + (", " if csd and csl else "") + csl + (", " if iflag and (csd or csl) else "") + \
            ("if" if iflag else "")
        if opts.exec_mode:
            em = ("unknown" if payload & 2 else "64-bit") if payload & 1 else ("32-bit" if payload & 2 else "16-bit")
            return text, "em", em, False
        return text, "", "", False
    if t == P.MODE_TSX:
        intx, abrt = ("intx" if payload & 1 else ""), ("abrt" if payload & 2 else "")
        return intx + (", " if intx and abrt else "") + abrt, "", "", False
    if t in (P.TSC, P.CBR, P.MTC, P.CYC, P.MNT):
        return f"{payload:x}", "", "", False
    if t == P.TMA:
        return f"{payload:x}, {aux:x}", "", "", False
    if t == P.EXSTOP:
        return ("ip" if aux else ""), "", "", False
    if t == P.MWAIT:
        return f"{payload & 0xffffffff:08x}, {payload >> 32:08x}", "", "", False
    if t == P.PWRE:
        state, sub, hw = (payload >> 12) & 0xf, (payload >> 8) & 0xf, payload & 8
        return f"c{(state + 1) & 0xf}.{(sub + 1) & 0xf}{', hw' if hw else ''}", "", "", False
    if t == P.PWRX:
        reasons = [r for bit, r in ((0x100, "int"), (0x400, " st"), (0x800, " hw")) if payload & bit]
        wr = reasons[0] if len(reasons) == 1 else "bad"
        return f"{wr}: c{((payload >> 4) + 1) & 0xf}, c{((payload & 0xf) + 1) & 0xf}", "", "", False
    if t == P.PTW:
        return f"{(aux >> 5) & 3:x}: {payload:x}{', ip' if aux & 0x80 else ''}", "", "", False
    if t == P.CFE:
        ctype, ip, vector = payload & 0x1f, ", ip" if payload & 0x80 else "", payload >> 8
        name = _CFE_TYPES.get(ctype, "unknown")
        if ctype in _CFE_WITH_VECTOR:
            return f"{ctype}: {vector}{ip}", "type", name, False
        if ctype == 5:
            return f"{ctype}: {vector:x}{ip}", "type", name, False
        return f"{ctype}{ip}", "type", name, False
    if t == P.EVD:
        return f"{aux}: {payload:x}", "type", _EVD_TYPES.get(aux, "unknown"), False
    if t == P.TRIG:
        flags, trbv, icnt = payload & 0xff, (payload >> 8) & 0xff, payload >> 16
        text = f"{trbv:02x}{', ip' if flags & 0x80 else ''}{', mult' if flags & 0x20 else ''}"
        if flags & 0x40:
            text += f", icnt: {icnt}"
        return text, "", "", True
    return "", "", "", False


def _line(offset: str, raw: str, opcode: str, standard: str, tid: str, tpay: str, opts: ListingOptions) -> str:
    """ptdump's print_buffer."""
    out, sep = [], ""
    if opts.show_offset:
        out.append(offset.ljust(17))
        sep = " "
    if raw:
        out.append(sep + raw.ljust(33))
        sep = " "
    out.append(sep + (opcode.ljust(10) if standard else opcode))
    if tid:
        out.append(" " + standard.ljust(25) + " " + tid.ljust(5) + tpay)
    elif standard:
        out.append(" " + standard)
    return "".join(out)


def _format(pk: PtPackets, data: np.ndarray, opts: ListingOptions, last_ip: _LastIp) -> Iterator[str]:
    offsets, types, sizes = pk.offset.tolist(), pk.type.tolist(), pk.size.tolist()
    payloads, auxs = pk.payload.tolist(), pk.aux.tolist()
    for off, t, size, payload, aux in zip(offsets, types, sizes, payloads, auxs):
        if t == P.ERROR:
            if aux != P.ERR_TRUNCATED:
                yield f"[{off:x}: error decoding packet: {P.ERROR_TEXT[aux]}]"
                last_ip.__init__()
            continue
        if opts.quiet or (t == P.PAD and opts.no_pad) or (t in _TIMING and opts.no_timing) \
                or (t == P.CYC and opts.no_cyc):
            if t in P.IP_TYPES:
                last_ip.update(aux & 0xff, payload)
            continue
        standard, tid, tpay, _ext = _payload(t, payload, aux, opts)
        standard = standard[:47] if _ext else standard[:24]
        pre = []
        if t in P.IP_TYPES and opts.lastip:
            last_ip.update(aux & 0xff, payload)
            tid = "ip"
            if not last_ip.have:
                tpay = "<unavailable>"
                pre.append(f"[{off:x}: error tracking last-ip: no ip]")
            elif last_ip.suppressed:
                tpay = "<suppressed>"
            else:
                tpay = f"{last_ip.ip:016x}"
        raw = ""
        if opts.raw:
            n = 2 if (t == P.OVF and size == 3) else size  # SKD007: libipt shows the OVF's own 2 bytes
            start = off + size - n
            raw = bytes(data[start:start + n]).hex()[:32]
        yield from pre
        yield _line(f"{off:016x}", raw, P.MNEMONICS[t], standard, tid, tpay[:16], opts)


def listing_lines(data, opts: ListingOptions = ListingOptions(), chunk: int = 1 << 16) -> Iterator[str]:
    """The ptdump listing of a raw PT trace, line by line (without newlines)."""
    buf = as_bytes(data)
    last_ip = _LastIp()
    for pk, _tk, _counters in decode_chunks(buf, packets=True, tokens=False, no_sync=opts.no_sync,
                                             errata=opts.errata, chunk=chunk):
        yield from _format(pk, buf, opts, last_ip)


def normalise(lines: Iterable[str]) -> list[str]:
    """Lines compared as ``diff -b`` compares them (libipt's test.bash): runs of blanks are one blank."""
    return [" ".join(line.split()) for line in lines]
