"""Hyper-parameter search for etc/models/unsw.toml (issue 14): XGBoost directly on the
trainer's own rows and seeded 60/20/20 split of the UNSW CSV (conn_ctx@1, 27 columns).

    .venv/bin/python bench/search_gbdt_unsw.py [--label attack_cat] [--configs JSON | --grid NAME]
                                               [--jsonl OUT.jsonl]

XGBoost gets the parameters and seed the gbdt kind would give the same spec
(bench_quality.search_xgb_params; the figures in docs/training.md were measured with seed 0,
which only the configurations that sample rows or columns notice). Each configuration
early-stops on the validation log loss (as the gbdt kind does) and prints one JSON line:
rounds kept, validation macro-F1 there (the selection figure), the best validation macro-F1
on a 25-round grid, and, for the record only, the test macro-F1 (never used to choose).
``"refit": true`` adds the test figure of the same configuration refitted on train +
validation with the kept rounds (what ``--refit`` publishes).
CPU-heavy: 2 threads, one configuration at a time (the machine is shared); a 10-class fit
takes 15 s to 3 minutes depending on the load.

``--grid wide`` is the second search (docs/training.md): one knob at a time around the
first search's best (sqrt weights, depth 8), at learning rate 0.1 to keep it affordable
(min_child_weight, subsample, colsample_bytree, max_bin, depth 7/9, class weights with
exponent 0.25/0.75, patience 60); ``--grid mcw`` and ``--grid mcw2`` the same knobs around
min_child_weight 10, the one that stood out. Every configuration prints its line; the last
lines rank them by validation macro-F1. On a loaded machine use ``--threads 1`` with
``OMP_WAIT_POLICY=PASSIVE`` (2 spinning OpenMP threads ran a fit 10x+ slower there).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UNSW = REPO.parent / "shared" / "data" / "unsw_nb15" / "UNSW_NB15_82k.csv"
# the configurations of the search in docs/training.md, in its order
DEFAULT = [{"cw": "sqrt", "refit": True}, {"cw": "none"}, {"cw": "balanced"}, {"cw": "sqrt", "depth": 6},
           {"cw": "sqrt", "depth": 10}, {"cw": "sqrt", "eta": 0.05}]
# the second search: one knob at a time around sqrt / depth 8 / eta 0.1 (validation 0.6127)
GRIDS = {
    "default": DEFAULT,
    "wide": [{"mcw": 3.0}, {"mcw": 10.0}, {"sub": 0.8}, {"col": 0.8}, {"col": 0.6}, {"max_bin": 512},
             {"depth": 7}, {"depth": 9}, {"cw": "pow0.25"}, {"cw": "pow0.75"}, {"es": 60}],
    # after "wide"'s first two (min_child_weight 3: 0.6128, 10: 0.6306): around min_child_weight 10
    "mcw": [{"mcw": 10.0, "eta": 0.05}, {"mcw": 30.0}, {"mcw": 10.0, "col": 0.8}, {"mcw": 10.0, "sub": 0.8},
            {"mcw": 10.0, "depth": 10}, {"mcw": 10.0, "cw": "balanced"}, {"mcw": 10.0, "depth": 6},
            {"mcw": 10.0, "max_bin": 512}],
    # the rest of "wide"'s knobs, around min_child_weight 10
    "mcw2": [{"mcw": 10.0, "col": 0.6}, {"mcw": 10.0, "depth": 7}, {"mcw": 10.0, "depth": 9},
             {"mcw": 10.0, "cw": "pow0.25"}, {"mcw": 10.0, "cw": "pow0.75"}, {"mcw": 10.0, "es": 60}],
}


def trainer_rows(label: str):
    """The rows, codes and split ``malsensor-train fit --model etc/models/unsw.toml`` uses."""
    from malsensor.models.data.load import load_dataset
    from malsensor.models.data.split import split_dataset
    from malsensor.models.fit import FitOptions, data_options, parse_split_ratios
    from malsensor.models.spec import load_spec
    from malsensor.models.zoo.base import get_kind

    opts = FitOptions(model=str(REPO / "etc/models/unsw.toml"), data=[str(UNSW)], out=Path("/tmp"), name="x",
                      label=label, progress=False)
    spec = load_spec(opts.model)
    ds = load_dataset(opts.data, get_kind(spec.kind).view(spec.model), data_options(opts, spec))
    split = split_dataset(ds, spec.data.split, spec.train.seed, parse_split_ratios(spec.data.split_ratios))
    labels = sorted(set(ds.y[split.train].tolist()))
    code = {lab: i for i, lab in enumerate(labels)}
    y = np.array([code.get(v, -1) for v in ds.y], dtype=np.int32)
    va, te = split.val[y[split.val] >= 0], split.test[y[split.test] >= 0]
    return ds.x, y, split.train, va, te, len(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="attack_cat")
    bq.add_search_arguments(ap, GRIDS)
    ap.add_argument("--threads", type=int, default=2, help="XGBoost threads (1 on a loaded machine: OpenMP's "
                    "waiting threads burn CPU; run with OMP_WAIT_POLICY=PASSIVE)")
    a = ap.parse_args()
    import xgboost as xgb
    from sklearn.metrics import f1_score

    from malsensor.models.data.split import class_weights

    x, y, tr, va, te, k = trainer_rows(a.label)
    dv = xgb.DMatrix(x[va], label=y[va], nthread=a.threads)
    dte = xgb.DMatrix(x[te], nthread=a.threads)

    def weights(yy, mode):
        """The trainer's class weights; ``powE`` (search only) = balanced ** E (sqrt = pow0.5)."""
        if mode.startswith("pow"):
            return class_weights(yy, k, "balanced") ** float(mode[3:])
        return class_weights(yy, k, mode)

    results = []

    def run(cw="sqrt", depth=8, eta=0.1, mcw=1.0, max_bin=256, col=1.0, sub=1.0, es=30, refit=False):
        p = bq.search_xgb_params(k, a.threads, depth, eta, mcw, col, sub, max_bin)

        def pred(b, dm, r):
            pr = b.predict(dm, iteration_range=(0, r)) if r else b.predict(dm)
            return pr.argmax(1) if pr.ndim > 1 else (pr > 0.5).astype(int)

        def f1(b, dm, yy, r=None):
            return round(float(f1_score(yy, pred(b, dm, r), average="macro")), 4)

        t0 = time.time()
        dtr = xgb.DMatrix(x[tr], label=y[tr], weight=weights(y[tr], cw)[y[tr]], nthread=a.threads)
        b = xgb.train(p, dtr, 2000, evals=[(dv, "val")], early_stopping_rounds=es, verbose_eval=False)
        best = b.best_iteration + 1
        curve = [(r, f1(b, dv, y[va], r)) for r in range(25, b.num_boosted_rounds() + 1, 25)]
        rb, vb = max(curve, key=lambda t: t[1])
        out = dict(cw=cw, depth=depth, eta=eta, mcw=mcw, max_bin=max_bin, col=col, sub=sub, es=es, best_round=best,
                   val_f1=f1(b, dv, y[va], best), f1_best_round=rb, f1_best_val=vb,
                   test_f1=f1(b, dte, y[te], best), secs=round(time.time() - t0, 1))
        if refit:
            both = np.concatenate([tr, va])
            dboth = xgb.DMatrix(x[both], label=y[both], weight=weights(y[both], cw)[y[both]], nthread=a.threads)
            out["refit_test_f1"] = f1(xgb.train(p, dboth, best, verbose_eval=False), dte, y[te])
        bq.report_config(out, results, a.jsonl)

    configs = bq.search_configs(a, GRIDS)
    for cfg in configs:
        run(**cfg)
    print(f"# {len(results)} configurations, by validation macro-F1 (the selection figure):")
    for r in sorted(results, key=lambda r: -r["val_f1"]):
        print(f"#   val {r['val_f1']:.4f}  round {r['best_round']:4d}  {r['cw']:8} depth {r['depth']:2d} eta {r['eta']} "
              f"mcw {r['mcw']} sub {r['sub']} col {r['col']} bins {r['max_bin']} es {r['es']}")


if __name__ == "__main__":
    main()
