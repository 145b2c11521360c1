"""Window- and recording-level figures of a ``cnn3d`` artifact on the recordings ``fit`` held
out of a ``dataset-proc`` folder (docs/proc.md "A dataset where the label is in the volume").

It loads the folder as ``fit`` did (same spec, same ``--merge``), redoes the seeded split
(``split = "group"``: whole recordings), and runs the artifact on the test split: the
window-level confusion (TP/TN/FP/FN, accuracy, macro-F1), then one verdict per recording (the
majority of its windows) with a Wilson 95 % interval over recordings - the recordings, not the
windows, are the independent samples - and the windows right per behaviour (the recording's
name before the first "-", as dataset-proc names its shards).

    .venv/bin/python bench/proc_heldout.py --model etc/models/cnn3d-proc.toml --data DIR \\
        --artifact MODELS/NAME/current [--merge LABEL=NEW ...] [--split test|val] [--seed N]
"""
from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def main() -> None:
    from malsensor.models.cli import _merge
    from malsensor.models.data.split import split_dataset
    from malsensor.models.fit import FitOptions, data_options, parse_split_ratios
    from malsensor.models.data.load import load_dataset
    from malsensor.models.metrics import classification_report
    from malsensor.models.proc_dataset import WORKLOADS
    from malsensor.models.publish import predict_in_batches
    from malsensor.models.spec import load_spec
    from malsensor.models.use import open_artifact
    from malsensor.models.zoo.base import get_kind

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--merge", action="append", default=[])
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--seed", type=int, help="the seed fit ran with (--seed; default the spec's): it seeds the split")
    a = ap.parse_args()
    spec = load_spec(a.model)
    view = get_kind(spec.kind).view(spec.model)
    opts = FitOptions(model=a.model, data=[a.data], out=Path("."), name="x", merge=_merge(a.merge))
    ds = load_dataset([a.data], view, data_options(opts, spec))
    seed = spec.train.seed if a.seed is None else a.seed
    split = split_dataset(ds, spec.data.split, seed, parse_split_ratios(spec.data.split_ratios))
    rows = getattr(split, a.split)
    art = open_artifact(a.artifact)
    index = {lab: i for i, lab in enumerate(art.labels)}
    y = np.array([index[v] for v in ds.y[rows]], dtype=np.int64)
    probs = predict_in_batches(art.predict_proba, ds.x[rows], 256, art.n_classes)
    pred = probs.argmax(1)
    rep = classification_report(y, pred, art.labels)
    groups = ds.groups[rows]
    n_rec = len(set(groups.tolist()))
    print(f"{a.split} split: {rows.size} windows of {n_rec} recordings (train {len(set(ds.groups[split.train].tolist()))}"
          f", val {len(set(ds.groups[split.val].tolist()))}, test {len(set(ds.groups[split.test].tolist()))} "
          f"recordings)")
    line = f"windows: accuracy {rep['accuracy']:.4f}  macro-F1 {rep['macro_f1']:.4f}"
    if "tp" in rep:
        line += f"  TP {rep['tp']} TN {rep['tn']} FP {rep['fp']} FN {rep['fn']} (positive {rep['positive']!r})"
    print(line)
    print("confusion (rows true, columns predicted): " + ", ".join(art.labels))
    for lab, row in zip(rep["confusion"]["labels"], rep["confusion"]["matrix"]):
        print(f"  {lab:>10} {row}")
    right = 0
    per_beh: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])   # windows right, windows, recs right, recs
    for g in sorted(set(groups.tolist())):
        m = groups == g
        vote = Counter(pred[m].tolist()).most_common(1)[0][0]
        ok = vote == y[m][0]
        right += ok
        beh = Path(ds.group_names[g]).name.split("-")[0]
        b = per_beh[beh]
        b[0] += int((pred[m] == y[m]).sum())
        b[1] += int(m.sum())
        b[2] += int(ok)
        b[3] += 1
    lo, hi = wilson(right, n_rec)
    print(f"recordings (majority of their windows): {right} of {n_rec} right ({right / n_rec:.3f}; Wilson 95 % "
          f"interval {lo:.2f}-{hi:.2f})")
    print("per behaviour: windows right / windows, recordings right / recordings")
    for beh, (wr, wn, rr, rn) in sorted(per_beh.items()):
        print(f"  {beh:>9} {wr:>3} / {wn:<3} {rr} / {rn}")
    if set(art.labels) <= set(WORKLOADS):  # a model of behaviours: also benign vs malicious
        bad = np.array([WORKLOADS[lab][0] for lab in art.labels])
        t, p = bad[y], bad[pred]
        tp, tn = int((t & p).sum()), int((~t & ~p).sum())
        fp, fn = int((~t & p).sum()), int((t & ~p).sum())
        r = classification_report(t.astype(np.int64), p.astype(np.int64), ["benign", "malicious"])
        rec_right = sum(int(Counter(p[groups == g].tolist()).most_common(1)[0][0] == t[groups == g][0])
                        for g in set(groups.tolist()))
        lo, hi = wilson(rec_right, n_rec)
        print(f"behaviours mapped to benign/malicious: accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
              f"TP {tp} TN {tn} FP {fp} FN {fn}; recordings {rec_right} of {n_rec} right (Wilson 95 % interval "
              f"{lo:.2f}-{hi:.2f})")


if __name__ == "__main__":
    main()
