#!/usr/bin/env python3
"""How the default model's recipe does on captures it never saw (README "Default model").

    eval_default.py [--data DATA_DIR] [--spec SPEC.toml] [--json OUT] [--no-unsw-config]

Lays out the default model's data with default_data.py (in a temporary folder), reads it
with the trainer's own loader (``malsensor.models.data.load``: the sensor's extractor,
malsensor semantics, labels from the folder), and scores every row with a forest that never
saw its group, in 8 folds. Fold k holds out:

* the k-th of the 8 named captures of DATA_DIR/pcap (sorted by name): leave-one-capture-out;
* the IoT Sentinel *devices* whose index (sorted by name) is k mod 8, with all their captures
  (stricter than holding out a capture: no capture of the device was seen);
* the UNSW-NB15 blocks b with b mod 8 = k (16 blocks of consecutive rows, both labels).

Each fold fits the forest of the spec (``[model]`` table, scikit-learn through
``malsensor.models.zoo.forest.sklearn_forest``, all trees in one fit, seed from ``[train]``)
on every other row; "alert" is the daemon's rule (label not benign and its probability >=
alert_threshold; binary labels, so: P(malicious) >= t for t >= 0.5). The same folds are run
for the forest trained with and without the UNSW rows (``with_unsw``/``without_unsw``),
scored on the same held-out captures; the threshold table covers t = 0.5 ... 0.95.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import default_data  # noqa: E402

from malsensor.daemon.views.conn import CONN  # noqa: E402
from malsensor.models.data.labels import LabelSpec  # noqa: E402
from malsensor.models.data.load import DataOptions, load_dataset  # noqa: E402
from malsensor.models.spec import load_spec  # noqa: E402
from malsensor.models.zoo.forest import sklearn_forest  # noqa: E402

N_FOLDS = 8
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


def group_of(name: str) -> tuple[str, str, str]:
    """(kind, group held out together, capture reported) of one source file."""
    base = Path(name).name
    if base.startswith("iot__"):
        _, device, cap = base.split("__", 2)
        return "iot", device, f"{device}/{cap}"
    m = re.fullmatch(r"unsw_b(\d+)\.csv", base)
    if m:
        return "unsw", f"b{int(m.group(1)):02d}", f"unsw_b{int(m.group(1)):02d}"
    return "pcap", base, base


def fold_of_groups(kinds: dict[str, str]) -> dict[str, int]:
    folds = {}
    for kind in ("pcap", "iot", "unsw"):
        for i, g in enumerate(sorted(g for g, k in kinds.items() if k == kind)):
            folds[g] = i % N_FOLDS
    return folds


def out_of_fold(x, y_mal, row_fold, train_mask, cfg, seed: int) -> np.ndarray:
    p = np.full(x.shape[0], np.nan)
    for k in range(N_FOLDS):
        held = row_fold == k
        tr = ~held & train_mask
        f = sklearn_forest(cfg, cfg.n_estimators, seed)
        f.fit(x[tr], y_mal[tr])
        p[held] = f.predict_proba(x[held])[:, list(f.classes_).index(1)]
        print(f"  fold {k}: {int(tr.sum())} training rows, {int(held.sum())} held out", file=sys.stderr)
    return p


def summarise(p, y_mal, kind, group, capture, thresholds) -> dict:
    """Alert shares per held-out capture and per threshold."""
    caps = defaultdict(list)
    for i, c in enumerate(capture):
        caps[c].append(i)
    table = []
    for t in thresholds:
        alert = p >= t
        row = {"threshold": t, "captures": {}}
        for c, idx in sorted(caps.items()):
            idx = np.asarray(idx)
            row["captures"][c] = {"kind": kind[idx[0]], "group": group[idx[0]],
                                  "label": "malicious" if y_mal[idx[0]] else "benign",
                                  "n": int(idx.size), "alerts": int(alert[idx].sum())}
        for k in ("pcap", "iot", "unsw"):
            for lab in (0, 1):
                m = (kind == k) & (y_mal == lab)
                if m.any():
                    row[f"{k}_{'malicious' if lab else 'benign'}"] = {"n": int(m.sum()), "alerts": int(alert[m].sum())}
        iot = [v for v in row["captures"].values() if v["kind"] == "iot"]
        by_dev = defaultdict(lambda: [0, 0])
        for v in iot:
            by_dev[v["group"]][0] += v["n"]
            by_dev[v["group"]][1] += v["alerts"]
        row["iot_devices"] = {d: {"n": n, "alerts": a} for d, (n, a) in sorted(by_dev.items())}
        row["iot_captures_over_1pct"] = sum(1 for v in iot if v["alerts"] > 0.01 * v["n"])
        row["iot_captures"] = len(iot)
        table.append(row)
    return {"thresholds": table}


def pct(a: int, n: int) -> str:
    return f"{100 * a / n:.2f} %" if n else "-"


def print_table(name: str, res: dict) -> None:
    print(f"\n## {name}: alert share per held-out capture (rows: threshold)")
    named = [c for c, v in res["thresholds"][0]["captures"].items() if v["kind"] == "pcap"]
    print("| t | " + " | ".join(named) + " | IoT (all) | IoT worst device | IoT captures > 1 % | UNSW benign | UNSW malicious |")
    print("|---" * (len(named) + 6) + "|")
    for row in res["thresholds"]:
        cells = [pct(row["captures"][c]["alerts"], row["captures"][c]["n"]) for c in named]
        iot = row["iot_benign"]
        worst = max(row["iot_devices"].items(), key=lambda kv: kv[1]["alerts"] / kv[1]["n"])
        ub, um = row.get("unsw_benign"), row.get("unsw_malicious")
        print(f"| {row['threshold']} | " + " | ".join(cells)
              + f" | {pct(iot['alerts'], iot['n'])} | {worst[0]} {pct(worst[1]['alerts'], worst[1]['n'])}"
              + f" | {row['iot_captures_over_1pct']} / {row['iot_captures']}"
              + f" | {pct(ub['alerts'], ub['n']) if ub else '-'} | {pct(um['alerts'], um['n']) if um else '-'} |")


def print_captures(res: dict, t: float) -> None:
    row = next(r for r in res["thresholds"] if abs(r["threshold"] - t) < 1e-9)
    print(f"\n## with_unsw at t = {t}: per held-out capture")
    print("| capture | nature | connections | alerts | share |")
    print("|---|---|---|---|---|")
    for c, v in row["captures"].items():
        if v["kind"] == "pcap":
            print(f"| {c} | {v['label']} | {v['n']} | {v['alerts']} | {pct(v['alerts'], v['n'])} |")
    for k in ("iot_benign", "unsw_benign", "unsw_malicious"):
        v = row[k]
        print(f"| {k} | | {v['n']} | {v['alerts']} | {pct(v['alerts'], v['n'])} |")
    worst = max(row["iot_devices"].items(), key=lambda kv: kv[1]["alerts"] / kv[1]["n"])
    print(f"IoT: {row['iot_captures_over_1pct']} of {row['iot_captures']} captures over 1 %, worst device "
          f"{worst[0]} {pct(worst[1]['alerts'], worst[1]['n'])}")


def score_artifact(path: Path, ds, capture, kind, y_mal, t: float, seed: int) -> dict:
    """Alert share of a published artifact per capture, with the side of the trainer's split
    (``--split group --seed``) each capture was on: train rows are not held out."""
    from malsensor.daemon.artifact import load_artifact
    from malsensor.models.data.split import split_dataset

    art = load_artifact(path)
    mal = art.labels.index("malicious")
    sp = split_dataset(ds, "group", seed)
    side = np.empty(ds.n, dtype=object)
    for name, idx in (("train", sp.train), ("val", sp.val), ("test", sp.test)):
        side[idx] = name
    p = np.concatenate([np.asarray(art.predict_proba(ds.x[i:i + 4096]))[:, mal] for i in range(0, ds.n, 4096)])
    alert = p >= t
    print(f"\n## {path} (version {art.version}) at t = {t}")
    print("| capture | nature | split side | connections | alerts | share |")
    print("|---|---|---|---|---|---|")
    out = {}
    for c in sorted(set(capture[kind == "pcap"].tolist())):
        m = capture == c
        out[c] = {"side": side[m][0], "n": int(m.sum()), "alerts": int(alert[m].sum())}
        print(f"| {c} | {'malicious' if y_mal[m][0] else 'benign'} | {side[m][0]} | {int(m.sum())} | "
              f"{int(alert[m].sum())} | {pct(int(alert[m].sum()), int(m.sum()))} |")
    for k, lab in (("iot", 0), ("unsw", 0), ("unsw", 1)):
        for sd in ("train", "val", "test"):
            m = (kind == k) & (y_mal == lab) & (side == sd)
            if m.any():
                name = f"{k}_{'malicious' if lab else 'benign'}"
                out[f"{name}_{sd}"] = {"n": int(m.sum()), "alerts": int(alert[m].sum())}
                print(f"| {name} | | {sd} | {int(m.sum())} | {int(alert[m].sum())} | "
                      f"{pct(int(alert[m].sum()), int(m.sum()))} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / ".." / "shared" / "data")
    ap.add_argument("--spec", type=Path, default=HERE / "forest-default.toml")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--threshold", type=float, default=0.8, help="the operating point reported per capture")
    ap.add_argument("--artifact", type=Path, help="also score every capture with this artifact (e.g. "
                    "contrib/models/default), naming the side of the trainer's group split it was on")
    args = ap.parse_args()
    spec = load_spec(args.spec)
    cfg, seed = spec.model, spec.train.seed
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        default_data.prepare(args.data, Path(tmp))
        ds = load_dataset([Path(tmp)], CONN.info(), DataOptions(labels=LabelSpec(mode="folder")))
    print(f"eval_default.py: {ds.n} rows from {len(ds.group_names)} files in {time.monotonic() - t0:.0f} s "
          f"({ds.label_counts()})", file=sys.stderr)
    info = [group_of(n) for n in ds.group_names]
    kind = np.array([info[g][0] for g in ds.groups])
    group = np.array([info[g][1] for g in ds.groups])
    capture = np.array([info[g][2] for g in ds.groups])
    folds = fold_of_groups({g: k for k, g, _ in info})
    row_fold = np.array([folds[g] for g in group])
    y_mal = (ds.y == "malicious").astype(np.int64)
    x = ds.x.astype(np.float32)
    out = {"rows": ds.n, "labels": ds.label_counts(), "folds": N_FOLDS, "spec": str(args.spec), "configs": {}}
    for name, mask in (("with_unsw", np.ones(ds.n, bool)), ("without_unsw", kind != "unsw")):
        print(f"eval_default.py: {name}", file=sys.stderr)
        p = out_of_fold(x, y_mal, row_fold, mask, cfg, seed)
        res = summarise(p, y_mal, kind, group, capture, THRESHOLDS)
        out["configs"][name] = res
        print_table(name, res)
    print_captures(out["configs"]["with_unsw"], args.threshold)
    if args.artifact:
        out["artifact"] = score_artifact(args.artifact, ds, capture, kind, y_mal, args.threshold, seed)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
