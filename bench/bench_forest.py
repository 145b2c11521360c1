"""Forest and gbdt speed, side by side with the fitting library on the same trees, in one run.

    .venv/bin/python bench/bench_forest.py [--csv ../shared/data/unsw_nb15/UNSW_NB15_82k.csv]
                                           [--label label] [--json OUT.json] [--sweep]
    .venv/bin/python bench/bench_forest.py --spec etc/models/gbdt.toml [--label attack_cat]

With ``--spec etc/models/gbdt.toml`` every step below runs on the gradient-boosted trees
and the reference is XGBoost's own prediction (``inplace_predict``, what
``XGBClassifier.predict_proba`` runs on a numpy batch) instead of scikit-learn's.

1. Training: ``malsensor-train fit --model forest`` on the UNSW-NB15 CSV (in-process,
   the same code path as the command): load, fit, export, verify, publish. Target < 30 s.
2. Load and warm-up (what the daemon pays): ``load_artifact`` (checksums, deserialize,
   canary) and the first call per batch size (XLA compile).
3. Inference at batch 1, 64 and 4096: the published artifact through the daemon's
   loader vs scikit-learn ``predict_proba`` on the very same trees (n_jobs=1, its
   default), probabilities checked equal to 1e-6. Targets: >= 5x at <= 64, >= 2x at 4096.
   Also shown: the artifact's CPU time per call (XLA may use a second core for the
   final per-class sums) and scikit-learn with n_jobs=2.
4. ``--sweep``: both traversal layouts (perfect, sparse) at several max_depth values,
   which is how ``perfect_max_depth`` (the ``auto`` rule) was chosen.

Timings are the median of repeated runs of at least 0.2 s each (wall clock); the machine
is shared, so the load average is printed with the results.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "unsw_nb15" / "UNSW_NB15_82k.csv"
BATCHES = (1, 64, 4096)


def timeit(fn, repeats: int = 7, min_s: float = 0.2) -> float:
    """Median seconds per call over ``repeats`` runs of >= ``min_s`` each."""
    fn()
    per = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                break
        per.append(dt / n)
    return statistics.median(per)


def cpu_per_call(fn, n: int) -> float:
    """Process CPU seconds per call (all threads): shows whether a side used more than one core."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


class Library:
    """The fitting library's own prediction on the very same trees: scikit-learn's
    ``predict_proba`` (forest) or XGBoost's ``inplace_predict`` (gbdt: what
    ``XGBClassifier.predict_proba`` runs on a numpy batch), with a thread-count knob."""

    def __init__(self, model) -> None:
        self.model = model
        self.xgboost = type(model).__module__.startswith("xgboost")
        self.name = "xgboost" if self.xgboost else "sklearn"

    def jobs(self, n: int) -> None:
        if self.xgboost:
            self.model.set_param({"nthread": n})
        else:
            self.model.set_params(n_jobs=n)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.xgboost:
            p = self.model.inplace_predict(x)
            return np.vstack([1.0 - p, p]).T if p.ndim == 1 else p
        return self.model.predict_proba(x)


def bench_inference(art, lib: Library, x: np.ndarray) -> list[dict]:
    rows = []
    for b in BATCHES:
        xb = np.ascontiguousarray(x[:b])
        t0 = time.perf_counter()
        ours = art.predict_proba(xb)
        first = time.perf_counter() - t0
        lib.jobs(1)
        ref = lib.predict_proba(xb)
        diff = float(np.abs(ours - ref).max())
        t_ours = timeit(lambda: art.predict_proba(xb))
        t_lib = timeit(lambda: lib.predict_proba(xb))
        n = max(3, int(0.5 / max(t_ours, 1e-6)))
        cpu_ours = cpu_per_call(lambda: art.predict_proba(xb), n)
        lib.jobs(2)
        t_lib2 = timeit(lambda: lib.predict_proba(xb))
        lib.jobs(1)
        rows.append({"batch": b, "library": lib.name, "artifact_ms": t_ours * 1e3, "artifact_cpu_ms": cpu_ours * 1e3,
                     "library_ms": t_lib * 1e3, "library_2jobs_ms": t_lib2 * 1e3,
                     "speedup": t_lib / t_ours, "first_call_s": first, "max_abs_diff": diff,
                     "target": 5.0 if b <= 64 else 2.0})
    return rows


