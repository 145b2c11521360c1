"""Trainer-side reader of ``device_bag@1``: captures through the sensor's own extractor with
each connection's first ``bag_packets`` packets recorded, then the daemon's
:class:`~malsensor.daemon.views.device_bag.DeviceBags` over the connection batches in the order
the daemon's pipeline hands them out, closed at the end of the file as a replay closes it.
One row per (source MAC, window); the labeller sees the MAC as ``src_mac`` (``--macs`` labels
a device by it) and the folder name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from .captures import capture_batches, is_capture
from .table import DataStats, Part


def device_bags(path: Path, options, semantics: str = "malsensor") -> tuple[np.ndarray, np.ndarray]:
    """``(keys, x)`` of every device window of one capture (``options``: DeviceBagOptions)."""
    from malsensor.daemon.views.device_bag import DeviceBags

    bags = DeviceBags(options)
    got = [bags.feed(cb.records, cb.seq) for cb in capture_batches(path, semantics, seq_packets=options.bag_packets)]
    got.append(bags.finish())
    return np.concatenate([k for k, _ in got]), np.concatenate([x for _, x in got])


class DeviceBagReader:
    description = "pcap, pcapng (device windows)"

    def file_type(self, path: Path) -> str | None:
        return "capture" if is_capture(path) else None

    def read(self, path: Path, file_type: str, view: ViewInfo, opts, stats: DataStats) -> Part:
        from malsensor.daemon.outputs.rows import format_mac
        from malsensor.daemon.views.device_bag import DEVICE_BAG

        keys, x = device_bags(Path(path), DEVICE_BAG.options_for(view), opts.semantics)
        stats.rows_read += int(x.shape[0])
        macs = [format_mac(int(m)) for m in keys["mac"].tolist()]
        return Part(str(path), x.astype(np.float64), None, macs, [None] * len(macs), [None] * len(macs),
                    [None] * len(macs), keys["start_ns"].astype(np.float64) / 1e9, folder_label=Path(path).parent.name,
                    is_capture=True, semantics=opts.semantics)


READER = DeviceBagReader()
