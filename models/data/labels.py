"""Where labels come from: a column of the rows, a MAC table, the folder name, an IP list."""
from __future__ import annotations

import csv
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrainError
from .table import DataStats, Part

LABEL_MODES = ("auto", "column", "mac", "folder", "ip")


@dataclass(frozen=True)
class LabelSpec:
    """How rows get their label.

    mode    auto (column when the rows carry one, else error), column, mac (``macs``
            table, label = device whose MAC is the connection's source MAC), folder
            (name of the folder holding the file), ip (``ips`` list: a connection with a
            listed source or destination address gets that entry's label, others
            ``ip_default``).
    """

    mode: str = "auto"
    column: str | None = None
    macs: Path | None = None
    ips: Path | None = None
    ip_default: str = "benign"
    ip_label: str = "malicious"


def normalise_mac(text: str) -> str | None:
    """``AA-BB-CC-DD-EE-FF`` / ``aabb.ccdd.eeff`` / ``aa:bb:..`` -> ``aa:bb:cc:dd:ee:ff``."""
    h = text.strip().lower().replace(":", "").replace("-", "").replace(".", "")
    if len(h) != 12 or any(c not in "0123456789abcdef" for c in h):
        return None
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))


def read_mac_table(path: Path, stats: DataStats) -> dict[str, str]:
    """``device,mac`` CSV -> {mac: label}. Devices that share a MAC cannot be told
    apart by it: they are merged into one label ``A+B`` (recorded in ``stats``)."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise TrainError(f"{path}: cannot read MAC table: {e.strerror or e}") from None
    by_mac: dict[str, list[str]] = {}
    with f:
        rows = csv.reader(f)
        header = [h.strip().lower() for h in next(rows, [])]
        if header[:2] != ["device", "mac"]:
            raise TrainError(f"{path}:1: a MAC table needs the header 'device,mac', got {','.join(header)!r}")
        for lineno, rec in enumerate(rows, 2):
            if not rec or not "".join(rec).strip():
                continue
            if len(rec) < 2:
                raise TrainError(f"{path}:{lineno}: expected 'device,mac'")
            mac = normalise_mac(rec[1])
            if mac is None:
                raise TrainError(f"{path}:{lineno}: {rec[1]!r} is not a MAC address")
            by_mac.setdefault(mac, [])
            if rec[0].strip() not in by_mac[mac]:
                by_mac[mac].append(rec[0].strip())
    if not by_mac:
        raise TrainError(f"{path}: the MAC table is empty")
    out = {}
    for mac, devices in by_mac.items():
        label = "+".join(sorted(devices))
        if len(devices) > 1:
            for d in devices:
                stats.merged_labels[d] = label
        out[mac] = label
    return out


def read_ip_list(path: Path, default_label: str) -> dict[str, str]:
    """Lines ``ip`` or ``ip,label`` (``#`` comments) -> {normalised ip: label}."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TrainError(f"{path}: cannot read IP list: {e.strerror or e}") from None
    out = {}
    for lineno, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        ip, _, label = (s.strip() for s in line.partition(","))
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise TrainError(f"{path}:{lineno}: {ip!r} is not an IP address") from None
        out[ip] = label or default_label
    if not out:
        raise TrainError(f"{path}: the IP list is empty")
    return out


class Labeller:
    """Applies a :class:`LabelSpec` to parts; rows without a label are counted and dropped."""

    def __init__(self, spec: LabelSpec, stats: DataStats) -> None:
        self.spec = spec
        self.stats = stats
        self.mac_table = read_mac_table(spec.macs, stats) if spec.macs else None
        self.ip_table = read_ip_list(spec.ips, spec.ip_label) if spec.ips else None
        mode = spec.mode
        if mode == "auto":
            mode = "mac" if spec.macs else "ip" if spec.ips else "column"
        if mode == "mac" and self.mac_table is None:
            raise TrainError("labelling by MAC needs a MAC table (--macs device_macs.csv)")
        if mode == "ip" and self.ip_table is None:
            raise TrainError("labelling by IP needs an IP list (--ips FILE)")
        self.mode = mode

    def labels(self, part: Part) -> list[str | None]:
        n = part.n
        if self.mode == "column":
            if part.label is None:
                what = f"column {self.spec.column!r}" if self.spec.column else "label column ('label' or 's_mac')"
                hint = " (captures carry no labels: use --macs, --ips or --label-from folder)" if part.is_capture else ""
                raise TrainError(f"{part.source}: no {what} in the rows{hint}")
            if self.mac_table is not None:  # column holds MACs (s_mac format) and a table names them
                return [self.mac_table.get(normalise_mac(v) or "", None) if v else None for v in part.label]
            return part.label
        if self.mode == "mac":
            macs = part.src_mac if part.src_mac is not None else part.label
            if macs is None:
                raise TrainError(f"{part.source}: rows have no source MAC to look up in {self.spec.macs}")
            return [self.mac_table.get(normalise_mac(m) or "", None) if m else None for m in macs]
        if self.mode == "folder":
            return [part.folder_label or Path(part.source).parent.name] * n
        if self.mode == "ip":
            if part.src_ip is None or all(v is None for v in part.src_ip):
                raise TrainError(f"{part.source}: rows have no src_ip/dest_ip to match against {self.spec.ips}")
            out = []
            t = self.ip_table
            for s, d in zip(part.src_ip, part.dest_ip):
                out.append(t.get(_norm_ip(s)) or t.get(_norm_ip(d)) or self.spec.ip_default)
            return out
        raise TrainError(f"unknown label mode {self.mode!r} (allowed: {', '.join(LABEL_MODES)})")


def _norm_ip(ip: str | None) -> str:
    if not ip:
        return ""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
