"""Trainer-side reader of ``host_volume@1``: captures through the sensor's own extractor, then
the daemon's :class:`~malsensor.daemon.views.host_volume.HostVolumeBuilder` over the
connection batches in the order the daemon's pipeline hands them out, closed at the end of
the file as a replay closes it. One volume per (host, window span); the labeller sees the host
as ``src_ip`` (``--label-mode ip`` labels a volume by its host's address) and the folder name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from .captures import capture_batches, is_capture
from .table import DataStats, Part


def host_volumes(path: Path, options, semantics: str = "malsensor") -> tuple[np.ndarray, np.ndarray]:
    """``(keys, x)`` of every volume of one capture (``options``: HostVolumeOptions)."""
    from malsensor.daemon.views.host_volume import W, HostVolumeBuilder, key_dtype

    b = HostVolumeBuilder(options)
    got = []
    for cb in capture_batches(path, semantics):
        got.extend(b.feed(cb.records, cb.features))
    got.extend(b.finish())
    if not got:
        return (np.zeros(0, key_dtype(options.windows, options.connections)),
                np.zeros((0, options.windows, options.connections, W), np.float32))
    return np.concatenate([k for k, _ in got]), np.concatenate([x for _, x in got])


class HostVolumeReader:
    description = "pcap, pcapng (host volumes)"

    def file_type(self, path: Path) -> str | None:
        return "capture" if is_capture(path) else None

    def read(self, path: Path, file_type: str, view: ViewInfo, opts, stats: DataStats) -> Part:
        from malsensor.daemon.views.host_volume import HOST_VOLUME

        o = view.options if getattr(view, "options", None) is not None else HOST_VOLUME.options_for(view)
        keys, x = host_volumes(Path(path), o, opts.semantics)
        stats.rows_read += int(x.shape[0])
        hosts = [str(h) for h in keys["host"].tolist()]
        return Part(str(path), x.astype(np.float64), None, None, None, hosts, [None] * len(hosts),
                    keys["end_ns"].astype(np.float64) / 1e9, folder_label=Path(path).parent.name, is_capture=True,
                    semantics=opts.semantics)


READER = HostVolumeReader()
