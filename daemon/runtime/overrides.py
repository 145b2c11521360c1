"""``malsensord`` command-line options applied on top of the configuration file (they win).

Used at start and again at each reload (SIGHUP re-reads the file; the options still apply).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .config import Config, ConfigError, Problem, check_override, output_clashes
from .tomlpos import format_path

# numeric options -> the [section] key whose range they are checked against
NUMERIC_OPTIONS = {"repeat": ("source", "repeat"), "rate": ("source", "rate"), "metrics_port": ("metrics", "port")}


def check_options(a: argparse.Namespace) -> None:
    """The numeric options through the file's range checks (raises ConfigError, every problem)."""
    problems = []
    for attr, (section, key) in NUMERIC_OPTIONS.items():
        v = getattr(a, attr, None)
        if v is not None:
            try:
                check_override(section, key, v, "--" + attr.replace("_", "-"))
            except ConfigError as e:
                problems += e.problems
    if problems:
        raise ConfigError(problems)


def apply_overrides(cfg: Config, a: argparse.Namespace) -> Config:
    from ..sources.afpacket import AfpacketConfig
    from ..sources.pcap import PcapConfig

    check_options(a)
    rep = {}
    if a.replay:
        old = next(iter(cfg.sources_of("pcap")), None)
        rate = a.rate if a.rate is not None else (old.rate if old is not None else 0.0)
        rep["sources"] = (PcapConfig(file=str(Path(a.replay).resolve()), repeat=a.repeat if a.repeat is not None else 1,
                                     pause=old.pause if old is not None else 0.0, rate=rate),)
    elif a.repeat is not None or a.rate is not None:
        rep["sources"] = tuple(dataclasses.replace(s, **({"repeat": a.repeat} if a.repeat is not None else {}),
                                                   **({"rate": a.rate} if a.rate is not None else {}))
                               if s.kind == "pcap" else s for s in cfg.sources)
    if a.interface:
        base = next(iter(cfg.sources_of("afpacket")), None) or AfpacketConfig(name="default")
        rep["sources"] = tuple(dataclasses.replace(base, name=n.strip()) for n in a.interface.split(",") if n.strip())
    if a.models_dir:
        d = str(Path(a.models_dir).resolve())
        rep["models"] = tuple(dataclasses.replace(m, models_dir=d) for m in cfg.models)
    if a.log_dir:
        d = Path(a.log_dir).resolve()
        rep["outputs"] = tuple(dataclasses.replace(o, path=str(d / Path(o.path).name)) if o.kind == "file" else o
                               for o in cfg.outputs)
        if cfg.stats.path:
            rep["stats"] = dataclasses.replace(cfg.stats, path=str(d / Path(cfg.stats.path).name))
    if a.user is not None:
        rep["service"] = dataclasses.replace(cfg.service, user=a.user)
    if a.metrics_port is not None:
        rep["metrics"] = dataclasses.replace(cfg.metrics, port=a.metrics_port)
    if a.log_level:
        rep["logging"] = dataclasses.replace(cfg.logging, level=a.log_level)
    new = dataclasses.replace(cfg, **rep) if rep else cfg
    if a.log_dir:  # outputs with one base name would now share a file
        clashes = output_clashes(new)
        if clashes:
            raise ConfigError([Problem("--log-dir", None, format_path(p), m) for p, m in clashes])
    return new
