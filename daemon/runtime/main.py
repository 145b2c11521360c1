"""``malsensord``: the sensor daemon.

    malsensord [-c FILE]                      run in the foreground (systemd Type=notify)
    malsensord -c FILE --check-config         validate the configuration and exit
    malsensord -c FILE --replay CAPTURE       run the same pipeline over a capture file, then
                                              print the number of connections processed

Exit status: 0 done / valid, 1 runtime failure, 2 invalid configuration or usage.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..artifact import log_text
from ..logs import LEVELS
from ..plugins import load_plugins
from .config import DEFAULT_CONFIG, Config, ConfigError, check_sources, load_config, model_artifact_path
from .overrides import apply_overrides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="malsensord", description="malsensor: network malware-detection sensor",
                                epilog="Configuration reference: etc/malsensor.toml, docs/daemon.md")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="configuration file (%(default)s)")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.add_argument("--replay", metavar="CAPTURE", help="replay a pcap/pcapng file instead of capturing live "
                                                       "(replaces the configured [[source]] tables)")
    p.add_argument("--repeat", type=int, metavar="N", help="with --replay: passes over the file (0 = forever)")
    p.add_argument("--rate", type=float, metavar="CONN_PER_S", help="with --replay: pace to this many connections/s")
    p.add_argument("--interface", metavar="IF[,IF...]",
                   help="capture on these interfaces instead of the configured sources (\"default\" = the "
                        "default-route interface); other settings come from the first afpacket [[source]]")
    p.add_argument("--models-dir", metavar="DIR", help="use DIR as every model's models_dir")
    p.add_argument("--log-dir", metavar="DIR", help="write every output and the stats file into DIR "
                                                    "(same file names)")
    p.add_argument("--user", metavar="USER", help="override [service] user (\"\" = do not switch)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="override [metrics] port (0 = any free port)")
    p.add_argument("-l", "--log-level", choices=LEVELS, help="override [logging] level")
    return p


def config_warnings(cfg: Config) -> list[str]:
    """Things worth knowing that do not make the configuration invalid."""
    out = []
    for m in cfg.models:
        p = model_artifact_path(m)
        if not p.exists():
            out.append(f"model {m.name}: {p} does not exist (yet); the model serves once it is published")
        if m.labels and not os.path.exists(m.labels):
            out.append(f"model {m.name}: labels file {m.labels} does not exist")
    for path in [o.path for o in cfg.outputs if o.kind == "file"] + ([cfg.stats.path] if cfg.stats.path else []):
        d = os.path.dirname(path) or "."
        if not os.path.isdir(d):
            out.append(f"output directory {d} does not exist")
    if cfg.service.user and os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(cfg.service.user)
        except KeyError:
            out.append(f"[service] user {cfg.service.user!r} does not exist")
    if not cfg.models:
        out.append("no [[model]] configured: connections are counted but not classified")
    return out


def check_config(cfg: Config) -> int:
    errors = check_sources(cfg)
    for e in errors:
        print(e, file=sys.stderr)
    for n in cfg.notices:
        print(n, file=sys.stderr)
    for w in config_warnings(cfg):
        print(f"{cfg.path}: warning: {log_text(w, 2000)}", file=sys.stderr)  # one line, whatever a path holds
    if errors:
        return 2
    kinds: dict[str, int] = {}
    for s in cfg.sources:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    src = ", ".join(f"{n} {k} source{'s' if n != 1 else ''}" for k, n in kinds.items())
    print(f"{cfg.path}: configuration OK ({src}, {len(cfg.models)} model(s), {len(cfg.outputs)} output(s))")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        load_plugins()
    except ImportError as e:
        print(f"malsensord: {e}", file=sys.stderr)
        return 2
    try:
        cfg = apply_overrides(load_config(a.config), a)
    except ConfigError as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        print(f"malsensord: {a.config}: invalid configuration ({len(e.problems)} problem"
              f"{'s' if len(e.problems) != 1 else ''})", file=sys.stderr)
        return 2
    if a.check_config:
        return check_config(cfg)
    errors = check_sources(cfg)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 2
    from .service import run_service

    return run_service(cfg, config_path=a.config, argv_overrides=a)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
