"""Classic BPF filters for AF_PACKET sockets, compiled by the system's libpcap.

``compile_filter("tcp port 443")`` runs ``pcap_compile`` on a dead pcap handle
(``pcap_open_dead``, Ethernet, the given snap length) through ctypes and returns
the instructions as bytes (``struct sock_filter[]``, 8 bytes each), ready for
:func:`attach_filter` (``SO_ATTACH_FILTER``).

Two properties of the Linux capture path that matter for expressions:

* The kernel removes an 802.1Q/802.1ad tag from the frame (the tag travels in
  the ring header) *before* the filter runs. An expression like ``ip`` or
  ``tcp port 80`` therefore also matches VLAN-tagged traffic, and ``vlan 100``
  (which a dead handle compiles as a test of the frame's EtherType) matches
  nothing. Filter VLANs after capture (the batch's ``vlan`` column) instead.
* The filter's return value is the snap length: ``pcap_compile`` emits
  ``ret #snaplen`` for accepted packets, so the snap length given here truncates
  what is copied into the ring (``tp_snaplen``) while ``tp_len`` keeps the
  length on the wire.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
from functools import lru_cache

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
DLT_EN10MB = 1
DLT_RAW = 12
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF

# BPF opcodes used by the hand-written programs below
BPF_RET_K = 0x06

_LIB_CANDIDATES = ("libpcap.so.1", "libpcap.so.0.8", "libpcap.so")


class BpfError(ValueError):
    """The expression does not compile (the message is libpcap's) or libpcap is missing."""


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


@lru_cache(maxsize=1)
def _libpcap() -> ctypes.CDLL:
    names = list(_LIB_CANDIDATES)
    found = ctypes.util.find_library("pcap")
    if found:
        names.insert(0, found)
    last: OSError | None = None
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            last = exc
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.restype = None
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_close.restype = None
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        return lib
    raise BpfError(f"libpcap not found (tried {', '.join(names)}): {last}; install libpcap0.8")


def compile_filter(expression: str, snaplen: int = 262144, linktype: int = DLT_EN10MB,
                   optimize: bool = True) -> bytes:
    """Compile a pcap filter expression into classic BPF (``struct sock_filter[]`` bytes)."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(linktype, snaplen)
    if not handle:
        raise BpfError(f"pcap_open_dead(linktype={linktype}, snaplen={snaplen}) failed")
    prog = _BpfProgram()
    try:
        rc = lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), int(optimize),
                              PCAP_NETMASK_UNKNOWN)
        if rc != 0:
            msg = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
            raise BpfError(f"BPF filter {expression!r}: {msg}")
        try:
            return ctypes.string_at(prog.bf_insns, prog.bf_len * ctypes.sizeof(_BpfInsn))
        finally:
            lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)


def ret_program(value: int) -> bytes:
    """A one-instruction program ``ret #value``: 0 drops everything, N keeps N bytes."""
    return struct.pack("HBBI", BPF_RET_K, 0, 0, value)


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) of each instruction (tests, debugging)."""
    return list(struct.iter_unpack("HBBI", program))


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach (or replace) the socket's classic BPF filter (``SO_ATTACH_FILTER``)."""
    if not program or len(program) % 8:
        raise BpfError(f"a BPF program is a non-empty multiple of 8 bytes, got {len(program)}")
    n = len(program) // 8
    if n > 4096:  # BPF_MAXINSNS
        raise BpfError(f"BPF program has {n} instructions, the kernel accepts at most 4096")
    buf = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (padded to 16 bytes)
    fprog = struct.pack("HxxxxxxP", n, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    del buf  # the kernel copied the program during setsockopt
