"""Network interfaces for live capture: names to indexes, and a netlink watcher.

The capture follows interfaces *by name*: a sensor configured for ``eth1`` keeps
capturing when ``eth1`` goes down and up, and when it is deleted and created again
(new index: a VM's tap device, a USB NIC, a veth of a restarted container). The
:class:`LinkWatcher` thread subscribes to rtnetlink link events (``RTMGRP_LINK``)
with pyroute2's select-compatible ``IPRSocket`` and reports each watched name's
state to a callback: present or not, index, administratively up or down, and the
hardware type that decides the link-layer header.
"""
from __future__ import annotations

import errno
import logging
import select
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from .batch import LINKTYPE_ETHERNET, LINKTYPE_RAW

log = logging.getLogger("malsensor.capture")

RTMGRP_LINK = 1
IFF_UP = 0x1

# ARPHRD_* (include/uapi/linux/if_arp.h) -> link type of frames on a SOCK_RAW packet socket
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_RAWIP = 519
ARPHRD_NONE = 0xFFFE
ARPHRD_LINKTYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,  # the loopback device carries zeroed Ethernet headers
    ARPHRD_RAWIP: LINKTYPE_RAW,
    ARPHRD_NONE: LINKTYPE_RAW,  # tun, wireguard: IP packets without a link header
}


@dataclass(frozen=True, slots=True)
class LinkState:
    """One interface as netlink reports it."""

    name: str
    index: int
    up: bool
    """IFF_UP (administratively up). A socket can be bound and receives once the carrier
    is there; bound while down it would only get ENETDOWN."""
    arphrd: int

    @property
    def linktype(self) -> int | None:
        """LINKTYPE_* of captured frames, None when this hardware type is not supported."""
        return ARPHRD_LINKTYPE.get(self.arphrd)


def _state_from_msg(msg) -> LinkState | None:
    name = msg.get_attr("IFLA_IFNAME")
    if name is None:
        return None
    return LinkState(name=name, index=int(msg["index"]), up=bool(msg["flags"] & IFF_UP),
                     arphrd=int(msg["ifi_type"]))


def lookup(name: str) -> LinkState | None:
    """The current state of interface ``name`` in this thread's namespace, None if absent."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        try:
            msgs = ipr.get_links(idx[0])
        except Exception:  # vanished between the two calls
            return None
    for msg in msgs:
        st = _state_from_msg(msg)
        if st is not None and st.name == name:
            return st
    return None


class LinkWatcher(threading.Thread):
    """Report the state of watched interface names to ``on_change(name, state_or_None)``.

    The callback runs in this thread: first once per name with the state found at start
    (None when the interface does not exist yet), then on every netlink event that
    changes a watched name's presence, index or up flag. Events for other interfaces are
    ignored. A rename counts as the old name disappearing (and the new one appearing, if
    watched). If the netlink socket overflows (ENOBUFS: events were lost) the watcher
    opens a new socket and re-reads every watched interface.
    """

    def __init__(self, names: Iterable[str], on_change: Callable[[str, LinkState | None], None],
                 poll_interval: float = 0.2) -> None:
        super().__init__(name="malsensor-linkwatch", daemon=True)
        self.names = tuple(dict.fromkeys(names))
        self.on_change = on_change
        self.poll_interval = poll_interval
        self._halt = threading.Event()
        self._known: dict[str, LinkState | None] = {}
        self.started_ok = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()

    def _report(self, name: str, state: LinkState | None) -> None:
        old = self._known.get(name, "unset")
        if old == state:
            return
        self._known[name] = state
        try:
            self.on_change(name, state)
        except Exception:  # a failing handler must not stop the watching
            log.exception("handling a link change of %s failed", name)

    def _open(self):
        from pyroute2 import IPRSocket

        sock = IPRSocket()
        sock.bind(groups=RTMGRP_LINK)
        return sock

    def _resync(self) -> None:
        for name in self.names:
            self._report(name, lookup(name))

    def run(self) -> None:
        try:
            sock = self._open()  # subscribe before reading states: no event falls in between
        except BaseException as exc:
            self.error = exc
            self.started_ok.set()
            return
        try:
            self._resync()
            self.started_ok.set()
            while not self._halt.is_set():
                ready, _, _ = select.select([sock], [], [], self.poll_interval)
                if not ready:
                    continue
                try:
                    msgs = sock.get()
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    log.warning("netlink link events overflowed; re-reading interface states")
                    sock.close()
                    sock = self._open()
                    self._resync()
                    continue
                for msg in msgs:
                    self._handle(msg)
        except BaseException as exc:  # pragma: no cover - reported to the owner
            self.error = exc
            log.exception("link watcher failed")
        finally:
            self.started_ok.set()
            sock.close()

    def _handle(self, msg) -> None:
        event = msg.get("event")
        if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
            return
        st = _state_from_msg(msg)
        if st is None:
            return
        # a rename: the index we knew under a watched name now carries another name
        for name, known in list(self._known.items()):
            if known is not None and known.index == st.index and name != st.name:
                self._report(name, None)
        if st.name not in self.names:
            return
        if event == "RTM_DELLINK":
            known = self._known.get(st.name)
            if known is not None and known.index == st.index:
                self._report(st.name, None)
            return
        self._report(st.name, st)
