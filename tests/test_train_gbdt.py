"""Gradient-boosted trees: the JAX traversal reproduces XGBoost's predict_proba (to 1e-6),
``malsensor-train fit`` end to end with the shipped spec, early stopping as XGBoost's own,
resume after an interruption, and the artifact served by the daemon's loader."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO
from train_data import assert_clean_error, cli, resumed_and_whole, unsw_subset, write_spec

from malsensor.daemon import artifact as A
from malsensor.models.data.csvsrc import read_csv
from malsensor.models.data.table import DataStats
from malsensor.daemon.views.conn import CONN
from malsensor.models.zoo import gbdt as G

xgb = pytest.importorskip("xgboost")   # a train-extra dependency: `make test` installs it
SPEC = REPO / "etc" / "models" / "gbdt.toml"


@pytest.fixture(scope="module")
def unsw(tmp_path_factory):
    path = unsw_subset(tmp_path_factory.mktemp("unsw"), per_class=150)
    part = read_csv(path, CONN.info(), "attack_cat", DataStats(), False)
    labels = np.asarray(part.label)
    classes = sorted(set(labels.tolist()))
    return part.x.astype(np.float32), np.array([classes.index(v) for v in labels]), classes, path


def _jax(model: G.Boosted, x: np.ndarray, traversal: str):
    import jax

    arrays, static = G.layout(G.GBDTConfig(traversal=traversal), model, x.shape[1])
    probs = jax.jit(lambda p, v: G.gbdt_probs(static, p, v))(arrays, x)
    margins = jax.jit(lambda p, v: G.margins(static, p, v))(arrays, x)
    return np.asarray(probs), np.asarray(margins), static


def _tie_rows(model: G.Boosted, x: np.ndarray, rng) -> np.ndarray:
    """Rows whose values sit exactly on XGBoost split thresholds and one float32 step either side."""
    rows = []
    for t in model.trees[:8]:
        for node in np.flatnonzero(t.left != -1)[:30]:
            thr = np.float32(np.nextafter(t.threshold[node], np.inf))     # the XGBoost threshold itself
            base = x[rng.integers(0, x.shape[0])]
            for v in (thr, np.nextafter(thr, np.float32(-np.inf)), np.nextafter(thr, np.float32(np.inf))):
                r = base.copy()
                r[t.feature[node]] = v
                rows.append(r)
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("task,max_depth,traversal", [("binary", 4, "perfect"), ("binary", 8, "sparse"),
                                                      ("10class", 6, "perfect"), ("10class", 8, "sparse")])
def test_probabilities_equal_xgboost(unsw, task, max_depth, traversal):
    x, y, classes, _ = unsw
    if task == "binary":
        y = (y != classes.index("Normal")).astype(int)
    clf = xgb.XGBClassifier(n_estimators=60, max_depth=max_depth, learning_rate=0.3, n_jobs=1,
                            random_state=0).fit(x, y)
    model = G.from_xgboost(clf.get_booster())
    assert model.groups == (1 if task == "binary" else 10)
    assert len(model.trees) == 60 * model.groups
    got, margins, static = _jax(model, x, traversal)
    assert static["traversal"] == traversal and static["depth"] <= max_depth
    ref = clf.predict_proba(x)
    assert got.shape == ref.shape == (x.shape[0], 2 if task == "binary" else 10)
    assert np.abs(got - ref).max() <= 1e-6
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    ref_m = clf.get_booster().predict(xgb.DMatrix(x), output_margin=True).reshape(margins.shape)
    assert np.abs(margins - ref_m).max() <= 1e-5     # measured: 0 (same float32 additions, same order)
    ties = _tie_rows(model, x, np.random.default_rng(0))
    got_t, _, _ = _jax(model, ties, traversal)
    assert np.abs(got_t - clf.predict_proba(ties)).max() <= 1e-6


def _pkt_seq_like_rows(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """pkt_seq@1-shaped rows (16 packets x 7 columns = 112 features, flattened), 3 classes: size,
    direction (+1/-1, 0 in the padding), gap, TCP flags, protocol, port, mask (0 in the padding)."""
    x = np.zeros((n, 16, 7), np.float32)
    y = rng.integers(0, 3, n)
    for i, k in enumerate(rng.integers(1, 17, n)):
        x[i, :k, 0] = rng.integers(40, 1500, k) + 50 * y[i]
        x[i, :k, 1] = rng.choice([-1, 1], k)
        x[i, :k, 2] = rng.exponential(0.5, k) * (1 + y[i])
        x[i, :k, 3] = rng.choice([2, 16, 18, 24], k)
        x[i, :k, 4] = rng.choice([6, 17], k)
        x[i, :k, 5] = (80, 443, 53)[y[i]] * (rng.random() < 0.7)
        x[i, :k, 6] = 1
    return x.reshape(n, -1), y


@pytest.mark.parametrize("traversal", ["perfect", "sparse"])
def test_splits_at_zero_equal_xgboost(traversal):
    """XGBoost's ``x < 0`` (pkt_seq's direction column: -1/+1, 0 in the padding) became
    ``x > -1.4e-45``, a subnormal that XLA flushes to -0: rows with x = 0 went left
    (max |diff| 0.22 here, 0.0964 on IoT Sentinel) until forest.flush_safe."""
    x, y = _pkt_seq_like_rows(3000, np.random.default_rng(0))
    booster = xgb.train(G.xgb_params(G.GBDTConfig(), 3, 0), xgb.DMatrix(x, label=y), num_boost_round=40)
    model = G.from_xgboost(booster)
    zero_splits = sum(int(((t.left != -1) & (np.float32(np.nextafter(t.threshold, np.inf)) == 0)).sum())
                      for t in model.trees)
    assert zero_splits > 0 and x.shape[1] == 112        # the pattern under test is in the model
    got, _, static = _jax(model, x, traversal)
    assert static["traversal"] == traversal
    ref = G.booster_proba(booster, x)
    assert np.abs(got - ref).max() <= 1e-6
    assert np.array_equal(got.argmax(1), ref.argmax(1))


def test_flush_safe_thresholds():
    """Subnormal thresholds become ones XLA compares like numpy for every normal float32 and 0."""
    import jax
    import jax.numpy as jnp
    from malsensor.models.zoo import forest as F

    t = np.array([-1e-45, -1e-40, 1e-40, 1e-45, 0.0, -F.FLT_MIN, 1.5, -2.0], np.float32)
    safe = F.flush_safe(t)
    assert safe.tolist() == [-F.FLT_MIN, -F.FLT_MIN, 0.0, 0.0, 0.0, -F.FLT_MIN, 1.5, -2.0]
    xs = np.array([0.0, -0.0, F.FLT_MIN, -F.FLT_MIN, 1.0, -1.0, -2.0, 3e-38, -3e-38], np.float32)
    want = xs[:, None] > t[None, :]                           # numpy: exact, no flush
    got = np.asarray(jax.jit(lambda a, b: a[:, None] > b[None, :])(jnp.asarray(xs), jnp.asarray(safe)))
    assert np.array_equal(got, want)


def test_unsupported_boosters_are_refused(unsw):
    x, y, classes, _ = unsw
    rf = xgb.XGBClassifier(n_estimators=2, num_parallel_tree=3, max_depth=3, n_jobs=1).fit(x, y)
    with pytest.raises(Exception, match="num_parallel_tree"):
        G.from_xgboost(rf.get_booster())
    reg = xgb.XGBRegressor(n_estimators=2, max_depth=3, n_jobs=1).fit(x, y.astype(float))
    with pytest.raises(Exception, match="does not convert"):
        G.from_xgboost(reg.get_booster())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, unsw):
    """The shipped spec fitted on real UNSW rows (10 attack categories), in process so that
    XGBoost's own booster is at hand."""
    from malsensor.models.fit import FitOptions, run_fit

    tmp = tmp_path_factory.mktemp("gbdt")
    return run_fit(FitOptions(model=str(SPEC), data=[str(unsw[3])], out=tmp / "models", name="cats",
                              label="attack_cat", reports=tmp / "reports", progress=False))


