"""The numba packet walker: one call decodes a whole byte buffer (or until its output is full).

It follows Intel's libipt packet decoder byte for byte (``pt_pkt_next`` with ``ptdump``'s
resynchronisation), so that its listing and its counts can be checked against libipt:

* decoding starts at the first PSB (``pt_pkt_sync_forward``: an 8-byte aligned word of the
  PSB pattern, then back to where that PSB starts), or at offset 0 with ``no_sync``;
* a packet that cannot be decoded is an ERROR record (its kind in ``aux``); decoding then
  resumes at the next PSB found from 15 bytes before the failing byte (a PSB partly eaten
  by the bad packet is found again), and the last IP is forgotten;
* a packet cut by the end of the buffer ends the walk (ERROR record of kind ``truncated``);
* PSB, OVF and every resync reset the last IP (SDM 33.4.2.2: "the last IP is reset to 0 at
  PSB"; after an overflow the next IP packet carries a full address).

Bytes accounting: ``decoded`` counts each byte covered by a decoded packet once (a resync
that steps back into a packet does not count its bytes twice), ``skipped`` every other byte
(before the first PSB, between an error and the next PSB, a truncated tail); their sum is
always the buffer size.

State between calls lives in ``state`` (see the ``S_*`` indices), so a big trace can be
decoded in chunks of output without per-packet Python.
"""
from __future__ import annotations

import numpy as np
from numba import njit, uint64

from . import packets as P

# indices into the int64 state vector
S_POS = 0        # next byte to decode
S_SYNC = 1       # offset of the last PSB (libipt's decoder->sync), -1 none
S_PHASE = 2      # PH_START, PH_RUN, PH_RESYNC or PH_DONE
S_LAST_IP = 3    # last IP (bit pattern of a uint64)
S_HAVE_BASE = 4  # 1 when the last IP came from a full or 48-bit form since the last reset
S_COVERED = 5    # bytes [0, covered) are accounted for
S_DECODED = 6
S_SKIPPED = 7
S_RESYNCS = 8    # successful resynchronisations after an error
S_ERR_POS = 9    # where the last error was (resync starts from there)
N_STATE = 10

PH_START = 0
PH_RUN = 1
PH_RESYNC = 2
PH_DONE = 3

# errata flags (bit mask), as libipt derives them from the CPU (pt_cpu_errata)
ERRATUM_SKD007 = 1  # a 2-byte CYC followed by OVF is really an OVF
ERRATUM_SKZ84 = 2   # a TMA with reserved bits set is a corrupt 8-byte packet


def new_state(no_sync: bool = False) -> np.ndarray:
    s = np.zeros(N_STATE, np.int64)
    s[S_SYNC] = 0 if no_sync else -1
    s[S_PHASE] = PH_RUN if no_sync else PH_START
    return s


@njit(cache=True, nogil=True, inline="always")
def _le(buf, at, nbytes):
    v = uint64(0)
    for k in range(nbytes):
        v |= uint64(buf[at + k]) << uint64(8 * k)
    return v


@njit(cache=True, nogil=True)
def _find_psb(buf, cur, n):
    """libipt's pt_find_psb: from a word of PSB pattern to the start of its PSB, or -1."""
    pos = cur
    if buf[pos] != 0x02:
        pos += 1
    while pos + 1 < n:
        if buf[pos] != 0x02 or buf[pos + 1] != 0x82:
            break
        pos += 2
    pos -= 16
    if pos < 0 or pos + 16 > n:
        return -1
    for k in range(8):
        if buf[pos + 2 * k] != 0x02 or buf[pos + 2 * k + 1] != 0x82:
            return -1
    return pos


