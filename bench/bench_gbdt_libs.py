"""XGBoost vs LightGBM on the UNSW CSV's 17 conn columns: the measurement behind the
choice of XGBoost for the ``gbdt`` kind (docs/training.md).

    .venv/bin/python -m pip install lightgbm      # not a project dependency
    .venv/bin/python bench/bench_gbdt_libs.py [--labels label,attack_cat]

Same rows and seeded 60/20/20 split as ``malsensor-train fit``; each library early-stops
on the validation split's log loss (30 rounds, learning rate 0.1, 2 threads) with no
class weights and with the trainer's ``sqrt`` class weights; scored on the test split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
UNSW = REPO.parent / "shared" / "data" / "unsw_nb15" / "UNSW_NB15_82k.csv"
CONFIGS = [("xgboost", {"max_depth": 6}), ("xgboost", {"max_depth": 8}),
           ("lightgbm", {"num_leaves": 31}), ("lightgbm", {"num_leaves": 127})]


def fit(lib: str, kw: dict, x_tr, y_tr, w, x_va, y_va):
    if lib == "xgboost":
        import xgboost

        m = xgboost.XGBClassifier(n_estimators=1000, learning_rate=0.1, n_jobs=2, early_stopping_rounds=30,
                                  random_state=0, **kw)
        m.fit(x_tr, y_tr, sample_weight=w, eval_set=[(x_va, y_va)], verbose=False)
        return m, m.best_iteration + 1
    import lightgbm

    m = lightgbm.LGBMClassifier(n_estimators=1000, learning_rate=0.1, n_jobs=2, random_state=0, verbose=-1, **kw)
    m.fit(x_tr, y_tr, sample_weight=w, eval_set=[(x_va, y_va)],
          callbacks=[lightgbm.early_stopping(30, verbose=False)])
    return m, m.best_iteration_


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", default="label,attack_cat")
    a = ap.parse_args()
    from malsensor.models.data.labels import LabelSpec
    from malsensor.models.data.load import DataOptions, load_dataset
    from malsensor.models.data.split import class_weights, split_dataset
    from malsensor.models.metrics import classification_report
    from malsensor.daemon.views.conn import CONN

    print("| labels | library | setting | class weights | rounds | accuracy | macro-F1 | fit s |\n"
          "|---|---|---|---|---|---|---|---|")
    for label in a.labels.split(","):
        ds = load_dataset([str(UNSW)], CONN.info(), DataOptions(LabelSpec("column", label)))
        sp = split_dataset(ds, "auto", 0)
        classes = sorted(set(ds.y[sp.train].tolist()))
        code = {c: i for i, c in enumerate(classes)}
        y = np.array([code.get(v, -1) for v in ds.y])
        te = sp.test[y[sp.test] >= 0]
        for lib, kw in CONFIGS:
            try:
                __import__(lib)
            except ImportError:
                print(f"| {label} | {lib} | not installed: skipped | | | | | |", flush=True)
                continue
            for cw in ("none", "sqrt"):
                w = class_weights(y[sp.train], len(classes), cw)[y[sp.train]]
                t0 = time.perf_counter()
                m, rounds = fit(lib, kw, ds.x[sp.train], y[sp.train], w, ds.x[sp.val], y[sp.val])
                fit_s = time.perf_counter() - t0
                rep = classification_report(y[te], m.predict_proba(ds.x[te]).argmax(1), classes)
                setting = ", ".join(f"{k} {v}" for k, v in kw.items())
                print(f"| {label} | {lib} | {setting} | {cw} | {rounds} | {rep['accuracy']:.4f} | "
                      f"{rep['macro_f1']:.4f} | {fit_s:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
