"""Artifacts: the daemon-side loader, exact reproduction in a process without training
libraries, verification of every file, atomic publishing."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import numpy as np
import pytest

from train_data import unsw_subset, write_spec

from malsensor.daemon import artifact as A
from malsensor.models.fit import FitOptions, run_fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small forest and a small MLP trained on real UNSW-NB15 rows, published."""
    tmp = tmp_path_factory.mktemp("art")
    data = unsw_subset(tmp, per_class=80)
    out = {}
    for kind, model, train in (("forest", {"n_estimators": 10, "max_depth": 0, "n_jobs": 1}, {}),
                               ("mlp", {"hidden": [32, 16]}, {"epochs": 2, "batch_size": 64})):
        spec = write_spec(tmp, kind, model, train)
        res = run_fit(FitOptions(model=str(spec), data=[str(data)], out=tmp / "models", name=kind,
                                 label="attack_cat", reports=tmp / "reports", progress=False))
        out[kind] = res
    out["data"] = data
    out["tmp"] = tmp
    return out


LOADER = textwrap.dedent("""
    import sys, numpy as np
    from malsensor.daemon.artifact import load_artifact
    art = load_artifact(sys.argv[1], expect_view=("conn", 1, (17,)))
    x = np.load(sys.argv[2], allow_pickle=False)
    np.save(sys.argv[3], art.predict_proba(x), allow_pickle=False)
    banned = [m for m in ("flax", "optax", "sklearn", "tensorboardX", "malsensor.models") if m in sys.modules]
    print("BANNED", banned)
""")


@pytest.mark.parametrize("kind", ["forest", "mlp"])
def test_fresh_process_without_training_libraries_reproduces_predictions(trained, kind, tmp_path):
    res = trained[kind]
    x = res.dataset.x[res.test_idx]
    np.save(tmp_path / "x.npy", x, allow_pickle=False)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(res.artifact.parent), str(tmp_path / "x.npy"),
                           str(tmp_path / "p.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BANNED []" in proc.stdout
    fresh = np.load(tmp_path / "p.npy", allow_pickle=False)
    # the trainer's own predictions (what `malsensor-train predict/evaluate` run) ...
    art = A.load_artifact(res.artifact)
    mine = art.predict_proba(x)
    assert np.array_equal(fresh, mine)
    # ... match the test metrics the trainer published
    acc = float((mine.argmax(1) == np.array([res.labels.index(v) for v in res.dataset.y[res.test_idx]])).mean())
    assert acc == pytest.approx(art.meta["metrics"]["test"]["accuracy"], abs=0)
    # ... and the training-side model (sklearn predict_proba / flax apply)
    ref = res.result.train_probs_fn(x)
    assert np.abs(ref - mine).max() <= (1e-6 if kind == "forest" else 1e-5)


def test_artifact_contents(trained):
    res = trained["forest"]
    root = res.artifact
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [A.MODEL_FILE, A.PARAMS_FILE, A.LABELS_FILE, A.META_FILE, A.CANARY_FILE, A.CHECKSUMS_FILE])
    labels = json.loads((root / A.LABELS_FILE).read_text())
    assert labels == sorted(["Normal", "Generic", "Exploits", "Fuzzers", "DoS", "Reconnaissance", "Analysis",
                             "Backdoor", "Shellcode", "Worms"])
    meta = json.loads((root / A.META_FILE).read_text())
    assert meta["kind"] == "forest" and meta["format"] == A.FORMAT
    assert meta["view"]["name"] == "conn" and meta["view"]["version"] == 1 and meta["view"]["shape"] == [17]
    assert meta["view"]["semantics"] == "argus"
    assert meta["data"]["digest"].startswith("sha256:") and meta["data"]["rows"] == res.dataset.n
    for key in ("hyper", "normalisation", "metrics", "versions", "created", "files", "canary"):
        assert key in meta
    assert meta["export"]["max_abs_diff_vs_trainer"] <= 1e-6
    assert (root.parent / A.CURRENT_LINK).resolve() == root
    # the exported function has a symbolic batch: any batch size works
    art = A.load_artifact(root.parent)
    for b in (1, 3, 64):
        assert art.predict_proba(np.zeros((b, 17), np.float32)).shape == (b, 10)
    # non-finite inputs are treated as 0, as in training
    x = res.dataset.x[:4].copy()
    x2 = x.copy()
    x2[:, 0] = np.nan
    x[:, 0] = 0.0
    assert np.array_equal(art.predict_proba(x2), art.predict_proba(x))
    # padded prediction equals unpadded
    xs = res.dataset.x[:37]
    assert np.array_equal(art.predict_padded(xs, [8, 16]), np.concatenate(
        [art.predict_proba(np.pad(xs[i:i + 16], ((0, 16 - len(xs[i:i + 16])), (0, 0))))[:len(xs[i:i + 16])]
         for i in range(0, 37, 16)]))


def test_mlp_normalisation_is_in_the_artifact(trained):
    meta = json.loads((trained["mlp"].artifact / A.META_FILE).read_text())
    norm = meta["normalisation"]
    assert norm["transform"] == "signed_log1p_zscore" and len(norm["mean"]) == 17 and len(norm["std"]) == 17
    art = A.load_artifact(trained["mlp"].artifact)
    assert any("norm" in p for p in art.param_paths)


