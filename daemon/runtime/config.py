"""malsensor.toml: the daemon's configuration schema, as dataclasses, and its validation.

Every section is a frozen dataclass whose fields carry their default, their
allowed values or range and a one-line description (``etc/malsensor.toml``
documents each key; a test keeps the two in step). :func:`load_config` parses
the file with :mod:`tomllib` and checks every key: a problem is reported as
``FILE:LINE: key.path: what is wrong (allowed: ...)``, all problems of a file
at once, and an unknown key is an error, so a typo never goes unnoticed.

Relative paths in the file are taken relative to the directory of the file.
"""
from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable

from ..capture.ring import RingConfig
from ..flows.config import TrackerConfig
from ..logs import LEVELS
from ..pipeline import PROTOCOL_NAMES
from ..views.conn import CONN_VERSION, CONN_VIEW, N_FEATURES, SEMANTICS
from ..views.conn_series import CONN_SERIES_VERSION, CONN_SERIES_VIEW, SERIES_POINTS
from .tomlpos import KeyPath, format_path, key_lines, line_of

DEFAULT_CONFIG = "/etc/malsensor/malsensor.toml"
KNOWN_VIEWS = (f"{CONN_VIEW}@{CONN_VERSION}", f"{CONN_SERIES_VIEW}@{CONN_SERIES_VERSION}")
SERIES_VIEW = f"{CONN_SERIES_VIEW}@{CONN_SERIES_VERSION}"
"""Views the daemon computes live (``name@version``); a model must read one of them."""
_RING = RingConfig()
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOUR, DAY, YEAR = 3600.0, 86400.0, 365 * 86400.0


