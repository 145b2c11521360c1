"""IP protocol numbers and names: one table for filters, configuration and events.

Filter and configuration names (``tcp``, ``icmp6``...) map to numbers; events show a
number as Suricata's EVE does (``TCP``, ``IPv6-ICMP``...), and a number without a name
as its decimal text.
"""
from __future__ import annotations

# number, the name events show, the names filters accept (in the order messages list them)
_TABLE = (
    (6, "TCP", ("tcp",)),
    (17, "UDP", ("udp",)),
    (1, "ICMP", ("icmp",)),
    (58, "IPv6-ICMP", ("icmp6", "icmpv6")),
    (47, "GRE", ("gre",)),
    (132, "SCTP", ("sctp",)),
    (50, "ESP", ("esp",)),
    (51, "AH", ("ah",)),
    (2, "IGMP", ()),
)

PROTOCOL_NAMES: dict[str, int] = {alias: num for num, _, aliases in _TABLE for alias in aliases}
"""Filter/configuration name -> protocol number."""

EVE_NAMES: dict[int, str] = {num: name for num, name, _ in _TABLE}
"""Protocol number -> the name an event shows."""


def proto_name(p: int) -> str:
    return EVE_NAMES.get(p, str(p))


def protocol_number(name: str) -> int:
    """A protocol name or number 0-255 -> its number (KeyError for anything else)."""
    s = str(name).strip().lower()
    if s.isdigit() and 0 <= int(s) <= 255:
        return int(s)
    return PROTOCOL_NAMES[s]


def parse_protocols(spec: str | None) -> frozenset[int] | None:
    """``"tcp,udp"`` -> {6, 17}; names or numbers; None/empty means everything."""
    if not spec:
        return None
    out = set()
    for part in spec.split(","):
        try:
            out.add(protocol_number(part))
        except KeyError:
            raise ValueError(f"unknown protocol {part.strip().lower()!r} in filter (allowed: "
                             f"{', '.join(PROTOCOL_NAMES)} or a protocol number 0-255)") from None
    return frozenset(out)
