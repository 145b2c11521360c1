"""Shared helpers for the trainer's tests (tests/test_train_*.py, tests/test_artifact*.py)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from conftest import DATA, REPO, require_data

UNSW = DATA / "unsw_nb15" / "UNSW_NB15_82k.csv"
IOT = DATA / "iot_sentinel"


def unsw_subset(folder: Path, per_class: int = 60, name: str = "unsw_small.csv") -> Path:
    """The first ``per_class`` rows of every attack category of the real UNSW-NB15 CSV
    (both label columns kept), written to ``folder/name``."""
    src = require_data(UNSW)
    seen: dict[str, int] = {}
    out = folder / name
    with open(src, newline="", encoding="utf-8-sig") as f, open(out, "w", newline="") as g:
        r = csv.reader(f)
        w = csv.writer(g)
        header = next(r)
        w.writerow(header)
        cat = header.index("attack_cat")
        for row in r:
            if seen.get(row[cat], 0) < per_class:
                seen[row[cat]] = seen.get(row[cat], 0) + 1
                w.writerow(row)
    return out


def write_spec(folder: Path, kind: str, model: dict | None = None, train: dict | None = None,
               name: str | None = None) -> Path:
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(i) for i in v) + "]"
        return repr(v)

    lines = [f'kind = "{kind}"']
    for sect, d in (("model", model), ("train", train)):
        if d:
            lines.append(f"[{sect}]")
            lines += [f"{k} = {val(v)}" for k, v in d.items()]
    p = folder / (name or f"{kind}.toml")
    p.write_text("\n".join(lines) + "\n")
    return p


def cli(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``malsensor-train`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "malsensor.models.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2, one 'malsensor-train: ...' message containing ``needles``, no traceback."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    msg = [ln for ln in err.splitlines() if ln.startswith("malsensor-train: ")]
    assert msg, err[-2000:]
    for n in needles:
        assert n in msg[-1], (n, msg[-1])


def resumed_and_whole(folder: Path, spec: Path, data: Path, name: str):
    """One fit stopped after its first epoch and resumed, and the same fit run whole: their
    ``FitOutcome``s, once the test has seen that nothing was published before the resume and
    that both artifacts hold the same parameters, bit for bit."""
    import pytest

    from malsensor.daemon import artifact as A
    from malsensor.models.fit import FitOptions, run_fit
    from malsensor.models.train import _Interrupted

    opts = dict(model=str(spec), data=[str(data)], name=name, label="attack_cat", progress=False)
    with pytest.raises(_Interrupted):
        run_fit(FitOptions(out=folder / "a", reports=folder / "ra", stop_after_epochs=1, **opts))
    assert not (folder / "a" / name / A.CURRENT_LINK).exists()
    resumed = run_fit(FitOptions(out=folder / "a", reports=folder / "ra", resume=True, **opts))
    whole = run_fit(FitOptions(out=folder / "b", reports=folder / "rb", **opts))
    a, b = A.load_artifact(resumed.artifact), A.load_artifact(whole.artifact)
    assert [p.tobytes() for p in a.param_leaves] == [p.tobytes() for p in b.param_leaves]
    return resumed, whole
