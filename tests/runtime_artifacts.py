"""Small, real model artifacts for the daemon's tests (no training: fixed weights).

The artifact is exactly what the loader in ``malsensor.daemon.artifact`` reads (a
``jax.export`` module with a symbolic batch dimension, params.msgpack, labels.json,
canary.msgpack, meta.json with checksums): a linear softmax classifier over
``log1p(|x|)`` of the 17 ``conn`` features, with weights drawn from a seed. Different
seeds give different versions whose predictions differ, so a test can tell which
version produced an event. Publishing follows the trainer's contract: write the
version folder, then swap ``NAME/current`` atomically (symlink + rename).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import msgpack
import numpy as np

from malsensor.daemon.artifact import (CANARY_FILE, CURRENT_LINK, FORMAT, LABELS_FILE, META_FILE, MODEL_FILE,
                                       PARAMS_FILE, pack_array, sha256_file)
from malsensor.daemon.views.conn import CONN_COLUMNS

N = len(CONN_COLUMNS)
LABELS = ["benign", "scan", "c2"]


def _params(seed: int, n_classes: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 1.0, (N, n_classes)).astype(np.float32)
    b = rng.normal(0.0, 0.5, (n_classes,)).astype(np.float32)
    return [w, b]


def reference_predict(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The same function in numpy (float64), for checks independent of JAX."""
    w, b = (p.astype(np.float64) for p in params)
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float32).astype(np.float64)
    z = np.log1p(np.abs(x)) @ w + b
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def write_artifact(out: Path, *, seed: int = 0, labels: list[str] | None = None, version: str | None = None,
                   name: str = "test", view_name: str = "conn", view_version: int = 1) -> Path:
    """Write an artifact directory ``out`` and return it."""
    import jax
    import jax.numpy as jnp
    from jax import export

    labels = list(labels or LABELS)
    params = _params(seed, len(labels))

    def predict(ps, x):
        w, b = ps
        x = jnp.where(jnp.isfinite(x), x, 0.0)
        return jax.nn.softmax(jnp.log1p(jnp.abs(x)) @ w + b, axis=-1)

    (bdim,) = export.symbolic_shape("b")
    spec = ([jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params], jax.ShapeDtypeStruct((bdim, N), jnp.float32))
    exp = export.export(jax.jit(predict))(*spec)
    out.mkdir(parents=True, exist_ok=False)
    (out / MODEL_FILE).write_bytes(exp.serialize())
    leaves = [dict(pack_array(p), path=f"p{i}") for i, p in enumerate(params)]
    (out / PARAMS_FILE).write_bytes(msgpack.packb({"format": FORMAT, "leaves": leaves}))
    (out / LABELS_FILE).write_text(json.dumps(labels))
    rng = np.random.default_rng(1000 + seed)
    cx = (rng.random((8, N)) * 1000).astype(np.float32)
    cp = np.asarray(jax.jit(predict)(params, cx), dtype=np.float32)
    (out / CANARY_FILE).write_bytes(msgpack.packb({"x": pack_array(cx), "probs": pack_array(cp)}))
    files = {f: {"sha256": sha256_file(out / f), "bytes": (out / f).stat().st_size}
             for f in (MODEL_FILE, PARAMS_FILE, LABELS_FILE, CANARY_FILE)}
    meta = {"format": FORMAT, "kind": "linear-test", "name": name, "version": version or out.name,
            "view": {"name": view_name, "version": view_version, "shape": [N], "dtype": "float32",
                     "columns": list(CONN_COLUMNS)},
            "files": files, "canary": {"atol": 1e-5}, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    return out


def publish(models_dir: Path, name: str, version: str, **kw) -> Path:
    """Write ``models_dir/name/version`` and point ``models_dir/name/current`` at it atomically."""
    art = write_artifact(models_dir / name / version, name=name, version=version, **kw)
    point_current(models_dir / name, version)
    return art


def point_current(model_dir: Path, target: str) -> None:
    tmp = model_dir / f".current.{os.getpid()}.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, model_dir / CURRENT_LINK)


def params_of(seed: int, n_classes: int = len(LABELS)) -> list[np.ndarray]:
    return _params(seed, n_classes)


# --------------------------------------------------------------------------- broken artifacts


def _rehash(art: Path) -> None:
    meta = json.loads((art / META_FILE).read_text())
    meta["files"] = {f: {"sha256": sha256_file(art / f), "bytes": (art / f).stat().st_size}
                     for f in (MODEL_FILE, PARAMS_FILE, LABELS_FILE, CANARY_FILE)}
    (art / META_FILE).write_text(json.dumps(meta, indent=1))


def write_broken(out: Path, how: str, *, seed: int = 0) -> str:
    """Write an artifact broken in one way; returns a fragment of the loader's complaint."""
    if how == "semantics":
        write_artifact(out, seed=seed)
        meta = json.loads((out / META_FILE).read_text())
        meta["view"]["semantics"] = "argus"
        (out / META_FILE).write_text(json.dumps(meta))
        return (f"{out / META_FILE}: the model was trained on argus-semantics features but the sensor computes "
                "malsensor ([tracking] semantics)")
    if how == "view":
        write_artifact(out, seed=seed, view_name="conn_series")
        return "artifact reads view conn_series@1 shape [17] float32, but the data provides conn@1 shape [17]"
    write_artifact(out, seed=seed)
    if how == "truncated":
        p = out / MODEL_FILE
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        return f"{p}: {len(data) // 2} bytes, meta.json says {len(data)} (truncated or replaced)"
    if how == "canary":
        doc = msgpack.unpackb((out / CANARY_FILE).read_bytes())
        from malsensor.daemon.artifact import unpack_array

        probs = unpack_array(doc["probs"], out, "probs").copy()
        probs[0] = probs[0][::-1]  # expected outputs the model does not produce
        doc["probs"] = pack_array(probs)
        (out / CANARY_FILE).write_bytes(msgpack.packb(doc))
        _rehash(out)
        return "canary outputs differ from the expected ones"
    if how == "meta":
        (out / META_FILE).write_text('{"format": 1, "kind": ')
        return f"{out / META_FILE}: invalid JSON at line 1"
    if how == "model":
        (out / MODEL_FILE).write_bytes(b"\x00" * 64)
        _rehash(out)
        return f"{out / MODEL_FILE}: cannot deserialize jax.export module"
    raise ValueError(how)
