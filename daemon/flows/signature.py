"""Payload signatures: what protocol a direction's first payload bytes speak.

The flow tracker calls :func:`payload_class` once per direction of a connection, on the first
packet of that direction that carries transport payload, with the bytes of that packet that are
in the frame buffer it already walks (no copy). The answer, a *payload class*, is one byte kept
in the flow row's STATE column (layout.ST_SIG_S_SHIFT / ST_SIG_D_SHIFT, bits that were unused:
the row keeps its 240 bytes). The connection's service is decided later, per finished batch, from
the two classes and the ports (views/service.py), so the rule that needs both directions (the
responder's answer confirming the originator's, as Zeek's ``requires-reverse-signature``) lives
in one place.

The byte patterns follow Zeek's dpd.sig files for the protocols UNSW-NB15's ``service`` column
names (scripts/base/protocols/*/dpd.sig); DNS, SNMP and RADIUS have no usable signature in Zeek
(port only), so theirs are header checks strict enough that random UDP payloads do not pass
(docs/features.md gives every rule).

Only the first line / first bytes of one packet are looked at: Zeek matches a signature over the
first ``dpd_buffer_size`` bytes of the stream, so a greeting split over two segments or a
command after a banner in the same packet's second line is missed here (the port rule then
applies).
"""
from __future__ import annotations

import numpy as np

from ..jit import njit

# payload classes (one byte per direction in STATE; 0 = no payload seen yet)
SIG_NONE = 0         # this direction has carried no payload (yet)
SIG_OTHER = 1        # it has, and its first payload matched nothing below
SIG_HTTP_REQUEST = 2     # "GET " "POST " "HEAD " "PUT " "DELETE " "OPTIONS " "CONNECT " "TRACE " "PATCH "
SIG_HTTP_REPLY = 3       # "HTTP/" digit
SIG_TLS_CLIENT = 4       # TLS record 0x16 0x03 0x00-03, handshake ClientHello, version 3.x; SSLv2 ClientHello
SIG_TLS_SERVER = 5       # TLS record 0x16 0x03 0x00-03, handshake ServerHello, version 3.0-3.4 or 0x7f draft
SIG_SSH = 6              # "SSH-1." / "SSH-2." (case-insensitive "ssh")
SIG_REPLY_220 = 7        # "220" then space or '-': an FTP or SMTP greeting
SIG_SMTP_HELLO = 8       # HELO / EHLO
SIG_USER = 9             # "USER " not shaped like IRC's: FTP or POP3 login
SIG_POP3_OK = 10         # "+OK"
SIG_POP3_COMMAND = 11    # APOP / CAPA / AUTH / STLS
SIG_IRC_CLIENT = 12      # "NICK x", or "USER a b c :real name"
SIG_IRC_SERVER = 13      # ":prefix " (a server's message with its source prefix)
SIG_DNS = 14             # a well-formed DNS header and first question (UDP; TCP after the length)
SIG_DHCP = 15            # BOOTP op 1/2 and the DHCP magic cookie 0x63825363 at offset 236
SIG_SNMP = 16            # BER SEQUENCE, INTEGER version 0/1/3, then community or v3 header
SIG_RADIUS = 17          # code 1-5/11-13, length field = the UDP payload length

SIG_NAMES = ("none", "other", "http_request", "http_reply", "tls_client", "tls_server", "ssh", "reply_220",
             "smtp_hello", "user", "pop3_ok", "pop3_command", "irc_client", "irc_server", "dns", "dhcp", "snmp",
             "radius")

# the HTTP request methods, space included, as one byte string and (start, length) pairs
_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ", b"TRACE ", b"PATCH ")
METHOD_BYTES = np.frombuffer(b"".join(_METHODS), dtype=np.uint8).copy()
METHOD_SPANS = np.array([[sum(map(len, _METHODS[:i])), len(m)] for i, m in enumerate(_METHODS)], dtype=np.int64)

# first bytes (after white space) a text rule can start with: letters, '+' (+OK), ':' (IRC prefix),
# '2' (220); any other byte ends the text rules at once (TLS application data, binary protocols)
TEXT_FIRST = np.zeros(256, dtype=np.bool_)
TEXT_FIRST[[*range(65, 91), *range(97, 123), 43, 58, 50]] = True
METHOD_FIRST = np.zeros(256, dtype=np.bool_)
METHOD_FIRST[[m[0] for m in _METHODS]] = True

FIRST_LINE = 128     # bytes of the first line a text rule looks at (IRC's USER line, prefixes)


@njit(cache=True, nogil=True, inline="always")
def _upper(c) -> np.int64:
    c = np.int64(c)
    return c - 32 if 97 <= c <= 122 else c


