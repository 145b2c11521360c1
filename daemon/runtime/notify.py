"""sd_notify(3) messages to systemd, through systemd-python.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op. The watchdog interval
comes from ``WATCHDOG_USEC`` (only when ``WATCHDOG_PID`` is unset or names this process,
as sd_watchdog_enabled(3) says); the service pings at half of it, and only when its
health check passes.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("malsensor.notify")


def _send_raw(message: str) -> bool:
    """Fallback used only if systemd-python is missing: one datagram to NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(message.encode(), addr)
    return True


try:
    from systemd.daemon import notify as _sd_notify
except ImportError:  # pragma: no cover - systemd-python is a dependency
    _sd_notify = None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds (what MONOTONIC_USEC= expects)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_usec = 0
        wd = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if wd and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_usec = max(int(wd), 0)
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r (not a number)", wd)
        self.sent: list[str] = []  # last messages (debugging); bounded
        self.failures = 0

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the systemd timeout), or None when not enabled."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, *fields: str) -> bool:
        if not self.enabled:
            return False
        msg = "\n".join(fields)
        try:
            ok = _sd_notify(msg) if _sd_notify is not None else _send_raw(msg)
        except OSError as e:
            ok = False
            log.debug("sd_notify failed: %s", e)
        if not ok:
            self.failures += 1
        self.sent.append(msg)
        del self.sent[:-32]
        return bool(ok)

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *( [f"STATUS={status}"] if status else []))

    def reloading(self, status: str = "reloading configuration") -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