def opt(default: Any = MISSING, doc: str = "", *, choices: Iterable[Any] | None = None,
        min: float | None = None, max: float | None = None, min_exclusive: bool = False,
        item_min: float | None = None, item_max: float | None = None, path: bool = False) -> Any:
    """A configuration key: default, description and constraints (in field metadata)."""
    meta = {"doc": doc, "choices": tuple(choices) if choices is not None else None, "min": min,
            "max": max, "min_exclusive": min_exclusive, "item_min": item_min, "item_max": item_max,
            "path": path}
    if isinstance(default, (list, tuple)):
        d = tuple(default)
        return field(default_factory=lambda: d, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ServiceSection:
    """[service]: process-level settings."""

    user: str = opt("malsensor", "user to run as after the capture sockets and the metrics port are open "
                                 "(only when started as root; \"\" keeps the starting user)")
    group: str = opt("", "group to run as (\"\" = the user's primary group)")
    on_stop: str = opt("emit", "at SIGTERM, connections still open are classified and written (emit, "
                               "end_reason \"shutdown\") or discarded (drop)", choices=("emit", "drop"))
    watchdog_stall: float = opt(20.0, "seconds a pipeline stage (a capture thread, a model worker, the "
                                      "writer) may make no progress before the health check fails",
                                min=0.0, min_exclusive=True, max=HOUR)
    status_interval: float = opt(5.0, "seconds between STATUS= updates to systemd", min=0.0,
                                 min_exclusive=True, max=HOUR)


@dataclass(frozen=True)
class LoggingSection:
    """[logging]"""

    level: str = opt("info", "log level", choices=LEVELS)
    journal: str = opt("auto", "log to the journal with structured fields (auto = when started by "
                               "systemd)", choices=("auto", "yes", "no"))


@dataclass(frozen=True)
class InterfaceSection:
    """[[interface]]: one network interface to capture on (AF_PACKET, TPACKET_V3)."""

    name: str = opt(MISSING, "interface name; \"default\" = the interface of the default route")
    threads: int = opt(1, "capture threads (sockets in one PACKET_FANOUT group)", min=1, max=64)
    fanout: str = opt("hash", "how the kernel spreads packets over the threads (hash keeps each "
                              "connection on one thread)", choices=("hash", "cpu", "lb"))
    promiscuous: bool = opt(True, "put the interface in promiscuous mode")
    ignore_outgoing: bool = opt(False, "skip packets this host sends")
    bpf: str = opt("", "BPF filter expression (tcpdump syntax, compiled by libpcap); \"\" = all")
    block_size: int = opt(_RING.block_size, "ring block size in bytes (a multiple of the page size; "
                                            "the kernel hands over whole blocks)", min=4096, max=1 << 30)
    block_count: int = opt(_RING.block_count, "ring blocks per thread (ring memory = block_size * "
                                              "block_count per thread)", min=2, max=1 << 16)
    frame_size: int = opt(_RING.frame_size, "ring frame size (multiple of 16 dividing block_size; "
                                            "TPACKET_V3 packs packets regardless)", min=64,
                            max=1 << 30)
    retire_timeout_ms: int = opt(_RING.retire_timeout_ms, "a partly filled block is handed over this "
                                                          "long after its first packet", min=1, max=60000)
    snaplen: int = opt(_RING.snaplen, "bytes of each packet copied into the ring", min=64, max=262144)


@dataclass(frozen=True)
class ReplaySection:
    """[replay]: replay a capture file instead of capturing live."""

    file: str = opt("", "pcap or pcapng file (optionally gzip-compressed); \"\" = no replay", path=True)
    repeat: int = opt(1, "passes over the file (0 = forever); the daemon exits after the last", min=0,
                      max=1_000_000)
    pause: float = opt(0.0, "seconds to wait between passes", min=0.0, max=DAY)
    rate: float = opt(0.0, "pace the replay to this many finished connections per second (0 = as fast as "
                           "possible)", min=0.0, max=1e9)


def _tracker_doc() -> dict[str, str]:
    return {
        "max_flows": "bound on concurrently tracked connections (per capture thread)",
        "midstream": "also track TCP connections first seen without their SYN",
        "tcp_idle_timeout": "seconds without a packet before a TCP connection ends (\"idle\")",
        "udp_idle_timeout": "seconds without a packet before a UDP flow ends",
        "other_idle_timeout": "the same for ICMP, ICMPv6 and every other IP protocol",
        "active_timeout": "a connection older than this is emitted (\"active\") and goes on as a new record",
        "handshake_timeout": "a TCP handshake not completed this long after its first SYN ends (\"handshake\")",
        "close_linger": "seconds after FIN both ways or RST during which packets still count",
        "sweep_interval": "seconds (packet time) between timeout sweeps of the whole table",
        "evict_candidates": "when the table is full, the least recently active of this many slots is evicted",
        "icmp_errors_extend_tcp": "an ICMP error quoting a tracked TCP connection moves its end time (as Argus)",
        "argus_tcp": "time the TCP handshake as Argus does (for semantics = \"argus\")",
    }


TRACKER_KEYS = tuple(f.name for f in fields(TrackerConfig) if f.name != "snapshot_packets")


@dataclass(frozen=True)
class TrackingSection:
    """[tracking]: connection tracking (TrackerConfig) plus feature semantics and a protocol filter."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    semantics: str = opt("malsensor", "feature definitions (docs/features.md)", choices=SEMANTICS)
    protocols: tuple[str, ...] = opt((), "only connections of these IP protocols (names or numbers; "
                                         "[] = all)")


@dataclass(frozen=True)
class InferenceSection:
    """[inference]: batching between the capture threads and the models."""

    batch_sizes: tuple[int, ...] = opt((1, 16, 128, 1024), "batch sizes each model is compiled for "
                                                           "(a batch is padded to the next one)",
                                       item_min=1, item_max=1 << 16)
    max_delay_ms: float = opt(5.0, "a partial batch is sent to the model this long after its oldest "
                                   "connection arrived (latency bound)", min=0.0, max=60_000.0)
    queue_size: int = opt(65536, "connections waiting per model; beyond that live connections are "
                                 "dropped and counted", min=1, max=1 << 24)
    watch_interval: float = opt(1.0, "seconds between checks of each models directory's current link",
                                min=0.0, min_exclusive=True, max=HOUR)


@dataclass(frozen=True)
class ModelSection:
    """[[model]]: a model run on every connection (or early, after N packets)."""

    name: str = opt(MISSING, "name used in events, outputs and metrics (letters, digits, _ . -)")
    models_dir: str = opt("/var/lib/malsensor/models", "folder of published models "
                                                       "(malsensor-train fit --out)", path=True)
    artifact: str = opt("", "model folder inside models_dir whose current link is followed and watched "
                            "(\"\" = the model's name)")
    path: str = opt("", "a fixed artifact directory instead of models_dir/artifact (not watched)", path=True)
    view: str = opt(f"{CONN_VIEW}@{CONN_VERSION}", "feature view the model reads", choices=KNOWN_VIEWS)
    trigger: str = opt("end", "classify at connection end, or early once a connection has early_packets "
                              "packets (connections ending before that are classified at their end)",
                       choices=("end", "early"))
    early_packets: int = opt(0, "packets (both directions) for trigger = \"early\"", min=0,
                             max=1_000_000)
    lookback: int = opt(0, "view = \"conn_series@1\" only: series length L (2..10); the model reads the conn "
                           "features after 2, 4, 8, ... packets and classifies a connection at "
                           "2**L packets or at its end, whichever comes first (trigger = \"end\")", min=0,
                       max=64)  # (the cross-checks narrow it to 2..10 for conn_series@1)
    labels: str = opt("", "JSON array of label strings overriding the artifact's labels.json", path=True)
    topk: int = opt(3, "classes listed in an event's prediction.topk", min=1, max=100)
    alert_threshold: float = opt(0.5, "a prediction is an alert when its label is not benign and its "
                                      "probability is at least this", min=0.0, max=1.0)
    benign_labels: tuple[str, ...] = opt(("benign", "normal", "0"), "labels that never alert")

    @property
    def is_series(self) -> bool:
        return self.view == SERIES_VIEW

    @property
    def view_shape(self) -> tuple[int, ...]:
        """The input shape the model's artifact must declare."""
        return (self.lookback, N_FEATURES) if self.is_series else (N_FEATURES,)


@dataclass(frozen=True)
class OutputSection:
    """[[output]]: a JSONL file of events."""

    path: str = opt(MISSING, "file events are appended to (reopened on SIGHUP for logrotate)", path=True)
    format: str = opt("eve", "eve: EVE-style JSON objects; label: one JSON string (the label) per line",
                      choices=("eve", "label"))
    models: tuple[str, ...] = opt((), "models whose predictions go here ([] = all)")
    alerts_only: bool = opt(False, "write only predictions that are alerts")
    features: bool = opt(True, "eve: include the connection's features (\"conn\" object)")


@dataclass(frozen=True)
class StatsSection:
    """[stats]"""

    interval: float = opt(10.0, "seconds between stats records", min=0.0, min_exclusive=True, max=DAY)
    path: str = opt("/var/log/malsensor/stats.jsonl", "stats JSONL file (\"\" = none)", path=True)
    log: bool = opt(True, "also write a one-line summary to the log")


@dataclass(frozen=True)
class MetricsSection:
    """[metrics]: Prometheus endpoint (prometheus_client)."""

    enabled: bool = opt(True, "serve /metrics")
    listen: str = opt("127.0.0.1", "address to bind (loopback by default)")
    port: int = opt(9477, "TCP port (0 = any free port, logged at start)", min=0, max=65535)


@dataclass(frozen=True)
class Config:
    """The whole file."""

    path: str = ""
    service: ServiceSection = field(default_factory=ServiceSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    interfaces: tuple[InterfaceSection, ...] = ()
    replay: ReplaySection = field(default_factory=ReplaySection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    inference: InferenceSection = field(default_factory=InferenceSection)
    models: tuple[ModelSection, ...] = ()
    outputs: tuple[OutputSection, ...] = ()
    stats: StatsSection = field(default_factory=StatsSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)

    def tracker_config(self) -> TrackerConfig:
        """TrackerConfig with the snapshot points the early-triggered models need."""
        snaps = {m.early_packets for m in self.models if m.trigger == "early"}
        for m in self.models:
            if m.is_series:
                snaps.update(SERIES_POINTS[:m.lookback])
        snaps = sorted(snaps)
        return replace(self.tracking.tracker, snapshot_packets=tuple(snaps))

    def protocol_numbers(self) -> frozenset[int] | None:
        if not self.tracking.protocols:
            return None
        return frozenset(_protocol_number(p) for p in self.tracking.protocols)

    def model(self, name: str) -> ModelSection:
        return next(m for m in self.models if m.name == name)


# TOML name -> (Config attribute, section class, is an array of tables)
SECTIONS: dict[str, tuple[str, type, bool]] = {
    "service": ("service", ServiceSection, False),
    "logging": ("logging", LoggingSection, False),
    "interface": ("interfaces", InterfaceSection, True),
    "replay": ("replay", ReplaySection, False),
    "tracking": ("tracking", TrackingSection, False),
    "inference": ("inference", InferenceSection, False),
    "model": ("models", ModelSection, True),
    "output": ("outputs", OutputSection, True),
    "stats": ("stats", StatsSection, False),
    "metrics": ("metrics", MetricsSection, False),
}


def _protocol_number(p: str) -> int:
    s = str(p).strip().lower()
    if s.isdigit() and 0 <= int(s) <= 255:
        return int(s)
    return PROTOCOL_NAMES[s]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


# --------------------------------------------------------------------------- field specs


@dataclass(frozen=True)
class KeySpec:
    name: str
    type: Any
    default: Any
    doc: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    item_min: float | None = None
    path: bool = False
    item_max: float | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING


def _specs(cls: type) -> list[KeySpec]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if f.name == "tracker":
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)  # type: ignore[misc]
        m = f.metadata
        out.append(KeySpec(f.name, hints[f.name], default, m.get("doc", ""), m.get("choices"), m.get("min"),
                           m.get("max"), m.get("min_exclusive", False), m.get("item_min"), m.get("path", False),
                           m.get("item_max")))
    return out


# (min, max, min exclusive) of the tracker's numeric keys. Times are seconds of packet time
# turned into int64 nanoseconds and added to packet times (~1.7e18 ns now): a year bounds the
# sum far below 2**63 (8e9 s wrapped it and every connection ended with "unknown_0"). The table
# takes ~250 bytes per flow (the extract summary's bytes/flow): 2**26 flows are ~16 GiB.
TRACKER_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_flows": (1, 1 << 26, False),
    "tcp_idle_timeout": (0.0, YEAR, True),
    "udp_idle_timeout": (0.0, YEAR, True),
    "other_idle_timeout": (0.0, YEAR, True),
    "active_timeout": (0.0, YEAR, True),
    "handshake_timeout": (0.0, YEAR, True),
    "close_linger": (0.0, YEAR, False),
    "sweep_interval": (0.0, HOUR, True),
    "evict_candidates": (1, 1024, False),
}


def _tracker_specs() -> list[KeySpec]:
    hints = typing.get_type_hints(TrackerConfig)
    docs = _tracker_doc()
    d = TrackerConfig()
    out = []
    for name in TRACKER_KEYS:
        lo, hi, excl = TRACKER_RANGES.get(name, (None, None, False))
        out.append(KeySpec(name, hints[name], getattr(d, name), docs.get(name, ""), None, lo, hi, excl))
    return out


def section_specs(toml_name: str) -> list[KeySpec]:
    """The keys of one section, in file order (the tracker's first for [tracking])."""
    cls = SECTIONS[toml_name][1]
    if cls is TrackingSection:
        return _tracker_specs() + _specs(TrackingSection)
    return _specs(cls)


# --------------------------------------------------------------------------- validation


class _Checker:
    def __init__(self, file: str, lines: dict[KeyPath, int]) -> None:
        self.file = file
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.file, line_of(self.lines, path), format_path(path), message))

    def value(self, spec: KeySpec, v: Any, path: KeyPath) -> tuple[bool, Any]:
        """Type-check and range-check one value; returns (ok, converted value)."""
        t = spec.type
        origin = typing.get_origin(t)
        if origin is tuple:
            item_t = typing.get_args(t)[0]
            if not isinstance(v, list):
                self.problem(path, f"expected an array of {_tname(item_t)}s, got {_describe(v)}")
                return False, None
            items = []
            ok = True
            for i, item in enumerate(v):
                good, conv = self._scalar(item_t, item, (*path, i), spec, is_item=True)
                ok &= good
                items.append(conv)
            return ok, tuple(items)
        return self._scalar(t, v, path, spec)

    def _scalar(self, t: Any, v: Any, path: KeyPath, spec: KeySpec, is_item: bool = False) -> tuple[bool, Any]:
        shown = format_path(path[:-1]) + f"[{path[-1]}]" if is_item else None
        where = path[:-1] if is_item else path

        def bad(msg: str) -> tuple[bool, Any]:
            self.problem(where, f"item {path[-1]}: {msg}" if shown else msg)
            return False, None

        if t is bool:
            if not isinstance(v, bool):
                return bad(f"expected true or false, got {_describe(v)}")
        elif t is int:
            if isinstance(v, bool) or not isinstance(v, int):
                return bad(f"expected an integer, got {_describe(v)}")
        elif t is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return bad(f"expected a number, got {_describe(v)}")
            try:
                v = float(v)
            except OverflowError:  # a TOML integer of hundreds of digits
                return bad(f"{_num(v)} is out of range (allowed: {_range_text(spec.min, spec.max, spec.min_exclusive)})")
            if v != v or v in (float("inf"), float("-inf")):
                return bad("expected a finite number")
        elif t is str:
            if not isinstance(v, str):
                return bad(f"expected a string, got {_describe(v)}")
        if not is_item and spec.choices is not None and v not in spec.choices:
            return bad(f"{v!r} is not allowed (allowed: {', '.join(map(str, spec.choices))})")
        if t in (int, float):
            lo = spec.item_min if is_item else spec.min
            hi = spec.item_max if is_item else spec.max
            excl = spec.min_exclusive and not is_item
            if (lo is not None and (v < lo or (excl and v == lo))) or (hi is not None and v > hi):
                return bad(f"{_num(v)} is out of range (allowed: {_range_text(lo, hi, excl)})")
        return True, v

    def section(self, toml_name: str, data: Any, path: KeyPath, base_dir: Path) -> Any:
        cls = SECTIONS[toml_name][1]
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, got {_describe(data)}")
            return None
        specs = {s.name: s for s in section_specs(toml_name)}
        values: dict[str, Any] = {}
        ok = True
        for key, v in data.items():
            spec = specs.get(key)
            if spec is None:
                close = difflib.get_close_matches(key, specs, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.problem((*path, key), f"unknown key{hint} (allowed: {', '.join(specs)})")
                ok = False
                continue
            good, conv = self.value(spec, v, (*path, key))
            if not good:
                ok = False
                continue
            if spec.path and conv:
                conv = _abspath(conv, base_dir)
            values[key] = conv
        for s in specs.values():
            if s.required and s.name not in values and s.name not in data:
                self.problem(path, f"missing required key {s.name!r}")
                ok = False
        if not ok:
            return None
        if cls is TrackingSection:
            tk = {k: values.pop(k) for k in list(values) if k in TRACKER_KEYS}
            try:  # keys left out take the lifecycle of the chosen semantics (Argus's for "argus")
                tracker = TrackerConfig.for_semantics(values.get("semantics", "malsensor"), **tk)
            except ValueError as e:
                key = str(e).split()[0]
                self.problem((*path, key) if key in TRACKER_KEYS else path, str(e))
                return None
            values["tracker"] = tracker
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:  # pragma: no cover - the specs above should catch it
            self.problem(path, str(e))
            return None


def check_override(toml_name: str, key: str, value: Any, option: str) -> Any:
    """One value given outside the file (a command-line option) through the file's type and
    range checks; raises :class:`ConfigError` reading ``OPTION: section.key: problem``."""
    spec = next(s for s in section_specs(toml_name) if s.name == key)
    ck = _Checker(option, {})
    ok, conv = ck.value(spec, value, (toml_name, key))
    if not ok:
        raise ConfigError(ck.problems)
    return conv


def tracker_from_options(semantics: str, given: dict[str, Any]) -> TrackerConfig:
    """The TrackerConfig of command-line tracking options (``--tcp-idle-timeout`` ...), each
    checked against the [tracking] key's range; raises :class:`ConfigError`."""
    problems: list[Problem] = []
    for key, v in given.items():
        if key in TRACKER_KEYS:
            try:
                check_override("tracking", key, v, "--" + key.replace("_", "-"))
            except ConfigError as e:
                problems += e.problems
    if problems:
        raise ConfigError(problems)
    try:
        return TrackerConfig.for_semantics(semantics, **given)
    except ValueError as e:
        raise ConfigError([Problem("command line", None, "", str(e))]) from None


def _abspath(p: str, base: Path) -> str:
    pp = Path(os.path.expanduser(p))
    return str(pp if pp.is_absolute() else (base / pp))


def _tname(t: Any) -> str:
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(t, str(t))


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"number {_num(v) if isinstance(v, int) else repr(v)}"
    if isinstance(v, str):
        return f"string {v!r}"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def range_text(spec: KeySpec) -> str:
    """A numeric key's allowed range as messages and docs/daemon.md write it."""
    return _range_text(spec.min, spec.max, spec.min_exclusive)


def _range_text(lo: float | None, hi: float | None, excl: bool) -> str:
    if lo is None:
        return f"<= {_num(hi)}"
    if hi is None:
        return f"{'>' if excl else '>='} {_num(lo)}"
    return f"> {_num(lo)} and <= {_num(hi)}" if excl else f"{_num(lo)}..{_num(hi)}"


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    if isinstance(v, int):
        return str(v) if abs(v) < 10 ** 30 else f"an integer of {len(str(abs(v)))} digits"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else repr(v)


def parse_config(text: str, file: str = "<config>", base_dir: str | os.PathLike | None = None) -> Config:
    """Validate a configuration document; raises :class:`ConfigError` listing every problem."""
    base = Path(base_dir) if base_dir is not None else (Path(file).resolve().parent if file != "<config>"
                                                        else Path.cwd())
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        if m:
            raise ConfigError([Problem(file, int(m.group(1)), "", f"TOML syntax error at column "
                                                                  f"{m.group(2)}: {msg}")]) from None
        raise ConfigError([Problem(file, None, "", f"TOML syntax error: {msg}")]) from None
    ck = _Checker(file, key_lines(text))
    values: dict[str, Any] = {"path": file}
    for key, data in doc.items():
        if key not in SECTIONS:
            close = difflib.get_close_matches(key, SECTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            shape = "[[...]]" if isinstance(data, list) else "[...]"
            ck.problem((key,), f"unknown section{hint} (allowed: "
                               f"{', '.join(('[[' + k + ']]') if v[2] else ('[' + k + ']') for k, v in SECTIONS.items())})"
                       if isinstance(data, (dict, list)) else f"unknown top-level key{hint}; keys belong in a "
                                                              f"section {shape}")
            continue
        attr, _cls, is_array = SECTIONS[key]
        if is_array:
            if not isinstance(data, list):
                ck.problem((key,), f"expected an array of tables [[{key}]], got {_describe(data)}")
                continue
            items = [ck.section(key, item, (key, i), base) for i, item in enumerate(data)]
            values[attr] = tuple(items)
        else:
            values[attr] = ck.section(key, data, (key,), base)
    # cross-checks also run over what validated so far, so that one pass reports everything
    # (failed array items stay as None so that indices in messages keep matching the file)
    partial = {k: v for k, v in values.items() if v is not None}
    cfg = Config(**partial)
    raw_models = doc.get("model") if isinstance(doc.get("model"), list) else []
    model_names = {m.get("name") for m in raw_models if isinstance(m, dict) and isinstance(m.get("name"), str)}
    _cross_check(cfg, ck, model_names)
    if ck.problems:
        raise ConfigError(ck.problems)
    return cfg


def _cross_check(cfg: Config, ck: _Checker, model_names: set) -> None:
    """Rules that involve several keys or sections."""
    seen: dict[str, int] = {}
    for i, m in enumerate(cfg.models):
        if m is None:
            continue
        if not NAME_RE.match(m.name):
            ck.problem(("model", i, "name"), f"{m.name!r} is not a valid name (letters, digits, _ . -; at most "
                                             "64 characters, starting with a letter or digit)")
        if m.name in seen:
            ck.problem(("model", i, "name"), f"duplicate model name {m.name!r} (also model[{seen[m.name]}])")
        seen.setdefault(m.name, i)
        if m.trigger == "early" and m.early_packets < 1:
            ck.problem(("model", i, "early_packets"), "trigger = \"early\" needs early_packets >= 1")
        if m.trigger == "end" and m.early_packets:
            ck.problem(("model", i, "early_packets"), "early_packets is only used with trigger = \"early\"")
        if m.is_series:
            if not 2 <= m.lookback <= len(SERIES_POINTS):
                ck.problem(("model", i, "lookback"), f"view = \"{SERIES_VIEW}\" needs lookback = 2..{len(SERIES_POINTS)} "
                                                     f"(the series points are {list(SERIES_POINTS)})")
            if m.trigger != "end":
                ck.problem(("model", i, "trigger"), f"a {SERIES_VIEW} model classifies at its last series point or at "
                                                    "the connection's end: trigger must be \"end\"")
        elif m.lookback:
            ck.problem(("model", i, "lookback"), f"lookback is only used with view = \"{SERIES_VIEW}\"")
        if not m.path and not m.models_dir:
            ck.problem(("model", i), "set either path (a fixed artifact) or models_dir")
        if m.artifact and ("/" in m.artifact or m.artifact in (".", "..")):
            ck.problem(("model", i, "artifact"), f"{m.artifact!r} must be a folder name inside models_dir")
    for path, message in output_clashes(cfg):
        ck.problem(path, message)
    for i, o in enumerate(cfg.outputs):
        if o is None:
            continue
        for name in o.models:
            if name not in model_names:
                ck.problem(("output", i, "models"), f"no model named {name!r} (models: "
                                                    f"{', '.join(sorted(map(str, model_names))) or 'none configured'})")
    names: dict[str, int] = {}
    for i, itf in enumerate(cfg.interfaces):
        if itf is None:
            continue
        if itf.name in names:
            ck.problem(("interface", i, "name"), f"interface {itf.name!r} is also interface[{names[itf.name]}]")
        names.setdefault(itf.name, i)
        try:
            ring_config(itf)
        except ValueError as e:
            key = str(e).split()[0]
            ck.problem(("interface", i, key) if key in _RING_KEYS else ("interface", i), str(e))
        if itf.bpf:
            try:
                from ..capture.bpf import BpfError, compile_filter
            except ImportError:  # pragma: no cover
                continue
            try:
                compile_filter(itf.bpf)
            except BpfError as e:
                ck.problem(("interface", i, "bpf"), str(e))
    for i, p in enumerate(cfg.tracking.protocols):
        try:
            _protocol_number(p)
        except KeyError:
            ck.problem(("tracking", "protocols"), f"item {i}: unknown protocol {p!r} (allowed: "
                                                  f"{', '.join(PROTOCOL_NAMES)} or a number 0-255)")
    bs = cfg.inference.batch_sizes
    if not bs:
        ck.problem(("inference", "batch_sizes"), "needs at least one batch size")
    elif list(bs) != sorted(set(bs)):
        ck.problem(("inference", "batch_sizes"), f"{list(bs)} must be strictly increasing")


def output_clashes(cfg: Config) -> list[tuple[KeyPath, str]]:
    """Outputs (and the stats file) that would write one file: paths compared once resolved
    (``..``, symbolic links), so that EVE objects and label strings never share a file."""
    out: list[tuple[KeyPath, str]] = []
    seen: dict[str, int] = {}
    stats = os.path.realpath(cfg.stats.path) if cfg.stats.path else None
    for i, o in enumerate(cfg.outputs):
        if o is None:
            continue
        real = os.path.realpath(o.path)
        if real in seen:
            j = seen[real]
            same = "" if o.path == cfg.outputs[j].path else f" ({real})"
            out.append((("output", i, "path"), f"{o.path} is also output[{j}]'s file{same}"))
        seen.setdefault(real, i)
        if real == stats:
            out.append((("output", i, "path"), "is also the stats file"))
    return out


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([Problem(str(p), None, "", f"cannot read: {e.strerror or e}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError([Problem(str(p), line, "", f"not UTF-8 (byte offset {e.start})")]) from None
    return parse_config(text, str(p), p.resolve().parent)


_RING_KEYS = ("block_size", "block_count", "frame_size", "retire_timeout_ms", "snaplen")


def ring_config(itf: InterfaceSection) -> RingConfig:
    """The capture ring geometry of one [[interface]] (raises ValueError naming the key)."""
    return RingConfig(**{k: getattr(itf, k) for k in _RING_KEYS})


def check_sources(cfg: Config) -> list[str]:
    """Problems that make the configuration unrunnable as a service (no source at all, or two)."""
    out = []
    if not cfg.interfaces and not cfg.replay.file:
        out.append(f"{cfg.path}: no capture source: add an [[interface]] table or set [replay] file")
    if cfg.interfaces and cfg.replay.file:
        out.append(f"{cfg.path}: [[interface]] and [replay] file are both set; use one of them")
    return out


def model_artifact_path(m: ModelSection) -> Path:
    """The path the registry loads for a model: the fixed artifact, or MODELS_DIR/NAME (whose
    ``current`` link the loader follows)."""
    if m.path:
        return Path(m.path)
    return Path(m.models_dir) / (m.artifact or m.name)
