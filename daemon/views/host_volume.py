"""View ``host_volume@1``: a local host's connections over time -> one volume (D windows, H
connections, the 17 ``conn`` features + ``originator`` + ``present``), for the ``cnn3d`` kind.

The network counterpart of ``proc_volume@1``: where that one stacks a machine's processes,
this one stacks a host's connections, so an infected host can be told from its traffic.

* Time is cut into windows of ``window_s`` seconds (absolute: window k covers
  [k * window_s, (k + 1) * window_s) of packet time). A finished connection belongs to the
  window of its last packet (``LAST_TS``), so a connection is placed once it is complete.
* A connection belongs to each *local* end: an address inside ``local_nets`` (an empty list:
  both ends). The host is that end's address (``host_by = "address"``) or its MAC
  (``host_by = "mac"``). ``originator`` is 1 when the host opened the connection, 0 when it
  answered (the 17 features keep the connection's own orientation).
* Window k closes once the packet clock (the latest ``LAST_TS`` seen) reaches
  (k + 1) * window_s + ``late_s``: connections that end later (idle timeouts) but belong to a
  closed window go to the oldest open one (counter ``late``). The clock advances row by row,
  so how the connections are cut into batches does not change any volume.
* Every ``window_stride`` windows (0 = D: volumes do not overlap; aligned on absolute window
  numbers), each host with a connection in the last D closed windows gets one volume
  ``(D, H, 19)``. The row rule, per window: most bytes (both directions) first, then earliest
  start, then serial; the first H take rows 0..H-1, the rest are cut (counted in
  ``connections``), rows after the last connection are zeros (``present`` = 0).
* At the end of a file (``finish``) every open window closes: the trainer's reader and the
  daemon's replay build the same volumes with this same class.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from ..artifact import ViewInfo
from ..flows import layout as L
from ..schema import Checker, opt
from .base import EntityRows, WindowedRouter, register_view
from .conn import CONN_COLUMNS, N_FEATURES, ConnectionView

COLUMNS = CONN_COLUMNS + ("originator", "present")
W = len(COLUMNS)
ORIGINATOR, PRESENT = N_FEATURES, N_FEATURES + 1
D_DEFAULT = 8
H_DEFAULT = 32
WINDOW_S_DEFAULT = 10.0
LOCAL_NETS_DEFAULT = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10")
HOST_LEN = 39  # the longest IPv6 text form
_U64 = 0xFFFFFFFFFFFFFFFF


def key_dtype(d: int, h: int) -> np.dtype:
    """What identifies a volume in its event: host, time span, and each cell's connection."""
    return np.dtype([("host", f"U{HOST_LEN}"), ("start_ns", np.int64), ("end_ns", np.int64),
                     ("connections", np.int64), ("peer_hi", np.int64, (d, h)), ("peer_lo", np.int64, (d, h)),
                     ("src_port", np.int32, (d, h)), ("dest_port", np.int32, (d, h)), ("proto", np.int32, (d, h))])


@dataclass(frozen=True)
class HostVolumeOptions:
    """The keys ``host_volume@1`` adds to a ``[[model]]`` table."""

    windows: int = opt(D_DEFAULT, "view = \"host_volume@1\": time windows per volume (D)", min=1, max=1024)
    connections: int = opt(H_DEFAULT, "view = \"host_volume@1\": connection rows per window (H; more are cut: "
                                      "most bytes first)", min=1, max=65536)
    window_s: float = opt(WINDOW_S_DEFAULT, "view = \"host_volume@1\": seconds of packet time per window "
                                            "(must be what the model was trained with)", min=0.001, max=86400.0)
    late_s: float = opt(30.0, "view = \"host_volume@1\": how long (packet time) a window stays open after its "
                              "end for connections still ending in it", min=0.0, max=86400.0)
    window_stride: int = opt(0, "view = \"host_volume@1\": windows between two volumes of a host (0 = windows: "
                                "volumes do not overlap)", min=0, max=1024)
    host_by: str = opt("address", "view = \"host_volume@1\": a host is its address or its MAC",
                       choices=("address", "mac"))
    local_nets: tuple[str, ...] = opt(LOCAL_NETS_DEFAULT, "view = \"host_volume@1\": the networks whose addresses "
                                                          "are local hosts ([] = both ends of every connection)")


