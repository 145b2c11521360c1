"""The flow table: bidirectional connection tracking in numba.

One int64 row per connection (columns in :mod:`.layout`), an open-addressing
index (linear probing, backward-shift deletion, load factor <= 0.5) from a
direction-independent hash of the 5-tuple to the row, and ``perm``, a
permutation of the row numbers whose first ``used`` entries are the rows in
use and the rest the free ones (each used row keeps its position in ``perm``
in the upper half of its TTL_LAST column, so freeing is a swap). Sweeps and
eviction walk ``perm[:used]``, so their cost follows the live connections,
not the bound. Memory per tracked connection: the row (N_COLS * 8 bytes) + 2
index entries (int32, the index has at least twice as many buckets as rows)
+ one ``perm`` entry (int32); :func:`bytes_per_flow` reports it.

The kernel walks a whole decoded batch. It stops early when its output buffer
could overflow and returns where it stopped; the Python side hands out what was
emitted and calls again. Timeout sweeps over the whole table run every
``sweep_interval`` of packet time and are resumable the same way.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from ..jit import njit

from ..capture.batch import PacketBatch
from ..decode import STATUS_OK, Decoded
from ..intrinsics import borrowed, prefetch
from .config import NS, TrackerConfig
from .layout import (
    ACK_TS, D_FIRST_TS, D_IP_BYTES, D_LAST_TS, D_PKTS, D_TTL_SUM, D_WIRE_BYTES, DST_HI, DST_LO,
    DST_MAC, END, END_ACTIVE, END_EOF, END_EVICTED, END_FIN, END_HANDSHAKE, END_IDLE, END_RST,
    END_SNAPSHOT, FIRST_TS, IAT_N, KEY, LAST_TS, N_COLS, S_FIRST_TS, S_IP_BYTES, S_LAST_TS,
    S_PKTS, S_TTL_SUM, S_WIRE_BYTES, SEQ, SERIAL, SRC_HI, SRC_LO, SRC_MAC, ST_ACK_ACKS_SYNACK,
    ST_CLOSING, ST_ESTABLISHED, ST_FIN_D, ST_FIN_S, ST_MIDSTREAM, ST_RST, ST_SYN, ST_SYNACK,
    ST_SYNACK_ACKS_SYN, STATE, SYN_TS, SYNACK_TS, TTL_LAST, ST_ARGUS_ACK_OK, ST_ARGUS_HS_OVER,
    ST_ARGUS_SYNACK_OK, ST_SIG_BITS, ST_SIG_D_SHIFT, ST_SIG_S_SHIFT,
)
from .probing import moves_back, pow2_at_least
from .signature import payload_class

# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG = 1, 2, 4, 8, 16, 32
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17

# params[] slots (all int64, times in ns)
(P_TCP_IDLE, P_UDP_IDLE, P_OTHER_IDLE, P_ACTIVE, P_HANDSHAKE, P_LINGER, P_SWEEP, P_MIDSTREAM, P_EVICT_K,
 P_ICMP_EXTEND, P_ARGUS_TCP) = range(11)
N_PARAMS = 11

# ctr[] slots: table bookkeeping and counters
# C_NEXT_DEADLINE: no tracked connection can time out before this packet time (a lower bound,
# lowered whenever a row starts or its state moves a deadline earlier, recomputed by each sweep),
# so sweeps are skipped until then; C_SWEEP_MIN collects it during a (resumable) sweep.
(C_USED, C_NEXT_DEADLINE, C_NEXT_SERIAL, C_HAND, C_NEXT_SWEEP, C_SWEEP_CURSOR, C_CREATED, C_EVICTED,
 C_MIDSTREAM_IGNORED, C_PACKETS, C_SNAPSHOTS, C_NOW, C_SWEEP_MIN, C_SWEEPS) = range(14)
N_CTR = 14
NEVER = np.int64(np.iinfo(np.int64).max)

# Each packet can emit at most: one expired/closed record, one evicted record, one snapshot.
MAX_EMIT_PER_PACKET = 3


@njit(cache=True, inline="always")
def _mix(x: np.int64) -> np.int64:
    x = (x ^ (x >> 31)) * np.int64(-4658895280553007687)
    x = (x ^ (x >> 29)) * np.int64(-7723592293110705685)
    return x ^ (x >> 32)


@njit(cache=True, inline="always")
def _flow_hash(a_hi, a_lo, a_port, b_hi, b_lo, b_port, proto) -> np.int64:
    """Same value for both directions of a connection."""
    ha = _mix(_mix(a_hi ^ np.int64(0x5851F42D4C957F2D)) ^ a_lo ^ (a_port << 40))
    hb = _mix(_mix(b_hi ^ np.int64(0x5851F42D4C957F2D)) ^ b_lo ^ (b_port << 40))
    return _mix(ha ^ hb ^ (proto * np.int64(0x27BB2EE687B0B0FD)))


@njit(cache=True, inline="always")
def _packet_hash(p, proto_a, ipver_a, src_hi, src_lo, dst_hi, dst_lo, sport_a, dport_a) -> np.int64:
    return _flow_hash(np.int64(src_hi[p]), np.int64(src_lo[p]), np.int64(sport_a[p]), np.int64(dst_hi[p]),
                      np.int64(dst_lo[p]), np.int64(dport_a[p]), np.int64(proto_a[p]) | (np.int64(ipver_a[p]) << 8))


# prefetch distances (packets ahead) for index buckets and rows; the ring holds the hashes between
PF_INDEX = 8
PF_ROW = 4
PF_RING = 16


@njit(cache=True, inline="always")
def _row_hash(table, slot) -> np.int64:
    key = table[slot, KEY]
    return _flow_hash(table[slot, SRC_HI], table[slot, SRC_LO], (key >> 16) & 0xFFFF,
                      table[slot, DST_HI], table[slot, DST_LO], key & 0xFFFF, key >> 32)


@njit(cache=True, inline="always")
def _lookup(table, index, h, a_hi, a_lo, a_port, b_hi, b_lo, b_port, proto) -> tuple:
    """(slot, reverse) of the connection with this 5-tuple in either orientation; slot -1 if none."""
    mask = index.shape[0] - 1
    fwd_key = (a_port << 16) | b_port | (proto << 32)
    rev_key = (b_port << 16) | a_port | (proto << 32)
    i = h & mask
    while True:
        s = np.int64(index[i])
        if s < 0:
            return np.int64(-1), False
        k = table[s, KEY]
        if (k == fwd_key and table[s, SRC_LO] == a_lo and table[s, DST_LO] == b_lo
                and table[s, SRC_HI] == a_hi and table[s, DST_HI] == b_hi):
            return s, False
        if (k == rev_key and table[s, SRC_LO] == b_lo and table[s, DST_LO] == a_lo
                and table[s, SRC_HI] == b_hi and table[s, DST_HI] == a_hi):
            return s, True
        i = (i + 1) & mask


@njit(cache=True)
def _index_delete(table, index, slot) -> None:
    mask = index.shape[0] - 1
    i = _row_hash(table, slot) & mask
    while index[i] != slot:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        s = index[j]
        if s < 0:
            break
        k = _row_hash(table, s) & mask
        if moves_back(i, j, k):
            index[i] = s
            i = j
    index[i] = -1


LOW32 = np.int64(0xFFFFFFFF)


@njit(cache=True)
def _allocate(table, perm, ctr) -> np.int64:
    """Take a free row (the caller made sure one exists), zeroed, registered as used."""
    used = ctr[C_USED]
    slot = np.int64(perm[used])
    for c in range(N_COLS):
        table[slot, c] = 0
    table[slot, TTL_LAST] = used << 32
    ctr[C_USED] = used + 1
    return slot


@njit(cache=True)
def _release(table, index, perm, ctr, slot) -> None:
    _index_delete(table, index, slot)
    table[slot, SERIAL] = 0
    pos = table[slot, TTL_LAST] >> 32
    last = ctr[C_USED] - 1
    other = np.int64(perm[last])
    perm[pos] = other
    table[other, TTL_LAST] = (table[other, TTL_LAST] & LOW32) | (pos << 32)
    perm[last] = slot
    ctr[C_USED] = last


@njit(cache=True, inline="always")
def _set_key(table, slot, s_hi, s_lo, d_hi, d_lo, key) -> None:
    """The connection's key, oriented originator -> responder."""
    table[slot, SRC_HI] = s_hi
    table[slot, SRC_LO] = s_lo
    table[slot, DST_HI] = d_hi
    table[slot, DST_LO] = d_lo
    table[slot, KEY] = key