# --------------------------------------------------------------------------- verification

def _copy(trained, tmp_path) -> Path:
    dst = tmp_path / "art"
    shutil.copytree(trained["forest"].artifact, dst)
    return dst


def _rechecksum(root: Path) -> None:
    meta = json.loads((root / A.META_FILE).read_text())
    for name in A.ARTIFACT_FILES:
        meta["files"][name] = {"sha256": A.sha256_file(root / name), "bytes": (root / name).stat().st_size}
    (root / A.META_FILE).write_text(json.dumps(meta))
    _resum(root)


def _resum(root: Path) -> None:
    """SHA256SUMS over the files as they are now (what an edit that knows the format does)."""
    (root / A.CHECKSUMS_FILE).write_text(A.checksums_text(root, (A.META_FILE, *A.ARTIFACT_FILES)))


def _error(root: Path, **kw) -> str:
    with pytest.raises(A.ArtifactError) as e:
        A.load_artifact(root, **kw)
    return str(e.value)


def test_truncated_model(trained, tmp_path):
    root = _copy(trained, tmp_path)
    data = (root / A.MODEL_FILE).read_bytes()
    (root / A.MODEL_FILE).write_bytes(data[: len(data) // 2])
    msg = _error(root)
    assert str(root / A.MODEL_FILE) in msg and "truncated" in msg
    # without checksums the deserializer itself refuses it
    _rechecksum(root)
    assert "model.jax" in _error(root)


def test_corrupt_params(trained, tmp_path):
    root = _copy(trained, tmp_path)
    data = bytearray((root / A.PARAMS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / A.PARAMS_FILE).write_bytes(bytes(data))
    msg = _error(root)
    assert "params.msgpack" in msg and "sha256" in msg


def test_invalid_meta_json(trained, tmp_path):
    root = _copy(trained, tmp_path)
    (root / A.META_FILE).write_text('{"format": 1,\n "kind": }')
    assert _error(root) == f"{root / A.META_FILE}: sha256 differs from SHA256SUMS (truncated, corrupt or replaced)"
    _resum(root)
    msg = _error(root)
    assert "meta.json" in msg and "line 2" in msg


def test_missing_labels(trained, tmp_path):
    root = _copy(trained, tmp_path)
    (root / A.LABELS_FILE).unlink()
    assert f"{root / A.LABELS_FILE}: missing" in _error(root)


def test_labels_do_not_match_outputs(trained, tmp_path):
    root = _copy(trained, tmp_path)
    (root / A.LABELS_FILE).write_text(json.dumps(["a", "b"]))
    _rechecksum(root)
    msg = _error(root)
    assert "model.jax" in msg and "one column per label" in msg


def test_failing_canary(trained, tmp_path):
    root = _copy(trained, tmp_path)
    doc = msgpack.unpackb((root / A.CANARY_FILE).read_bytes())
    probs = A.unpack_array(doc["probs"], "x", "probs").copy()
    probs[0] = probs[0][::-1]
    doc["probs"] = A.pack_array(probs)
    (root / A.CANARY_FILE).write_bytes(msgpack.packb(doc, use_bin_type=True))
    _rechecksum(root)
    msg = _error(root)
    assert "canary.msgpack" in msg and "differ" in msg
    A.load_artifact(root, check_canary=False)   # the rest is fine


def test_view_mismatch(trained, tmp_path):
    root = trained["forest"].artifact
    msg = _error(root, expect_view=("conn_series", 1, (4, 17)))
    assert "conn@1" in msg and "conn_series@1" in msg
    assert "conn@1" in _error(root, expect_view=("conn", 2))
    A.load_artifact(root, expect_view=A.ViewInfo("conn", 1, (17,)))


def test_resolve(trained, tmp_path):
    model_dir = trained["forest"].artifact.parent
    assert A.resolve(model_dir) == trained["forest"].artifact
    assert A.resolve(model_dir / A.CURRENT_LINK) == trained["forest"].artifact
    (tmp_path / "m").mkdir()
    os.symlink("nope", tmp_path / "m" / A.CURRENT_LINK)
    with pytest.raises(A.ArtifactError, match="dangling"):
        A.resolve(tmp_path / "m")
    with pytest.raises(A.ArtifactError, match="no such"):
        A.resolve(tmp_path / "absent")


def test_publish_is_atomic_and_cleans_stale_temporaries(trained):
    from malsensor.models import publish as P

    res = trained["forest"]
    model_dir = res.artifact.parent
    # a publish killed half-way leaves a temporary folder named after its (dead) pid
    stale = model_dir / ".tmp-20000101T000000Z-999999999"
    stale.mkdir()
    (stale / A.MODEL_FILE).write_bytes(b"partial")
    art = A.load_artifact(res.artifact)
    exported = P.ExportedModel(art.path.joinpath(A.MODEL_FILE).read_bytes(), art.param_leaves, art.param_paths,
                               art.predict_proba, ("cpu",))
    meta = {k: v for k, v in art.meta.items() if k != "files"}
    version = P.new_version(model_dir)
    new = P.publish(model_dir.parent, model_dir.name, version, exported, art.labels, art.canary_x,
                    art.canary_probs, dict(meta, version=version))
    assert not stale.exists()
    assert A.resolve(model_dir) == new and new.name == version
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".tmp")] == []
    assert A.load_artifact(model_dir).version == version