def parse_nets(nets) -> list[tuple[int, int, int, int]]:
    """CIDRs -> (net_hi, net_lo, mask_hi, mask_lo) in the decoder's 128-bit layout (IPv4 as
    ::ffff:a.b.c.d). ValueError naming the bad entry."""
    out = []
    for text in nets:
        try:
            n = ipaddress.ip_network(str(text), strict=False)
        except ValueError as e:
            raise ValueError(f"local_nets: {text!r} is not a network ({e})") from None
        if n.version == 4:
            addr = (0xFFFF << 32) | int(n.network_address)
            plen = 96 + n.prefixlen
        else:
            addr, plen = int(n.network_address), n.prefixlen
        mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
        out.append(((addr >> 64) & _U64, addr & _U64, (mask >> 64) & _U64, mask & _U64))
    return out


def _is_local(hi: np.ndarray, lo: np.ndarray, nets) -> np.ndarray:
    if not nets:
        return np.ones(hi.shape[0], dtype=bool)
    h, lw = hi.view(np.uint64), lo.view(np.uint64)
    m = np.zeros(hi.shape[0], dtype=bool)
    for nh, nl, mh, ml in nets:
        m |= ((h & np.uint64(mh)) == np.uint64(nh)) & ((lw & np.uint64(ml)) == np.uint64(nl))
    return m


def host_text(hi: int, lo: int, by: str) -> str:
    from ..outputs.rows import format_ip, format_mac

    return format_mac(int(lo)) if by == "mac" else format_ip(int(hi), int(lo))