@njit(cache=True, inline="always")
def _emit(table, slot, out, n_out, reason) -> int:
    out[n_out, :] = table[slot, :]
    out[n_out, END] = reason
    out[n_out, TTL_LAST] &= 0xFFFF
    return n_out + 1


@njit(cache=True)
def _idle_timeout(params, key) -> np.int64:
    p = (key >> 32) & 0xFF
    if p == IPPROTO_TCP:
        return params[P_TCP_IDLE]
    if p == IPPROTO_UDP:
        return params[P_UDP_IDLE]
    return params[P_OTHER_IDLE]


@njit(cache=True)
def _expiry(table, params, slot, now) -> int:
    """End reason if the connection in ``slot`` is over at time ``now``, else 0."""
    st = table[slot, STATE]
    last = table[slot, LAST_TS]
    if st & ST_CLOSING:
        if now - last > params[P_LINGER]:
            return END_RST if st & ST_RST else END_FIN
        return 0
    if now - last > _idle_timeout(params, table[slot, KEY]):
        return END_IDLE
    if ((table[slot, KEY] >> 32) & 0xFF) == IPPROTO_TCP and (st & ST_SYN) and not (st & ST_ESTABLISHED):
        if now - table[slot, FIRST_TS] > params[P_HANDSHAKE]:
            return END_HANDSHAKE
    if now - table[slot, FIRST_TS] > params[P_ACTIVE]:
        return END_ACTIVE
    return 0


@njit(cache=True)
def _deadline(table, params, slot) -> np.int64:
    """The first packet time at which :func:`_expiry` reports the connection in ``slot`` over
    (unless packets move it later first)."""
    st = table[slot, STATE]
    last = table[slot, LAST_TS]
    if st & ST_CLOSING:
        return last + params[P_LINGER] + 1
    first = table[slot, FIRST_TS]
    d = min(last + _idle_timeout(params, table[slot, KEY]), first + params[P_ACTIVE])
    if ((table[slot, KEY] >> 32) & 0xFF) == IPPROTO_TCP and (st & ST_SYN) and not (st & ST_ESTABLISHED):
        d = min(d, first + params[P_HANDSHAKE])
    return d + 1


# Argus's TCP state machine (docs/argus-semantics.md, R3; argus_tcp only), in STATE bits 13..21:
# the state (3 bits; CLOSED and CLOSING are one value: both restart on a SYN) and per side (s, d)
# "sent a FIN" (ARGUS_FIN), "window known" and "sequence seen". SEQ then holds Argus's tracked
# sequence number of each side (s | d << 32) instead of the SYN / SYN-ACK sequence numbers.
AS_SHIFT = 13
AS_MASK = np.int64(7) << AS_SHIFT
(AS_NONE, AS_LISTEN, AS_SYN_SENT, AS_SYN_RECEIVED, AS_ESTABLISHED, AS_FIN_WAIT_1, AS_FIN_WAIT_2,
 AS_CLOSING) = range(8)
ST_AS_FIN = np.int64(1) << 16      # << 1 for the d side
ST_AS_WIN = np.int64(1) << 18
ST_AS_SEEN = np.int64(1) << 20
_ARGUS_TCP_BITS = AS_MASK | (np.int64(3) << 16) | (np.int64(3) << 18) | (np.int64(3) << 20)

# STATE bits a status-interval split keeps in argus mode: Argus's TCP state goes on (R4)
_ARGUS_KEEP_BITS = (ST_SYN | ST_SYNACK | ST_ESTABLISHED | ST_FIN_S | ST_FIN_D | ST_RST | ST_CLOSING
                    | ST_SYNACK_ACKS_SYN | ST_ACK_ACKS_SYNACK | ST_ARGUS_SYNACK_OK | ST_ARGUS_ACK_OK
                    | ST_ARGUS_HS_OVER | _ARGUS_TCP_BITS | ST_SIG_BITS)


