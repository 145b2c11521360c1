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
from pathlib import Path
from typing import Any

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
