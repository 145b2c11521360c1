"""Capture files (pcap, pcapng, optionally gzip) through the daemon's own extractor.

The trainer calls :func:`malsensor.daemon.pipeline.extract_file` in-process: the
same decode, tracking and view code the sensor runs, so there is no train/serve skew.

``conn_series@1`` (lookback ``L``): row ``t`` holds the 17 ``conn`` features of
the connection after its first ``SERIES_POINTS[t]`` packets (both directions),
or its final features when it ended with fewer packets. The tracker emits these
as snapshots (``TrackerConfig.snapshot_packets``); a model that reads the series
can classify a connection as soon as it reaches ``SERIES_POINTS[L-1]`` packets
(early trigger) or ends, whichever comes first.

``conn_ctx@1``: the 17 features plus the context columns of
:class:`malsensor.daemon.views.conn_ctx.ConnContext`, fed the capture's finished
connections in order (what one capture thread of the daemon does in a replay);
``conn_profile@1`` the same with its source profiles (the view's ``context``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.views.conn_series import SERIES_POINTS, SeriesAssembler  # noqa: F401 (re-exported)

from ..errors import TrainError
from .table import DataStats, Part

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")


def is_capture(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in CAPTURE_SUFFIXES)


def capture_batches(path: Path, semantics: str, include_snapshots: bool = False, **tracking):
    """The connection batches of one capture through the daemon's own extractor, with the
    tracker lifecycle of ``semantics`` as the daemon's [tracking] and `malsensor extract` take
    it (``tracking``: TrackerConfig overrides such as ``snapshot_packets``, ``seq_packets``).
    Every capture reader goes through here: TrackerConfig() gave Argus semantics the
    malsensor lifecycle (369 connections of stratosphere_scanning_host.pcap where the daemon
    finds 321). A capture the extractor rejects becomes a TrainError naming the file."""
    try:
        from malsensor.daemon.flows.config import TrackerConfig
        from malsensor.daemon.pipeline import extract_file
    except ImportError as e:  # pragma: no cover - the daemon is part of this distribution
        raise TrainError(f"{path}: the capture extractor is not available ({e})") from None
    cfg = TrackerConfig.for_semantics(semantics, **tracking)
    try:
        yield from extract_file(path, tracking=cfg, semantics=semantics, include_snapshots=include_snapshots)
    except TrainError:
        raise
    except Exception as e:  # keep the extractor's message
        raise TrainError(f"{path}: cannot extract connections ({type(e).__name__}: {e})") from None


def read_capture_file(path: Path, view: ViewInfo, stats: DataStats, semantics: str = "malsensor",
                      lookback: int = 0) -> Part:
    """Connections of one capture as a :class:`Part` (features in ``view``; with ``lookback``,
    each connection's ``conn_series`` of that length)."""
    from malsensor.daemon.flows import layout as L

    series = lookback > 0
    if series and lookback > len(SERIES_POINTS):
        raise TrainError(f"conn_series lookback {lookback} exceeds the {len(SERIES_POINTS)} snapshot points "
                         f"{SERIES_POINTS}")
    snapshot_packets = tuple(SERIES_POINTS[:lookback]) if series else ()
    recs, fts = [], []
    for cb in capture_batches(path, semantics, include_snapshots=series, snapshot_packets=snapshot_packets):
        recs.append(cb.records)
        fts.append(cb.features)
    if recs:
        rec = np.concatenate(recs)
        feat = np.concatenate(fts)
    else:
        rec = np.zeros((0, L.N_COLS), dtype=np.int64)
        feat = np.zeros((0, len(view.columns)), dtype=np.float64)
    end_code = rec[:, L.END] & 0xFF
    final = end_code != L.END_SNAPSHOT
    ends = rec[final]
    if series:
        # the daemon's assembler, then back into the order of the connections' final rows
        got_rec, got_x = SeriesAssembler(lookback, snapshot_packets).feed(rec, feat)
        pos = {int(s): i for i, s in enumerate(ends[:, L.SERIAL])}
        x = np.empty((ends.shape[0], lookback, feat.shape[1]), dtype=np.float64)
        x[[pos[int(s)] for s in got_rec[:, L.SERIAL]]] = got_x
    else:
        from malsensor.daemon.views.base import get_view
        from malsensor.daemon.views.conn_ctx import ConnCtxView

        served = get_view(view.ref)
        # conn_ctx@1, conn_profile@1: the daemon's own context code, connections in the order the
        # tracker finished them
        x = served.context().rows(ends, feat[final]) if isinstance(served, ConnCtxView) else feat[final]
    stats.rows_read += int(ends.shape[0])
    return capture_part(path, ends, x, semantics)


def capture_part(path: Path, ends: np.ndarray, x: np.ndarray, semantics: str) -> Part:
    """A capture's rows ``x`` with what labellers need from their flow records ``ends``."""
    from malsensor.daemon.flows import layout as L
    from malsensor.daemon.outputs.rows import format_ip, format_mac

    src_mac = [format_mac(int(m)) for m in ends[:, L.SRC_MAC]]
    dest_mac = [format_mac(int(m)) for m in ends[:, L.DST_MAC]]
    src_ip = [format_ip(int(h), int(lo)) for h, lo in zip(ends[:, L.SRC_HI], ends[:, L.SRC_LO])]
    dest_ip = [format_ip(int(h), int(lo)) for h, lo in zip(ends[:, L.DST_HI], ends[:, L.DST_LO])]
    ts = ends[:, L.FIRST_TS] / 1e9
    return Part(str(path), x.astype(np.float64), None, src_mac, dest_mac, src_ip, dest_ip, ts,
                folder_label=path.parent.name, is_capture=True, semantics=semantics)
