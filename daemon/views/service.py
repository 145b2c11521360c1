"""A connection's ``service`` as UNSW-NB15 names it, from its ports.

UNSW-NB15's ``service`` column was filled by Bro/Zeek, which names a connection's
service by the analyzer that parsed it (dynamic protocol detection) and leaves ``-``
where none did. The CSV holds thirteen values (:data:`SERVICE_NAMES`; the code of a
service is its index, ``-`` = 0). This module names the service by the responder's
well-known port (:data:`PORT_RULES`: IANA's ports for the protocols UNSW's Zeek
analysers covered), the rule Zeek falls back to for a connection no analyser parsed.
``ftp-data`` is the active-mode data channel, which the FTP server opens *from* port 20,
so it is also recognised by the originator's port.

Not done yet (issue 14, section 1): where the first payload bytes name another protocol
(HTTP on a high port, TLS on 8443, SSH on 2222), Zeek's signatures win over the port.
The flow table keeps no payload bytes today; see docs/features.md.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit

SERVICE_NAMES = ("-", "http", "ftp", "ftp-data", "smtp", "pop3", "dns", "snmp", "ssl", "dhcp", "irc",
                 "radius", "ssh")
SERVICE_CODE = {s: i for i, s in enumerate(SERVICE_NAMES)}

# (service, IP protocol, responder ports). ssl: HTTPS and the TLS-wrapped news, LDAP, FTP,
# telnet, IMAP, IRC, POP3 and XMPP ports Zeek's ssl analyser registers.
PORT_RULES = (
    ("http", 6, (80, 81, 631, 1080, 3128, 8000, 8080, 8888)),
    ("ftp", 6, (21, 2811)),
    ("ftp-data", 6, (20,)),
    ("smtp", 6, (25, 587)),
    ("pop3", 6, (110,)),
    ("dns", 17, (53, 137, 5353, 5355)),
    ("dns", 6, (53,)),
    ("snmp", 17, (161, 162)),
    ("ssl", 6, (261, 443, 448, 465, 563, 585, 614, 636, 989, 990, 992, 993, 994, 995, 5223, 6697, 8443)),
    ("dhcp", 17, (67, 68)),
    ("irc", 6, (6666, 6667, 6668, 6669)),
    ("radius", 17, (1812, 1813)),
    ("ssh", 6, (22,)),
)


def _port_table() -> np.ndarray:
    """int8 (2, 65536): service code by responder port, row 0 TCP, row 1 UDP."""
    t = np.zeros((2, 65536), dtype=np.int8)
    for name, proto, ports in PORT_RULES:
        t[0 if proto == 6 else 1, list(ports)] = SERVICE_CODE[name]
    return t


PORT_TABLE = _port_table()
FTP_DATA = SERVICE_CODE["ftp-data"]


@njit(cache=True, nogil=True)
def _services(table: np.ndarray, proto: np.ndarray, sport: np.ndarray, dport: np.ndarray,
              out: np.ndarray) -> None:
    for i in range(proto.shape[0]):
        p = proto[i]
        row = 0 if p == 6 else 1 if p == 17 else -1
        if row < 0:
            out[i] = 0
            continue
        s = table[row, dport[i] & 0xFFFF]
        if s == 0 and row == 0 and sport[i] == 20:   # active-mode FTP data: the server's side is port 20
            s = FTP_DATA
        out[i] = s


def service_codes(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
    """Service codes (indices into :data:`SERVICE_NAMES`) of connections by their ports."""
    out = np.empty(len(proto), dtype=np.int8)
    _services(PORT_TABLE, np.ascontiguousarray(proto, np.int64), np.ascontiguousarray(sport, np.int64),
              np.ascontiguousarray(dport, np.int64), out)
    return out


def service_code(name: str) -> int | None:
    """The code of a UNSW service name (None if it is not one)."""
    return SERVICE_CODE.get(name.strip().lower())
