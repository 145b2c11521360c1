"""Events of entity ``device`` (``event_type`` "device"): one per source MAC and window, the
pooled verdict of its connections (daemon/runtime/devices.py)::

    {"timestamp": (the window's last connection end), "event_type": "device", "host": ...,
     "prediction": {... "trigger": "window:POOL"},
     "device": {"mac": "aa:bb:..", "connections": N, "window_start": ISO, "window_end": ISO,
                "first_seen": ISO, "last_seen": ISO}}
"""
from __future__ import annotations

from typing import Any

from .events import JsonFormatter, format_time, register_formatter
from .rows import format_mac


class DeviceFormatter(JsonFormatter):
    entity = "device"
    event_type = "device"

    def time_ns(self, pb, j: int) -> int:
        return int(pb.keys[j]["last_ns"])

    def fields(self, pb, j: int, features: bool) -> dict[str, Any]:
        k = pb.keys[j]
        return {"device": {"mac": format_mac(int(k["mac"])), "connections": int(k["connections"]),
                           "window_start": format_time(int(k["start_ns"])),
                           "window_end": format_time(int(k["end_ns"])),
                           "first_seen": format_time(int(k["first_ns"])),
                           "last_seen": format_time(int(k["last_ns"]))}}


register_formatter(DeviceFormatter())
