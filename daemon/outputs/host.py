"""Events of entity ``host`` (``event_type`` "host"): one per classified volume.

* a /proc volume (``proc_volume@1``): its time span and the processes that weigh most (pid,
  comm, their top metrics), under ``proc``;
* a network volume (``host_volume@1``): the local host (address or MAC), its time span and the
  connections with the most bytes, under ``net``.
"""
from __future__ import annotations

from typing import Any

from ..proc.volume import top_processes
from .events import JsonFormatter, register_formatter

TOP_PROCESSES = 5
TOP_METRICS = 3


class HostFormatter(JsonFormatter):
    entity = "host"
    event_type = "host"

    def time_ns(self, pb, j: int) -> int:
        return int(pb.keys[j]["end_ns"])

    def fields(self, pb, j: int, features: bool) -> dict[str, Any]:
        if "peer_hi" in pb.keys.dtype.names:
            return self.net_fields(pb, j)
        k = pb.keys[j]
        x = pb.detail[j]
        top = []
        for row, metrics in top_processes(x, TOP_PROCESSES, TOP_METRICS):
            entry = {"pid": int(k["pid"][row]), "comm": str(k["comm"][row]), "row": row}
            # a process that did nothing in the window (a sleeping child) still fills a top row when
            # fewer processes were busy: say so rather than give an empty reason
            entry["reason"] = ", ".join(f"{name}={value:.4g}" for name, value in metrics) or "no activity in the window"
            if features:
                entry["metrics"] = {name: value for name, value in metrics}
            top.append(entry)
        return {"proc": {"start_ns": int(k["start_ns"]), "end_ns": int(k["end_ns"]),
                         "processes": int(k["processes"]), "steps": int(x.shape[0]), "top": top}}


    def net_fields(self, pb, j: int) -> dict[str, Any]:
        from ..views.host_volume import top_connections

        k = pb.keys[j]
        x = pb.detail[j]
        return {"net": {"host": str(k["host"]), "start_ns": int(k["start_ns"]), "end_ns": int(k["end_ns"]),
                        "connections": int(k["connections"]), "windows": int(x.shape[0]),
                        "top": top_connections(k, x, TOP_PROCESSES)}}


register_formatter(HostFormatter())