@njit(cache=True, nogil=True, inline="always")
def _word(buf, at, n, w0, w1, w2, w3) -> bool:
    """The 4 bytes at ``at`` spell the upper-case word w0..w3, in any case."""
    return (n >= 4 and _upper(buf[at]) == w0 and _upper(buf[at + 1]) == w1 and _upper(buf[at + 2]) == w2
            and _upper(buf[at + 3]) == w3)


@njit(cache=True, nogil=True, inline="always")
def _is_space(c) -> bool:
    return c == 32 or c == 9 or c == 10 or c == 13


@njit(cache=True, nogil=True)
def _tls(buf, at, n) -> np.int64:
    if n >= 11 and buf[at] == 0x16 and buf[at + 1] == 0x03 and buf[at + 2] <= 0x03:
        hs = buf[at + 5]
        if hs == 0x01 and buf[at + 9] == 0x03 and buf[at + 10] <= 0x03:
            return SIG_TLS_CLIENT
        if hs == 0x02 and ((buf[at + 9] == 0x03 and buf[at + 10] <= 0x04)
                           or (buf[at + 9] == 0x7F and buf[at + 10] <= 0x50)):
            return SIG_TLS_SERVER
    # SSLv2-framed ClientHello: 2-byte length with the top bit set, type 1, version 2.0 or 3.x
    if n >= 11 and (buf[at] & 0x80) and buf[at + 2] == 0x01:
        rec = ((np.int64(buf[at]) & 0x7F) << 8) | np.int64(buf[at + 1])
        if rec >= 9 and ((buf[at + 3] == 0x00 and buf[at + 4] == 0x02)
                         or (buf[at + 3] == 0x03 and buf[at + 4] <= 0x03)):
            return SIG_TLS_CLIENT
    return SIG_NONE


@njit(cache=True, nogil=True)
def _dns(buf, at, n) -> bool:
    """A DNS message: header with one question, sane flags, and that question's name and class."""
    if n < 17:
        return False
    flags = (np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3])
    qd = (np.int64(buf[at + 4]) << 8) | np.int64(buf[at + 5])
    an = (np.int64(buf[at + 6]) << 8) | np.int64(buf[at + 7])
    ns = (np.int64(buf[at + 8]) << 8) | np.int64(buf[at + 9])
    ar = (np.int64(buf[at + 10]) << 8) | np.int64(buf[at + 11])
    opcode = (flags >> 11) & 0xF
    if qd != 1 or (flags & 0x40) or not (opcode == 0 or opcode == 2 or opcode == 4 or opcode == 5):
        return False
    if flags & 0x8000:        # response: a known rcode, sane record counts
        if (flags & 0xF) > 10 or an > 256 or ns > 256 or ar > 256:
            return False
    elif (flags & 0x0F) != 0 or an > 1 or ns > 1 or ar > 2 or (flags & 0x0480):   # query: no answers,
        return False          # no rcode, no AA/RA bits; one OPT (+ one TSIG) at most in additional
    # the question's name: labels of 1..63 bytes ending in the root label (or a pointer), then
    # QTYPE and QCLASS (IN, CH, HS, ANY, or IN with mDNS's unicast-response bit)
    q = at + 12
    end = at + n
    total = 0
    while True:
        if q >= end:
            return False
        ln = np.int64(buf[q])
        if ln == 0:
            q += 1
            break
        if ln >= 0xC0:
            q += 2
            break
        if ln > 63:
            return False
        total += ln + 1
        if total > 255:
            return False
        q += ln + 1
    if q + 4 > end:
        return False
    qclass = (np.int64(buf[q + 2]) << 8) | np.int64(buf[q + 3])
    qtype = (np.int64(buf[q]) << 8) | np.int64(buf[q + 1])
    return qtype != 0 and (qclass == 1 or qclass == 3 or qclass == 4 or qclass == 255 or qclass == 0x8001)


@njit(cache=True, nogil=True)
def _snmp(buf, at, n, length) -> bool:
    """BER: SEQUENCE whose length covers the payload, INTEGER version 0/1/3, then the community
    (OCTET STRING, v1/v2c) or the v3 header (SEQUENCE)."""
    if n < 7 or buf[at] != 0x30:
        return False
    b = np.int64(buf[at + 1])
    q = at + 2
    if b < 0x80:
        seq_len = b
    elif b == 0x81:
        seq_len = np.int64(buf[q])
        q += 1
    elif b == 0x82:
        seq_len = (np.int64(buf[q]) << 8) | np.int64(buf[q + 1])
        q += 2
    else:
        return False
    if seq_len != length - (q - at) or q + 4 > at + n:
        return False
    if buf[q] != 0x02 or buf[q + 1] != 0x01:
        return False
    v = buf[q + 2]
    nxt = buf[q + 3]
    return ((v == 0 or v == 1) and nxt == 0x04) or (v == 3 and nxt == 0x30)