class HostVolumeBuilder:
    """The state behind the view: connections of windows not yet closed, per host. Not
    thread-safe (the router holds a lock). Memory: the connections of the last D windows plus
    those still open."""

    _COLS = ("w", "host_hi", "host_lo", "orig", "bytes", "first", "serial", "peer_hi", "peer_lo", "sport",
             "dport", "proto")

    def __init__(self, o: HostVolumeOptions) -> None:
        self.o = o
        self.d, self.h = o.windows, o.connections
        self.stride = o.window_stride or o.windows
        self.t_ns = int(round(o.window_s * 1e9))
        self.late_ns = int(round(o.late_s * 1e9))
        self.nets = parse_nets(o.local_nets)
        self.clock = np.iinfo(np.int64).min
        self.low = None            # the oldest open window (None: nothing seen yet)
        self.emitted_upto = None   # windows < this have had their volumes built
        self.late = 0
        self.cut = 0
        self._meta: dict[str, list[np.ndarray]] = {c: [] for c in self._COLS}
        self._x: list[np.ndarray] = []

    def pending(self) -> int:
        return sum(a.shape[0] for a in self._x)

    # ---------------------------------------------------------------- feeding

    def feed(self, records: np.ndarray, features: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Finished connections (snapshot rows are ignored) -> the volumes they complete:
        a list of ``(keys, x)`` with ``x`` float32 ``(n, D, H, 19)``."""
        rec = np.asarray(records, dtype=np.int64).reshape(-1, L.N_COLS)
        fts = np.asarray(features, dtype=np.float64).reshape(-1, N_FEATURES)
        final = (rec[:, L.END] & 0xFF) != L.END_SNAPSHOT
        if not final.all():
            rec, fts = rec[final], fts[final]
        if rec.shape[0]:
            self._add(rec, fts)
        if self.low is None:
            return []
        return self._emit(self.low)

    def finish(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """End of input: every window closes."""
        if self.low is None or not self._x:
            return []
        top = max(int(np.concatenate(self._meta["w"]).max()), self.low) + 1
        # the last volume of a host ends at the first aligned window at or after its last window
        return self._emit(top + self.stride + self.d, finishing=True)

    def _add(self, rec: np.ndarray, fts: np.ndarray) -> None:
        t = rec[:, L.LAST_TS]
        clock = np.maximum.accumulate(np.maximum(t, self.clock))
        self.clock = int(clock[-1])
        low_i = np.floor_divide(clock - self.late_ns, self.t_ns)
        if self.low is not None:
            low_i = np.maximum(low_i, self.low)
        own = np.floor_divide(t, self.t_ns)
        w = np.maximum(own, low_i)
        self.late += int((own < low_i).sum())
        self.low = int(low_i[-1])
        if self.emitted_upto is None:  # every later connection lands at or after the first row's oldest open window
            self.emitted_upto = int(min(low_i[0], w.min()))
        key = rec[:, L.KEY]
        sport, dport, proto = (key >> 16) & 0xFFFF, key & 0xFFFF, (key >> 32) & 0xFF
        nbytes = rec[:, L.S_IP_BYTES] + rec[:, L.D_IP_BYTES]
        by_mac = self.o.host_by == "mac"
        for orig, (hi, lo, mac, phi, plo) in ((1, (L.SRC_HI, L.SRC_LO, L.SRC_MAC, L.DST_HI, L.DST_LO)),
                                              (0, (L.DST_HI, L.DST_LO, L.DST_MAC, L.SRC_HI, L.SRC_LO))):
            m = _is_local(rec[:, hi], rec[:, lo], self.nets)
            if not m.any():
                continue
            n = int(m.sum())
            cols = {"w": w[m], "host_hi": np.zeros(n, np.int64) if by_mac else rec[m, hi],
                    "host_lo": rec[m, mac] if by_mac else rec[m, lo], "orig": np.full(n, orig, np.int64),
                    "bytes": nbytes[m], "first": rec[m, L.FIRST_TS], "serial": rec[m, L.SERIAL],
                    "peer_hi": rec[m, phi], "peer_lo": rec[m, plo], "sport": sport[m], "dport": dport[m],
                    "proto": proto[m]}
            for c in self._COLS:
                self._meta[c].append(cols[c])
            x = np.zeros((n, W), np.float32)
            x[:, :N_FEATURES] = fts[m]
            x[:, ORIGINATOR] = orig
            x[:, PRESENT] = 1.0
            self._x.append(x)

    # ---------------------------------------------------------------- volumes

    def _emit(self, closed_below: int, finishing: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """Volumes ending at a window in [emitted_upto, closed_below) (all closed), then forget
        the connections no later volume can hold."""
        if self.emitted_upto is None or closed_below <= self.emitted_upto or not self._x:
            return []
        meta = {c: np.concatenate(v) for c, v in self._meta.items()}
        x = np.concatenate(self._x)
        d, s = self.d, self.stride
        # the volumes each connection lies in end at e in [w, w + D - 1] with (e + 1) % stride == 0
        w = meta["w"]
        first_e = w + (-(w + 1)) % s
        ends, hosts_hi, hosts_lo, idx = [], [], [], []
        for k in range(0, d, s):
            e = first_e + k
            ok = (e <= w + d - 1) & (e >= self.emitted_upto) & (e < closed_below)
            if ok.any():
                sel = np.flatnonzero(ok)
                ends.append(e[sel])
                hosts_hi.append(meta["host_hi"][sel])
                hosts_lo.append(meta["host_lo"][sel])
                idx.append(sel)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        if ends:
            e_all = np.concatenate(ends)
            hh, hl, rows = np.concatenate(hosts_hi), np.concatenate(hosts_lo), np.concatenate(idx)
            order = np.lexsort((rows, hl.view(np.uint64), hh.view(np.uint64), e_all))
            e_all, hh, hl, rows = e_all[order], hh[order], hl[order], rows[order]
            cut = np.flatnonzero((np.diff(e_all) != 0) | (np.diff(hh) != 0) | (np.diff(hl) != 0)) + 1
            groups = np.split(np.arange(e_all.shape[0]), cut)
            keys = np.zeros(len(groups), dtype=key_dtype(d, self.h))
            vols = np.zeros((len(groups), d, self.h, W), np.float32)
            for g, members in enumerate(groups):
                e = int(e_all[members[0]])
                self._volume(e, rows[members], meta, x, keys[g], vols[g])
                keys[g]["host"] = host_text(int(hh[members[0]]), int(hl[members[0]]), self.o.host_by)
            out.append((keys, vols))
        self.emitted_upto = closed_below
        # keep what a volume ending at or after closed_below can still hold
        keep = w > closed_below - d if not finishing else np.zeros(w.shape[0], dtype=bool)
        self._meta = {c: [v[keep]] if keep.any() else [] for c, v in meta.items()}
        self._x = [x[keep]] if keep.any() else []
        return out

    def _volume(self, e: int, rows: np.ndarray, meta, x, key, vol) -> None:
        d, h = self.d, self.h
        w0 = e - d + 1
        key["start_ns"] = w0 * self.t_ns
        key["end_ns"] = (e + 1) * self.t_ns
        key["connections"] = rows.shape[0]
        key["peer_hi"][:] = 0
        key["peer_lo"][:] = 0
        step = meta["w"][rows] - w0
        # the row rule: by window, most bytes first, then earliest start, then serial
        order = np.lexsort((meta["serial"][rows], meta["first"][rows], -meta["bytes"][rows], step))
        rows, step = rows[order], step[order]
        starts = np.searchsorted(step, np.arange(d))
        rank = np.arange(rows.shape[0]) - starts[step]
        keep = rank < h
        self.cut += int((~keep).sum())
        rows, step, rank = rows[keep], step[keep], rank[keep]
        vol[step, rank] = x[rows]
        for name, col in (("peer_hi", "peer_hi"), ("peer_lo", "peer_lo"), ("src_port", "sport"),
                          ("dest_port", "dport"), ("proto", "proto")):
            key[name][step, rank] = meta[col][rows]


def top_connections(key, x: np.ndarray, k: int = 5) -> list[dict]:
    """The ``k`` connections of a volume with the most bytes (both directions), for its event."""
    from ..outputs.rows import format_ip

    present = x[:, :, PRESENT] > 0
    step, row = np.nonzero(present)
    if step.size == 0:
        return []
    total = x[step, row, CONN_COLUMNS.index("s_bytes_sum")] + x[step, row, CONN_COLUMNS.index("d_bytes_sum")]
    order = np.lexsort((row, step, -total))[:k]
    out = []
    for i in order.tolist():
        s, r = int(step[i]), int(row[i])
        v = x[s, r]
        out.append({"window": s, "row": r, "peer": format_ip(int(key["peer_hi"][s, r]), int(key["peer_lo"][s, r])),
                    "src_port": int(key["src_port"][s, r]), "dest_port": int(key["dest_port"][s, r]),
                    "proto": int(key["proto"][s, r]), "originator": bool(v[ORIGINATOR] > 0),
                    "bytes": int(total[i]), "packets": int(v[CONN_COLUMNS.index("s_pkt_cnt")] +
                                                           v[CONN_COLUMNS.index("d_pkt_cnt")]),
                    "dur": float(v[CONN_COLUMNS.index("dur")])})
    return out


class HostVolumeRouter(WindowedRouter):
    """A :class:`HostVolumeBuilder` shared by the capture threads of the sources."""

    def __init__(self, o: HostVolumeOptions) -> None:
        super().__init__()
        self.builder = HostVolumeBuilder(o)

    def pending(self) -> int:
        return self.builder.pending()

    def counters(self) -> dict[str, int]:
        return {"late": self.builder.late, "cut": self.builder.cut}

    def _feed(self, cb):
        return self.builder.feed(cb.records, cb.features)

    def _finish(self):
        return self.builder.finish()

    def _rows(self, got) -> EntityRows | None:
        if not got:
            return None
        keys = np.concatenate([k for k, _ in got])
        x = np.concatenate([v for _, v in got])
        return EntityRows(keys, x) if x.shape[0] else None


class HostVolumeView(ConnectionView):
    """Over finished connections like the conn views (so the tracker asks it for snapshot
    points and kept packets: none), grouped per local host."""

    name = "host_volume"
    version = 1
    entity = "host"
    axes = ("window", "connection", "feature")
    feature_axis = 2
    columns = COLUMNS
    options = HostVolumeOptions
    reader = "malsensor.models.data.host_volumes:READER"
    description = "a local host's connections: D windows x H connections x (17 conn features, originator, present)"

    def shape(self, o: HostVolumeOptions) -> tuple[int, ...]:
        return (o.windows, o.connections, W)

    def info(self, options=None) -> ViewInfo:
        """With every option (window length, local networks...) for the trainer's reader."""
        o = self.options() if options is None else options
        return ViewInfo(self.name, self.version, tuple(self.shape(o)), self.dtype, tuple(self.columns),
                        self.feature_axis, o)

    def options_for(self, info) -> HostVolumeOptions:
        windows, connections = self.sized_axes(info, ("windows", "connections"), W)
        return HostVolumeOptions(windows=windows, connections=connections)

    def check(self, o: HostVolumeOptions, ck: Checker, path) -> None:
        if o.window_stride > o.windows:
            ck.problem((*path, "window_stride"), f"window_stride {o.window_stride} > windows {o.windows} would "
                                                 "skip windows")
        try:
            parse_nets(o.local_nets)
        except ValueError as e:
            ck.problem((*path, "local_nets"), str(e).removeprefix("local_nets: "))

    def router(self, o: HostVolumeOptions, facts) -> HostVolumeRouter:
        return HostVolumeRouter(o)


HOST_VOLUME = register_view(HostVolumeView())
