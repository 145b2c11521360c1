"""CSV rows: UNSW-NB15 (Argus columns) or a CSV with the view's own column names.

UNSW-NB15 columns map onto the 17 ``conn`` features as below (Argus semantics:
seconds, frame bytes, last TTL, bit/s, milliseconds for ``sinpkt``/``dinpkt``).
The values are copied unchanged: a model trained on UNSW expects the daemon's
``argus`` semantics, which is recorded in the artifact (``view.semantics``).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from malsensor.daemon.artifact import ViewInfo

from ..errors import TrainError
from malsensor.daemon.views.context import STATE_NAMES
from malsensor.daemon.views.service import SERVICE_NAMES

from .protocols import proto_number
from .table import DataStats, Part

UNSW_COLUMNS = {
    "dur": "dur", "proto": "proto", "s_bytes_sum": "sbytes", "d_bytes_sum": "dbytes",
    "s_ttl_mean": "sttl", "d_ttl_mean": "dttl", "s_load": "sload", "d_load": "dload",
    "s_pkt_cnt": "spkts", "d_pkt_cnt": "dpkts", "s_bytes_mean": "smean", "d_bytes_mean": "dmean",
    "s_iat_mean": "sinpkt", "d_iat_mean": "dinpkt", "tcp_rtt": "tcprtt", "syn_ack": "synack",
    "ack_dat": "ackdat",
}
# conn_ctx@1's coded columns (Argus state names, UNSW service names): text -> code; a name
# outside the list is code 0 ("-"), as the daemon codes what it cannot name
TEXT_CODES = {"state": {n: i for i, n in enumerate(STATE_NAMES)},
              "service": {n: i for i, n in enumerate(SERVICE_NAMES)}}
DEFAULT_LABEL_COLUMNS = ("label", "s_mac")
_MISSING = frozenset(("", "nan", "na", "null", "none", "?"))


def read_csv(path: Path, view: ViewInfo, label_col: str | None, stats: DataStats, skip_bad: bool) -> Part:
    """Read one CSV file (header line required) into a :class:`Part`."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise TrainError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        undecodable: dict[int, int] = {}  # physical line -> offset of its first non-UTF-8 byte
        reader = csv.reader(_utf8_lines(f, undecodable))
        try:
            header = next(reader)
        except StopIteration:
            raise TrainError(f"{path}: empty file (no header line)") from None
        except csv.Error as e:
            raise TrainError(f"{path}:1: cannot parse the header ({e})") from None
        if undecodable:
            line, off = next(iter(undecodable.items()))
            raise TrainError(f"{path}:{line}: the header is not UTF-8 (byte {off} of the line)")
        header = [h.strip() for h in header]
        pos = {h: i for i, h in enumerate(header)}
        if all(c in pos for c in view.columns):
            names = list(view.columns)
            semantics = None
        elif all(c in pos for c in UNSW_COLUMNS.values()) and all(UNSW_COLUMNS.get(c, c) in pos
                                                                  for c in view.columns):
            names = [UNSW_COLUMNS.get(c, c) for c in view.columns]   # conn_ctx's ct_*, state, service as is
            semantics = "argus"
        else:
            missing = [c for c in view.columns if c not in pos]
            raise TrainError(f"{path}:1: the header has neither the {len(view.columns)} feature columns "
                             f"(missing {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}) nor the "
                             f"UNSW-NB15 columns ({', '.join(UNSW_COLUMNS.values())})")
        used = [*names, *(c for c in (label_col or next((c for c in DEFAULT_LABEL_COLUMNS if c in pos), None),
                                       "src_mac" if "src_mac" in pos else "s_mac") if c in pos)]
        for n in used:  # a duplicated column silently took its last copy
            if header.count(n) > 1:
                fields_at = [str(i + 1) for i, h in enumerate(header) if h == n]
                raise TrainError(f"{path}:1: column {n!r} appears {len(fields_at)} times (fields "
                                 f"{', '.join(fields_at)}): which one holds the data is ambiguous")
        cols = [pos[n] for n in names]
        proto_j = view.columns.index("proto") if "proto" in view.columns else -1
        coded = {j: TEXT_CODES[c] for j, c in enumerate(view.columns) if c in TEXT_CODES}
        if label_col is not None and label_col not in pos:
            raise TrainError(f"{path}:1: no label column {label_col!r} (columns: {', '.join(header)})")
        lab_name = label_col or next((c for c in DEFAULT_LABEL_COLUMNS if c in pos), None)
        lab_i = pos[lab_name] if lab_name else None
        mac_i = pos.get("src_mac", pos.get("s_mac"))
        rows: list[list[float]] = []
        labels: list[str | None] = []
        macs: list[str | None] = []
        width = len(header)
        lineno = 1
        while True:
            first = lineno + 1
            try:
                rec = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                lineno = reader.line_num
                stats.rows_read += 1
                stats.bad(f"{path}:{lineno}", f"cannot parse ({e})", skip_bad)
                continue
            lineno = reader.line_num
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            stats.rows_read += 1
            where = f"{path}:{first}" if first == lineno else f"{path}:{first}-{lineno}"
            if undecodable:
                bad_line = next((n for n in range(first, lineno + 1) if n in undecodable), None)
                if bad_line is not None:
                    stats.bad(f"{path}:{bad_line}", f"not UTF-8 (byte {undecodable.pop(bad_line)} of the line)",
                              skip_bad)
                    continue
            if len(rec) != width:
                stats.bad(where, f"{len(rec)} fields, the header has {width}", skip_bad)
                continue
            vals: list[float] = []
            err = None
            for j, i in enumerate(cols):
                s = rec[i].strip()
                if s.lower() in _MISSING:
                    vals.append(math.nan)
                    continue
                try:
                    vals.append(float(s))
                except ValueError:
                    if j == proto_j and (num := proto_number(s)) is not None:
                        vals.append(float(num))
                    elif j in coded:     # conn_ctx's state and service: names -> codes, unknown -> 0 ("-")
                        vals.append(float(coded[j].get(s, 0)))
                    else:
                        what = "unknown protocol name" if j == proto_j else "not a number"
                        err = f"column {header[i]!r} is {s!r}: {what}"
                        break
            if err:
                stats.bad(where, err, skip_bad)
                continue
            rows.append(vals)
            if lab_i is not None:
                lab = rec[lab_i].strip()
                labels.append(lab if lab else None)
            macs.append(rec[mac_i].strip() if mac_i is not None else None)
    x = np.asarray(rows, dtype=np.float64).reshape(-1, len(view.columns))
    return Part(str(path), x, labels if lab_i is not None else None, macs if mac_i is not None else None,
                semantics=semantics)


def _utf8_lines(f, undecodable: dict[int, int]):
    """The file's lines as text, decoded one by one: a byte that is not UTF-8 spoils only its
    line (noted in ``undecodable``), and every line number stays exact. (A text-mode file
    decodes 8 KiB at a time: one bad byte lost ~44 valid rows and was reported ~44 lines early.)"""
    for n, raw in enumerate(f, 1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            undecodable[n] = e.start
            yield raw.decode("utf-8", "replace")
