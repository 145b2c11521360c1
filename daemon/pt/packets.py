"""Intel PT packet types, error kinds and token kinds: the numbers the decoder writes.

Packet types follow the Intel SDM vol. 3, ch. 33 "Intel Processor Trace" (packet
formats) and libipt's names for them (``ptdump`` mnemonics in :data:`MNEMONICS`).
The meaning of the ``payload`` and ``aux`` columns per type is in :data:`COLUMNS`.
"""
from __future__ import annotations

# ---------------------------------------------------------------- packet types
PAD = 1
PSB = 2
PSBEND = 3
TNT_8 = 4
TNT_64 = 5
TIP = 6
TIP_PGE = 7
TIP_PGD = 8
FUP = 9
MODE_EXEC = 10
MODE_TSX = 11
PIP = 12
TSC = 13
MTC = 14
CYC = 15
TMA = 16
CBR = 17
VMCS = 18
OVF = 19
STOP = 20        # TraceStop
MNT = 21
PTW = 22         # PTWRITE
PWRE = 23
PWRX = 24
MWAIT = 25
EXSTOP = 26
CFE = 27         # control-flow event (event trace)
EVD = 28         # event data (event trace)
TRIG = 29
INVALID = 30     # libipt's ppt_invalid: a TMA with reserved bits under erratum SKZ84
ERROR = 31       # not a packet: a decode error at ``offset`` (``aux`` = error kind), then a resync
N_TYPES = 32

NAMES = {
    PAD: "pad", PSB: "psb", PSBEND: "psbend", TNT_8: "tnt.8", TNT_64: "tnt.64", TIP: "tip",
    TIP_PGE: "tip.pge", TIP_PGD: "tip.pgd", FUP: "fup", MODE_EXEC: "mode.exec", MODE_TSX: "mode.tsx",
    PIP: "pip", TSC: "tsc", MTC: "mtc", CYC: "cyc", TMA: "tma", CBR: "cbr", VMCS: "vmcs", OVF: "ovf",
    STOP: "stop", MNT: "mnt", PTW: "ptw", PWRE: "pwre", PWRX: "pwrx", MWAIT: "mwait", EXSTOP: "exstop",
    CFE: "cfe", EVD: "evd", TRIG: "trig", INVALID: "invalid", ERROR: "error",
}
MNEMONICS = {**NAMES, INVALID: "<invalid>"}  # ptdump's names
IP_TYPES = (TIP, TIP_PGE, TIP_PGD, FUP)

COLUMNS = {
    "IP packets (tip, tip.pge, tip.pgd, fup)":
        "payload = the raw IP bytes as sent; aux = IP compression (0 suppressed, 1 update-16, 2 update-32, "
        "3 sext-48, 4 update-48, 6 full) | AUX_IP_KNOWN; ip = the reconstructed IP (last-IP tracking)",
    "tnt.8, tnt.64": "payload = the branch bits, oldest in bit aux-1; aux = the number of bits",
    "mode.exec / mode.tsx": "payload = the mode bits (exec: 1 cs.l, 2 cs.d, 4 if; tsx: 1 intx, 2 abrt)",
    "pip": "payload = CR3; aux = 1 for non-root (nr)",
    "vmcs": "payload = the VMCS base address",
    "tsc, mtc, cyc, cbr, mnt": "payload = the value (TSC, CTC byte, cycle count, core:bus ratio, maintenance)",
    "tma": "payload = CTC; aux = fast counter",
    "mwait": "payload = hints | extensions << 32",
    "pwre": "payload = the 2 payload bytes (state bits 12..15, sub-state 8..11, hw bit 3)",
    "pwrx": "payload = the 5 payload bytes (deepest 0..3, last 4..7, wake reasons int 8, store 10, hw 11)",
    "exstop": "aux = 1 when the IP bit is set (a FUP follows)",
    "ptw": "payload = the PTWRITE operand; aux = its opcode byte (size bits 5..6, IP bit 7)",
    "cfe": "payload = the 2 payload bytes (type 0..4, IP bit 7; vector 8..15)",
    "evd": "payload = the 8 data bytes; aux = the type",
    "trig": "payload = byte 1 (IP 7, icnt-valid 6, mult 5) | trbv << 8 | icnt << 16",
    "error": "aux = the error kind (ERROR_NAMES)",
}

AUX_IP_KNOWN = 0x100  # set in aux of an IP packet when ``ip`` holds a full reconstructed address

# ---------------------------------------------------------------- error kinds
ERR_BAD_OPCODE = 1      # no packet starts with these bytes (libipt: "unknown opcode")
ERR_BAD_IPC = 2         # an IP packet with the reserved compression 5 or 7
ERR_BAD_TNT = 3         # a long TNT without a stop bit
ERR_BAD_MODE = 4        # a MODE packet with an unknown leaf
ERR_BAD_TMA = 5         # a TMA with reserved bits set
ERR_BAD_PTW = 6         # a PTWRITE with a reserved payload size
ERR_BAD_CYC = 7         # a CYC whose value runs past 64 bits
ERR_BAD_PSB = 8         # 02 82 not followed by the full PSB pattern
ERR_TRUNCATED = 9       # the trace ends inside a packet
N_ERRORS = 10
ERROR_NAMES = {
    ERR_BAD_OPCODE: "bad_opcode", ERR_BAD_IPC: "bad_ip_compression", ERR_BAD_TNT: "bad_tnt",
    ERR_BAD_MODE: "bad_mode_leaf", ERR_BAD_TMA: "bad_tma", ERR_BAD_PTW: "bad_ptwrite_size",
    ERR_BAD_CYC: "bad_cyc", ERR_BAD_PSB: "bad_psb", ERR_TRUNCATED: "truncated",
}
# libipt's message for each kind (pt_errstr), as ptdump prints it
ERROR_TEXT = {k: "unknown packet" for k in ERROR_NAMES}
ERROR_TEXT[ERR_BAD_OPCODE] = "unknown opcode"
ERROR_TEXT[ERR_TRUNCATED] = "reached end of trace stream"

# ---------------------------------------------------------------- token kinds
TOK_TIP = 1         # ip = the branch target
TOK_TIP_PGE = 2     # ip = where tracing (re)starts
TOK_FUP = 3         # ip = the source of an asynchronous event
TOK_NOT_TAKEN = 4   # one conditional branch, not taken
TOK_TAKEN = 5       # one conditional branch, taken
TOKEN_NAMES = {TOK_TIP: "tip", TOK_TIP_PGE: "tip.pge", TOK_FUP: "fup", TOK_NOT_TAKEN: "not_taken",
               TOK_TAKEN: "taken"}
