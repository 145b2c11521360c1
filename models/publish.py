"""Export a model function with jax.export and publish it as an artifact directory.

Publishing is atomic: files go to ``MODELS_DIR/NAME/.tmp-VERSION-PID/`` and are
fsynced; the directory is verified with the daemon's own loader (checksums,
signature, canary), renamed to ``MODELS_DIR/NAME/VERSION`` and only then is
``current`` swapped to it (a temporary symlink renamed over the old one). A kill
at any point leaves either no new version or a complete one; stale temporary
directories are removed by the next publish.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import msgpack
import numpy as np

from malsensor.daemon import artifact as A
from malsensor.daemon.artifact import ViewInfo

from .errors import TrainError
from .fsutil import fsync_dir, swap_symlink, write_file


@dataclass
class ExportedModel:
    serialized: bytes
    leaves: list[np.ndarray]
    paths: list[str]
    call: Callable[[np.ndarray], np.ndarray]   # the deserialized function, as the daemon runs it
    platforms: tuple[str, ...]


def export_model(probs_fn: Callable[[Any, Any], Any], params: Any, view: ViewInfo,
                 platforms: tuple[str, ...] = ("cpu",)) -> ExportedModel:
    """Serialize ``predict(leaves, x) = probs_fn(params, clean(x))`` with a symbolic batch.

    ``clean`` replaces non-finite inputs by 0, as the trainer did with its data."""
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    leaves = [np.asarray(v) for _, v in flat]
    for p, v in zip(paths, leaves):
        if v.dtype == np.float64:
            raise TrainError(f"parameter {p} is float64; artifacts hold float32 (enable no x64)")

    def predict(leaf_list, x):
        p = jax.tree_util.tree_unflatten(treedef, leaf_list)
        x = jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))
        return probs_fn(p, x).astype(jnp.float32)

    (b,) = jax_export.symbolic_shape(A.BATCH_DIM)
    specs = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in leaves]
    x_spec = jax.ShapeDtypeStruct((b, *view.shape), np.dtype(view.dtype))
    exported = jax_export.export(jax.jit(predict), platforms=list(platforms))(specs, x_spec)
    blob = bytes(exported.serialize())
    back = jax_export.deserialize(bytearray(blob))
    fn = jax.jit(back.call)
    dev = [jax.device_put(v) for v in leaves]

    def call(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(dev, np.asarray(x, dtype=view.dtype)))

    return ExportedModel(blob, leaves, paths, call, tuple(platforms))


def predict_in_batches(call: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int,
                       n_classes: int) -> np.ndarray:
    """Probabilities for many rows, in batches padded to ``batch`` (one compiled shape)."""
    out = np.empty((x.shape[0], n_classes), dtype=np.float32)
    for i in range(0, x.shape[0], batch):
        chunk = x[i:i + batch]
        k = chunk.shape[0]
        if k < batch and x.shape[0] > batch:
            chunk = np.concatenate([chunk, np.zeros((batch - k, *x.shape[1:]), dtype=x.dtype)])
        out[i:i + k] = call(chunk)[:k]
    return out


def params_doc(exported: ExportedModel) -> bytes:
    return msgpack.packb({"format": A.FORMAT, "leaves": [dict(A.pack_array(v), path=p) for p, v in
                                                         zip(exported.paths, exported.leaves)]},
                         use_bin_type=True)


def canary_doc(x: np.ndarray, probs: np.ndarray) -> bytes:
    return msgpack.packb({"x": A.pack_array(x), "probs": A.pack_array(probs.astype(np.float32))},
                         use_bin_type=True)


def new_version(model_dir: Path) -> str:
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    v, i = base, 1
    while (model_dir / v).exists():
        v = f"{base}-{i}"
        i += 1
    return v


def _clean_stale(model_dir: Path) -> None:
    for d in model_dir.glob(".tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


def publish(out: Path, name: str, version: str, exported: ExportedModel, labels: list[str],
            canary_x: np.ndarray, canary_probs: np.ndarray, meta: dict) -> Path:
    """Write, verify and atomically publish an artifact; point ``current`` at it."""
    if not name or "/" in name or name.startswith(".") or name == A.CURRENT_LINK:
        raise TrainError(f"invalid model name {name!r}")
    model_dir = out / name
    model_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(model_dir)
    final = model_dir / version
    if final.exists():
        raise TrainError(f"{final}: version already exists")
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = {
        A.MODEL_FILE: exported.serialized,
        A.PARAMS_FILE: params_doc(exported),
        A.LABELS_FILE: (json.dumps(labels, ensure_ascii=False) + "\n").encode(),
        A.CANARY_FILE: canary_doc(canary_x, canary_probs),
    }
    meta = dict(meta)
    meta["files"] = {}
    for fname, data in files.items():
        write_file(tmp / fname, data)
        meta["files"][fname] = {"sha256": A.sha256_file(tmp / fname), "bytes": len(data)}
    write_file(tmp / A.META_FILE, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode())
    # meta.json is covered too (its canary tolerance, view and labels decide what is served)
    write_file(tmp / A.CHECKSUMS_FILE, A.checksums_text(tmp, (A.META_FILE, *files)).encode())
    fsync_dir(tmp)
    try:
        A.load_artifact(tmp, check_canary=True)
    except A.ArtifactError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainError(f"the new artifact failed verification: {e}") from None
    os.rename(tmp, final)
    fsync_dir(model_dir)
    swap_symlink(model_dir / A.CURRENT_LINK, version)
    return final
