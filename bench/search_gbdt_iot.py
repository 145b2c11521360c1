"""Hyper-parameter search for etc/models/gbdt-iot.toml (issue 14, device identification):
XGBoost directly on the trainer's own IoT Sentinel rows and split (captures grouped, none on
two sides; the two shared-MAC pairs merged), ``conn_ctx@1`` unless ``--view`` says otherwise.

    .venv/bin/python bench/search_gbdt_iot.py [--view conn_ctx@1] [--configs JSON | --grid second]
                                              [--jsonl OUT]

XGBoost gets the parameters and seed the gbdt kind would give the same spec
(bench_quality.search_xgb_params; before 2026-11-30 the searches used seed 0, which only the
configurations that sample rows or columns notice). Each configuration early-stops on the
validation log loss (as the gbdt kind does) and prints one JSON line: rounds kept; validation accuracy, macro-F1 and per-device-capture accuracy
(``mean`` and ``logmean`` pooling, daemon/runtime/devices.py through bench_quality's
``device_captures``) - the selection figures - and the same on the test rows, for the record
only (never used to choose). The last lines rank the configurations by validation macro-F1.
One thread (5,170 training rows: a second thread gains little, and under a shared machine's
load XGBoost's waiting threads burn CPU), one configuration at a time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq  # noqa: E402

# one knob at a time around XGBoost's defaults (depth 6, eta 0.3 -> 0.1 with early stopping)
DEFAULT = [{}, {"cw": "none"}, {"cw": "balanced"}, {"depth": 4}, {"depth": 8}, {"eta": 0.05},
           {"mcw": 3.0}, {"col": 0.6}, {"sub": 0.8}]
# the second round, around the first's best (sqrt, depth 6, eta 0.05)
GRIDS = {"default": DEFAULT,
         "second": [{"eta": 0.05, "depth": 4}, {"eta": 0.05, "depth": 8}, {"eta": 0.05, "cw": "balanced"},
                    {"eta": 0.05, "max_bin": 512}, {"eta": 0.05, "es": 60}, {"eta": 0.05, "col": 0.8},
                    {"eta": 0.02}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--view", default="conn_ctx@1")
    bq.add_search_arguments(ap, GRIDS)
    a = ap.parse_args()
    import xgboost as xgb
    from sklearn.metrics import f1_score

    from malsensor.daemon.logs import setup_logging
    from malsensor.models.data.split import class_weights

    setup_logging("warning", journal=False)
    ds, sp = bq.task_rows(bq.TASKS["iot"], a.view)
    classes = sorted(set(ds.y[sp.train].tolist()))
    code = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    y = np.array([code.get(v, -1) for v in ds.y], dtype=np.int32)
    tr, va, te = sp.train, sp.val[y[sp.val] >= 0], sp.test[y[sp.test] >= 0]
    x = ds.x.reshape(ds.n, -1)
    dv, dte = xgb.DMatrix(x[va], label=y[va], nthread=1), xgb.DMatrix(x[te], nthread=1)
    results = []

    def figures(b, dm, idx, r):
        pr = b.predict(dm, iteration_range=(0, r))
        f = {"acc": round(float((pr.argmax(1) == y[idx]).mean()), 4),
             "f1": round(float(f1_score(y[idx], pr.argmax(1), average="macro", labels=range(k))), 4)}
        for pool in ("mean", "logmean"):
            f[f"cap_{pool}"] = round(bq.device_captures(ds, idx, pr, classes, pool)["capture_accuracy"], 4)
        return f

    def run(cw="sqrt", depth=6, eta=0.1, mcw=1.0, col=1.0, sub=1.0, max_bin=256, es=30):
        p = bq.search_xgb_params(k, 1, depth, eta, mcw, col, sub, max_bin)
        t0 = time.time()
        dtr = xgb.DMatrix(x[tr], label=y[tr], weight=class_weights(y[tr], k, cw)[y[tr]], nthread=1)
        b = xgb.train(p, dtr, 2000, evals=[(dv, "val")], early_stopping_rounds=es, verbose_eval=False)
        best = b.best_iteration + 1
        out = dict(view=a.view, cw=cw, depth=depth, eta=eta, mcw=mcw, col=col, sub=sub, max_bin=max_bin, es=es,
                   best_round=best, val=figures(b, dv, va, best), test=figures(b, dte, te, best),
                   secs=round(time.time() - t0, 1))
        bq.report_config(out, results, a.jsonl)

    for cfg in bq.search_configs(a, GRIDS):
        run(**cfg)
    print(f"# {len(results)} configurations, by validation macro-F1 (the selection figure):")
    for r in sorted(results, key=lambda r: -r["val"]["f1"]):
        v = r["val"]
        print(f"#   val acc {v['acc']:.4f} F1 {v['f1']:.4f} capture mean {v['cap_mean']:.4f} logmean "
              f"{v['cap_logmean']:.4f}  round {r['best_round']:4d}  {r['cw']:8} depth {r['depth']} eta {r['eta']} "
              f"mcw {r['mcw']} col {r['col']} sub {r['sub']}")


if __name__ == "__main__":
    main()
