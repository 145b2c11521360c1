"""The ``device_bag@1`` view: one row per device and window, the set of its packets' sizes.

IoT Sentinel (Miettinen et al., 2017) names a device type from the packets of its setup. This
view gives a model one sample per source MAC and window: the set of (direction, IP protocol,
IP total length) over the first ``bag_packets`` packets (both directions) of each connection
the MAC opened in the window, hashed into ``bag_bits`` bits (column ``bag_<j>`` is 1 when some
packet hashed to bit ``j``). The hash is splitmix64's mixing step (daemon/splitmix.py) of
``direction << 24 | proto << 16 | size``, masked to the low bits.

Why sizes and a set (docs/devices.md, "One verdict per device window from packet sizes"):
sibling devices differ by single packets (an announcement one byte longer, a 956-byte segment
only one of them sends), which per-connection sums blur and a mean over connections dilutes; a
set keeps a packet that occurs once. On the IoT Sentinel split a forest on it gives 0.92-0.93 per
device capture on test against 0.8667 for the pooled per-connection gbdt. The HS110's marker is
the 27th to 35th packet of its connection, hence ``bag_packets`` = 64 (16 gives 0.85 on test,
0.85 on validation; 32 to 64 tie on validation).

Windows are the device's own, not the clock's: a window opens with the first connection of a
MAC that has none open and covers ``bag_window`` seconds from that connection's start, so a
device's setup falls into one window wherever it starts (IoT Sentinel's captures last 3 to
467 s). A connection that starts at or after the window's end closes it and opens the next; a
window also closes when the packet clock (the latest end of a finished connection seen) passes
its end by ``bag_late`` seconds (a device that went quiet), when the table is full, and at the
end of input. Connections are taken in the order the tracker finished them; one that started
before its window's start (a long connection) goes to the window open when it ends. A closed
window becomes one ``device`` event (daemon/outputs/device.py) with the model's verdict on it.

The table holds :data:`MAX_DEVICES` devices; a new one beyond that closes every open window
(reported as they are, counted in ``DeviceBags.forced``, logged) and starts the table again,
which the trainer's reader does the same way. The state is shared by the capture threads (one
router per model, under a lock): a device's connections meet in one bag whatever thread saw
them, in the order the threads hand their batches over.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..flows import layout as L
from ..flows.probing import pow2_at_least
from ..flows.seq import SEQ_COLUMNS
from ..jit import njit
from ..outputs.device import DEVICE_KEY
from ..schema import Checker, opt
from ..splitmix import mix64
from .base import EntityRows, WindowedRouter, register_view
from .conn import ConnectionView
from .pkt_seq import N_PACKETS_MAX

log = logging.getLogger("malsensor.views.device_bag")

DEVICE_BAG_VIEW = "device_bag"
DEVICE_BAG_VERSION = 1
BAG_PACKETS_DEFAULT = 64   # validation per capture (docs/devices.md): 16 -> 0.8471, 32, 48 and 64 -> 0.9059
BAG_BITS_DEFAULT = 1024    # 4096: the same on validation (0.9059), 0.91 against 0.92 on test
BAG_WINDOW_DEFAULT = 600.0
BAG_LATE_DEFAULT = 60.0
MAX_DEVICES = 16_384       # 32,768 slots x (16 bag words, 5 int64, 1 bool): 5.5 MB at the default 1024 bits
_SIZE, _DIRECTION, _PROTO, _MASK = (SEQ_COLUMNS.index(c) for c in ("size", "direction", "proto", "mask"))
_NONE = np.iinfo(np.int64).max


def bag_columns(bits: int) -> tuple[str, ...]:
    return tuple(f"bag_{j}" for j in range(bits))


@dataclass(frozen=True)
class DeviceBagOptions:
    """The keys ``device_bag@1`` adds to a ``[[model]]`` table (all must be what the model was
    trained with; ``malsensor-train`` records them in the artifact's hyper-parameters)."""

    bag_packets: int = opt(BAG_PACKETS_DEFAULT, "view = \"device_bag@1\": packets of each connection that go into "
                                                "the device's bag (its first N, both directions)",
                           min=1, max=N_PACKETS_MAX)
    bag_bits: int = opt(BAG_BITS_DEFAULT, "view = \"device_bag@1\": bits the (direction, protocol, size) set is "
                                          "hashed into (a power of two; the model's inputs)", min=64, max=65536)
    bag_window: float = opt(BAG_WINDOW_DEFAULT, "view = \"device_bag@1\": seconds from a device's first connection "
                                                "that go into one bag", min=0.001, max=86400.0)
    bag_late: float = opt(BAG_LATE_DEFAULT, "view = \"device_bag@1\": seconds of packet time a bag waits after its "
                                            "window for connections still ending in it", min=0.0, max=86400.0)


@njit(cache=True, nogil=True)
def _fold(mac, first, last, seq, start, n_packets, bits_mask, window_ns, slot_mac, slot_used, w_start, w_first,
          w_last, w_count, bag, state, max_devices, out_meta, out_bag) -> int:
    """Fold rows ``start..`` into their MAC's open window, in order. A row that starts at or after
    its window's end first closes the window into ``out_meta`` (mac, start, end, first, last,
    connections) and ``out_bag``. ``state`` = [devices held, windows closed into out, earliest
    end of a window opened here]. Returns the row it stopped at: ``mac.shape[0]``, or a row whose
    new MAC finds the table full (the caller closes everything and calls again from there)."""
    mask = slot_mac.shape[0] - 1
    for i in range(start, mac.shape[0]):
        m = mac[i]
        s = np.int64(mix64(np.uint64(0), np.uint64(m)) & np.uint64(mask))
        while slot_used[s] and slot_mac[s] != m:
            s = (s + 1) & mask
        if not slot_used[s]:
            if state[0] >= max_devices:
                return i
            slot_used[s] = True
            slot_mac[s] = m
            w_count[s] = 0
            state[0] += 1
        if w_count[s] > 0 and first[i] >= w_start[s] + window_ns:
            k = state[1]
            out_meta[k, 0] = m
            out_meta[k, 1] = w_start[s]
            out_meta[k, 2] = w_start[s] + window_ns
            out_meta[k, 3] = w_first[s]
            out_meta[k, 4] = w_last[s]
            out_meta[k, 5] = w_count[s]
            out_bag[k, :] = bag[s, :]
            state[1] = k + 1
            w_count[s] = 0
        if w_count[s] == 0:
            w_start[s] = first[i]
            w_first[s] = first[i]
            w_last[s] = last[i]
            bag[s, :] = 0
            state[2] = min(state[2], first[i] + window_ns)
        w_count[s] += 1
        w_first[s] = min(w_first[s], first[i])
        w_last[s] = max(w_last[s], last[i])
        for j in range(n_packets):
            if seq[i, j, _MASK] <= 0:
                break
            key = np.uint64(int(seq[i, j, _SIZE])) | (np.uint64(int(seq[i, j, _PROTO])) << np.uint64(16))
            if seq[i, j, _DIRECTION] > 0:
                key |= np.uint64(1) << np.uint64(24)
            b = mix64(np.uint64(0), key) & np.uint64(bits_mask)
            bag[s, b >> np.uint64(6)] |= np.uint64(1) << (b & np.uint64(63))
    return mac.shape[0]


def unpack_bags(words: np.ndarray, bits: int) -> np.ndarray:
    """uint64 ``(n, bits / 64)`` -> float32 ``(n, bits)`` of 0 and 1 (bit ``j`` of word ``j // 64``)."""
    w = np.ascontiguousarray(words, dtype="<u8")
    return np.unpackbits(w.view(np.uint8).reshape(w.shape[0], w.shape[1] * 8), axis=1, bitorder="little")[:, :bits] \
        .astype(np.float32)


class DeviceBags:
    """The state behind the view: each device's open window and its bag. Not thread-safe (the
    router holds a lock). ``feed`` takes finished connections with their recorded packets (the
    tracker's ``ConnBatch.seq``) and returns the windows they close: ``(keys, x)`` with keys of
    :data:`DEVICE_KEY` and x float32 ``(n, bag_bits)``."""

    def __init__(self, o: DeviceBagOptions, max_devices: int = MAX_DEVICES) -> None:
        if o.bag_bits & (o.bag_bits - 1) or o.bag_bits < 64:
            raise ValueError(f"bag_bits must be a power of two >= 64, not {o.bag_bits}")
        self.o = o
        self.max_devices = max_devices
        self.window_ns = int(round(o.bag_window * 1e9))
        self.late_ns = int(round(o.bag_late * 1e9))
        slots = pow2_at_least(max_devices * 4 // 3 + 1)
        self.slot_mac = np.zeros(slots, np.int64)
        self.slot_used = np.zeros(slots, np.bool_)
        self.w_start = np.zeros(slots, np.int64)
        self.w_first = np.zeros(slots, np.int64)
        self.w_last = np.zeros(slots, np.int64)
        self.w_count = np.zeros(slots, np.int64)
        self.bag = np.zeros((slots, o.bag_bits // 64), np.uint64)
        self.state = np.array([0, 0, _NONE], np.int64)
        self.clock = np.iinfo(np.int64).min
        self.next_due = _NONE   # no open window ends (plus bag_late) before this packet time
        self.forced = 0         # windows closed early because the table was full
        self.windows = 0        # windows closed in all

    def pending(self) -> int:
        return int((self.w_count > 0).sum())

    def feed(self, records: np.ndarray, seq: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        rec = np.asarray(records, dtype=np.int64).reshape(-1, L.N_COLS)
        final = (rec[:, L.END] & 0xFF) != L.END_SNAPSHOT
        if rec.shape[0] and (seq is None or seq.shape[1] < self.o.bag_packets):
            raise RuntimeError(f"device_bag@1 needs the flow tracker to keep {self.o.bag_packets} packets per "
                               f"connection (TrackerConfig.seq_packets)")
        out: list[tuple[np.ndarray, np.ndarray]] = []
        if final.any():
            if not final.all():   # (a copy of the packets only when snapshot rows are mixed in)
                rec, seq = rec[final], seq[final]
            sq = np.ascontiguousarray(seq, dtype=np.float32)
            out.append(self._fold(rec, sq))
            self.clock = max(self.clock, int(rec[:, L.LAST_TS].max()))
            self.next_due = min(self.next_due, int(self.state[2]) + self.late_ns)
            self.state[2] = _NONE
            if self.clock >= self.next_due:
                out.append(self._close(self.w_start + self.window_ns + self.late_ns <= self.clock))
        return self._joined(out)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """End of input: every open window closes."""
        return self._joined([self._close(np.ones(self.slot_used.shape[0], bool))])

    def _fold(self, rec: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = rec.shape[0]
        meta = np.zeros((n, 6), np.int64)
        words = np.zeros((n, self.bag.shape[1]), np.uint64)
        mac, first, last = (np.ascontiguousarray(rec[:, c]) for c in (L.SRC_MAC, L.FIRST_TS, L.LAST_TS))
        got: list[tuple[np.ndarray, np.ndarray]] = []
        i = 0
        self.state[1] = 0
        while True:
            i = _fold(mac, first, last, seq, i, self.o.bag_packets, self.o.bag_bits - 1, self.window_ns,
                      self.slot_mac, self.slot_used, self.w_start, self.w_first, self.w_last, self.w_count,
                      self.bag, self.state, self.max_devices, meta, words)
            k = int(self.state[1])
            got.append(self._rows(meta[:k], words[:k]))
            if i >= n:
                return self._joined(got)
            # a new device and the table is full: close every window, start the table again
            closed = self._close(np.ones(self.slot_used.shape[0], bool))
            self.forced += closed[0].shape[0]
            got.append(closed)
            self.slot_used[:] = False
            self.state[:] = (0, 0, self.state[2])
            log.warning("device_bag: more than %d source MACs: every open bag was closed early (%d so far)",
                        self.max_devices, self.forced)

    def _close(self, due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The open windows among slots ``due``, as rows (by window start, then MAC); they close."""
        sel = np.flatnonzero(due & self.slot_used & (self.w_count > 0))
        meta = np.stack([self.slot_mac[sel], self.w_start[sel], self.w_start[sel] + self.window_ns,
                         self.w_first[sel], self.w_last[sel], self.w_count[sel]], axis=1)
        rows = self._rows(meta, self.bag[sel])
        self.w_count[sel] = 0
        still = self.slot_used & (self.w_count > 0)
        self.next_due = int(self.w_start[still].min()) + self.window_ns + self.late_ns if still.any() else _NONE
        return rows

    def _rows(self, meta: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.lexsort((meta[:, 0], meta[:, 1])) if meta.shape[0] > 1 else np.arange(meta.shape[0])
        meta, words = meta[order], words[order]
        keys = np.zeros(meta.shape[0], DEVICE_KEY)
        for c, name in enumerate(DEVICE_KEY.names):
            keys[name] = meta[:, c]
        self.windows += meta.shape[0]
        return keys, unpack_bags(words, self.o.bag_bits)

    def _joined(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        parts = [p for p in parts if p[0].shape[0]]
        if not parts:
            return np.zeros(0, DEVICE_KEY), np.zeros((0, self.o.bag_bits), np.float32)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([k for k, _ in parts]), np.concatenate([x for _, x in parts])


class DeviceBagRouter(WindowedRouter):
    """One :class:`DeviceBags` shared by the capture threads of the sources."""

    def __init__(self, o: DeviceBagOptions) -> None:
        super().__init__()
        self.bags = DeviceBags(o)

    def pending(self) -> int:
        return self.bags.pending()

    def counters(self) -> dict[str, int]:
        return {"windows": self.bags.windows, "closed_early": self.bags.forced}

    def _feed(self, cb) -> tuple[np.ndarray, np.ndarray]:
        return self.bags.feed(cb.records, cb.seq)

    def _finish(self) -> tuple[np.ndarray, np.ndarray]:
        return self.bags.finish()

    def _rows(self, got: tuple[np.ndarray, np.ndarray]) -> EntityRows | None:
        keys, x = got
        if not keys.shape[0]:
            return None
        return EntityRows(keys, x, x.sum(axis=1, keepdims=True))  # events show how many bits are set


class DeviceBagView(ConnectionView):
    """Over finished connections and their recorded packets (the tracker keeps ``bag_packets``
    of each), grouped per source MAC and window."""

    name = DEVICE_BAG_VIEW
    version = DEVICE_BAG_VERSION
    entity = "device"
    axes = ("feature",)
    options = DeviceBagOptions
    reader = "malsensor.models.data.device_bags:READER"
    description = "one row per device and window: the hashed set of (direction, protocol, size) of its packets"

    columns = bag_columns(BAG_BITS_DEFAULT)   # info() gives those of the configured bag_bits

    def shape(self, o: DeviceBagOptions) -> tuple[int, ...]:
        return (o.bag_bits,)

    def info(self, options=None):
        from ..artifact import ViewInfo

        o = self.options() if options is None else options
        return ViewInfo(self.name, self.version, (o.bag_bits,), self.dtype, bag_columns(o.bag_bits),
                        self.feature_axis, o)

    def options_for(self, info) -> DeviceBagOptions:
        o = getattr(info, "options", None)
        if isinstance(o, DeviceBagOptions):
            return o
        shape = tuple(info.shape)
        if len(shape) != 1 or shape[0] < 64 or shape[0] & (shape[0] - 1):
            raise ValueError(f"{self.ref} has shape [bag_bits] (a power of two >= 64), the artifact says {list(shape)}")
        return DeviceBagOptions(bag_bits=int(shape[0]))

    def check(self, o: DeviceBagOptions, ck: Checker, path) -> None:
        if o.bag_bits & (o.bag_bits - 1):
            ck.problem((*path, "bag_bits"), f"{o.bag_bits} is not a power of two")

    def seq_packets(self, o: DeviceBagOptions) -> int:
        return o.bag_packets

    def router(self, o: DeviceBagOptions, facts) -> DeviceBagRouter:
        return DeviceBagRouter(o)


DEVICE_BAG = register_view(DeviceBagView())
