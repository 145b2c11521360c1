"""Column layout of a flow record.

The flow table stores one row of int64 per tracked connection (``table[slot, COL]``):
every field a packet updates sits in the same few cache lines, and a finished
connection is emitted by copying its row. Finished connections travel as
``FlowRecords`` (a 2-D int64 array with this layout) to the feature views, whose
arithmetic is a numba loop over the batch.

"s" is the originator (the sender of the SYN for TCP, of the first packet
otherwise), "d" the responder. Timestamps are epoch nanoseconds; 0 means "not seen".
"""
from __future__ import annotations

# --- key (originator orientation) ---
SRC_HI = 0          # IPv6 address (IPv4 as ::ffff:a.b.c.d), high 64 bits
SRC_LO = 1
DST_HI = 2
DST_LO = 3
KEY = 4             # sport << 16 | dport | IP protocol << 32 | IP version << 40 (use the accessors below)
IAT_N = 5           # per side, packets that opened a gap of >= 1 µs since that side's latest
                    # packet: s count | d count << 32 (Argus's inter-packet averages divide by it)
# --- times (ns) ---
FIRST_TS = 6
LAST_TS = 7
S_FIRST_TS = 8
S_LAST_TS = 9
D_FIRST_TS = 10
D_LAST_TS = 11
SYN_TS = 12         # last SYN before the SYN-ACK (retransmissions move it)
SYNACK_TS = 13      # first SYN-ACK
ACK_TS = 14         # first originator ACK after the SYN-ACK
# --- counters ---
S_PKTS = 15
D_PKTS = 16
S_IP_BYTES = 17     # sum of IP total length
D_IP_BYTES = 18
S_WIRE_BYTES = 19   # sum of original frame length (what Argus counts)
D_WIRE_BYTES = 20
S_TTL_SUM = 21
D_TTL_SUM = 22
TTL_LAST = 23       # s_last_ttl | d_last_ttl << 8 (inside the tracker, bits 32.. hold the row's list position)
SRC_MAC = 24
DST_MAC = 25
STATE = 26          # bit field, see STATE_* below
SEQ = 27            # syn_seq | synack_seq << 32 (uint32 each); with TrackerConfig.argus_tcp Argus's
                    # tracked sequence number of s | of d << 32 (STATE bits 13..21: its TCP state)
SERIAL = 28         # connection serial number, unique per tracker (joins snapshots to their end)
END = 29            # end reason (END_*) | snapshot index << 8 for snapshot rows
N_COLS = 30

COLUMN_NAMES = (
    "src_hi", "src_lo", "dst_hi", "dst_lo", "key", "iat_n",
    "first_ts", "last_ts", "s_first_ts", "s_last_ts", "d_first_ts", "d_last_ts",
    "syn_ts", "synack_ts", "ack_ts",
    "s_pkts", "d_pkts", "s_ip_bytes", "d_ip_bytes", "s_wire_bytes", "d_wire_bytes",
    "s_ttl_sum", "d_ttl_sum", "ttl_last", "src_mac", "dst_mac", "state", "seq", "serial", "end",
)
assert len(COLUMN_NAMES) == N_COLS

# STATE bits
ST_SYN = 1 << 0          # originator SYN seen
ST_SYNACK = 1 << 1       # valid SYN-ACK seen
ST_ESTABLISHED = 1 << 2  # originator ACK after SYN-ACK seen
ST_FIN_S = 1 << 3
ST_FIN_D = 1 << 4
ST_RST = 1 << 5
ST_MIDSTREAM = 1 << 6    # first packet was not a SYN (tracked because midstream = true)
ST_CLOSING = 1 << 7      # FIN both ways or RST: lingers for close_linger, then ends
ST_SYNACK_ACKS_SYN = 1 << 8   # the SYN-ACK's ack number was syn_seq + 1
ST_ACK_ACKS_SYNACK = 1 << 9   # the ACK's ack number was synack_seq + 1
# Argus's handshake rules (docs/argus-semantics.md, R6); only the argus view reads them
ST_ARGUS_SYNACK_OK = 1 << 10  # the SYN-ACK had flags exactly SYN|ACK and came while Argus was in SYN_SENT
ST_ARGUS_ACK_OK = 1 << 11     # the first packet without SYN after it was a pure ACK from s, no payload
ST_ARGUS_HS_OVER = 1 << 12    # Argus's handshake states are left (that decision is taken)
# (bits 13..21: Argus's TCP state, table.py; 40, 41: the argus view's own marks, views/argus.py)
# Payload classes (flows/signature.py SIG_*): one byte per direction, set at the first packet of
# that direction that carries payload, from its first bytes; 0 = no payload seen. They use bits
# of STATE that were free, so the row keeps its size. views/service.py names the service from them.
ST_SIG_S_SHIFT = 48           # originator's class: STATE bits 48..55
ST_SIG_D_SHIFT = 56           # responder's class: STATE bits 56..63
ST_SIG_BITS = -(1 << 48)      # both bytes (bits 48..63), as an int64 mask

# END reasons (low byte of END)
END_FIN = 1
END_RST = 2
END_IDLE = 3
END_ACTIVE = 4
END_HANDSHAKE = 5
END_EOF = 6
END_EVICTED = 7
END_SHUTDOWN = 8
END_SNAPSHOT = 9   # not an end: an early snapshot of a live connection
END_REASONS = {
    END_FIN: "fin", END_RST: "rst", END_IDLE: "idle", END_ACTIVE: "active",
    END_HANDSHAKE: "handshake", END_EOF: "eof", END_EVICTED: "evicted",
    END_SHUTDOWN: "shutdown", END_SNAPSHOT: "snapshot",
}

BYTES_PER_FLOW_ROW = N_COLS * 8


def pack_key(sport, dport, proto, ip_version):
    return (sport << 16) | dport | (proto << 32) | (ip_version << 40)


# Accessors over one record or a 2-D batch of records (numpy integer arithmetic).
def sport_of(rec):
    return (rec[..., KEY] >> 16) & 0xFFFF


def dport_of(rec):
    return rec[..., KEY] & 0xFFFF


def proto_of(rec):
    return (rec[..., KEY] >> 32) & 0xFF


def ip_version_of(rec):
    return (rec[..., KEY] >> 40) & 0xFF


def s_last_ttl(rec):
    return rec[..., TTL_LAST] & 0xFF


def d_last_ttl(rec):
    return (rec[..., TTL_LAST] >> 8) & 0xFF


def s_payload_class(rec):
    return (rec[..., STATE] >> ST_SIG_S_SHIFT) & 0xFF


def d_payload_class(rec):
    return (rec[..., STATE] >> ST_SIG_D_SHIFT) & 0xFF


def s_iat_n(rec):
    return rec[..., IAT_N] & 0xFFFFFFFF


def d_iat_n(rec):
    return (rec[..., IAT_N] >> 32) & 0xFFFFFFFF
