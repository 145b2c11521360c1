"""Protocol names as Argus prints them (UNSW-NB15's ``proto`` column) -> numbers.

The daemon's ``proto`` feature is the IP protocol number. UNSW-NB15 holds Argus's
protocol *names*; this is Argus's own table (``ip_proto_string`` in argus-clients,
index = IANA protocol number, checked against the table inside Debian's ``ra``).
Names Argus uses for more than one number map to the lowest (``any`` = 61).
Two names are not IP protocols: ``arp`` maps to its EtherType 0x0806 = 2054 and
``unas`` ("unassigned") to 255 (IANA reserved), so neither collides with a real one.
"""
from __future__ import annotations

_ARGUS_TABLE = (
    "ip icmp igmp ggp ipnip st2 tcp cbt egp igp bbn-rcc nvp pup argus emcon xnet chaos udp mux dcn "
    "hmp prm xns-idp trunk-1 trunk-2 leaf-1 leaf-2 rdp irtp iso-tp4 netblt mfe-nsp merit-inp sep "
    "3pc idpr xtp ddp idpr-cmtp tp++ il ipv6 sdrp ipv6-route ipv6-frag idrp rsvp gre mhrp bna esp ah "
    "i-nlsp swipe narp mobile tlsp skip ipv6-icmp ipv6-no ipv6-opts any cftp any sat-expak kryptolan "
    "rvd ippc any sat-mon visa ipcv cpnx cphb wsn pvp br-sat-mon sun-nd wb-mon wb-expak iso-ip vmtp "
    "secure-vmtp vines ttp nsfnet-igp dgp tcf eigrp ospf sprite-rpc larp mtp ax.25 ipip micp "
    "aes-sp3-d etherip encap pri-enc gmtp ifmp pnni pim aris scps qnx a/n ipcomp snp compaq-peer "
    "ipx-n-ip vrrp pgm zero l2tp ddx iatp stp srp uti smp sm ptp isis fire crtp crudp sccopmce iplt "
    "sps pipe sctp fc ib"
).split()

PROTO_NUMBERS: dict[str, int] = {}
for _num, _name in enumerate(_ARGUS_TABLE):
    PROTO_NUMBERS.setdefault(_name, _num)
# older Argus spellings and common aliases
PROTO_NUMBERS.update({"st": 5, "ucl": 7, "bbn-rcc-mon": 10, "nvp-ii": 11, "dcn-meas": 19, "igrp": 88,
                      "ospfigp": 89, "hopopt": 0, "ipv4": 4, "arp": 2054, "unas": 255})


def proto_number(name: str) -> int | None:
    """The number for an Argus protocol name or a decimal string; None if unknown."""
    s = name.strip().lower()
    if s.isdigit():
        return int(s)
    return PROTO_NUMBERS.get(s)
