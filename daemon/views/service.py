"""A connection's ``service`` as UNSW-NB15 names it: by payload signature, else by port.

UNSW-NB15's ``service`` column was filled by Bro/Zeek, which names a connection's
service by the analyzer that parsed it (dynamic protocol detection) and leaves ``-``
where none did. The CSV holds thirteen values (:data:`SERVICE_NAMES`; the code of a
service is its index, ``-`` = 0).

Precedence (:func:`record_services`; docs/features.md lists every byte rule):

1. a payload signature: the flow tracker classified each direction's first payload
   (flows/signature.py) into the record's STATE; :func:`_signature_service` names the
   service from the two classes. Where Zeek's signature requires the responder's answer
   (``requires-reverse-signature``: http, ssh, ftp, smtp, pop3, irc) both sides must match;
   ssl (a ClientHello or a ServerHello), dns, dhcp, snmp and radius need one side;
2. otherwise the responder's well-known port (:data:`PORT_RULES`: IANA's ports for the
   protocols UNSW's Zeek analysers covered); ``ftp-data`` is the active-mode data channel,
   which the FTP server opens *from* port 20, so it is also recognised by the originator's port.

So a signature wins over the port (SSH on port 80 is ``ssh``); a payload that matches no
signature leaves the port's name (random bytes to port 80 stay ``http``: Zeek would say
``-`` once its HTTP analyser gave up, which a first packet cannot tell).
"""
from __future__ import annotations

import numpy as np

from ..flows import layout as L
from ..flows import signature as S
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


_HTTP, _FTP, _SMTP, _POP3, _DNS, _SNMP, _SSL, _DHCP, _IRC, _RADIUS, _SSH = (
    SERVICE_CODE[s] for s in ("http", "ftp", "smtp", "pop3", "dns", "snmp", "ssl", "dhcp", "irc", "radius", "ssh"))


@njit(cache=True, nogil=True, inline="always")
def _pair(a, b, is_tcp) -> np.int64:
    """The service a client class ``a`` and the server's answer ``b`` confirm together (0: none)."""
    if not is_tcp:
        return 0
    if a == S.SIG_HTTP_REQUEST and b == S.SIG_HTTP_REPLY:
        return _HTTP
    if a == S.SIG_SSH and b == S.SIG_SSH:
        return _SSH
    if b == S.SIG_REPLY_220:
        if a == S.SIG_SMTP_HELLO:
            return _SMTP
        if a == S.SIG_USER:
            return _FTP
    if b == S.SIG_POP3_OK and (a == S.SIG_USER or a == S.SIG_POP3_COMMAND):
        return _POP3
    if a == S.SIG_IRC_CLIENT and b == S.SIG_IRC_SERVER:
        return _IRC
    return 0


@njit(cache=True, nogil=True, inline="always")
def _alone(c, is_tcp) -> np.int64:
    """The service one side's class names without the other's (0: none)."""
    if is_tcp:
        if c == S.SIG_TLS_CLIENT or c == S.SIG_TLS_SERVER:
            return _SSL
        if c == S.SIG_DNS:
            return _DNS
        return 0
    if c == S.SIG_DNS:
        return _DNS
    if c == S.SIG_DHCP:
        return _DHCP
    if c == S.SIG_SNMP:
        return _SNMP
    if c == S.SIG_RADIUS:
        return _RADIUS
    return 0


@njit(cache=True, nogil=True)
def _signature_service(s_class, d_class, is_tcp) -> np.int64:
    """The service the two payload classes name (0: none). Pairs are tried both ways round
    (a mid-stream record's originator may be the server); the originator's side first."""
    v = _pair(s_class, d_class, is_tcp)
    if v == 0:
        v = _pair(d_class, s_class, is_tcp)
    if v == 0:
        v = _alone(s_class, is_tcp)
    if v == 0:
        v = _alone(d_class, is_tcp)
    return v


@njit(cache=True, nogil=True)
def _record_services(table: np.ndarray, rec: np.ndarray, out: np.ndarray) -> None:
    for i in range(rec.shape[0]):
        key = rec[i, L.KEY]
        p = (key >> 32) & 0xFF
        row = 0 if p == 6 else 1 if p == 17 else -1
        if row < 0:
            out[i] = 0
            continue
        st = rec[i, L.STATE]
        s = _signature_service((st >> L.ST_SIG_S_SHIFT) & 0xFF, (st >> L.ST_SIG_D_SHIFT) & 0xFF, row == 0)
        if s == 0:
            s = table[row, key & 0xFFFF]
            if s == 0 and row == 0 and ((key >> 16) & 0xFFFF) == 20:
                s = FTP_DATA
        out[i] = s


def record_services(rec: np.ndarray) -> np.ndarray:
    """Service codes of flow records: payload signature first, then the ports."""
    rec = np.ascontiguousarray(rec, dtype=np.int64).reshape(-1, L.N_COLS)
    out = np.empty(rec.shape[0], dtype=np.int8)
    _record_services(PORT_TABLE, rec, out)
    return out


def service_code(name: str) -> int | None:
    """The code of a UNSW service name (None if it is not one)."""
    return SERVICE_CODE.get(name.strip().lower())
