"""The package layout the architecture promises: folders mapped into `malsensor`, one-way deps."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from conftest import REPO

TRAINING_ONLY = {"flax", "optax", "sklearn", "tensorboardX", "matplotlib", "tqdm"}


def _packages() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(_packages())
    found = set()
    for root, name in (("daemon", "malsensor.daemon"), ("models", "malsensor.models")):
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found == listed


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
            if node.module.startswith("malsensor.models"):
                out.add("malsensor.models")
    return out


def test_the_daemon_never_imports_training_code():
    for path in (REPO / "daemon").rglob("*.py"):
        bad = _imports(path) & (TRAINING_ONLY | {"malsensor.models"})
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
        text = path.read_text()
        assert "..models" not in text and "import pickle" not in text, path


def test_no_top_level_daemon_or_models_import():
    for path in list((REPO / "daemon").rglob("*.py")) + list((REPO / "models").rglob("*.py")):
        mods = _imports(path)
        assert not mods & {"daemon", "models"}, f"{path.relative_to(REPO)} imports a bare daemon/models"