@njit(cache=True, inline="always")
def _as_seq(table, slot, side) -> np.int64:
    return (table[slot, SEQ] >> (32 * side)) & LOW32


@njit(cache=True, inline="always")
def _as_set_seq(table, slot, side, v) -> None:
    sh = 32 * side
    table[slot, SEQ] = (table[slot, SEQ] & ~(LOW32 << sh)) | ((v & LOW32) << sh)


@njit(cache=True)
def _argus_tcp_first(table, slot, flags, side, seq, ack, payload) -> None:
    """Argus's TCP state after a record's first packet (``ArgusUpdateTCPState``, ARGUS_START)."""
    k = flags & (SYN | ACK | FIN | PSH | URG)
    win = True
    if flags & RST:
        state = AS_LISTEN
        win = False
        if seq != 0:
            base = (seq - 1) & LOW32
            xseq = (seq + payload) & LOW32
        else:
            base = (ack - 1) & LOW32
            xseq = base
    elif k == SYN or k == (SYN | ACK):
        state = AS_SYN_SENT if k == SYN else AS_SYN_RECEIVED
        base = seq
        xseq = seq
    else:
        if k != 0 and (k & ~(ACK | PSH | URG)) == 0:
            state = AS_ESTABLISHED
        elif k == FIN or k == (FIN | ACK):
            state = AS_FIN_WAIT_1
        else:
            state = AS_CLOSING
        base = (seq - 1) & LOW32
        xseq = (seq + payload) & LOW32
    st = (table[slot, STATE] & ~_ARGUS_TCP_BITS) | (np.int64(state) << AS_SHIFT)
    if win:
        st |= ST_AS_WIN << side
    if base != 0:
        st |= ST_AS_SEEN << side
    table[slot, STATE] = st
    table[slot, SEQ] = 0
    _as_set_seq(table, slot, side, xseq)


@njit(cache=True)
def _argus_tcp_update(table, slot, flags, side, seq, ack, payload) -> bool:
    """One later packet through Argus's TCP sequence tracking and state machine
    (``ArgusUpdateTCPSequence`` / ``ArgusUpdateTCPStateMachine``); True if it restarts the record.

    Not kept (no room in the row): each side's latest ack number and window. The ack used is the
    packet's own (unknown without ACK), a window counts as open once the side sent a packet
    without RST, and a retransmission below the other side's ack may still raise the tracked seq.
    """
    st = table[slot, STATE]
    state = (st >> AS_SHIFT) & 7
    if state == AS_NONE:
        return False
    if state == AS_LISTEN:
        return (flags & SYN) != 0
    other = 1 - side
    has_ack = (flags & ACK) != 0 and ack != 0
    xack = (ack - 1) & LOW32
    if flags != SYN:
        if not (flags & (FIN | RST)):
            st |= ST_AS_WIN << side
        newseq = (seq + payload) & LOW32
        if newseq < seq:
            _as_set_seq(table, slot, side, newseq)
            st = (st | (ST_AS_SEEN << side)) if newseq != 0 else (st & ~(ST_AS_SEEN << side))
        elif not (st & (ST_AS_SEEN << side)):
            _as_set_seq(table, slot, side, newseq)
            if seq != 0:
                st |= ST_AS_SEEN << side
        elif payload > 0 and (st & (ST_AS_WIN << other)):
            if newseq > _as_seq(table, slot, side):
                _as_set_seq(table, slot, side, newseq)
    yseq = _as_seq(table, slot, other)
    new = state
    listen = False
    if flags & RST:
        if state == AS_SYN_SENT:
            if has_ack and yseq == xack:
                listen = True
            else:
                new = AS_CLOSING
        else:
            new = AS_CLOSING
    elif state == AS_SYN_SENT:
        if flags == (SYN | ACK):
            new = AS_SYN_RECEIVED
        elif flags & FIN:
            new = AS_FIN_WAIT_1
        elif flags & ACK:
            new = AS_ESTABLISHED
    elif state == AS_SYN_RECEIVED:
        if flags & FIN:
            new = AS_FIN_WAIT_1
        elif not (flags & SYN) and (flags & ACK):
            new = AS_ESTABLISHED
    elif state == AS_ESTABLISHED:
        if flags & FIN:
            new = AS_FIN_WAIT_1
    elif state == AS_FIN_WAIT_1 or state == AS_FIN_WAIT_2:
        if state == AS_FIN_WAIT_1 and (flags & SYN) and not (flags & ACK):
            listen = True
        else:
            if (flags & FIN) and (flags & ACK):
                st |= ST_AS_FIN << side
            if ((flags & ACK) and payload == 0 and (st & (ST_AS_FIN << other)) and has_ack
                    and yseq == xack):
                new = AS_FIN_WAIT_2
    elif state == AS_CLOSING:
        if (flags & SYN) and not (flags & ACK):
            listen = True
    if (flags & FIN) and not (flags & RST) and not (new == AS_FIN_WAIT_2 and not (flags & ACK)):
        st |= ST_AS_FIN << side
    table[slot, STATE] = (st & ~AS_MASK) | (np.int64(new) << AS_SHIFT)
    return listen and flags == SYN


@njit(cache=True)
def _argus_next_record(table, slot, keep_tcp) -> None:
    """Reset ``slot`` for the next Argus record of the same flow (docs/argus-semantics.md, R4).

    What Argus keeps per flow survives: each side's previous packet time (the new record's
    S_FIRST_TS = S_LAST_TS = the old S_LAST_TS, so a side's first packet adds the gap to it, counted
    in IAT_N) and the last TTLs. With ``keep_tcp`` (status split) the TCP state, handshake times
    and sequence numbers go on as well; otherwise (restart by a SYN) they start afresh.
    """
    pos_ttl = table[slot, TTL_LAST]
    s_last = table[slot, S_LAST_TS]
    d_last = table[slot, D_LAST_TS]
    syn_ts = table[slot, SYN_TS]
    synack_ts = table[slot, SYNACK_TS]
    ack_ts = table[slot, ACK_TS]
    st = table[slot, STATE]
    for c in range(FIRST_TS, SRC_MAC):
        table[slot, c] = 0
    table[slot, IAT_N] = 0
    table[slot, TTL_LAST] = pos_ttl
    table[slot, S_FIRST_TS] = s_last
    table[slot, S_LAST_TS] = s_last
    table[slot, D_FIRST_TS] = d_last
    table[slot, D_LAST_TS] = d_last
    if keep_tcp:
        table[slot, SYN_TS] = syn_ts
        table[slot, SYNACK_TS] = synack_ts
        table[slot, ACK_TS] = ack_ts
        table[slot, STATE] = (st & _ARGUS_KEEP_BITS) | ST_MIDSTREAM | ST_ESTABLISHED
    else:
        table[slot, STATE] = 0
        table[slot, SEQ] = 0


