"""Quality table for the README: UNSW-NB15 binary and 10-class, IoT device identification.

    .venv/bin/python bench/bench_quality.py [--tasks binary,10class,iot,iot-seq,iot-ctx,iot-profile]
                                            [--models forest,gbdt,mlp,itransformer,baseline,xgboost,lightgbm]
                                            [--view conn@1|conn_ctx@1] [--json OUT.json]

    # issue 14's targets: the shipped UNSW spec (gbdt on conn_ctx@1, refitted) beside the
    # libraries used directly on the same conn_ctx@1 rows
    .venv/bin/python bench/bench_quality.py --tasks binary,10class --models unsw,xgboost,baseline --view conn_ctx@1

Each model row is exactly what this command prints on its ``test:`` line (the same
seeded 60/20/20 split, seed 0):

    malsensor-train fit --model etc/models/KIND.toml --data ../shared/data/unsw_nb15/UNSW_NB15_82k.csv \\
        --label label|attack_cat --out models --name unsw-KIND
    malsensor-train fit --model etc/models/KIND.toml --data ../shared/data/iot_sentinel \\
        --macs ../shared/data/iot_sentinel/device_macs.csv --out models --name iot-KIND

``baseline`` is a plain scikit-learn ``RandomForestClassifier(random_state=0)`` (all
defaults: 100 trees, unlimited depth) fitted on the same training rows and scored on
the same test rows; ``xgboost`` and ``lightgbm`` are ``XGBClassifier()`` and
``LGBMClassifier()`` with their defaults used the same way (the libraries used directly,
beside the ``gbdt`` kind; ``lightgbm`` is not a dependency: rows skip unless it is
installed, ``.venv/bin/python -m pip install lightgbm``). ``--view`` picks the rows the
libraries used directly read (``conn@1``, or ``conn_ctx@1``: + UNSW-NB15's ct_*, state and
service columns); a model name is a spec in etc/models (``unsw`` = etc/models/unsw.toml).

``iot-seq`` is device identification on ``pkt_seq@1`` (each connection's first 16 packets;
``gbdt`` through etc/models/gbdt-pkt-seq.toml, the libraries on the same rows flattened). The
IoT tasks also print the accuracy per device capture: a device's test connections in one
capture pooled as the daemon's ``device`` events pool them (daemon/runtime/devices.py), with
``device_pool = "mean"`` and, in brackets, ``"logmean"``. ``iot-ctx`` is device identification on
``conn_ctx@1`` (the conn features + the context of the sensor's last 100 connections; ``gbdt``
through etc/models/gbdt-iot.toml, chosen by bench/search_gbdt_iot.py on validation):

    .venv/bin/python bench/bench_quality.py --tasks iot-ctx --models gbdt,baseline,xgboost

``iot-profile`` the same on ``conn_profile@1`` (conn_ctx@1 + the source MAC's profile;
etc/models/gbdt-iot-profile.toml):

    .venv/bin/python bench/bench_quality.py --tasks iot-profile --models gbdt,baseline,xgboost

``iot-bag`` is device identification on ``device_bag@1``: one row per device window (the
hashed set of the sizes of the first 64 packets of each of its connections; a window holds a
whole capture), so its accuracy is per device capture (``forest`` through
etc/models/forest-iot-bag.toml):

    .venv/bin/python bench/bench_quality.py --tasks iot-bag --models forest,baseline,xgboost
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
UNSW = DATA / "unsw_nb15" / "UNSW_NB15_82k.csv"
IOT = DATA / "iot_sentinel"
TASKS = {
    "binary": {"data": [str(UNSW)], "label": "label"},
    "10class": {"data": [str(UNSW)], "label": "attack_cat"},
    "iot": {"data": [str(IOT)], "macs": IOT / "device_macs.csv"},
    # device identification from the first 16 packets of each connection (pkt_seq@1); model
    # kinds read it through their spec (etc/models/gbdt-pkt-seq.toml), the libraries used
    # directly get the same rows flattened (16 x 7 columns)
    "iot-seq": {"data": [str(IOT)], "macs": IOT / "device_macs.csv", "view": "pkt_seq@1",
                "specs": {"gbdt": "gbdt-pkt-seq.toml"}},
    # device identification from each connection's features and its context (conn_ctx@1: the
    # ct_* counters over the sensor's last 100 connections, state, service)
    "iot-ctx": {"data": [str(IOT)], "macs": IOT / "device_macs.csv", "view": "conn_ctx@1",
                "specs": {"gbdt": "gbdt-iot.toml"}},
    # the same plus the profile of the connection's source device (conn_profile@1: EW mean and
    # deviation of the conn features over the source MAC's connections)
    "iot-profile": {"data": [str(IOT)], "macs": IOT / "device_macs.csv", "view": "conn_profile@1",
                    "specs": {"gbdt": "gbdt-iot-profile.toml"}},
    # one row per device window (device_bag@1: the hashed set of its packets' sizes; a window
    # holds a whole capture), so accuracy is per device capture
    "iot-bag": {"data": [str(IOT)], "macs": IOT / "device_macs.csv", "view": "device_bag@1",
                "specs": {"forest": "forest-iot-bag.toml"}},
}


def add_search_arguments(ap, grids: dict) -> None:
    """The options the hyper-parameter searches share: which configurations, and a JSONL copy."""
    ap.add_argument("--configs", help="JSON list of run() keyword sets (default: --grid default)")
    ap.add_argument("--grid", default="default", choices=sorted(grids), help="a named list of configurations")
    ap.add_argument("--jsonl", type=Path, help="append every configuration's line here too")


def search_configs(a, grids: dict) -> list[dict]:
    return json.loads(a.configs) if a.configs else grids[a.grid]


def report_config(out: dict, results: list, jsonl: Path | None) -> None:
    """One configuration's line: printed, kept for the ranking, appended to ``jsonl``."""
    print(json.dumps(out), flush=True)
    results.append(out)
    if jsonl:
        with jsonl.open("a") as f:
            f.write(json.dumps(out) + "\n")


