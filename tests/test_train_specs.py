"""Model specs: the shipped TOML files parse, document every default, and are validated."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import REPO
from train_data import unsw_subset, write_spec

from malsensor.models.errors import TrainError
from malsensor.models.spec import DataConfig, TrainConfig, load_spec, spec_from_dict
from malsensor.models.zoo.base import get_kind

SPECS = REPO / "etc" / "models"


@pytest.mark.parametrize("kind", ["forest", "gbdt", "mlp", "itransformer", "lstm"])
def test_shipped_spec_shows_every_default(kind):
    spec = load_spec(SPECS / f"{kind}.toml")
    assert spec.kind == kind
    assert asdict(spec.model) == asdict(get_kind(kind).config_cls())
    assert asdict(spec.data) == asdict(DataConfig())
    text = (SPECS / f"{kind}.toml").read_text()
    for key in asdict(spec.model):
        assert f"\n{key} = " in text, f"{kind}.toml does not show [model] {key}"
    if kind != "forest":
        assert asdict(spec.train) == asdict(TrainConfig())


def test_series_spec():
    spec = load_spec(SPECS / "itransformer-series.toml")
    kind = get_kind(spec.kind)
    kind.check(spec.model)
    v = kind.view(spec.model)
    assert (v.name, v.version, v.shape) == ("conn_series", 1, (4, 17))


def test_kind_name_gives_defaults():
    spec = load_spec("forest")
    assert spec.source == "builtin:forest" and spec.model.n_estimators == 100


@pytest.mark.parametrize("doc,msg", [
    ({"kind": "forest", "model": {"max_depth": "deep"}}, "x.toml: model.max_depth: expected an integer, got string"),
    ({"kind": "mlp", "model": {"hidden": [64, "x"]}}, "x.toml: model.hidden: item 1: expected an integer"),
    ({"kind": "mlp", "train": {"lr": "fast"}}, "x.toml: train.lr: expected a number"),
    ({"kind": "mlp", "model": {"dropout": 1.0}}, "x.toml: model.dropout: 1 is out of range (allowed: >= 0 and < 1)"),
    ({"kind": "itransformer", "model": {"dropout": -0.1}}, "model.dropout: -0.1 is out of range"),
    ({"kind": "mlp", "extra": 1}, "unknown top-level key(s) extra"),
    ({"model": {}}, "'kind'"),
])
def test_spec_validation(doc, msg):
    with pytest.raises(TrainError) as e:
        spec_from_dict(doc, "x.toml")
    assert msg in str(e.value)


def test_progress_bar_on_a_terminal(tmp_path):
    """On a TTY the trainer draws a tqdm bar; otherwise it logs lines (see test_train_cli)."""
    data = unsw_subset(tmp_path, per_class=20)
    spec = write_spec(tmp_path, "mlp", {"hidden": [8]}, {"epochs": 1, "batch_size": 8})
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # a terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "malsensor.models.cli", "fit", "--model", str(spec),
                             "--data", str(data), "--out", str(tmp_path / "m"), "--name", "p",
                             "--reports", str(tmp_path / "r")], stdout=subprocess.DEVNULL, stderr=slave,
                            cwd=REPO)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=300) == 0, out[-2000:]
    text = out.decode(errors="replace")
    assert "epoch 1/1" in text and "step/s" in text and "\r" in text
