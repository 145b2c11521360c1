"""malsensor.toml: the daemon's configuration schema, as dataclasses, and its validation.

Every section is a frozen dataclass whose fields carry their default, their allowed
values or range and a one-line description (``etc/malsensor.toml`` documents each key;
a test keeps the two in step). :func:`load_config` parses the file with :mod:`tomllib`
and checks every key with the one schema checker (:mod:`malsensor.daemon.schema`): a
problem is reported as ``FILE:LINE: key.path: what is wrong (allowed: ...)``, all
problems of a file at once, and an unknown key is an error, so a typo never goes unnoticed.

Two kinds of table get their keys from a registry rather than from this file:
``[[source]]`` (the keys of its ``kind``, see :mod:`malsensor.daemon.sources`) and
``[[model]]`` (the generic keys below plus those of its ``view``, see
:mod:`malsensor.daemon.views.base`). ``[[interface]]`` and ``[replay]`` are the old
spellings of ``[[source]] kind = "afpacket"`` and ``kind = "pcap"``; they still load,
with a notice.

Relative paths in the file are taken relative to the directory of the file.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..flows.config import TrackerConfig
from ..logs import LEVELS
from ..protocols import PROTOCOL_NAMES, protocol_number
from ..plugins import RegistryError, load_plugins
from ..schema import Checker, ConfigError, KeySpec, Problem, describe, opt, range_of, specs_of
from ..sources import SOURCES
from ..views.base import VIEWS, View
from ..views.conn import CONN_VERSION, CONN_VIEW, SEMANTICS
from .tomlpos import KeyPath, key_lines

__all__ = ["Config", "ConfigError", "Problem", "load_config", "parse_config", "check_sources"]

DEFAULT_CONFIG = "/etc/malsensor/malsensor.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BUILTIN_SOURCES = ("afpacket", "pcap", "procfs", "pt_spool")   # documented in etc/malsensor.toml (plugins add more)
BUILTIN_VIEWS = ("conn@1", "conn_ctx@1", "conn_profile@1", "conn_series@1", "pkt_seq@1", "device_bag@1", "proc_volume@1",
                 "host_volume@1", "pt_tokens@1")
ALIASES = {"interface": "afpacket", "replay": "pcap"}  # old section -> [[source]] kind
HOUR, DAY, YEAR = 3600.0, 86400.0, 365 * 86400.0


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
    host: str = opt("", "the name events carry in \"host\" (\"\" = this machine's hostname)")
    plugins: tuple[str, ...] = opt((), "Python modules imported at start that register more sources, "
                                       "views or event formatters (as $MALSENSOR_PLUGINS does)")


@dataclass(frozen=True)
class LoggingSection:
    """[logging]"""

    level: str = opt("info", "log level", choices=LEVELS)
    journal: str = opt("auto", "log to the journal with structured fields (auto = when started by "
                               "systemd)", choices=("auto", "yes", "no"))



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


TRACKER_KEYS = tuple(f.name for f in fields(TrackerConfig) if f.name not in ("snapshot_packets", "seq_packets"))


@dataclass(frozen=True)
class TrackingSection:
    """[tracking]: connection tracking (TrackerConfig) plus feature semantics and a protocol filter."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)  # its keys are the [tracking] keys
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
    """[[model]]: a model run on what its view selects (every connection, or early, ...)."""

    name: str = opt(MISSING, "name used in events, outputs and metrics (letters, digits, _ . -)")
    models_dir: str = opt("/var/lib/malsensor/models", "folder of published models "
                                                       "(malsensor-train fit --out)", path=True)
    artifact: str = opt("", "model folder inside models_dir whose current link is followed and watched "
                            "(\"\" = the model's name)")
    path: str = opt("", "a fixed artifact directory instead of models_dir/artifact (not watched)", path=True)
    view: str = opt(f"{CONN_VIEW}@{CONN_VERSION}", "feature view the model reads (name@version; the view adds "
                                                   "its own keys below)")
    labels: str = opt("", "JSON array of label strings overriding the artifact's labels.json", path=True)
    topk: int = opt(3, "classes listed in an event's prediction.topk", min=1, max=100)
    alert_threshold: float = opt(0.5, "a prediction is an alert when its label is not benign and its "
                                      "probability is at least this", min=0.0, max=1.0)
    benign_labels: tuple[str, ...] = opt(("benign", "normal", "0"), "labels that never alert")
    options: Any = field(default=None, compare=True)  # the view's keys (an instance of view.options)

    def __post_init__(self) -> None:
        if self.options is None:  # built in code rather than read from a file: the view's defaults
            object.__setattr__(self, "options", VIEWS.get(self.view).options())

    def view_spec(self) -> View:
        return VIEWS.get(self.view)

    def input_shape(self) -> tuple[int, ...]:
        """The per-sample shape the model's artifact must declare."""
        return tuple(self.view_spec().shape(self.options))