def test_fit_with_the_shipped_spec(fitted):
    art = A.load_artifact(fitted.artifact)          # checksums + canary
    meta = art.meta
    assert meta["kind"] == "gbdt" and len(art.labels) == 10
    st = meta["model_static"]
    assert st["groups"] == 10 and st["trees"] == 10 * st["rounds"] and st["rounds"] == st["best_round"]
    # early stopping: 30 rounds without a better validation loss, then the best rounds kept
    assert st["best_round"] < st["rounds_trained"] < 1000
    assert st["rounds_trained"] - st["best_round"] >= 30
    assert meta["export"]["max_abs_diff_vs_trainer"] <= 1e-6
    assert meta["training"]["epochs_run"] == -(-st["rounds_trained"] // 25)
    assert "xgboost" in meta["versions"]
    x = fitted.dataset.x
    assert np.abs(art.predict_proba(x) - fitted.result.train_probs_fn(x)).max() <= 1e-6


def test_fit_cli_end_to_end(unsw, tmp_path):
    """``malsensor-train fit --model etc/models/gbdt.toml``, binary labels, then evaluate."""
    proc = cli("fit", "--model", SPEC, "--data", unsw[3], "--label", "label", "--out", tmp_path / "models",
               "--name", "bin", "--reports", tmp_path / "reports")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "published" in proc.stdout and "test: n" in proc.stdout
    assert "exported function vs trainer (XGBoost predict_proba)" in proc.stderr
    assert "early stop: validation logloss did not improve for" in proc.stderr
    art = A.load_artifact(tmp_path / "models" / "bin")
    assert art.meta["kind"] == "gbdt" and art.labels == ["0", "1"] and art.meta["model_static"]["groups"] == 1
    rep = list((tmp_path / "reports" / "bin").iterdir())[0]
    assert (rep / "learning_curves.png").stat().st_size > 0
    ev = cli("evaluate", tmp_path / "models" / "bin", unsw[3], "--label", "label", "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert '"accuracy"' in ev.stdout


def test_early_stopping_matches_xgboost(unsw, tmp_path):
    """The fit keeps exactly the rounds XGBoost's own early stopping keeps."""
    from malsensor.models.data.split import class_weights, split_dataset
    from malsensor.models.fit import FitOptions, run_fit

    spec = write_spec(tmp_path, "gbdt", {"max_depth": 4, "early_stopping_rounds": 5, "rounds_per_chunk": 7,
                                         "n_jobs": 1})
    res = run_fit(FitOptions(model=str(spec), data=[str(unsw[3])], out=tmp_path / "m", name="g", label="label",
                             reports=tmp_path / "r", progress=False))
    ds = res.dataset
    sp = split_dataset(ds, "auto", 0)
    y = np.array([res.labels.index(v) for v in ds.y])
    w = class_weights(y[sp.train], 2, "sqrt")[y[sp.train]]
    params = G.xgb_params(load_cfg(spec), 2, 0)
    from malsensor.models.train import _seed_int

    params["seed"] = _seed_int(0, 0)
    bst = xgb.train(params, xgb.DMatrix(ds.x[sp.train], label=y[sp.train], weight=w), num_boost_round=1000,
                    evals=[(xgb.DMatrix(ds.x[sp.val], label=y[sp.val]), "val")], early_stopping_rounds=5,
                    verbose_eval=False)
    st = res.result.static
    assert st["best_round"] == bst.best_iteration + 1
    assert st["rounds_trained"] >= bst.num_boosted_rounds()
    x = ds.x[sp.test]
    ref = G.booster_proba(bst[: bst.best_iteration + 1], x)
    assert np.abs(A.load_artifact(res.artifact).predict_proba(x) - ref).max() <= 1e-6


def load_cfg(spec):
    from malsensor.models.spec import load_spec

    return load_spec(spec).model


LOADER = textwrap.dedent("""
    import sys, numpy as np
    from malsensor.daemon.artifact import load_artifact
    art = load_artifact(sys.argv[1], expect_view=("conn", 1, (17,)))
    print("CANARY", art.check_canary())
    x = np.load(sys.argv[2], allow_pickle=False)
    np.save(sys.argv[3], art.predict_proba(x), allow_pickle=False)
    banned = [m for m in ("xgboost", "sklearn", "flax", "malsensor.models") if m in sys.modules]
    print("BANNED", banned)
""")


def test_daemon_loader_serves_the_artifact(fitted, unsw, tmp_path):
    """A fresh process with only the daemon's loader (no XGBoost) gives XGBoost's probabilities."""
    x = unsw[0]
    np.save(tmp_path / "x.npy", x, allow_pickle=False)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(fitted.artifact.parent), str(tmp_path / "x.npy"),
                           str(tmp_path / "p.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BANNED []" in proc.stdout
    assert float(proc.stdout.split("CANARY ")[1].split()[0]) <= 1e-6
    got = np.load(tmp_path / "p.npy", allow_pickle=False)
    assert np.abs(got - fitted.result.train_probs_fn(x)).max() <= 1e-6


def test_resume_gives_the_uninterrupted_model(unsw, tmp_path):
    spec = write_spec(tmp_path, "gbdt", {"n_estimators": 12, "rounds_per_chunk": 5, "max_depth": 4,
                                         "early_stopping_rounds": 0, "n_jobs": 1})
    resumed, _ = resumed_and_whole(tmp_path, spec, unsw[3], "g")
    assert [h["rounds"] for h in resumed.result.history] == [5, 10, 12]
    assert resumed.result.static["rounds"] == 12


@pytest.mark.parametrize("model,needle", [({"max_depth": 0}, "max_depth must be in 1..20"),
                                          ({"subsample": 1.5}, "subsample must be in (0, 1]"),
                                          ({"traversal": "dense"}, "traversal must be one of")])
def test_bad_config_is_one_line(unsw, tmp_path, model, needle):
    spec = write_spec(tmp_path, "gbdt", model)
    assert_clean_error(cli("fit", "--model", spec, "--data", unsw[3], "--out", tmp_path, "--name", "x"), needle)
