"""``malsensor-train``: fit, evaluate, predict with and inspect model artifacts.

    malsensor-train fit --model KIND|SPEC.toml --data PATH [--label COL] --out MODELS_DIR --name NAME
                        [-b N] [-e N] [--lr X] [--seed N] [-l LEVEL] [--checkpoint MINUTES] [--resume]
                        [--skip-test] [--skip-eval]
    malsensor-train evaluate ARTIFACT DATA [--label COL] [--json] [--report DIR]
    malsensor-train predict ARTIFACT DATA [--topk K]
    malsensor-train inspect ARTIFACT [--json]
    malsensor-train record-proc --label LABEL --duration S --out DIR [--interval S] [--steps D]
                                [--processes H] [--stride N] [--cgroup DIR]
    malsensor-train dataset --data PATH --out DIR [--model KIND|SPEC.toml | --view NAME@V] [--workers N]
                            [--dask SCHEDULER_ADDRESS] [--rebuild] [--label COL | --macs CSV | ...]
    malsensor-train dataset-proc --out DIR [--runs N] [--duration S] [--behaviours a,b] [--by-behaviour]
                                 [--scope cgroup|machine] [--cgroup-parent DIR]

ARTIFACT is an artifact directory, a ``current`` link or a model folder holding one.
DATA is a file or folder of JSONL rows, CSV tables (UNSW-NB15 or the 17 named
columns) or captures (pcap/pcapng, run through the sensor's own extractor).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import TrainError

log = logging.getLogger("malsensor.train")
LEVELS = ("debug", "info", "warning", "error")


def _data_args(p: argparse.ArgumentParser, *, with_label: bool = True) -> None:
    g = p.add_argument_group("data and labels")
    if with_label:
        g.add_argument("--label", metavar="COL", help="label column/key (default: 'label', else 's_mac'); "
                                                      "UNSW-NB15: label (binary) or attack_cat (10 classes)")
    g.add_argument("--label-from", choices=("auto", "column", "mac", "folder", "ip"), default="auto",
                   help="where labels come from (auto: --macs/--ips when given, else the label column)")
    g.add_argument("--macs", type=Path, metavar="CSV", help="device,mac table: label = device of the source MAC "
                                                            "(devices sharing a MAC are merged as 'A+B')")
    g.add_argument("--ips", type=Path, metavar="FILE", help="IP list (ip[,label] per line): connections with a "
                                                            "listed address get its label, others 'benign'")
    g.add_argument("--skip-bad", action="store_true", default=None,
                   help="count and skip malformed rows instead of stopping at the first")
    g.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes reading the input files (dataset: captures and tables; fit, "
                        "evaluate: processor-trace samples). 0 (default): chosen from the input's size, "
                        "up to one per CPU; 1: in this process")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="malsensor-train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-l", "--log-level", choices=LEVELS, default="info")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="train a model and publish its artifact")
    f.add_argument("--model", required=True, metavar="KIND|SPEC.toml",
                   help="forest, mlp, itransformer, or a spec file such as etc/models/forest.toml")
    f.add_argument("--data", required=True, action="append", metavar="PATH", help="file or folder (repeatable)")
    f.add_argument("--out", required=True, type=Path, metavar="MODELS_DIR")
    f.add_argument("--name", required=True)
    f.add_argument("-b", "--batch-size", type=int)
    f.add_argument("-e", "--epochs", type=int)
    f.add_argument("--lr", type=float)
    f.add_argument("--seed", type=int)
    f.add_argument("-l", "--log-level", dest="log_level_sub", choices=LEVELS)
    f.add_argument("--checkpoint", type=float, default=5.0, metavar="MINUTES",
                   help="checkpoint every MINUTES (and at every epoch end; 0: epoch ends only)")
    f.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    f.add_argument("--skip-test", action="store_true", help="do not evaluate on the test split")
    f.add_argument("--skip-eval", action="store_true",
                   help="no validation pass per epoch (no model selection or early stopping)")
    f.add_argument("--split", choices=("auto", "random", "group", "time"),
                   help="auto: by capture file for captures, else stratified random (60/20/20)")
    f.add_argument("--split-ratios", metavar="TRAIN,VAL,TEST",
                   help="split percentages (default: the spec's, 60,20,20), e.g. 80,20,0")
    f.add_argument("--refit", action="store_true", default=None,
                   help="after selection, refit the chosen configuration on train + validation (meta.json "
                        "data.trained_on says which rows the artifact saw)")
    f.add_argument("--dedup", action="store_true", default=None, help="drop repeated (features, label) rows")
    f.add_argument("--semantics", choices=("malsensor", "argus"), default="malsensor",
                   help="feature definitions for captures (docs/features.md)")
    f.add_argument("--merge", action="append", default=[], metavar="LABEL=NEW", help="rename/merge a label")
    f.add_argument("--reports", type=Path, default=Path("reports"), metavar="DIR",
                   help="report folders go to DIR/NAME/VERSION (default ./reports)")
    f.add_argument("--platform", action="append", dest="platforms", metavar="NAME",
                   help="jax.export platform(s) for the artifact (default cpu; e.g. cpu and cuda)")
    f.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                   help="gbdt: boost on this Dask cluster (xgboost.dask; docs/training-at-scale.md)")
    _data_args(f)

    ds = sub.add_parser("dataset", help="input files -> rows as Parquet shards + manifest, in parallel over files")
    ds.add_argument("--data", required=True, action="append", metavar="PATH", help="file or folder (repeatable)")
    ds.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder (manifest.json + shards/)")
    ds.add_argument("--model", metavar="KIND|SPEC.toml", help="build the view this model reads")
    ds.add_argument("--view", metavar="NAME@V", help="build this view (default conn@1)")
    ds.add_argument("--dask", metavar="SCHEDULER_ADDRESS", help="run the files' tasks on this Dask cluster")
    ds.add_argument("--rebuild", action="store_true", help="rebuild every shard, even of unchanged inputs")
    ds.add_argument("--semantics", choices=("malsensor", "argus"), default="malsensor",
                    help="feature definitions for captures (docs/features.md)")
    ds.add_argument("-l", "--log-level", dest="log_level_sub", choices=LEVELS)
    _data_args(ds)

    e = sub.add_parser("evaluate", help="metrics of an artifact on labelled data")
    e.add_argument("artifact")
    e.add_argument("data", nargs="+")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout")
    e.add_argument("--report", type=Path, metavar="DIR",
                   help="also write DIR/evaluation.json (and, for trace models, window_probabilities.png/.json)")
    _data_args(e)

    pr = sub.add_parser("predict", help="one JSON object per row: pred, true, topk")
    pr.add_argument("artifact")
    pr.add_argument("data", nargs="+")
    pr.add_argument("--topk", type=int, default=3)
    _data_args(pr)

    rp = sub.add_parser("record-proc", help="record proc_volume@1 volumes of this machine into a dataset shard")
    rp.add_argument("--label", required=True, help="the label of every volume of this recording")
    rp.add_argument("--duration", type=float, required=True, metavar="S", help="seconds to record")
    rp.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder (index.json + shards)")
    rp.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between samples (default 1)")
    rp.add_argument("--steps", type=int, default=8, metavar="D", help="samples per volume (default 8)")
    rp.add_argument("--processes", type=int, default=120, metavar="H", help="process rows per volume (default 120)")
    rp.add_argument("--stride", type=int, default=0, metavar="N",
                    help="samples between two volumes (default 0 = steps: no overlap)")
    rp.add_argument("--cgroup", default="", metavar="DIR",
                    help="only the processes of this cgroup v2 and its descendants (default: every process)")
    dp = sub.add_parser("dataset-proc", help="record a labelled proc_volume@1 dataset from harmless workloads")
    dp.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder (index.json + shards)")
    dp.add_argument("--runs", type=int, default=3, help="runs of every behaviour (default 3)")
    dp.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds recorded a run (default 60)")
    dp.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between samples (default 1)")
    dp.add_argument("--steps", type=int, default=8, metavar="D")
    dp.add_argument("--processes", type=int, default=120, metavar="H")
    dp.add_argument("--behaviours", default="", help="comma-separated subset (default: all)")
    dp.add_argument("--by-behaviour", action="store_true", help="label = the behaviour (default: benign/malicious)")
    dp.add_argument("--scratch", type=Path, help="where the workloads' scratch folders go (default: $TMPDIR)")
    dp.add_argument("--seed", type=int, default=0, help="picks the background workloads")
    dp.add_argument("--scope", choices=("cgroup", "machine"), default="cgroup",
                    help="cgroup (default): each recording's workloads in a cgroup v2 of their own, recorded "
                         "alone; machine: record every process of the machine")
    dp.add_argument("--cgroup-parent", type=Path, metavar="DIR",
                    help="where the recordings' cgroups are made (default: the cgroup v2 mount)")
    i = sub.add_parser("inspect", help="what an artifact is")
    i.add_argument("artifact")
    i.add_argument("--json", action="store_true")
    return p


def _merge(pairs: list[str]) -> dict[str, str]:
    out = {}
    for s in pairs:
        a, sep, b = s.partition("=")
        if not sep or not a or not b:
            raise TrainError(f"--merge expects LABEL=NEW, got {s!r}")
        out[a] = b
    return out


def _dataset(a: argparse.Namespace) -> int:
    from .data.labels import LabelSpec
    from .data.load import DataOptions
    from .dataset import BuildOptions, build_dataset

    if a.model and a.view:
        raise TrainError("give --model or --view, not both")
    if a.workers < 0:
        raise TrainError("--workers must be >= 0 (0: one per CPU)")
    if a.model:
        from .spec import load_spec
        from .zoo.base import get_kind

        spec = load_spec(a.model)
        view = get_kind(spec.kind).view(spec.model)
    else:
        from malsensor.daemon.views.base import VIEWS

        ref = a.view or "conn@1"
        v = VIEWS.find(ref)
        if v is None:
            raise TrainError(f"--view {ref}: no such view (views: {', '.join(VIEWS.names())})")
        view = v.info()
        if 0 in view.shape:
            raise TrainError(f"--view {ref} has options (shape {list(view.shape)} by default): give the model "
                             f"that reads it, --model SPEC.toml")
    mode = a.label_from
    if mode == "auto" and a.label is not None and not a.macs and not a.ips:
        mode = "column"
    opts = DataOptions(LabelSpec(mode, a.label, a.macs, a.ips), bool(a.skip_bad), False, a.semantics,
                       require_labels=False)
    r = build_dataset(BuildOptions(a.data, a.out, view, opts, a.workers, a.dask, a.rebuild))
    m = r.manifest
    print(f"{m['rows_in_shards']} rows ({m['rows']} labelled) from {len(m['files'])} file(s) -> {a.out}: "
          f"{r.built} built, {r.reused} reused, {r.failed} failed")
    if m["label_counts"]:
        print("labels: " + ", ".join(f"{k} {v}" for k, v in m["label_counts"].items()))
    return 1 if r.failed else 0


def run(a: argparse.Namespace) -> int:
    if a.command == "fit":
        from .fit import FitOptions, print_summary, run_fit

        opts = FitOptions(model=a.model, data=a.data, out=a.out, name=a.name, label=a.label,
                          label_from=a.label_from, macs=a.macs, ips=a.ips, batch_size=a.batch_size,
                          epochs=a.epochs, lr=a.lr, seed=a.seed, split=a.split, dedup=a.dedup,
                          skip_bad=a.skip_bad, semantics=a.semantics, checkpoint_minutes=a.checkpoint,
                          resume=a.resume, skip_test=a.skip_test, skip_eval=a.skip_eval, reports=a.reports,
                          platforms=tuple(a.platforms or ("cpu",)), merge=_merge(a.merge), workers=a.workers,
                          dask=a.dask, split_ratios=a.split_ratios, refit=a.refit)
        print_summary(run_fit(opts))
        return 0
    if a.command == "dataset":
        return _dataset(a)
    if a.command == "record-proc":
        from .record_proc import RecordOptions, record

        path, n = record(RecordOptions(a.label, a.duration, a.out, a.interval, a.steps, a.processes, a.stride,
                                       cgroup=a.cgroup))
        print(f"{n} volumes -> {path}" if path else "no whole window recorded")
        return 0 if path else 1
    if a.command == "dataset-proc":
        from .proc_dataset import WORKLOADS, DatasetOptions, make_dataset

        names = tuple(b for b in a.behaviours.split(",") if b) or tuple(WORKLOADS)
        got = make_dataset(DatasetOptions(a.out, a.runs, a.duration, a.interval, a.steps, a.processes,
                                          a.by_behaviour, names, a.scratch, a.seed, a.scope, a.cgroup_parent))
        for name, run, path, n in got:
            print(f"{name} run {run}: {n} volumes -> {path}")
        return 0 if all(p for _, _, p, _ in got) else 1
    from . import use

    if a.command == "inspect":
        use.inspect(use.open_artifact(a.artifact), as_json=a.json)
        return 0
    d = use.DataArgs(a.data, a.label, a.label_from, a.macs, a.ips, bool(a.skip_bad), workers=a.workers)
    art = use.open_artifact(a.artifact)
    if a.command == "evaluate":
        rep = use.evaluate(art, d, a.report)
        if a.json:
            sys.stdout.write(json.dumps(rep, ensure_ascii=False) + "\n")
        else:
            use.print_evaluation(rep)
        return 0
    if a.command == "predict":
        if a.topk < 1:
            raise TrainError("--topk must be >= 1")
        use.predict(art, d, a.topk)
        return 0
    raise AssertionError(a.command)


def main(argv: list[str] | None = None) -> int:
    from malsensor.daemon.logs import setup_logging
    from malsensor.daemon.plugins import load_plugins

    a = build_parser().parse_args(argv)
    setup_logging(getattr(a, "log_level_sub", None) or a.log_level, journal=False)
    logging.getLogger("jax").setLevel(logging.WARNING)
    try:
        load_plugins()  # $MALSENSOR_PLUGINS: more views (and their readers) and model kinds
    except ImportError as e:
        print(f"malsensor-train: {e}", file=sys.stderr)
        return 2
    try:
        return run(a)
    except TrainError as e:
        print(f"malsensor-train: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("malsensor-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