OUTPUT_KINDS = ("file", "redis")
REDIS_MODES = ("list", "lpush", "rpush", "channel", "publish", "stream", "xadd")
_REDIS = ("redis",)


@dataclass(frozen=True)
class OutputSection:
    """[[output]]: where events go: a JSONL file, or a redis list, channel or stream (Suricata's EVE
    redis output, with a bounded spool on disk while the server is down or slow)."""

    path: str = opt("", "file: the file events are appended to (reopened on SIGHUP for logrotate)", path=True,
                    kinds=("file",), required_for=("file",))
    kind: str = opt("file", "file: a JSONL file; redis: a redis server (daemon/outputs/redis.py)",
                    choices=OUTPUT_KINDS)
    format: str = opt("eve", "eve: EVE-style JSON objects; label: one JSON string (the label) per line",
                      choices=("eve", "label"))
    models: tuple[str, ...] = opt((), "models whose predictions go here ([] = all)")
    alerts_only: bool = opt(False, "write only predictions that are alerts")
    features: bool = opt(True, "eve: include the connection's features (\"conn\" object)")
    community_id_seed: int = opt(0, "eve: seed of each event's Community ID (community_id); Zeek's and "
                                 "Suricata's logs must use the same seed for the IDs to match", min=0, max=65535)
    server: str = opt("127.0.0.1", "redis: server address or name, or the path of its unix socket (a value "
                                   "with a /)", kinds=_REDIS)
    port: int = opt(6379, "redis: TCP port", min=1, max=65535, kinds=_REDIS)
    database: int = opt(0, "redis: database number (SELECT)", min=0, max=65535, kinds=_REDIS)
    password: str = opt("", "redis: password (AUTH; \"\" = none)", kinds=_REDIS)
    mode: str = opt("list", "redis: list/lpush (LPUSH), rpush (RPUSH), channel/publish (PUBLISH), "
                            "stream/xadd (XADD, field \"eve\")", choices=REDIS_MODES, kinds=_REDIS)
    key: str = opt("malsensor", "redis: the list, channel or stream", kinds=_REDIS)
    stream_maxlen: int = opt(100000, "redis, stream mode: XADD MAXLEN (0 = the stream is never trimmed)", min=0,
                             max=1 << 40, kinds=_REDIS)
    stream_trim_exact: bool = opt(False, "redis, stream mode: trim to exactly stream_maxlen (MAXLEN =) "
                                         "instead of approximately (MAXLEN ~, cheaper)", kinds=_REDIS)
    pipelining: bool = opt(True, "redis: send batch_size events per round trip (false: one event per "
                                 "command, each reply awaited)", kinds=_REDIS)
    batch_size: int = opt(256, "redis: events per round trip when pipelining", min=1, max=100000, kinds=_REDIS)
    timeout: float = opt(2.0, "redis: seconds to connect or to wait for a reply before the server counts as "
                              "down (events then go to the spool)", min=0.0, min_exclusive=True, max=3600.0, kinds=_REDIS)
    queue_max_bytes: int = opt(16 << 20, "redis: bound of the in-memory queue between the writer and the redis "
                                         "thread; beyond it events are dropped and counted", min=1, max=1 << 34, kinds=_REDIS)
    spool_dir: str = opt("/var/lib/malsensor/spool/redis", "redis: directory of the on-disk spool (events "
                                                           "waiting for the server, delivered in order)",
                         path=True, kinds=_REDIS)
    spool_max_bytes: int = opt(256 << 20, "redis: bound of the spool on disk; events that do not fit are dropped "
                                          "and counted (0 = no spool)", min=0, max=1 << 44, kinds=_REDIS)

    @property
    def target(self) -> str:
        """What this output writes to, as logs, stats and metrics name it."""
        if self.kind == "redis":
            where = f"unix:{self.server}" if "/" in self.server else f"{self.server}:{self.port}"
            return f"redis://{where}/{self.database}/{self.key}"
        return self.path


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
    sources: tuple[Any, ...] = ()   # the kinds' config dataclasses, in file order
    tracking: TrackingSection = field(default_factory=TrackingSection)
    inference: InferenceSection = field(default_factory=InferenceSection)
    models: tuple[ModelSection, ...] = ()
    outputs: tuple[OutputSection, ...] = ()
    stats: StatsSection = field(default_factory=StatsSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    notices: tuple[str, ...] = ()   # deprecations: worth a log line, not an error

    def tracker_config(self) -> TrackerConfig:
        """TrackerConfig with the snapshot points the models' connection views need."""
        snaps: set[int] = set()
        seq = 0
        for m in self.models:
            view = m.view_spec()
            if view.consumes == "connections":
                snaps |= view.snapshot_points(m.options)
                seq = max(seq, view.seq_packets(m.options))
        return replace(self.tracking.tracker, snapshot_packets=tuple(sorted(snaps)), seq_packets=seq)

    def protocol_numbers(self) -> frozenset[int] | None:
        if not self.tracking.protocols:
            return None
        return frozenset(protocol_number(p) for p in self.tracking.protocols)

    def sources_of(self, kind: str) -> tuple[Any, ...]:
        return tuple(s for s in self.sources if s.kind == kind)


# TOML name -> (Config attribute, section class, is an array of tables); [[source]] and
# [[model]] take some of their keys from the source kind and the view (see module doc)
SECTIONS: dict[str, tuple[str, type | None, bool]] = {
    "service": ("service", ServiceSection, False),
    "logging": ("logging", LoggingSection, False),
    "source": ("sources", None, True),
    "tracking": ("tracking", TrackingSection, False),
    "inference": ("inference", InferenceSection, False),
    "model": ("models", ModelSection, True),
    "output": ("outputs", OutputSection, True),
    "stats": ("stats", StatsSection, False),
    "metrics": ("metrics", MetricsSection, False),
}


# --------------------------------------------------------------------------- key specs


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
    docs = _tracker_doc()
    d = TrackerConfig()
    out = []
    for s in specs_of(TrackerConfig, skip=("snapshot_packets", "seq_packets")):
        lo, hi, excl = TRACKER_RANGES.get(s.name, (None, None, False))
        out.append(KeySpec(s.name, s.type, getattr(d, s.name), docs.get(s.name, ""), None, lo, hi, excl))
    return out


def _merged(spec_lists) -> list[KeySpec]:
    """Keys of several tables, each name once (the first spelling wins), in order."""
    seen: dict[str, KeySpec] = {}
    for specs in spec_lists:
        for s in specs:
            seen.setdefault(s.name, s)
    return list(seen.values())


KIND_SPEC = KeySpec("kind", str, MISSING, "what the source is (afpacket, pcap, or a plugin's kind)")


def section_specs(toml_name: str) -> list[KeySpec]:
    """The keys of one section, in file order (the tracker's first for [tracking]; for
    [[source]] and [[model]] those of the built-in kinds and views as well)."""
    if toml_name == "source":
        return [KIND_SPEC, *_merged(specs_of(SOURCES.get(k).config) for k in BUILTIN_SOURCES)]
    if toml_name == "model":
        return _merged([specs_of(ModelSection, skip=("options",)),
                        *(VIEWS.get(v).option_specs() for v in BUILTIN_VIEWS)])
    cls = SECTIONS[toml_name][1]
    if cls is TrackingSection:
        return _tracker_specs() + specs_of(TrackingSection, skip=("tracker",))
    return specs_of(cls)


# --------------------------------------------------------------------------- validation


class _ConfigChecker(Checker):
    def section(self, toml_name: str, data: Any, path: KeyPath, base_dir: Path) -> Any:
        if toml_name == "source":
            return self.source(data, path, base_dir)
        if toml_name == "model":
            return self.model(data, path, base_dir)
        cls = SECTIONS[toml_name][1]
        values = self.table(section_specs(toml_name), data, path, base_dir)
        if values is None:
            return None
        if cls is TrackingSection:
            tk = {k: values.pop(k) for k in list(values) if k in TRACKER_KEYS}
            try:  # keys left out take the lifecycle of the chosen semantics (Argus's for "argus")
                values["tracker"] = TrackerConfig.for_semantics(values.get("semantics", "malsensor"), **tk)
            except ValueError as e:
                key = str(e).split()[0]
                self.problem((*path, key) if key in TRACKER_KEYS else path, str(e))
                return None
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:  # pragma: no cover - the specs above should catch it
            self.problem(path, str(e))
            return None

    def source(self, data: Any, path: KeyPath, base_dir: Path, kind: str | None = None) -> Any:
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, got {describe(data)}")
            return None
        if kind is None:
            kind = data.get("kind")
            if not isinstance(kind, str):
                self.problem(path if "kind" not in data else (*path, "kind"),
                             "missing required key 'kind'" if "kind" not in data
                             else f"expected a string, got {describe(kind)}")
                return None
        try:
            cls = SOURCES.get(kind)
        except RegistryError as e:
            self.problem((*path, "kind"), str(e))
            return None
        specs = specs_of(cls.config)
        if path[0] == "replay":  # the old [replay] section: file = "" meant "no replay"
            specs = [dataclasses.replace(s, default="") if s.name == "file" else s for s in specs]
        values = self.table(specs, data, path, base_dir, ignore=("kind",) if path[0] == "source" else ())
        if values is None:
            return None
        try:
            return cls.config(**values)
        except (TypeError, ValueError) as e:
            self.problem(path, str(e))
            return None

    def model(self, data: Any, path: KeyPath, base_dir: Path) -> ModelSection | None:
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, got {describe(data)}")
            return None
        ref = data.get("view", ModelSection.view)
        view = None
        if isinstance(ref, str):
            try:
                view = VIEWS.get(ref)
            except RegistryError as e:
                self.problem((*path, "view"), str(e))
            except ValueError as e:
                self.problem((*path, "view"), str(e))
        generic = specs_of(ModelSection, skip=("options",))
        vspecs = view.option_specs() if view is not None else []
        if view is None and isinstance(ref, str):
            data = {k: v for k, v in data.items() if k in {s.name for s in generic}}
        values = self.table([*generic, *vspecs], data, path, base_dir)
        if values is None or view is None:
            return None
        vkeys = {s.name for s in vspecs}
        options = view.options(**{k: values.pop(k) for k in list(values) if k in vkeys and
                                  k not in {s.name for s in generic}})
        view.check(options, self, path)  # (its problems fail the file; the model still takes part in cross-checks)
        return ModelSection(**values, options=options)


def check_override(toml_name: str, key: str, value: Any, option: str) -> Any:
    """One value given outside the file (a command-line option) through the file's type and
    range checks; raises :class:`ConfigError` reading ``OPTION: section.key: problem``."""
    spec = next(s for s in section_specs(toml_name) if s.name == key)
    ck = Checker(option)
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


def range_text(spec: KeySpec) -> str:
    """A numeric key's allowed range as messages and docs/daemon.md write it."""
    return range_of(spec)


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
    lines = key_lines(text)
    ck = _ConfigChecker(file, lines)
    # plugins first: they may add the source kinds and views the rest of the file names
    wanted = doc.get("service", {}).get("plugins", []) if isinstance(doc.get("service"), dict) else []
    try:
        load_plugins(p for p in (wanted if isinstance(wanted, list) else []) if isinstance(p, str))
    except ImportError as e:
        ck.problem(("service", "plugins"), str(e))
    values: dict[str, Any] = {"path": file}
    sources: list[tuple[Any, KeyPath]] = []   # (config or None, key path) in file order
    notices: list[str] = []
    for key, data in doc.items():
        if key in ALIASES:
            kind = ALIASES[key]
            items = data if isinstance(data, list) else [data]
            if key == "interface" and not isinstance(data, list):
                ck.problem((key,), f"expected an array of tables [[{key}]], got {describe(data)}")
                continue
            if key == "replay" and isinstance(data, list):
                ck.problem((key,), f"expected a table [{key}], got {describe(data)}")
                continue
            line = lines.get((key, 0) if key == "interface" else (key,))
            shown = f"[[{key}]]" if key == "interface" else f"[{key}]"
            notices.append(f"{file}:{line or '?'}: {shown} is deprecated: write [[source]] kind = \"{kind}\" "
                           f"with the same keys")
            for i, item in enumerate(items):
                path = (key, i) if key == "interface" else (key,)
                got = ck.source(item, path, base, kind)
                if key == "replay" and got is not None and not got.file:
                    continue  # [replay] file = "": no replay
                sources.append((got, path))
            continue
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
                ck.problem((key,), f"expected an array of tables [[{key}]], got {describe(data)}")
                continue
            items = [ck.section(key, item, (key, i), base) for i, item in enumerate(data)]
            if key == "source":
                sources.extend(zip(items, [(key, i) for i in range(len(items))]))
            else:
                values[attr] = tuple(items)
        else:
            values[attr] = ck.section(key, data, (key,), base)
    values["sources"] = tuple(s for s, _ in sources)
    values["notices"] = tuple(notices)
    # cross-checks also run over what validated so far, so that one pass reports everything
    # (failed array items stay as None so that indices in messages keep matching the file)
    partial = {k: v for k, v in values.items() if v is not None}
    cfg = Config(**partial)
    raw_models = doc.get("model") if isinstance(doc.get("model"), list) else []
    model_names = {m.get("name") for m in raw_models if isinstance(m, dict) and isinstance(m.get("name"), str)}
    _cross_check(cfg, ck, model_names, sources)
    ck.raise_if_any()
    return dataclasses.replace(cfg, sources=tuple(s for s in cfg.sources if s is not None))


def _cross_check(cfg: Config, ck: Checker, model_names: set, sources: list[tuple[Any, KeyPath]]) -> None:
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
        if not m.path and not m.models_dir:
            ck.problem(("model", i), "set either path (a fixed artifact) or models_dir")
        if m.artifact and ("/" in m.artifact or m.artifact in (".", "..")):
            ck.problem(("model", i, "artifact"), f"{m.artifact!r} must be a folder name inside models_dir")
    spools: dict[str, int] = {}
    for path, message in output_clashes(cfg):
        ck.problem(path, message)
    for i, o in enumerate(cfg.outputs):
        if o is None:
            continue
        for name in o.models:
            if name not in model_names:
                ck.problem(("output", i, "models"), f"no model named {name!r} (models: "
                                                    f"{', '.join(sorted(map(str, model_names))) or 'none configured'})")
        if o.kind == "redis" and o.spool_max_bytes:
            if o.spool_dir in spools:
                ck.problem(("output", i, "spool_dir"), f"{o.spool_dir} is also output[{spools[o.spool_dir]}]'s "
                                                       "spool_dir (each redis output needs its own)")
            spools.setdefault(o.spool_dir, i)
    by_kind: dict[str, list[tuple[Any, KeyPath]]] = {}
    for s, path in sources:
        if s is not None:
            by_kind.setdefault(s.kind, []).append((s, path))
    for kind, items in by_kind.items():
        SOURCES.get(kind).check(items, ck)
    for i, p in enumerate(cfg.tracking.protocols):
        try:
            protocol_number(p)
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
        if o.kind != "file":  # a redis list, channel or stream
            if o.target in seen:
                out.append((("output", i, "key"), f"{o.target} is also output[{seen[o.target]}]'s redis key"))
            seen.setdefault(o.target, i)
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


def check_sources(cfg: Config) -> list[str]:
    """Problems that make the configuration unrunnable as a service: no source, or a source that
    ends by itself (a file) beside one that does not, or models whose view no source feeds."""
    out = []
    if not cfg.sources:
        out.append(f"{cfg.path}: no source: add a [[source]] table (kind = \"afpacket\" to capture, "
                   f"\"pcap\" to replay a file)")
        return out
    kinds = [SOURCES.get(s.kind) for s in cfg.sources]
    finite = {k.kind for k in kinds if k.finite}
    if finite and len(finite) != len({k.kind for k in kinds}):
        out.append(f"{cfg.path}: sources of kind {', '.join(sorted(finite))} end by themselves and cannot run "
                   f"beside {', '.join(sorted({k.kind for k in kinds} - finite))}: use one or the other")
    products = {k.produces for k in kinds}
    for m in cfg.models:
        view = m.view_spec()
        if view.consumes not in products:
            out.append(f"{cfg.path}: model {m.name}: view {view.ref} reads {view.consumes}, which no configured "
                       f"source produces (sources: {', '.join(sorted({k.kind for k in kinds}))})")
    return out


def model_artifact_path(m: ModelSection) -> Path:
    """The path the registry loads for a model: the fixed artifact, or MODELS_DIR/NAME (whose
    ``current`` link the loader follows)."""
    if m.path:
        return Path(m.path)
    return Path(m.models_dir) / (m.artifact or m.name)