@njit(cache=True)
def _restart_active(table, ctr, params, slot) -> None:
    """After an active timeout the connection goes on as a new record, same key."""
    if params[P_ARGUS_TCP] != 0:
        _argus_next_record(table, slot, True)
    else:
        pos_bits = table[slot, TTL_LAST] & ~LOW32
        for c in range(FIRST_TS, SRC_MAC):
            table[slot, c] = 0
        table[slot, TTL_LAST] = pos_bits
        # the connection goes on: its payload classes too (its first payloads were in the last record)
        table[slot, STATE] = (table[slot, STATE] & ST_SIG_BITS) | ST_MIDSTREAM | ST_ESTABLISHED | ST_ARGUS_HS_OVER
        table[slot, SEQ] = 0
    table[slot, SERIAL] = ctr[C_NEXT_SERIAL]
    ctr[C_NEXT_SERIAL] += 1


@njit(cache=True)
def _sweep(table, index, perm, ctr, params, now, out, n_out) -> int:
    """Expire timed-out connections; resumable (ctr[C_SWEEP_CURSOR] >= 0 while unfinished)."""
    cap = out.shape[0]
    i = ctr[C_SWEEP_CURSOR]
    if i == 0:
        ctr[C_SWEEP_MIN] = NEVER
        ctr[C_SWEEPS] += 1
    soonest = ctr[C_SWEEP_MIN]
    rows = table.reshape(table.shape[0] * N_COLS)
    while i < ctr[C_USED]:
        if n_out >= cap:
            ctr[C_SWEEP_CURSOR] = i
            ctr[C_SWEEP_MIN] = soonest
            return n_out
        if i + PF_ROW < ctr[C_USED]:  # the rows a few positions ahead (their key/time and state lines)
            ahead = np.int64(perm[i + PF_ROW]) * N_COLS
            prefetch(rows, ahead + KEY)
            prefetch(rows, ahead + STATE)
        slot = np.int64(perm[i])
        d = _deadline(table, params, slot)
        if now < d:  # (the same test as _expiry(...) == 0)
            soonest = min(soonest, d)
            i += 1
            continue
        reason = _expiry(table, params, slot, now)
        if table[slot, S_PKTS] + table[slot, D_PKTS] > 0:
            n_out = _emit(table, slot, out, n_out, reason)
        if reason == END_ACTIVE:
            _restart_active(table, ctr, params, slot)
            table[slot, FIRST_TS] = now
            table[slot, LAST_TS] = now
            soonest = min(soonest, _deadline(table, params, slot))
            i += 1
        else:
            _release(table, index, perm, ctr, slot)  # the last used row moves to position i
    ctr[C_SWEEP_CURSOR] = -1
    ctr[C_NEXT_SWEEP] = now + params[P_SWEEP]
    ctr[C_NEXT_DEADLINE] = soonest
    return n_out


@njit(cache=True)
def _evict_one(table, index, perm, ctr, params, out, n_out) -> int:
    """Emit and free the least recently active of K used rows under the rotating hand."""
    used = ctr[C_USED]
    k = min(params[P_EVICT_K], used)
    hand = ctr[C_HAND] % used
    best = np.int64(perm[hand])
    for j in range(1, k):
        s = np.int64(perm[(hand + j) % used])
        if table[s, LAST_TS] < table[best, LAST_TS]:
            best = s
    ctr[C_HAND] = hand + k
    n_out = _emit(table, best, out, n_out, END_EVICTED)
    _release(table, index, perm, ctr, best)
    ctr[C_EVICTED] += 1
    return n_out


