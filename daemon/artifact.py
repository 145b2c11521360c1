"""Model artifacts: the sensor-side loader (and the format the trainer writes).

An artifact is a directory (docs/architecture.md, "Artifacts")::

    model.jax        jax.export serialization of ``predict(params, x) -> probs``;
                     batch dimension symbolic ("b"), params a flat list of arrays
    params.msgpack   {"format": 1, "leaves": [{"path", "dtype", "shape", "data"}, ...]}
                     in the order the exported function takes them
    labels.json      JSON array: position = class id, value = label string
    meta.json        kind, hyper-parameters, view, normalisation, data digest, metrics,
                     library versions, creation time, sha256 of every other file
    canary.msgpack   {"x": array, "probs": array}: inputs and the outputs the trainer got
    SHA256SUMS       sha256 of the five files above, meta.json included (``sha256sum -c``
                     format); artifacts published before it existed are still read, with
                     the other files checked against meta.json and ``covers_meta`` False

The exported function takes the *raw* view (no normalisation on the caller's
side: it is inside the function, its numbers are leaves of ``params``) and returns
class probabilities, float32 ``(b, n_classes)``. Non-finite inputs are replaced by
0 inside the function, as the trainer did with its data.

This module imports only numpy, jax and msgpack: the daemon loads models without
training code. Everything that can be wrong with an artifact raises
:class:`ArtifactError` naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import msgpack
import numpy as np

FORMAT = 1
MODEL_FILE = "model.jax"
PARAMS_FILE = "params.msgpack"
LABELS_FILE = "labels.json"
META_FILE = "meta.json"
CANARY_FILE = "canary.msgpack"
ARTIFACT_FILES = (MODEL_FILE, PARAMS_FILE, LABELS_FILE, CANARY_FILE)  # checksummed in meta.json
CHECKSUMS_FILE = "SHA256SUMS"
CURRENT_LINK = "current"
BATCH_DIM = "b"
DEFAULT_CANARY_ATOL = 1e-5
MAX_CANARY_ATOL = 1e-3  # probabilities in [0, 1]: a looser tolerance would let a different model pass
_DTYPES = frozenset(("float32", "float64", "int32", "int64", "uint8", "int8", "uint32", "bool", "float16"))


class ArtifactError(Exception):
    """An artifact that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class ViewInfo:
    """The feature view a model reads: name, version and per-sample shape. ``options``: the
    view's options where the shape does not say them all (a window length, packets per
    connection), as the trainer hands the view to its reader; artifacts do not record them
    (the spec's hyper-parameters in meta.json do) and two infos compare without them."""

    name: str
    version: int
    shape: tuple[int, ...]
    dtype: str = "float32"
    columns: tuple[str, ...] = ()
    feature_axis: int = -1   # the per-sample axis that holds the features (normalisation runs along it)
    options: Any = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def describe(self) -> str:
        return f"{self.ref} shape {list(self.shape)} {self.dtype}"


def options_doc(options: Any) -> dict | None:
    """A view's options as JSON gives them back (``meta.json`` view.options, shard manifests);
    None for a view without options."""
    return json.loads(json.dumps(asdict(options))) if is_dataclass(options) else None


def with_options_doc(options: Any, doc: Any) -> Any:
    """``options`` with the keys of ``doc`` (an :func:`options_doc`) it has; arrays become tuples."""
    if not isinstance(doc, dict) or not is_dataclass(options):
        return options
    names = {f.name for f in fields(options)}
    return replace(options, **{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k in names})


# --------------------------------------------------------------------------- arrays <-> msgpack

def pack_array(a: np.ndarray) -> dict[str, Any]:
    """An array as a msgpack-able dict (raw little-endian bytes, no pickle)."""
    a = np.ascontiguousarray(a)
    if a.dtype.name not in _DTYPES:
        raise ValueError(f"dtype {a.dtype} cannot go into an artifact")
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.astype(a.dtype.newbyteorder("<")).tobytes()}


