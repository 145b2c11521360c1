"""Events of entity ``device`` (``event_type`` "device"): one per source MAC and window, the
pooled verdict of its connections (daemon/runtime/devices.py) or the verdict of a model that
reads the device's window whole (``device_bag@1``, trigger "window")::

    {"timestamp": (the window's last connection end), "event_type": "device", "host": ...,
     "prediction": {... "trigger": "window:POOL"},
     "device": {"mac": "aa:bb:..", "connections": N, "window_start": ISO, "window_end": ISO,
                "first_seen": ISO, "last_seen": ISO}}

With ``features`` on, a ``device_bag@1`` event adds ``"bag_bits_set"``: how many of the bag's
bits its packets set.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .events import JsonFormatter, format_time, register_formatter
from .rows import format_mac

# what identifies a device event: the MAC, the window, how many connections it holds
DEVICE_KEY = np.dtype([("mac", np.int64), ("start_ns", np.int64), ("end_ns", np.int64),
                       ("first_ns", np.int64), ("last_ns", np.int64), ("connections", np.int64)])


class DeviceFormatter(JsonFormatter):
    entity = "device"
    event_type = "device"

    def time_ns(self, pb, j: int) -> int:
        return int(pb.keys[j]["last_ns"])

    def fields(self, pb, j: int, features: bool) -> dict[str, Any]:
        k = pb.keys[j]
        device = {"mac": format_mac(int(k["mac"])), "connections": int(k["connections"]),
                  "window_start": format_time(int(k["start_ns"])), "window_end": format_time(int(k["end_ns"])),
                  "first_seen": format_time(int(k["first_ns"])), "last_seen": format_time(int(k["last_ns"]))}
        if features and pb.detail.ndim == 2 and pb.detail.shape[1] == 1:
            device["bag_bits_set"] = int(pb.detail[j, 0])
        return {"device": device}


register_formatter(DeviceFormatter())