def search_xgb_params(n_classes: int, threads: int, depth: int, eta: float, mcw: float, col: float,
                      sub: float, max_bin: int, seed: int = 0) -> dict:
    """XGBoost parameters as the ``gbdt`` kind sets them for a spec with these knobs and
    ``[train] seed`` (models/zoo/gbdt.py ``xgb_params``, its seed derivation included), for the
    hyper-parameter searches: with column or row sampling, another seed draws other trees."""
    from malsensor.models.train import _seed_int
    from malsensor.models.zoo.gbdt import GBDTConfig, xgb_params

    cfg = GBDTConfig(learning_rate=eta, max_depth=depth, min_child_weight=mcw, subsample=sub,
                     colsample_bytree=col, max_bin=max_bin, n_jobs=threads)
    return {**xgb_params(cfg, n_classes, _seed_int(seed, 0)), "verbosity": 0}


def direct_model(name: str):
    """A library used directly, with its own defaults (None: the library is not installed)."""
    if name == "baseline":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=0, n_jobs=2)
    try:
        if name == "xgboost":
            import xgboost

            return xgboost.XGBClassifier(random_state=0, n_jobs=2)
        if name == "lightgbm":
            import lightgbm

            return lightgbm.LGBMClassifier(random_state=0, n_jobs=2, verbose=-1)
    except ImportError:
        return None
    raise ValueError(name)


DIRECT = ("baseline", "xgboost", "lightgbm")


def baseline(task: dict, name: str = "baseline", view_ref: str = "conn@1") -> dict | None:
    """A library's classifier with its defaults (scikit-learn's forest, XGBoost, LightGBM),
    fitted on the trainer's own training rows and scored on its test rows."""
    model = direct_model(name)
    if model is None:
        return None
    from malsensor.models.metrics import classification_report

    ds, sp = task_rows(task, view_ref)
    classes = sorted(set(ds.y[sp.train].tolist()))
    code = {c: i for i, c in enumerate(classes)}
    te = sp.test[np.isin(ds.y[sp.test], classes)]
    x = ds.x.reshape(ds.n, -1)  # pkt_seq's (N, 7) rows flattened
    t0 = time.perf_counter()
    rf = model.fit(x[sp.train], np.array([code[v] for v in ds.y[sp.train]]))
    fit_s = time.perf_counter() - t0
    probs = rf.predict_proba(x[te])
    rep = classification_report(np.array([code[v] for v in ds.y[te]]), probs.argmax(1), classes)
    out = {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "n": rep["n"], "fit_s": fit_s}
    if "macs" in task:
        out.update(device_captures(ds, te, probs, classes))
    return out


_ROWS: dict = {}


def task_rows(task: dict, view_ref: str = "conn@1", options=None):
    """The task's labelled rows (its own view, else ``view_ref``; the view's ``options``, else
    its defaults) and the trainer's seeded split (cached per task, view and options)."""
    from malsensor.daemon.views.base import get_view
    from malsensor.models.data.labels import LabelSpec
    from malsensor.models.data.load import DataOptions, load_dataset
    from malsensor.models.data.split import split_dataset

    ref = task.get("view", view_ref)
    key = (id(task), ref, options)
    if key not in _ROWS:
        view = get_view(ref)
        labels = LabelSpec("column", task["label"]) if "label" in task else LabelSpec(macs=task["macs"])
        ds = load_dataset(task["data"], view.info(options), DataOptions(labels))
        _ROWS[key] = (ds, split_dataset(ds, "auto", 0))
    return _ROWS[key]


