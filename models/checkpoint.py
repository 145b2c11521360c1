"""Training checkpoints: one msgpack file (flax.serialization, no pickle) replaced atomically.

A checkpoint lives in ``MODELS_DIR/NAME/.work/`` beside the published versions
(the daemon ignores dot-directories). ``run_key`` identifies what is being
trained (spec after overrides, data digest, split): ``--resume`` continues only
a checkpoint with the same key, from the last complete write (a kill -9 during a
write leaves the previous checkpoint in place).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import TrainError
from .fsutil import atomic_write

log = logging.getLogger("malsensor.train")
FILE = "checkpoint.msgpack"
FORMAT = 1


def run_key(spec: dict, data_digest: str, split: dict) -> str:
    doc = json.dumps({"spec": spec, "data": data_digest, "split": split}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def work_dir(out: Path, name: str) -> Path:
    return out / name / ".work"


def save(work: Path, key: str, state: dict[str, Any]) -> None:
    from flax import serialization

    work.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "run_key": key, "state": state}
    atomic_write(work / FILE, serialization.msgpack_serialize(doc))


def load(work: Path, key: str) -> dict[str, Any] | None:
    """The checkpointed state for ``key``; None when there is none. A checkpoint of a
    different run is an error (resuming it would mix two trainings)."""
    from flax import serialization

    path = work / FILE
    if not path.exists():
        return None
    try:
        doc = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # corrupt file: msgpack raises various types
        raise TrainError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); remove it to start over") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TrainError(f"{path}: not a checkpoint of this trainer (format {doc.get('format') if isinstance(doc, dict) else '?'})")
    if doc.get("run_key") != key:
        raise TrainError(f"{path}: the checkpoint belongs to a different run (other spec, options or data); "
                         "remove it or run without --resume")
    return doc["state"]


def clear(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)


def check_state(work: Path, st: Any, *, ints: Mapping[str, tuple[int, int]] = {},
                numbers: Sequence[str] = (), trees: Mapping[str, Any] = {}, maps: Sequence[str] = ()) -> None:
    """A checkpoint that parses may still be wrong for this run: check it against the run's
    spec before using any of it (a missing key, a negative epoch or a parameter of the wrong
    shape gave KeyError/ValueError/flax tracebacks; epoch = 10**6 published an under-trained
    model). ``ints``: key -> allowed range; ``numbers``: keys that hold a number (not NaN);
    ``trees``: key -> this run's state dict, whose key paths and array shapes the
    checkpoint's must equal; ``maps``: keys that hold a map."""
    import numpy as np

    path = work / FILE

    def bad(msg: str) -> None:
        raise TrainError(f"{path}: {msg}; remove it or run without --resume")

    if not isinstance(st, dict):
        bad("the state is not a map")
    for k in (*ints, *numbers, *trees, *maps):
        if k not in st:
            bad(f"missing key {k!r}")
    for k, (lo, hi) in ints.items():
        v = np.asarray(st[k])
        if v.shape != () or v.dtype.kind not in "iu" or not lo <= int(v) <= hi:
            bad(f"{k} = {_short(st[k])} is not an integer within {lo}..{hi} for this run")
    for k in numbers:
        v = np.asarray(st[k])
        if v.shape != () or v.dtype.kind not in "iuf" or math.isnan(float(v)):
            bad(f"{k} = {_short(st[k])} is not a number")
    for k in maps:
        if not isinstance(st[k], dict):
            bad(f"{k} is not a map")
    for k, template in trees.items():
        want, got = _shapes(template), _shapes(st[k])
        for p in sorted(set(want) | set(got)):
            if p not in got:
                bad(f"{k}: no {p} (this run's model has it, shape {list(want[p])})")
            if p not in want:
                bad(f"{k}: {p} is not part of this run's model")
            if got[p] != want[p]:
                bad(f"{k}: {p} has shape {list(got[p])}, this run's model needs {list(want[p])}")


def _shapes(tree: Any, prefix: str = "") -> dict[str, tuple]:
    """Key path -> array shape of a state dict (nested maps of arrays and scalars)."""
    import numpy as np

    if isinstance(tree, dict):
        out: dict[str, tuple] = {}
        for k, v in tree.items():
            out.update(_shapes(v, f"{prefix}/{k}"))
        return out
    if tree is None:
        return {prefix or "/": ("None",)}
    return {prefix or "/": tuple(np.shape(tree))}


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