def sweep(x_tr, y_tr, x_te, depths) -> list[dict]:
    import jax

    from malsensor.models.zoo import forest as F

    out = []
    for d in depths:
        cfg = F.ForestConfig(max_depth=d)
        rf = F.sklearn_forest(cfg, cfg.n_estimators, 0).fit(x_tr, y_tr)
        rf.set_params(n_jobs=1)
        trees = [F.TreeArrays.from_sklearn(e, len(rf.classes_)) for e in rf.estimators_]
        depth = max(t.depth for t in trees)
        row = {"max_depth": d, "depth": depth, "nodes": int(sum(t.left.size for t in trees))}
        for b in BATCHES:
            row[f"sklearn_ms_{b}"] = timeit(lambda: rf.predict_proba(x_te[:b]), repeats=5) * 1e3
        for trav in ("perfect", "sparse"):
            if trav == "perfect" and depth > 16:
                continue
            arrays = F.perfect_layout(trees, len(trees)) if trav == "perfect" else F.sparse_layout(trees, len(trees), 17)
            fn = jax.jit(lambda p, v, t=trav: (F.perfect_probs if t == "perfect" else F.sparse_probs)(p, v, depth))
            pj = {k: jax.device_put(v) for k, v in arrays.items()}
            row[f"{trav}_mb"] = sum(v.nbytes for v in arrays.values()) / 1e6
            for b in BATCHES:
                xb = x_te[:b]
                row[f"{trav}_ms_{b}"] = timeit(lambda: fn(pj, xb).block_until_ready(), repeats=5) * 1e3
        out.append(row)
        print(_sweep_line(row), flush=True)
    return out


def _sweep_line(r: dict) -> str:
    parts = [f"max_depth {r['max_depth']:>2} (depth {r['depth']:>2}, {r['nodes']:>7} nodes)"]
    for b in BATCHES:
        sk = r[f"sklearn_ms_{b}"]
        cell = f"b{b}: sk {sk:7.3f}"
        for t in ("perfect", "sparse"):
            if f"{t}_ms_{b}" in r:
                cell += f" {t[0]} {r[f'{t}_ms_{b}']:7.3f} ({sk / r[f'{t}_ms_{b}']:4.1f}x)"
        parts.append(cell)
    return " | ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--label", default="label", help="label (binary) or attack_cat")
    ap.add_argument("--spec", default=str(REPO / "etc" / "models" / "forest.toml"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--sweep", action="store_true", help="compare traversal layouts across depths")
    a = ap.parse_args()
    if not a.csv.exists():
        print(f"bench_forest: {a.csv} is absent", file=sys.stderr)
        return 2

    from malsensor.daemon.artifact import load_artifact
    from malsensor.daemon.logs import setup_logging
    from malsensor.models.fit import FitOptions, run_fit

    setup_logging("warning", journal=False)
    results: dict = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_fit(FitOptions(model=a.spec, data=[str(a.csv)], out=Path(tmp) / "models", name="bench",
                                 label=a.label, reports=Path(tmp) / "reports", progress=False))
        total = time.perf_counter() - t0
        tr = res.artifact and json.loads((res.artifact / "meta.json").read_text())["training"]
        results["training"] = {"command_s": total, **{f"{k}_s": v for k, v in tr["seconds"].items()},
                               "rows_train": int(res.dataset.n * 0.6), "target_s": 30.0,
                               "test_accuracy": res.metrics["test"]["accuracy"],
                               "test_macro_f1": res.metrics["test"]["macro_f1"],
                               "traversal": res.result.static}
        print(f"training: whole fit command {total:.1f} s (load {tr['seconds']['load']:.1f} s, "
              f"fit {tr['seconds']['fit']:.1f} s, export {tr['seconds']['export']:.1f} s), target < 30 s; "
              f"test accuracy {res.metrics['test']['accuracy']:.4f}; {res.result.static}")

        t0 = time.perf_counter()
        art = load_artifact(res.artifact.parent)   # checksums, deserialize, canary (compiles its batch size)
        t_load = time.perf_counter() - t0
        warm = art.warmup([1, 64, 256, 1024, 4096])
        results["load"] = {"load_artifact_s": t_load, "warmup_s": warm,
                           "artifact_bytes": sum(f.stat().st_size for f in res.artifact.iterdir())}
        print(f"load_artifact (verify + deserialize + canary): {t_load:.2f} s; warm-up per batch size: "
              + ", ".join(f"{b}: {s:.2f} s" for b, s in warm.items()))

        x = res.dataset.x[res.test_idx]
        lib = Library(res.result.sklearn_model)
        rows = bench_inference(art, lib, x)
        results["inference"] = rows
        print(f"{'batch':>6} {'artifact ms':>12} {'(cpu ms)':>9} {lib.name + ' ms':>11} {'speedup':>8} {'target':>7} "
              f"{lib.name + ' 2 jobs':>15} {'max|diff|':>10}")
        for r in rows:
            ok = "ok" if r["speedup"] >= r["target"] else "MISSED"
            print(f"{r['batch']:>6} {r['artifact_ms']:>12.3f} {r['artifact_cpu_ms']:>9.3f} {r['library_ms']:>11.3f} "
                  f"{r['speedup']:>7.1f}x {r['target']:>6.0f}x {r['library_2jobs_ms']:>12.3f} ms "
                  f"{r['max_abs_diff']:>10.2e} {ok}")
        if a.sweep:
            idx = np.arange(res.dataset.n)
            rest = np.setdiff1d(idx, res.test_idx)
            y = np.array([res.labels.index(v) if v in res.labels else -1 for v in res.dataset.y])
            results["sweep"] = sweep(res.dataset.x[rest], y[rest], x, [6, 8, 10, 12, 14, 16, 20])
    results["load_average_after"] = os.getloadavg()
    print(f"load average before/after: {results['load_average_before']} / {results['load_average_after']} "
          f"on {results['cpus']} CPUs")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