@njit(cache=True, inline="always")
def _argus_handshake(table, params, slot, st, t, flags, from_d, payload) -> np.int64:
    """Argus's SYN_SENT / SYN_RECEIVED states for synack and ackdat (docs/argus-semantics.md, R6).

    Called for each TCP packet of a record that started with a plain SYN until the handshake
    decision is taken (ST_ARGUS_HS_OVER). SYN_SENT: a SYN-ACK with flags exactly SYN|ACK from d
    counts (ST_ARGUS_SYNACK_OK); ACK, FIN or RST first leaves the handshake states. SYN_RECEIVED:
    the first packet without SYN that has ACK (or any FIN/RST) decides: a pure ACK from s without
    payload times ackdat (ST_ARGUS_ACK_OK). Responder packets before that decision are SYN-ACK
    retransmissions: with argus_tcp they move SYN_TS and SYNACK_TS together (whole µs, so syn_ack
    keeps its µs value) and ackdat runs from the last one.
    """
    if not (st & ST_ARGUS_SYNACK_OK):                       # SYN_SENT
        if from_d and flags == (SYN | ACK):
            return st | ST_ARGUS_SYNACK_OK
        if flags & (RST | FIN | ACK):
            return st | ST_ARGUS_HS_OVER
        return st
    if flags & (RST | FIN):                                 # SYN_RECEIVED
        return st | ST_ARGUS_HS_OVER
    if not (flags & SYN) and (flags & ACK):
        st |= ST_ARGUS_HS_OVER
        if not from_d and payload == 0:
            st |= ST_ARGUS_ACK_OK
        return st
    if from_d and params[P_ARGUS_TCP] != 0:
        delta = (t // 1000 - table[slot, SYNACK_TS] // 1000) * 1000
        if delta > 0:
            table[slot, SYNACK_TS] += delta
            table[slot, SYN_TS] += delta
    return st


@njit(cache=True, nogil=True)
def track_kernel(table, index, perm, ctr, params, snaps,
                 start, ts, status, proto_a, ttl_a, flags_a, src_hi, src_lo, dst_hi, dst_lo,
                 sport_a, dport_a, ip_len, wirelen, seq_a, ack_a, smac_a, dmac_a, ipver_a,
                 q_src_lo, q_dst_lo, q_sport, q_dport, q_proto, payload_a, payload_off_a, buf, frame_off,
                 caplen_a, out, tags) -> tuple:
    """Update the table with packets ``start..n``; return (next packet, rows emitted).

    ``buf``/``frame_off``/``caplen_a`` are the batch's frames (``buf`` empty: payloads are not
    looked at); the first TCP/UDP payload of each direction is classified there
    (flows/signature.py) into that direction's byte of STATE.

    ``tags`` (empty, or one per packet): each packet accounted to a connection gets that
    record's serial * 2 + 1 if it went responder -> originator (the pkt_seq recorder reads it);
    the caller zeroes it, so untracked packets keep 0."""
    # Every array borrowed (daemon/intrinsics_llvm.py): the helpers called per packet take them without
    # two atomic reference-count operations a call (tracking 78-93 -> 62-69 ns a packet, bench_stages.py).
    table, index, perm = borrowed(table), borrowed(index), borrowed(perm)
    ctr, params, snaps = borrowed(ctr), borrowed(params), borrowed(snaps)
    ts, status = borrowed(ts), borrowed(status)
    proto_a, ttl_a, flags_a = borrowed(proto_a), borrowed(ttl_a), borrowed(flags_a)
    src_hi, src_lo, dst_hi, dst_lo = borrowed(src_hi), borrowed(src_lo), borrowed(dst_hi), borrowed(dst_lo)
    sport_a, dport_a, ip_len, wirelen = borrowed(sport_a), borrowed(dport_a), borrowed(ip_len), borrowed(wirelen)
    seq_a, ack_a = borrowed(seq_a), borrowed(ack_a)
    smac_a, dmac_a, ipver_a = borrowed(smac_a), borrowed(dmac_a), borrowed(ipver_a)
    q_src_lo, q_dst_lo = borrowed(q_src_lo), borrowed(q_dst_lo)
    q_sport, q_dport, q_proto = borrowed(q_sport), borrowed(q_dport), borrowed(q_proto)
    payload_a, payload_off_a = borrowed(payload_a), borrowed(payload_off_a)
    buf, frame_off = borrowed(buf), borrowed(frame_off)
    caplen_a, out, tags = borrowed(caplen_a), borrowed(out), borrowed(tags)
    n = ts.shape[0]
    mask = index.shape[0] - 1
    cap = out.shape[0]
    n_out = 0
    n_snaps = snaps.shape[0]
    # Software pipelining of the two cache misses per packet: the index bucket of packet
    # p + PF_INDEX and the row of packet p + PF_ROW (found through its now cached bucket) are
    # prefetched while packet p is worked on. Hashes are computed once, kept in a small ring.
    rows = table.reshape(table.shape[0] * N_COLS)
    has_frames = buf.shape[0] > 0
    hring = np.empty(PF_RING, dtype=np.int64)
    for q in range(start, min(n, start + PF_INDEX)):
        hring[q & (PF_RING - 1)] = _packet_hash(q, proto_a, ipver_a, src_hi, src_lo, dst_hi, dst_lo, sport_a, dport_a)
    p = start
    while p < n:
        if n_out + MAX_EMIT_PER_PACKET > cap:
            break
        q = p + PF_INDEX
        if q < n:
            hq = _packet_hash(q, proto_a, ipver_a, src_hi, src_lo, dst_hi, dst_lo, sport_a, dport_a)
            hring[q & (PF_RING - 1)] = hq
            prefetch(index, hq & mask)
        q = p + PF_ROW
        if q < n:
            s = np.int64(index[hring[q & (PF_RING - 1)] & mask])
            if s >= 0:
                for c in range(0, N_COLS, 8):
                    prefetch(rows, s * N_COLS + c)
            if payload_a[q] > 0 and has_frames:   # its first payload bytes, should it be one
                prefetch(buf, frame_off[q] + payload_off_a[q])
        t = ts[p]
        if t > ctr[C_NOW]:
            ctr[C_NOW] = t
        if ctr[C_SWEEP_CURSOR] >= 0 or (t >= ctr[C_NEXT_SWEEP] and t >= ctr[C_NEXT_DEADLINE]):
            if ctr[C_SWEEP_CURSOR] < 0:
                ctr[C_SWEEP_CURSOR] = 0
            n_out = _sweep(table, index, perm, ctr, params, t, out, n_out)
            if ctr[C_SWEEP_CURSOR] >= 0:
                break  # output full; resume the sweep on the next call
            if n_out + MAX_EMIT_PER_PACKET > cap:
                break
        if status[p] != STATUS_OK:
            p += 1
            continue
        ctr[C_PACKETS] += 1
        if params[P_ICMP_EXTEND] != 0 and q_proto[p] == IPPROTO_TCP and proto_a[p] == IPPROTO_ICMP:
            # an ICMP error quoting a tracked TCP connection: its end time moves (Argus)
            qa_lo = np.int64(q_src_lo[p])
            qb_lo = np.int64(q_dst_lo[p])
            qa_port = np.int64(q_sport[p])
            qb_port = np.int64(q_dport[p])
            qproto = np.int64(IPPROTO_TCP) | (np.int64(4) << 8)
            qh = _flow_hash(np.int64(0), qa_lo, qa_port, np.int64(0), qb_lo, qb_port, qproto)
            qslot, _ = _lookup(table, index, qh, np.int64(0), qa_lo, qa_port, np.int64(0), qb_lo, qb_port, qproto)
            if qslot >= 0 and t > table[qslot, LAST_TS] and _expiry(table, params, qslot, t) == 0:
                table[qslot, LAST_TS] = t
        proto = np.int64(proto_a[p]) | (np.int64(ipver_a[p]) << 8)
        a_hi = np.int64(src_hi[p])
        a_lo = np.int64(src_lo[p])
        b_hi = np.int64(dst_hi[p])
        b_lo = np.int64(dst_lo[p])
        a_port = np.int64(sport_a[p])
        b_port = np.int64(dport_a[p])
        flags = np.int64(flags_a[p])
        is_tcp = proto_a[p] == IPPROTO_TCP
        h = hring[p & (PF_RING - 1)]
        fwd_key = (a_port << 16) | b_port | (proto << 32)
        rev_key = (b_port << 16) | a_port | (proto << 32)
        # --- look up ---
        slot, reverse = _lookup(table, index, h, a_hi, a_lo, a_port, b_hi, b_lo, b_port, proto)
        fresh = False  # a record starts with this packet (its deadlines are new)
        # --- end of the existing record? ---
        if slot >= 0:
            reason = _expiry(table, params, slot, t)
            syn_restart = False
            if params[P_ARGUS_TCP] != 0:
                if reason == END_ACTIVE:   # status split: Argus's TCP state goes on (R4)
                    n_out = _emit(table, slot, out, n_out, reason)
                    _restart_active(table, ctr, params, slot)
                    table[slot, FIRST_TS] = t
                    fresh = True
                    reason = 0
                if reason == 0 and is_tcp:
                    side = 1 if reverse else 0
                    if _argus_tcp_update(table, slot, flags, side, np.int64(seq_a[p]), np.int64(ack_a[p]),
                                         np.int64(payload_a[p])):
                        # Argus's state machine restarts the record (R3): port reuse
                        reason = END_RST if table[slot, STATE] & ST_RST else END_FIN
                        syn_restart = True
            elif reason == 0 and is_tcp and (table[slot, STATE] & ST_CLOSING) and (flags & (SYN | ACK)) == SYN:
                # a new SYN on a closed 5-tuple: port reuse, a new connection
                reason = END_RST if table[slot, STATE] & ST_RST else END_FIN
            if syn_restart:
                # Argus (R4): the SYN ends the old record (its time and TTL count there, nothing
                # else), then starts the next record of the same flow, oriented to its sender
                if t > table[slot, LAST_TS]:
                    table[slot, LAST_TS] = t
                ttl_shift = 8 if reverse else 0
                table[slot, TTL_LAST] = ((table[slot, TTL_LAST] & ~(np.int64(0xFF) << ttl_shift))
                                         | (np.int64(ttl_a[p]) << ttl_shift))
                n_out = _emit(table, slot, out, n_out, reason)
                _argus_next_record(table, slot, False)
                if reverse:
                    _set_key(table, slot, a_hi, a_lo, b_hi, b_lo, fwd_key)
                    reverse = False
                table[slot, FIRST_TS] = t
                if (flags & (FIN | SYN | RST | PSH | ACK | URG)) != SYN:
                    table[slot, STATE] |= ST_ARGUS_HS_OVER
                _argus_tcp_first(table, slot, flags, 0, np.int64(seq_a[p]), np.int64(ack_a[p]),
                                 np.int64(payload_a[p]))
                table[slot, SERIAL] = ctr[C_NEXT_SERIAL]
                ctr[C_NEXT_SERIAL] += 1
                fresh = True
            elif reason == END_ACTIVE:
                n_out = _emit(table, slot, out, n_out, reason)
                _restart_active(table, ctr, params, slot)
                table[slot, FIRST_TS] = t
                fresh = True
            elif reason != 0:
                n_out = _emit(table, slot, out, n_out, reason)
                _release(table, index, perm, ctr, slot)
                slot = -1
                reverse = False
        # --- new record ---
        if slot < 0:
            midstream = False
            if is_tcp:
                if (flags & (SYN | ACK)) == SYN:
                    pass
                elif params[P_MIDSTREAM] == 0:
                    ctr[C_MIDSTREAM_IGNORED] += 1
                    p += 1
                    continue
                else:
                    midstream = True
                    if (flags & (SYN | ACK)) == (SYN | ACK):
                        reverse = True  # the SYN-ACK's receiver opened the connection
            if ctr[C_USED] == table.shape[0]:
                n_out = _evict_one(table, index, perm, ctr, params, out, n_out)
            slot = _allocate(table, perm, ctr)
            ctr[C_CREATED] += 1
            fresh = True
            if reverse:
                _set_key(table, slot, b_hi, b_lo, a_hi, a_lo, rev_key)
            else:
                _set_key(table, slot, a_hi, a_lo, b_hi, b_lo, fwd_key)
            table[slot, FIRST_TS] = t
            table[slot, STATE] = ST_MIDSTREAM if midstream else 0
            if not is_tcp or (flags & (FIN | SYN | RST | PSH | ACK | URG)) != SYN:
                # Argus's handshake states start only with a plain SYN (R6)
                table[slot, STATE] |= ST_ARGUS_HS_OVER
            if is_tcp and params[P_ARGUS_TCP] != 0:
                _argus_tcp_first(table, slot, flags, 1 if reverse else 0, np.int64(seq_a[p]),
                                 np.int64(ack_a[p]), np.int64(payload_a[p]))
            table[slot, SERIAL] = ctr[C_NEXT_SERIAL]
            ctr[C_NEXT_SERIAL] += 1
            # insert into the index (the probe above ended on an empty bucket only if
            # nothing was found; probe again since a release may have shifted entries)
            j = h & mask
            while index[j] >= 0:
                j = (j + 1) & mask
            index[j] = slot
        # --- account the packet ---
        if t > table[slot, LAST_TS]:
            table[slot, LAST_TS] = t
        ttl = np.int64(ttl_a[p])
        st = table[slot, STATE]
        st_before = st
        if not reverse:
            if table[slot, S_PKTS] == 0:
                table[slot, SRC_MAC] = np.int64(smac_a[p])
                table[slot, DST_MAC] = np.int64(dmac_a[p])
            if table[slot, S_PKTS] == 0 and (params[P_ARGUS_TCP] == 0 or table[slot, S_LAST_TS] == 0):
                table[slot, S_FIRST_TS] = t
                table[slot, S_LAST_TS] = t
            elif t > table[slot, S_LAST_TS]:   # (argus: also a side's first packet after a carry-over)
                if t // 1000 > table[slot, S_LAST_TS] // 1000:
                    table[slot, IAT_N] += 1
                table[slot, S_LAST_TS] = t
            table[slot, S_PKTS] += 1
            table[slot, S_IP_BYTES] += ip_len[p]
            table[slot, S_WIRE_BYTES] += wirelen[p]
            table[slot, S_TTL_SUM] += ttl
            table[slot, TTL_LAST] = (table[slot, TTL_LAST] & ~np.int64(0xFF)) | ttl
            if is_tcp:
                if (flags & (SYN | ACK)) == SYN and not (st & ST_SYNACK):
                    if params[P_ARGUS_TCP] == 0:   # (argus: SEQ holds Argus's tracked seqs, R3)
                        table[slot, SEQ] = (table[slot, SEQ] & np.int64(-4294967296)) | np.int64(seq_a[p])
                    st |= ST_SYN
                    table[slot, SYN_TS] = t
                elif (flags & (SYN | ACK)) == ACK and (st & ST_SYNACK) and table[slot, ACK_TS] == 0:
                    table[slot, ACK_TS] = t
                    st |= ST_ESTABLISHED
                    if np.uint32(ack_a[p]) == np.uint32((table[slot, SEQ] >> 32) + 1):
                        st |= ST_ACK_ACKS_SYNACK
                if flags & FIN:
                    st |= ST_FIN_S
        else:
            if table[slot, D_PKTS] == 0 and table[slot, S_PKTS] == 0:
                table[slot, SRC_MAC] = np.int64(dmac_a[p])
                table[slot, DST_MAC] = np.int64(smac_a[p])
            if table[slot, D_PKTS] == 0 and (params[P_ARGUS_TCP] == 0 or table[slot, D_LAST_TS] == 0):
                table[slot, D_FIRST_TS] = t
                table[slot, D_LAST_TS] = t
            elif t > table[slot, D_LAST_TS]:
                if t // 1000 > table[slot, D_LAST_TS] // 1000:
                    table[slot, IAT_N] += np.int64(1) << 32
                table[slot, D_LAST_TS] = t
            table[slot, D_PKTS] += 1
            table[slot, D_IP_BYTES] += ip_len[p]
            table[slot, D_WIRE_BYTES] += wirelen[p]
            table[slot, D_TTL_SUM] += ttl
            table[slot, TTL_LAST] = (table[slot, TTL_LAST] & ~np.int64(0xFF00)) | (ttl << 8)
            if is_tcp:
                if (flags & (SYN | ACK)) == (SYN | ACK) and (st & ST_SYN) and not (st & ST_SYNACK):
                    st |= ST_SYNACK
                    table[slot, SYNACK_TS] = t
                    syn_seq = table[slot, SEQ] & 0xFFFFFFFF
                    if params[P_ARGUS_TCP] == 0:
                        table[slot, SEQ] = syn_seq | (np.int64(seq_a[p]) << 32)
                    if np.uint32(ack_a[p]) == np.uint32(syn_seq + 1):
                        st |= ST_SYNACK_ACKS_SYN
                if flags & FIN:
                    st |= ST_FIN_D
        plen = np.int64(payload_a[p])
        if plen > 0 and buf.shape[0] > 0 and (is_tcp or proto_a[p] == IPPROTO_UDP):
            sig_shift = ST_SIG_D_SHIFT if reverse else ST_SIG_S_SHIFT
            if ((st >> sig_shift) & 0xFF) == 0:   # this direction's first payload: one look at it
                poff = np.int64(payload_off_a[p])
                at = frame_off[p] + poff
                avail = min(plen, np.int64(caplen_a[p]) - poff, buf.shape[0] - at)
                if at < 0 or poff <= 0:
                    avail = 0
                st |= payload_class(buf, at, avail, plen, is_tcp) << sig_shift
        if is_tcp:
            if not (st & ST_ARGUS_HS_OVER):
                st = _argus_handshake(table, params, slot, st, t, flags, reverse, payload_a[p])
            if flags & RST:
                st |= ST_RST | ST_CLOSING
            if (st & ST_FIN_S) and (st & ST_FIN_D):
                st |= ST_CLOSING
        table[slot, STATE] = st
        if tags.shape[0] > 0:
            tags[p] = table[slot, SERIAL] * 2 + (1 if reverse else 0)
        if fresh or ((st ^ st_before) & (ST_CLOSING | ST_SYN)) != 0:  # a deadline may have come closer
            d = _deadline(table, params, slot)
            if d < ctr[C_NEXT_DEADLINE]:
                ctr[C_NEXT_DEADLINE] = d
        # --- early snapshots ---
        if n_snaps > 0:
            total = table[slot, S_PKTS] + table[slot, D_PKTS]
            for k in range(n_snaps):
                if snaps[k] == total:
                    n_out = _emit(table, slot, out, n_out, END_SNAPSHOT | (k << 8))
                    ctr[C_SNAPSHOTS] += 1
                    break
        p += 1
    return p, n_out


@njit(cache=True, nogil=True)
def flush_kernel(table, index, perm, ctr, reason, out) -> int:
    """Emit every tracked connection with ``reason`` and empty the table; returns
    rows emitted, call again while ``ctr[C_USED] > 0`` (output was full)."""
    table, index, perm, ctr, out = borrowed(table), borrowed(index), borrowed(perm), borrowed(ctr), borrowed(out)
    cap = out.shape[0]
    n_out = 0
    while ctr[C_USED] > 0 and n_out < cap:
        slot = np.int64(perm[ctr[C_USED] - 1])
        if table[slot, S_PKTS] + table[slot, D_PKTS] > 0:
            st = table[slot, STATE]
            r = reason
            if st & ST_CLOSING:  # already closed, only lingering: keep its real end
                r = END_RST if st & ST_RST else END_FIN
            n_out = _emit(table, slot, out, n_out, r)
        _release(table, index, perm, ctr, slot)
    return n_out


@njit(cache=True, nogil=True)
def expire_kernel(table, index, perm, ctr, params, now, out) -> int:
    """Timeout sweep at wall-clock time ``now`` (live capture with no packets)."""
    if now > ctr[C_NOW]:
        ctr[C_NOW] = now
    if ctr[C_SWEEP_CURSOR] < 0:
        if now < ctr[C_NEXT_DEADLINE]:
            return 0  # nothing can have timed out yet
        ctr[C_SWEEP_CURSOR] = 0
    return _sweep(table, index, perm, ctr, params, now, out, 0)


def bytes_per_flow(max_flows: int) -> float:
    """Memory the tracker holds per connection of its bound (row + index + perm)."""
    index_buckets = pow2_at_least(2 * max_flows)
    return (max_flows * N_COLS * 8 + index_buckets * 4 + max_flows * 4) / max_flows


_NO_BYTES = np.zeros(0, dtype=np.uint8)
_NO_OFFSETS = np.zeros(0, dtype=np.int64)
_NO_LENGTHS = np.zeros(0, dtype=np.int32)


class FlowTracker:
    """Owns one flow table. Not thread-safe: one tracker per capture thread."""

    def __init__(self, cfg: TrackerConfig = TrackerConfig(), out_rows: int = 65_536) -> None:
        self.cfg = cfg
        n = cfg.max_flows
        self.table = np.zeros((n, N_COLS), dtype=np.int64)
        self.index = np.full(pow2_at_least(2 * n), -1, dtype=np.int32)
        self.perm = np.arange(n, dtype=np.int32)
        self.ctr = np.zeros(N_CTR, dtype=np.int64)
        self.ctr[C_NEXT_SERIAL] = 1
        self.ctr[C_SWEEP_CURSOR] = -1
        self.ctr[C_NEXT_SWEEP] = np.iinfo(np.int64).min  # sweeps wait only for C_NEXT_DEADLINE at first
        self.ctr[C_NEXT_DEADLINE] = NEVER
        self.params = np.zeros(N_PARAMS, dtype=np.int64)
        self.params[P_TCP_IDLE] = round(cfg.tcp_idle_timeout * NS)
        self.params[P_UDP_IDLE] = round(cfg.udp_idle_timeout * NS)
        self.params[P_OTHER_IDLE] = round(cfg.other_idle_timeout * NS)
        self.params[P_ACTIVE] = round(cfg.active_timeout * NS)
        self.params[P_HANDSHAKE] = round(cfg.handshake_timeout * NS)
        self.params[P_LINGER] = round(cfg.close_linger * NS)
        self.params[P_SWEEP] = round(cfg.sweep_interval * NS)
        self.params[P_MIDSTREAM] = int(cfg.midstream)
        self.params[P_EVICT_K] = cfg.evict_candidates
        self.params[P_ICMP_EXTEND] = int(cfg.icmp_errors_extend_tcp)
        self.params[P_ARGUS_TCP] = int(cfg.argus_tcp)
        self.snaps = np.asarray(cfg.snapshot_packets, dtype=np.int64)
        self.out = np.empty((max(out_rows, 4 * MAX_EMIT_PER_PACKET), N_COLS), dtype=np.int64)
        # the first packets of each connection, only when a pkt_seq model needs them (flows/seq.py)
        self.seq = None
        self.tags = np.zeros(0, dtype=np.int64)
        if cfg.seq_packets > 0:
            from .seq import SeqRecorder

            self.seq = SeqRecorder(cfg.seq_packets, n, max(out_rows, 4 * MAX_EMIT_PER_PACKET) + 16_384)

    def update(self, ts_ns: np.ndarray, wirelen: np.ndarray, d: Decoded, copy: bool = True,
               frames: PacketBatch | None = None) -> Iterator[np.ndarray]:
        """Account a decoded batch (its capture times and wire lengths alongside);
        yield emitted records as they fill up: copies, or with ``copy=False`` views of the
        output buffer that stay valid until the next record set is requested. ``frames`` (the
        batch ``d`` was decoded from) lets the tracker classify first payloads; without it
        every connection's payload classes stay 0."""
        n = int(ts_ns.shape[0])
        if frames is None:
            buf, frame_off, caplen = _NO_BYTES, _NO_OFFSETS, _NO_LENGTHS
        else:
            buf = np.asarray(frames.buf, dtype=np.uint8).reshape(-1)
            frame_off = np.asarray(frames.offset, dtype=np.int64)
            caplen = np.asarray(frames.caplen, dtype=np.int32)
        tags = self.tags
        if self.seq is not None:
            if tags.shape[0] < n:
                self.tags = tags = np.zeros(max(n, 2 * tags.shape[0]), dtype=np.int64)
            else:
                tags[:n] = 0
        p = 0
        while p < n:
            p0 = p
            p, k = track_kernel(
                self.table, self.index, self.perm, self.ctr, self.params, self.snaps, p, ts_ns,
                d.status, d.proto, d.ttl, d.tcp_flags, d.src_hi, d.src_lo, d.dst_hi, d.dst_lo,
                d.sport, d.dport, d.ip_len, wirelen, d.seq, d.ack, d.src_mac, d.dst_mac,
                d.ip_version, d.q_src_lo, d.q_dst_lo, d.q_sport, d.q_dport, d.q_proto, d.payload_len,
                d.payload_off, buf, frame_off, caplen, self.out, tags)
            if self.seq is not None:  # before the records go out: their packets are all in
                self.seq.record(p0, p, tags, ts_ns, d.ip_len, d.tcp_flags)
            if k:
                yield self.out[:k].copy() if copy else self.out[:k]

    def expire(self, now_ns: int) -> Iterator[np.ndarray]:
        """Run a timeout sweep at ``now_ns`` (for live capture when traffic pauses)."""
        while True:
            k = expire_kernel(self.table, self.index, self.perm, self.ctr, self.params, now_ns, self.out)
            if k:
                yield self.out[:k].copy()
            if self.ctr[C_SWEEP_CURSOR] < 0:
                return

    def flush(self, reason: int = END_EOF) -> Iterator[np.ndarray]:
        """Emit every connection still tracked (end of input, shutdown)."""
        while True:
            k = flush_kernel(self.table, self.index, self.perm, self.ctr, reason, self.out)
            if k:
                yield self.out[:k].copy()
            if self.ctr[C_USED] == 0:
                return

    @property
    def active(self) -> int:
        return int(self.ctr[C_USED])

    def stats(self) -> dict[str, int | float]:
        c = self.ctr
        return {
            "flows_active": int(c[C_USED]),
            "flows_created": int(c[C_CREATED]),
            "flows_evicted": int(c[C_EVICTED]),
            "tcp_midstream_ignored": int(c[C_MIDSTREAM_IGNORED]),
            "packets_tracked": int(c[C_PACKETS]),
            "snapshots": int(c[C_SNAPSHOTS]),
            "sweeps": int(c[C_SWEEPS]),
            "max_flows": self.cfg.max_flows,
            "bytes_per_flow": bytes_per_flow(self.cfg.max_flows),
            **({} if self.seq is None else self.seq.stats()),
        }