def capture_keys(ds, idx: np.ndarray) -> np.ndarray:
    """One key per device capture (a capture file and a device label) for the rows ``idx``."""
    return np.array([f"{g}\0{y}" for g, y in zip(ds.groups[idx].tolist(), ds.y[idx].tolist())])


def device_captures(ds, te: np.ndarray, probs: np.ndarray, classes: list[str], pool: str = "mean") -> dict:
    """Per device capture: the test connections of one device (label) in one capture file pooled
    as the daemon's device events pool them (runtime/devices.py), right if the top class is the
    device's. ``probs`` are over ``classes`` for the rows ``te``."""
    from malsensor.daemon.runtime.devices import pool_probs

    key = capture_keys(ds, te)
    out: dict = {"capture_errors": []}   # (device, taken for) of the wrong captures, first pool
    for name, p in (("capture_accuracy", pool), ("capture_accuracy_logmean", "logmean")):
        right = []
        for k in np.unique(key):
            m = key == k
            got, want = classes[int(np.argmax(pool_probs(probs[m], p)))], ds.y[te][m][0]
            right.append(got == want)
            if got != want and name == "capture_accuracy":
                out["capture_errors"].append(f"{want} as {got}")
        out.update({"captures": len(right), name: float(np.mean(right))})
    return out


def model_captures(task: dict, artifact_dir: Path) -> dict:
    """Per-device-capture accuracy of a published model on the task's test rows."""
    from malsensor.daemon.artifact import load_artifact

    ds, sp = task_rows(task)
    art = load_artifact(artifact_dir)
    labels = list(art.labels)
    te = sp.test[np.isin(ds.y[sp.test], labels)]
    probs = np.concatenate([np.asarray(art.predict_proba(ds.x[te[i:i + 4096]]))
                            for i in range(0, te.size, 4096)])
    return device_captures(ds, te, probs, labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="binary,10class,iot")
    ap.add_argument("--models", default="forest,gbdt,mlp,itransformer,baseline,xgboost,lightgbm")
    ap.add_argument("--view", default="conn@1", help="the view the libraries used directly read")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path, help="keep the artifacts here (default: a temporary folder)")
    a = ap.parse_args()

    from malsensor.daemon.logs import setup_logging
    from malsensor.models.fit import FitOptions, run_fit

    setup_logging("warning", journal=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        for task_name in a.tasks.split(","):
            task = TASKS[task_name]
            for model in a.models.split(","):
                t0 = time.perf_counter()
                if model in DIRECT:
                    m = baseline(task, model, a.view)
                    if m is None:
                        print(f"{task_name:8} {model:13} not installed: skipped", flush=True)
                        continue
                else:
                    spec = task.get("specs", {}).get(model, f"{model}.toml")
                    res = run_fit(FitOptions(model=str(REPO / "etc" / "models" / spec), data=task["data"],
                                             out=out / "models", name=f"{task_name}-{model}",
                                             label=task.get("label"), macs=task.get("macs"),
                                             reports=out / "reports", progress=False))
                    t = res.metrics["test"]
                    m = {"accuracy": t["accuracy"], "macro_f1": t["macro_f1"], "n": t["n"],
                         "epochs": len(res.result.history), "best_epoch": res.result.best_epoch}
                    if "macs" in task:
                        m.update(model_captures(task, out / "models" / f"{task_name}-{model}"))
                shown = model if model not in DIRECT else f"{model} ({task.get('view', a.view)})"
                m.update(task=task_name, model=shown,
                         seconds=time.perf_counter() - t0)
                rows.append(m)
                cap = (f"  device captures {m['capture_accuracy']:.4f} ({m['capture_accuracy_logmean']:.4f}) "
                       f"of {m['captures']}" if "captures" in m else "")
                print(f"{task_name:8} {model:13} n {m['n']:6d}  accuracy {m['accuracy']:.4f}  "
                      f"macro-F1 {m['macro_f1']:.4f}{cap}  ({m['seconds']:.0f} s)", flush=True)
                if m.get("capture_errors"):
                    print(f"{'':22} wrong captures: {', '.join(m['capture_errors'])}", flush=True)
    print("\n| task | model | test rows | accuracy | macro-F1 | per device capture, mean (logmean) |\n|---|---|---|---|---|---|")
    for m in rows:
        cap = (f"{m['capture_accuracy']:.4f} ({m['capture_accuracy_logmean']:.4f}) of {m['captures']}"
               if "captures" in m else "")
        print(f"| {m['task']} | {m['model']} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {cap} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
