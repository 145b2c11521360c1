"""Trainer-side reader of ``pkt_seq@1``: captures through the sensor's own pipeline.

The tracker keeps each connection's first N packets (``TrackerConfig.seq_packets``, the
recorder of daemon/flows/seq.py) exactly as the daemon does when a model reads this view;
the rows are the final records' sequences, in the order the connections ended. Tables and
JSONL rows hold one row of features per connection, not packets: captures only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from .captures import capture_batches, capture_part, is_capture
from .table import DataStats, Part


def read_pkt_seq(path: Path, n_packets: int, semantics: str = "malsensor") -> tuple[np.ndarray, np.ndarray]:
    """(final flow records (n, N_COLS), float32 sequences (n, n_packets, 7)) of one capture."""
    from malsensor.daemon.flows import layout as L
    from malsensor.daemon.flows.seq import N_SEQ_COLUMNS

    recs, seqs = [], []
    for cb in capture_batches(path, semantics, seq_packets=int(n_packets)):
        recs.append(cb.records)
        seqs.append(cb.seq)
    if not recs:
        return np.zeros((0, L.N_COLS), dtype=np.int64), np.zeros((0, n_packets, N_SEQ_COLUMNS), dtype=np.float32)
    return np.concatenate(recs), np.concatenate(seqs)


class PktSeqReader:
    description = "pcap, pcapng (optionally .gz)"

    def file_type(self, path: Path) -> str | None:
        return "capture" if is_capture(path) else None

    def read(self, path: Path, file_type: str, view: ViewInfo, opts, stats: DataStats) -> Part:
        ends, x = read_pkt_seq(path, int(view.shape[0]), opts.semantics)
        stats.rows_read += int(ends.shape[0])
        return capture_part(path, ends, x.astype(np.float64), opts.semantics)


PKT_SEQ_READER = PktSeqReader()