@njit(cache=True, nogil=True)
def _text(buf, at, n) -> np.int64:
    """The text protocols: the first line after leading white space (as Zeek's ``^[[:space:]]*``)."""
    q = at
    end = at + n
    while q < end and _is_space(buf[q]):
        q += 1
    m = end - q
    if m < 3 or not TEXT_FIRST[buf[q]]:
        return SIG_NONE
    c0 = buf[q]
    if METHOD_FIRST[c0]:
        for k in range(METHOD_SPANS.shape[0]):
            s = METHOD_SPANS[k, 0]
            ln = METHOD_SPANS[k, 1]
            if m >= ln and buf[q] == METHOD_BYTES[s]:
                ok = True
                for j in range(1, ln):
                    if buf[q + j] != METHOD_BYTES[s + j]:
                        ok = False
                        break
                if ok:
                    return SIG_HTTP_REQUEST
    if m >= 6 and c0 == 72 and buf[q + 1] == 84 and buf[q + 2] == 84 and buf[q + 3] == 80 \
            and buf[q + 4] == 47 and 48 <= buf[q + 5] <= 57:                              # HTTP/d
        return SIG_HTTP_REPLY
    if m >= 6 and _upper(c0) == 83 and _upper(buf[q + 1]) == 83 and _upper(buf[q + 2]) == 72 \
            and buf[q + 3] == 45 and (buf[q + 4] == 49 or buf[q + 4] == 50) and buf[q + 5] == 46:   # SSH-1. SSH-2.
        return SIG_SSH
    if m >= 4 and c0 == 50 and buf[q + 1] == 50 and buf[q + 2] == 48 and (_is_space(buf[q + 3]) or buf[q + 3] == 45):
        return SIG_REPLY_220
    if c0 == 43 and buf[q + 1] == 79 and buf[q + 2] == 75:                                # +OK
        return SIG_POP3_OK
    if m >= 5 and (_word(buf, q, m, 72, 69, 76, 79) or _word(buf, q, m, 69, 72, 76, 79)):   # HELO EHLO
        return SIG_SMTP_HELLO
    if m >= 6 and _word(buf, q, m, 78, 73, 67, 75) and buf[q + 4] == 32 and buf[q + 5] > 32:  # NICK x
        return SIG_IRC_CLIENT
    if m >= 5 and _word(buf, q, m, 85, 83, 69, 82) and _is_space(buf[q + 4]):              # USER
        # IRC's "USER name mode unused :real name" has 4 words, the last after " :"
        words = 0
        prev_space = True
        last = min(end, q + FIRST_LINE)
        for j in range(q + 5, last):
            c = buf[j]
            if c == 13 or c == 10:
                break
            if c == 58 and prev_space and words >= 3:
                return SIG_IRC_CLIENT
            if c == 32:
                prev_space = True
            else:
                if prev_space:
                    words += 1
                prev_space = False
        return SIG_USER
    if m >= 4 and (_word(buf, q, m, 65, 80, 79, 80) or _word(buf, q, m, 67, 65, 80, 65)
                   or _word(buf, q, m, 65, 85, 84, 72) or _word(buf, q, m, 83, 84, 76, 83)):   # APOP CAPA AUTH STLS
        return SIG_POP3_COMMAND
    if c0 == 58 and q + 2 < end and buf[q + 1] > 32:                                      # ":prefix "
        last = min(end, q + FIRST_LINE)
        for j in range(q + 2, last):
            c = buf[j]
            if c == 32:
                return SIG_IRC_SERVER
            if c < 33 or c > 126:
                break
    return SIG_NONE


@njit(cache=True, nogil=True)
def payload_class(buf, at, n, length, is_tcp) -> np.int64:
    """The payload class (SIG_*) of a first payload: ``n`` bytes at ``buf[at]`` are captured of
    the ``length`` bytes the packet carried (``n`` <= ``length``). Never SIG_NONE."""
    if n <= 0:
        return SIG_OTHER
    if is_tcp:
        c = _tls(buf, at, n)
        if c != SIG_NONE:
            return c
        c = _text(buf, at, n)
        if c != SIG_NONE:
            return c
        # DNS over TCP: a 2-byte message length, then the message
        if n >= 19 and ((np.int64(buf[at]) << 8) | np.int64(buf[at + 1])) >= 17 and _dns(buf, at + 2, n - 2):
            return SIG_DNS
        return SIG_OTHER
    if _dns(buf, at, n):
        return SIG_DNS
    if n >= 240 and buf[at + 236] == 0x63 and buf[at + 237] == 0x82 and buf[at + 238] == 0x53 \
            and buf[at + 239] == 0x63 and (buf[at] == 1 or buf[at] == 2):
        return SIG_DHCP
    if _snmp(buf, at, n, length):
        return SIG_SNMP
    if n >= 20:
        code = buf[at]
        rlen = (np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3])
        if (1 <= code <= 5 or 11 <= code <= 13) and rlen == length and 20 <= rlen <= 4096:
            return SIG_RADIUS
    return SIG_OTHER