def unpack_array(d: Any, where: str | os.PathLike, what: str) -> np.ndarray:
    """Inverse of :func:`pack_array`, checking every field."""
    if not isinstance(d, dict) or not {"dtype", "shape", "data"} <= d.keys():
        raise ArtifactError(where, f"{what}: expected an array record with dtype, shape and data")
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if dtype not in _DTYPES:
        raise ArtifactError(where, f"{what}: unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ArtifactError(where, f"{what}: bad shape {shape!r}")
    if not isinstance(data, (bytes, bytearray)):
        raise ArtifactError(where, f"{what}: data is not bytes")
    dt = np.dtype(dtype).newbyteorder("<")
    need = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(data) != need:
        raise ArtifactError(where, f"{what}: {len(data)} bytes of data for shape {shape} {dtype} "
                                   f"(expected {need}; truncated?)")
    return np.frombuffer(data, dtype=dt).astype(np.dtype(dtype)).reshape(shape)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- loading

def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(path, "missing") from None
    except OSError as e:
        raise ArtifactError(path, f"cannot read: {e.strerror or e}") from None


def _read_json(path: Path) -> Any:
    raw = _read_bytes(path)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ArtifactError(path, f"not UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _read_msgpack(path: Path) -> Any:
    raw = _read_bytes(path)
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types for corrupt input
        raise ArtifactError(path, f"invalid msgpack ({type(e).__name__}: {e})") from None


def _require(meta: dict, key: str, typ: type | tuple[type, ...], where: Path) -> Any:
    if key not in meta:
        raise ArtifactError(where, f"missing key {key!r}")
    v = meta[key]
    if not isinstance(v, typ):
        raise ArtifactError(where, f"key {key!r} has the wrong type ({type(v).__name__})")
    return v


def _view_from_meta(meta: dict, where: Path) -> ViewInfo:
    v = _require(meta, "view", dict, where)
    name = v.get("name")
    version = v.get("version")
    shape = v.get("shape")
    if not isinstance(name, str) or not isinstance(version, int) or not isinstance(shape, list) \
            or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ArtifactError(where, f"key 'view' must hold name (str), version (int) and shape "
                                   f"(list of positive ints), got {v!r}")
    dtype = v.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise ArtifactError(where, f"view dtype {dtype!r} is not supported")
    cols = v.get("columns", [])
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        raise ArtifactError(where, "key 'view.columns' must be a list of strings")
    axis = v.get("feature_axis", -1)  # artifacts from before the view registry: the last axis
    if not isinstance(axis, int) or isinstance(axis, bool) or not -len(shape) <= axis < len(shape):
        raise ArtifactError(where, f"view feature_axis {axis!r} is not an axis of shape {shape}")
    return ViewInfo(name, version, tuple(shape), dtype, tuple(cols), axis)


def log_text(v: Any, limit: int = 120) -> str:
    """Text from an artifact as it may go into a log line: control characters escaped (a
    newline in meta.json must not forge a log line), at most ``limit`` characters."""
    s = v if isinstance(v, str) else str(v)
    if s.isprintable() and len(s) <= limit:
        return s
    out = s.encode("unicode_escape").decode("ascii") if not s.isprintable() else s
    return out[:limit] + ("..." if len(out) > limit else "")


def canary_atol(meta: dict, where: Path) -> float:
    """meta.json's canary tolerance: finite, 0 <= atol <= MAX_CANARY_ATOL (NaN passed every
    comparison and let an artifact with swapped classes in)."""
    canary = meta.get("canary", {})
    if not isinstance(canary, dict):
        raise ArtifactError(where, f"key 'canary' must be an object, got {type(canary).__name__}")
    atol = canary.get("atol", DEFAULT_CANARY_ATOL)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not (0.0 <= atol <= MAX_CANARY_ATOL):
        raise ArtifactError(where, f"key 'canary.atol': {log_text(atol)!s} is not a number within "
                                   f"0..{MAX_CANARY_ATOL:g}")
    return float(atol)


def read_checksums(path: Path) -> dict[str, str]:
    """SHA256SUMS: ``HEX  NAME`` lines (``sha256sum`` format, ``*`` binary marker allowed)."""
    raw = _read_bytes(path)
    out: dict[str, str] = {}
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise ArtifactError(path, f"not ASCII at byte {e.start}") from None
    for i, line in enumerate(text.splitlines(), 1):
        hexd, sep, name = line.partition(" ")
        name = name[1:] if name[:1] in (" ", "*") else name
        if not sep or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd) or not name:
            raise ArtifactError(path, f"line {i}: expected '<64 hex digits>  <file name>'")
        if name in out:
            raise ArtifactError(path, f"line {i}: {log_text(name)} listed twice")
        out[name] = hexd
    return out


def checksums_text(root: Path, names: Iterable[str]) -> str:
    return "".join(f"{sha256_file(root / n)}  {n}\n" for n in names)


def _verify_checksums(root: Path) -> bool:
    """Check every file against SHA256SUMS; False when the artifact has none (older form)."""
    sums_path = root / CHECKSUMS_FILE
    if not sums_path.exists() and not sums_path.is_symlink():
        return False
    sums = read_checksums(sums_path)
    for name in (META_FILE, *ARTIFACT_FILES):
        if name not in sums:
            raise ArtifactError(sums_path, f"no checksum for {name}")
        fp = root / name
        if not fp.exists():
            raise ArtifactError(fp, "missing")
        if sha256_file(fp) != sums[name]:
            raise ArtifactError(fp, f"sha256 differs from {CHECKSUMS_FILE} (truncated, corrupt or replaced)")
    return True


@dataclass
class Artifact:
    """A loaded, verified model artifact, ready to predict.

    ``predict_proba`` accepts any batch size (the exported function has a symbolic
    batch dimension); each new size compiles once, so callers pad to a few fixed
    sizes and call :meth:`warmup` with them before serving.
    """

    path: Path
    meta: dict
    labels: list[str]
    view: ViewInfo
    param_leaves: list[np.ndarray]
    param_paths: list[str]
    exported: Any
    canary_x: np.ndarray
    canary_probs: np.ndarray
    covers_meta: bool = True  # meta.json is under SHA256SUMS (False: an artifact from before it)
    _call: Any = field(default=None, repr=False)
    _params_dev: Any = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return log_text(self.meta.get("kind", "?"))

    @property
    def version(self) -> str:
        """meta.json's version as it may go into logs, events and metrics labels."""
        return log_text(self.meta.get("version", self.path.name))

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def _ensure_callable(self) -> None:
        if self._call is None:
            import jax

            self._params_dev = [jax.device_put(p) for p in self.param_leaves]
            self._call = jax.jit(self.exported.call)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 ``(n, n_classes)``, for raw view rows ``x``."""
        x = np.asarray(x)
        if x.shape[1:] != self.view.shape:
            raise ValueError(f"input shape {x.shape} does not match view {self.view.describe()}")
        x = x.astype(self.view.dtype, copy=False)
        if x.shape[0] == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32)
        self._ensure_callable()
        return np.asarray(self._call(self._params_dev, x))

    def predict_padded(self, x: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
        """Like :meth:`predict_proba`, but runs in chunks padded to one of ``sizes``
        (sorted ascending), so only those shapes are ever compiled."""
        sizes = sorted(sizes)
        n = x.shape[0]
        out = np.empty((n, self.n_classes), dtype=np.float32)
        i = 0
        while i < n:
            left = n - i
            size = next((s for s in sizes if s >= left), sizes[-1])
            take = min(size, left)
            chunk = np.zeros((size, *self.view.shape), dtype=self.view.dtype)
            chunk[:take] = x[i:i + take]
            out[i:i + take] = self.predict_proba(chunk)[:take]
            i += take
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class ids (argmax of the probabilities)."""
        return np.argmax(self.predict_proba(x), axis=1)

    def warmup(self, batch_sizes: Iterable[int]) -> dict[int, float]:
        """Compile and run each batch size once; returns seconds per size."""
        import time

        out = {}
        for b in batch_sizes:
            t = time.perf_counter()
            self.predict_proba(np.zeros((int(b), *self.view.shape), dtype=self.view.dtype))
            out[int(b)] = time.perf_counter() - t
        return out

    def check_canary(self) -> float:
        """Replay the canary inputs; raise ArtifactError unless they reproduce the expected
        outputs within the tolerance in meta.json. Returns the largest difference."""
        atol = canary_atol(self.meta, self.path / META_FILE)
        try:
            got = self.predict_proba(self.canary_x)
        except Exception as e:  # an XLA failure here means the artifact is unusable on this host
            raise ArtifactError(self.path / MODEL_FILE, f"running the canary inputs failed: {e}") from None
        if got.shape != self.canary_probs.shape:
            raise ArtifactError(self.path / CANARY_FILE, f"canary outputs have shape {got.shape}, "
                                                          f"expected {self.canary_probs.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - self.canary_probs), initial=0.0))
        # NaN anywhere (got or expected) makes diff NaN, which no comparison may let pass
        if not np.isfinite(got).all() or not np.isfinite(diff) or not diff <= atol:
            raise ArtifactError(self.path / CANARY_FILE, f"canary outputs differ from the expected ones "
                                                          f"by {diff:.3g} (tolerance {atol:g})")
        return diff

    def summary(self) -> dict:
        """What ``inspect`` shows: kind, view, labels, metrics, versions."""
        m = self.meta
        return {
            "path": str(self.path), "name": m.get("name"), "version": self.version, "kind": self.kind,
            "created": m.get("created"), "view": {"name": self.view.name, "version": self.view.version,
                                                  "shape": list(self.view.shape), "dtype": self.view.dtype},
            "labels": self.labels, "hyper": m.get("hyper"), "metrics": m.get("metrics"),
            "data": m.get("data"), "versions": m.get("versions"),
            "params": {"leaves": len(self.param_leaves),
                       "values": int(sum(p.size for p in self.param_leaves)),
                       "bytes": int(sum(p.nbytes for p in self.param_leaves))},
        }


def resolve(path: str | os.PathLike) -> Path:
    """An artifact directory from a path that is either the artifact itself, a
    ``current`` link, or a model folder holding ``current`` (``MODELS_DIR/NAME``)."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ArtifactError(p, "no such artifact or model directory")
    folder = None
    if p.is_dir() and not (p / META_FILE).exists() and (p / CURRENT_LINK).is_symlink():
        folder, p = p, p / CURRENT_LINK
    elif p.name == CURRENT_LINK and p.is_symlink():
        folder = p.parent
    try:
        real = p.resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise ArtifactError(p, "dangling link") from None
    # a `current` link names a version inside its model folder (publish writes it so); one
    # that leads elsewhere is refused: whoever may write the link could otherwise make the
    # sensor load any directory on the host
    if folder is not None and not real.is_relative_to(folder.resolve()):
        raise ArtifactError(p, f"points outside its model folder ({log_text(str(real))}); refused")
    if not real.is_dir():
        raise ArtifactError(p, "not a directory")
    return real


def load_artifact(path: str | os.PathLike, *, expect_view: ViewInfo | tuple | None = None,
                  check_canary: bool = True, verify_checksums: bool = True) -> Artifact:
    """Load and verify an artifact directory (or a model folder with a ``current`` link).

    ``expect_view`` is a :class:`ViewInfo` or ``(name, version[, shape])`` the caller
    will feed; a mismatch is an :class:`ArtifactError`.
    """
    root = resolve(path)
    where = [root / META_FILE]  # the file being checked, named by an unexpected failure
    try:
        return _load(root, where, expect_view, check_canary, verify_checksums)
    except ArtifactError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as e:
        raise ArtifactError(where[0], f"unexpected content ({type(e).__name__}: {log_text(e)})") from None


def _load(root: Path, where: list[Path], expect_view: ViewInfo | tuple | None, check_canary: bool,
          verify_checksums: bool) -> Artifact:
    covers_meta = _verify_checksums(root) if verify_checksums else False
    meta_path = root / META_FILE
    meta = _read_json(meta_path)
    if not isinstance(meta, dict):
        raise ArtifactError(meta_path, "must be a JSON object")
    fmt = _require(meta, "format", int, meta_path)
    if fmt != FORMAT:
        raise ArtifactError(meta_path, f"artifact format {fmt} is not supported (this sensor reads {FORMAT})")
    _require(meta, "kind", str, meta_path)
    view = _view_from_meta(meta, meta_path)

    if verify_checksums:
        files = _require(meta, "files", dict, meta_path)
        for name in ARTIFACT_FILES:
            rec = files.get(name)
            if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
                raise ArtifactError(meta_path, f"no checksum for {name}")
            fp = root / name
            if not fp.exists():
                raise ArtifactError(fp, "missing")
            size = fp.stat().st_size
            if isinstance(rec.get("bytes"), int) and size != rec["bytes"]:
                raise ArtifactError(fp, f"{size} bytes, meta.json says {rec['bytes']} (truncated or replaced)")
            if sha256_file(fp) != rec["sha256"]:
                raise ArtifactError(fp, "sha256 differs from meta.json (corrupt or replaced)")

    canary_atol(meta, meta_path)
    labels_path = where[0] = root / LABELS_FILE
    labels = _read_json(labels_path)
    if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
        raise ArtifactError(labels_path, "must be a non-empty JSON array of strings")

    params_path = where[0] = root / PARAMS_FILE
    pdoc = _read_msgpack(params_path)
    if not isinstance(pdoc, dict) or pdoc.get("format") != FORMAT or not isinstance(pdoc.get("leaves"), list):
        raise ArtifactError(params_path, f"expected {{'format': {FORMAT}, 'leaves': [...]}}")
    leaves, paths = [], []
    for i, rec in enumerate(pdoc["leaves"]):
        what = f"leaf {i} ({rec.get('path', '?') if isinstance(rec, dict) else '?'})"
        leaves.append(unpack_array(rec, params_path, what))
        paths.append(str(rec.get("path", i)))

    model_path = where[0] = root / MODEL_FILE
    raw = _read_bytes(model_path)
    try:
        from jax import export as jax_export

        exported = jax_export.deserialize(bytearray(raw))
    except Exception as e:  # flatbuffer / version errors come in many types
        raise ArtifactError(model_path, f"cannot deserialize jax.export module ({type(e).__name__}: {e})") from None

    _check_signature(exported, leaves, view, len(labels), model_path)

    where[0] = root / CANARY_FILE
    cdoc = _read_msgpack(root / CANARY_FILE)
    if not isinstance(cdoc, dict):
        raise ArtifactError(root / CANARY_FILE, "must be a msgpack map with x and probs")
    cx = unpack_array(cdoc.get("x"), root / CANARY_FILE, "x")
    cp = unpack_array(cdoc.get("probs"), root / CANARY_FILE, "probs")
    if cx.shape[1:] != view.shape or cp.shape != (cx.shape[0], len(labels)):
        raise ArtifactError(root / CANARY_FILE, f"canary shapes x{list(cx.shape)} probs{list(cp.shape)} do "
                                                f"not match view {list(view.shape)} and {len(labels)} labels")

    where[0] = meta_path
    art = Artifact(root, meta, labels, view, leaves, paths, exported, cx.astype(view.dtype), cp, covers_meta)
    if expect_view is not None:
        check_view(art, expect_view)
    if check_canary:
        art.check_canary()
    return art


def check_view(art: Artifact, expect: ViewInfo | tuple) -> None:
    """Raise ArtifactError unless the artifact reads the view the caller provides."""
    if isinstance(expect, ViewInfo):
        name, version, shape = expect.name, expect.version, expect.shape
    else:
        name, version, *rest = expect
        shape = tuple(rest[0]) if rest else None
    v = art.view
    if v.name != name or v.version != version or (shape is not None and tuple(shape) != v.shape):
        want = f"{name}@{version}" + (f" shape {list(shape)}" if shape is not None else "")
        raise ArtifactError(art.path / META_FILE, f"artifact reads view {v.describe()}, but the data provides {want}")


def _check_signature(exported: Any, leaves: list[np.ndarray], view: ViewInfo, n_classes: int, where: Path) -> None:
    """The exported function must take (list of params, x[b, *view.shape]) -> (b, n_classes)."""
    avals = list(exported.in_avals)
    if len(avals) != len(leaves) + 1:
        raise ArtifactError(where, f"exported function takes {len(avals)} arrays, params.msgpack has "
                                   f"{len(leaves)} leaves + 1 input")
    for i, (a, p) in enumerate(zip(avals, leaves)):
        if tuple(a.shape) != p.shape or np.dtype(a.dtype) != p.dtype:
            raise ArtifactError(where, f"parameter {i} is {p.dtype}{list(p.shape)} in params.msgpack but the "
                                       f"exported function wants {np.dtype(a.dtype)}{list(a.shape)}")
    x = avals[-1]
    if len(x.shape) != 1 + len(view.shape) or tuple(x.shape[1:]) != view.shape or isinstance(x.shape[0], int):
        raise ArtifactError(where, f"exported input is {list(map(str, x.shape))}, expected "
                                   f"[{BATCH_DIM}, {', '.join(map(str, view.shape))}] for view {view.ref}")
    if np.dtype(x.dtype) != np.dtype(view.dtype):
        raise ArtifactError(where, f"exported input dtype {x.dtype} differs from view dtype {view.dtype}")
    outs = list(exported.out_avals)
    if len(outs) != 1 or len(outs[0].shape) != 2 or outs[0].shape[1] != n_classes:
        raise ArtifactError(where, f"exported output is {[list(map(str, o.shape)) for o in outs]}, expected "
                                   f"[{BATCH_DIM}, {n_classes}] (one column per label)")