@njit(cache=True, nogil=True)
def sync_forward(buf, pos, sync):
    """libipt's pt_pkt_sync_forward from ``pos`` (``sync`` = the current sync point): a PSB offset or -1."""
    n = buf.size
    if pos == sync:
        pos += 16
    space = pos if pos < 15 else 15
    start = pos - space
    if start > n:
        return -1
    p = (start + 7) & ~7
    while p + 8 <= n:
        cur = p
        p += 8
        b0 = buf[cur]
        if b0 == 0x02:
            ok = True
            for k in range(1, 8):
                if buf[cur + k] != (0x82 if k & 1 else 0x02):
                    ok = False
                    break
        elif b0 == 0x82:
            ok = True
            for k in range(1, 8):
                if buf[cur + k] != (0x02 if k & 1 else 0x82):
                    ok = False
                    break
        else:
            ok = False
        if not ok:
            continue
        found = _find_psb(buf, cur, n)
        if found < 0 or found < start:
            continue
        return found
    return -1


@njit(cache=True, nogil=True)
def decode_into(buf, state, type_counts, error_counts, errata,
                want_packets, p_off, p_type, p_size, p_payload, p_aux, p_ip,
                want_tokens, t_kind, t_ip, t_off):
    """Decode from ``state`` on; returns (packets written, tokens written).

    Stops at the end of the buffer (``state[S_PHASE] == PH_DONE``), or when the packet
    arrays are full, or when fewer than 64 token slots are left (a TNT.64 writes 47).
    """
    n = buf.size
    pos = state[S_POS]
    sync = state[S_SYNC]
    phase = state[S_PHASE]
    last_ip = uint64(state[S_LAST_IP])
    have_base = state[S_HAVE_BASE]
    covered = state[S_COVERED]
    decoded = state[S_DECODED]
    resyncs = state[S_RESYNCS]
    err_pos = state[S_ERR_POS]
    pcap = p_off.size if want_packets else 0
    tcap = t_kind.size - 64 if want_tokens else 0
    npk = 0
    ntk = 0
    skd007 = (errata & ERRATUM_SKD007) != 0
    skz84 = (errata & ERRATUM_SKZ84) != 0

    plimit = pcap if want_packets else np.int64(1) << 62
    tlimit = tcap if want_tokens else np.int64(1) << 62
    while phase != PH_DONE:
        if npk >= plimit or ntk >= tlimit:
            break
        if phase != PH_RUN:
            found = sync_forward(buf, pos if phase == PH_RESYNC else 0, sync)
            if found < 0:
                phase = PH_DONE
                break
            if phase == PH_RESYNC:
                resyncs += 1
            pos = found
            sync = found
            last_ip = uint64(0)
            have_base = 0
            phase = PH_RUN
        if pos >= n:
            phase = PH_DONE
            break

        opc = buf[pos]
        # ---- fast paths for the two commonest packets of real traces (half the packets of the
        # libxdc recordings are PAD, a quarter TNT.8): a run of PADs at once, a TNT.8 inline
        if opc == 0x00:
            start = pos
            limit = n if not want_packets else min(n, pos + (plimit - npk))
            if want_packets:
                while pos < limit and buf[pos] == 0x00:
                    p_off[npk] = pos
                    p_type[npk] = P.PAD
                    p_size[npk] = 1
                    p_payload[npk] = 0
                    p_aux[npk] = 0
                    p_ip[npk] = 0
                    npk += 1
                    pos += 1
            else:
                while pos < limit and buf[pos] == 0x00:
                    pos += 1
            type_counts[P.PAD] += pos - start
            if pos > covered:
                decoded += pos - (start if start > covered else covered)
                covered = pos
            continue
        if (opc & 1) == 0 and opc != 0x02:
            v = np.int64(opc) >> 1
            bits = 6
            while (v >> bits) == 0:
                bits -= 1
            tbits = v & ~(np.int64(1) << bits)
            type_counts[P.TNT_8] += 1
            if pos >= covered:
                decoded += 1
                covered = pos + 1
            if want_packets:
                p_off[npk] = pos
                p_type[npk] = P.TNT_8
                p_size[npk] = 1
                p_payload[npk] = tbits
                p_aux[npk] = bits
                p_ip[npk] = 0
                npk += 1
            if want_tokens:
                for b in range(bits - 1, -1, -1):
                    t_kind[ntk] = P.TOK_TAKEN if (tbits >> b) & 1 else P.TOK_NOT_TAKEN
                    t_ip[ntk] = 0
                    t_off[ntk] = pos
                    ntk += 1
            pos += 1
            continue

        # ---- decode one packet at pos: ptype, size, payload, aux, err
        ptype = 0
        size = 0
        payload = uint64(0)
        aux = np.int64(0)
        err = 0
        avail = n - pos
        if (opc & 1) == 0:
            if opc == 0x00:
                ptype = P.PAD
                size = 1
            elif opc == 0x02:
                if avail < 2:
                    err = P.ERR_TRUNCATED
                else:
                    ext = buf[pos + 1]
                    if ext == 0xa3:
                        if avail < 8:
                            err = P.ERR_TRUNCATED
                        else:
                            payload = _le(buf, pos + 2, 6)
                            if payload <= 1:
                                err = P.ERR_BAD_TNT
                            else:
                                bits = 63
                                while (payload >> uint64(bits)) == 0:
                                    bits -= 1
                                payload &= ~(uint64(1) << uint64(bits))
                                aux = np.int64(bits)
                                ptype = P.TNT_64
                                size = 8
                    elif ext == 0x82:
                        if avail < 16:
                            err = P.ERR_TRUNCATED
                        else:
                            for k in range(1, 8):
                                if buf[pos + 2 * k] != 0x02 or buf[pos + 2 * k + 1] != 0x82:
                                    err = P.ERR_BAD_PSB
                                    break
                            if err == 0:
                                ptype = P.PSB
                                size = 16
                    elif ext == 0x23:
                        ptype = P.PSBEND
                        size = 2
                    elif ext == 0xf3:
                        ptype = P.OVF
                        size = 2
                    elif ext == 0x03:
                        if avail < 4:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.CBR
                            size = 4
                            payload = uint64(buf[pos + 2])
                    elif ext == 0x73:
                        if avail < 7:
                            err = P.ERR_TRUNCATED
                        else:
                            fc = np.int64(buf[pos + 5]) | (np.int64(buf[pos + 6]) << 8)
                            if (fc & ~0x1ff) != 0 or buf[pos + 4] != 0:
                                if skz84:
                                    ptype = P.INVALID
                                    size = 8
                                else:
                                    err = P.ERR_BAD_TMA
                            else:
                                ptype = P.TMA
                                size = 7
                                payload = uint64(buf[pos + 2]) | (uint64(buf[pos + 3]) << uint64(8))
                                aux = np.int64(fc)
                    elif ext == 0x43:
                        if avail < 8:
                            err = P.ERR_TRUNCATED
                        else:
                            v = _le(buf, pos + 2, 6)
                            ptype = P.PIP
                            size = 8
                            aux = np.int64(v & uint64(1))
                            payload = (v >> uint64(1)) << uint64(5)
                    elif ext == 0xc8:
                        if avail < 7:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.VMCS
                            size = 7
                            payload = _le(buf, pos + 2, 5) << uint64(12)
                    elif ext == 0x62 or ext == 0xe2:
                        ptype = P.EXSTOP
                        size = 2
                        aux = np.int64(1 if ext == 0xe2 else 0)
                    elif ext == 0xc2:
                        if avail < 10:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.MWAIT
                            size = 10
                            payload = _le(buf, pos + 2, 8)
                    elif ext == 0x22:
                        if avail < 4:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.PWRE
                            size = 4
                            payload = _le(buf, pos + 2, 2)
                    elif ext == 0xa2:
                        if avail < 7:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.PWRX
                            size = 7
                            payload = _le(buf, pos + 2, 5)
                    elif ext == 0x83:
                        ptype = P.STOP
                        size = 2
                    elif ext == 0x13:
                        if avail < 4:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.CFE
                            size = 4
                            payload = _le(buf, pos + 2, 2)
                    elif ext == 0x53:
                        if avail < 11:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.EVD
                            size = 11
                            aux = np.int64(buf[pos + 2] & 0x1f)
                            payload = _le(buf, pos + 3, 8)
                    elif ext == 0xc3:
                        if avail < 3:
                            err = P.ERR_TRUNCATED
                        elif buf[pos + 2] != 0x88:
                            err = P.ERR_BAD_OPCODE
                        elif avail < 11:
                            err = P.ERR_TRUNCATED
                        else:
                            ptype = P.MNT
                            size = 11
                            payload = _le(buf, pos + 3, 8)
                    elif (ext & 0x1f) == 0x12:
                        plc = (ext >> 5) & 3
                        if plc > 1:
                            err = P.ERR_BAD_PTW
                        else:
                            nb = 4 if plc == 0 else 8
                            if avail < 2 + nb:
                                err = P.ERR_TRUNCATED
                            else:
                                ptype = P.PTW
                                size = 2 + nb
                                payload = _le(buf, pos + 2, nb)
                                aux = np.int64(ext)
                    else:
                        err = P.ERR_BAD_OPCODE
            else:
                ptype = P.TNT_8
                size = 1
                v = np.int64(opc) >> 1
                bits = 6
                while (v >> bits) == 0:
                    bits -= 1
                payload = uint64(v & ~(1 << bits))
                aux = np.int64(bits)
        elif (opc & 3) == 3:
            # CYC: 5 value bits in the opcode byte, 7 more per extension byte
            value = uint64(opc >> 3)
            more = opc & 4
            k = 1
            shl = 5
            while more != 0:
                if k >= avail:
                    err = P.ERR_TRUNCATED
                    break
                b = buf[pos + k]
                k += 1
                more = b & 1
                value |= uint64(b >> 1) << uint64(shl)
                shl += 7
                if shl > 64:
                    err = P.ERR_BAD_CYC
                    break
            if err == 0:
                ptype = P.CYC
                size = k
                payload = value
                if skd007 and size == 2 and (value & ~uint64(0x1f)) == uint64(0x20) \
                        and pos + 2 < n and buf[pos + 2] == 0xf3:
                    ptype = P.OVF  # erratum SKD007: the CYC byte is a stray, the OVF starts 1 byte on
                    size = 3
                    payload = uint64(0)
        else:
            low = opc & 0x1f
            if low == 0x0d or low == 0x11 or low == 0x01 or low == 0x1d:
                ipc = opc >> 5
                if ipc == 5 or ipc == 7:
                    err = P.ERR_BAD_IPC
                else:
                    nb = 0
                    if ipc == 1:
                        nb = 2
                    elif ipc == 2:
                        nb = 4
                    elif ipc == 3 or ipc == 4:
                        nb = 6
                    elif ipc == 6:
                        nb = 8
                    if avail < 1 + nb:
                        err = P.ERR_TRUNCATED
                    else:
                        size = 1 + nb
                        payload = _le(buf, pos + 1, nb)
                        if low == 0x0d:
                            ptype = P.TIP
                        elif low == 0x11:
                            ptype = P.TIP_PGE
                        elif low == 0x01:
                            ptype = P.TIP_PGD
                        else:
                            ptype = P.FUP
                        if ipc == 1:
                            last_ip = (last_ip & ~uint64(0xffff)) | payload
                        elif ipc == 2:
                            last_ip = (last_ip & ~uint64(0xffffffff)) | payload
                        elif ipc == 3:
                            last_ip = payload | (uint64(0xffff000000000000) if payload >> uint64(47) else uint64(0))
                            have_base = 1
                        elif ipc == 4:
                            last_ip = (last_ip & ~uint64(0xffffffffffff)) | payload
                            have_base = 1
                        elif ipc == 6:
                            last_ip = payload
                            have_base = 1
                        aux = np.int64(ipc)
                        if ipc != 0 and have_base:
                            aux |= P.AUX_IP_KNOWN
            elif opc == 0x99:
                if avail < 2:
                    err = P.ERR_TRUNCATED
                else:
                    m = buf[pos + 1]
                    leaf = m & 0xe0
                    if leaf == 0x00:
                        ptype = P.MODE_EXEC
                    elif leaf == 0x20:
                        ptype = P.MODE_TSX
                    else:
                        err = P.ERR_BAD_MODE
                    size = 2
                    payload = uint64(m & 0x1f)
            elif opc == 0x59:
                if avail < 2:
                    err = P.ERR_TRUNCATED
                else:
                    ptype = P.MTC
                    size = 2
                    payload = uint64(buf[pos + 1])
            elif opc == 0x19:
                if avail < 8:
                    err = P.ERR_TRUNCATED
                else:
                    ptype = P.TSC
                    size = 8
                    payload = _le(buf, pos + 1, 7)
            elif opc == 0xd9:
                if avail < 3:
                    err = P.ERR_TRUNCATED
                else:
                    flags = buf[pos + 1]
                    size = 3
                    icnt = uint64(0)
                    if flags & 0x40:
                        if avail < 5:
                            err = P.ERR_TRUNCATED
                        else:
                            icnt = _le(buf, pos + 3, 2)
                            size = 5
                    if err == 0:
                        ptype = P.TRIG
                        payload = uint64(flags) | (uint64(buf[pos + 2]) << uint64(8)) | (icnt << uint64(16))
            else:
                err = P.ERR_BAD_OPCODE

        # ---- account, emit
        if err != 0:
            error_counts[err] += 1
            if want_packets:
                p_off[npk] = pos
                p_type[npk] = P.ERROR
                p_size[npk] = 0
                p_payload[npk] = 0
                p_aux[npk] = err
                p_ip[npk] = 0
                npk += 1
            type_counts[P.ERROR] += 1
            if err == P.ERR_TRUNCATED:
                phase = PH_DONE
                break
            err_pos = pos
            phase = PH_RESYNC
            continue

        end = pos + size
        if end > n:
            end = n
        if end > covered:
            decoded += end - (pos if pos > covered else covered)
            covered = end
        type_counts[ptype] += 1
        if ptype == P.PSB:
            sync = pos
            last_ip = uint64(0)
            have_base = 0
        elif ptype == P.OVF:
            last_ip = uint64(0)
            have_base = 0
        if want_packets:
            p_off[npk] = pos
            p_type[npk] = ptype
            p_size[npk] = size
            p_payload[npk] = payload
            p_aux[npk] = aux
            p_ip[npk] = last_ip if (ptype == P.TIP or ptype == P.TIP_PGE or ptype == P.TIP_PGD
                                    or ptype == P.FUP) else uint64(0)
            npk += 1
        if want_tokens:
            if ptype == P.TNT_8 or ptype == P.TNT_64:
                for b in range(aux - 1, -1, -1):
                    t_kind[ntk] = P.TOK_TAKEN if (payload >> uint64(b)) & uint64(1) else P.TOK_NOT_TAKEN
                    t_ip[ntk] = 0
                    t_off[ntk] = pos
                    ntk += 1
            elif (aux & P.AUX_IP_KNOWN) != 0 and ptype != P.TIP_PGD:
                t_kind[ntk] = P.TOK_TIP if ptype == P.TIP else (P.TOK_TIP_PGE if ptype == P.TIP_PGE else P.TOK_FUP)
                t_ip[ntk] = last_ip
                t_off[ntk] = pos
                ntk += 1
        pos += size

    if phase == PH_DONE and covered < n:
        covered = n  # the rest was skipped
    state[S_POS] = pos
    state[S_SYNC] = sync
    state[S_PHASE] = phase
    state[S_LAST_IP] = np.int64(last_ip)
    state[S_HAVE_BASE] = have_base
    state[S_COVERED] = covered
    state[S_DECODED] = decoded
    state[S_SKIPPED] = covered - decoded
    state[S_RESYNCS] = resyncs
    state[S_ERR_POS] = err_pos
    return npk, ntk
