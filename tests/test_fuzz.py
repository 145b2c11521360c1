"""Fuzz harnesses for every input kind a user hands the program (captures: test_pcapfile.py).

Each harness mutates a real, valid input many times and checks the contract for bad input:
either the input is accepted and behaves like the original, or it is rejected with one clear
message naming what and where - never a traceback. Every test run runs a bounded number of
cases; ``make fuzz`` runs thousands (MALSENSOR_FUZZ_CASES), and a failure names the seed of
its case (MALSENSOR_FUZZ_SEED replays from there).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import fuzz_cases, fuzz_seed

from malsensor.daemon.runtime import config as C
from malsensor.daemon.sources.afpacket import ring_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "etc" / "malsensor.toml"

pytestmark = pytest.mark.fuzz

# values that probe types and ranges: huge, tiny, negative, non-finite, wrong types
HOSTILE = ["0", "-1", "1", "1e308", "-1e308", "nan", "inf", "-inf", "8e9", "100000000000",
           "9" * 400, "0.0", "1.5", "true", "false", '""', '"x"', '"../../etc/passwd"', "[]", "[1, 2]",
           "[0]", '["a", 1]', "{}", '"\\u0000"', '"a\\nb"', "65536", "70000", "2147483648"]


def _cases(default: int):
    base = fuzz_seed()
    return [base + i for i in range(fuzz_cases(default))]


# ---------------------------------------------------------------------------- configs


def _mutate_toml(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        keyed = [i for i, ln in enumerate(lines) if re.match(r"^#?\s*[a-z_]+\s*=", ln)]
        op = rng.random()
        i = rng.choice(keyed)
        if op < 0.6:  # a key (active or commented-out) gets a hostile value
            key = re.match(r"^#?\s*([a-z_]+)\s*=", lines[i]).group(1)
            lines[i] = f"{key} = {rng.choice(HOSTILE)}"
        elif op < 0.7:
            del lines[i]
        elif op < 0.8:
            lines.insert(rng.randrange(len(lines)), lines[i])  # a key twice, or out of its section
        elif op < 0.9:
            lines.insert(rng.randrange(len(lines)), rng.choice(["[bogus]", "[[model]]", "[[output]]", "x = 1",
                                                                "[replay", "= 3", "\x00", "[tracking]"]))
        else:  # a few random characters somewhere
            j = rng.randrange(len(lines))
            pos = rng.randrange(len(lines[j]) + 1)
            lines[j] = lines[j][:pos] + "".join(rng.choice("[]{}=\"'#,.\\ 0a\t") for _ in range(3)) + lines[j][pos:]
    return "\n".join(lines) + "\n"


def _accept_or_name(text: str, file: str) -> C.Config | None:
    """The config contract: a Config, or a ConfigError whose every line is FILE[:LINE]: ..."""
    try:
        cfg = C.parse_config(text, file, "/base")
    except C.ConfigError as e:
        assert e.problems
        for p in e.problems:
            line = str(p)
            assert line.startswith(file + ":") or line.startswith(file + " "), line
            assert "\n" not in line.rstrip("\n") or "TOML" in line, line
        return None
    return cfg


@pytest.mark.parametrize("seed", _cases(60))
def test_fuzz_config_file(seed):
    """Mutations of etc/malsensor.toml: rejected with FILE:LINE: key: problem, or accepted with
    every numeric value inside its documented range and the daemon's derived settings buildable."""
    rng = random.Random(seed)
    text = _mutate_toml(SHIPPED.read_text(), rng)
    cfg = _accept_or_name(text, "f.toml")
    if cfg is None:
        return
    for toml_name, (attr, _cls, is_array) in C.SECTIONS.items():
        sections = getattr(cfg, attr)
        for sec in (sections if is_array else (sections,)):
            for spec in C.section_specs(toml_name):
                if spec.type not in (int, float):
                    continue
                if toml_name == "tracking" and spec.name in C.TRACKER_KEYS:
                    holder = sec.tracker
                elif toml_name == "model" and not hasattr(sec, spec.name):
                    holder = sec.options  # a key of the model's view
                else:
                    holder = sec
                if not hasattr(holder, spec.name):  # a key of another source kind or view
                    continue
                v = getattr(holder, spec.name)
                assert spec.min <= v <= spec.max, (seed, toml_name, spec.name, v)
    cfg.tracker_config()
    for itf in cfg.sources_of("afpacket"):
        ring_config(itf)
    C.check_sources(cfg)


@pytest.mark.parametrize("seed", _cases(60))
def test_fuzz_command_line_overrides(seed):
    """Random values for the numeric options of malsensord and extract: accepted, or one
    `OPTION: section.key: problem` line per bad option - never a traceback."""
    from malsensor.daemon.runtime.main import build_parser
    from malsensor.daemon.runtime.overrides import NUMERIC_OPTIONS, apply_overrides

    rng = random.Random(seed)
    cfg = C.load_config(SHIPPED)
    argv = ["--replay", "x.pcap"]
    for opt in rng.sample(sorted(NUMERIC_OPTIONS), rng.randint(1, len(NUMERIC_OPTIONS))):
        argv += [f"--{opt.replace('_', '-')}", rng.choice([v for v in HOSTILE if not v.startswith(("[", "{", '"'))])]
    try:
        a = build_parser().parse_args(argv)
    except SystemExit:  # argparse's own type errors ("invalid int value") are one line too
        return
    try:
        apply_overrides(cfg, a)
    except C.ConfigError as e:
        for p in e.problems:
            assert re.match(r"^--[a-z-]+: [a-z_]+\.[a-z_]+: ", str(p)), str(p)
    tracking = {k: float(rng.choice(["1e10", "nan", "-5", "30", "inf", "1e6"]))
                for k in rng.sample(("tcp_idle_timeout", "udp_idle_timeout", "active_timeout",
                                     "handshake_timeout", "close_linger"), 2)}
    try:
        tk = C.tracker_from_options("malsensor", tracking)
    except C.ConfigError as e:
        for p in e.problems:
            assert re.match(r"^--[a-z-]+: tracking\.[a-z_]+: ", str(p)), str(p)
    else:
        assert all(0 <= getattr(tk, k) <= C.YEAR for k in tracking)
    assert isinstance(a, argparse.Namespace)


# ---------------------------------------------------------------------------- artifacts


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    """A real artifact (the daemon tests' linear model) with SHA256SUMS, and its canary outputs."""
    from runtime_artifacts import write_artifact

    from malsensor.daemon import artifact as A

    root = write_artifact(tmp_path_factory.mktemp("art") / "a")
    (root / A.CHECKSUMS_FILE).write_text(A.checksums_text(root, (A.META_FILE, *A.ARTIFACT_FILES)))
    art = A.load_artifact(root)
    return root, art.predict_proba(art.canary_x)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    op = rng.random()
    if op < 0.4 and b:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op < 0.6:
        b = b[:rng.randrange(len(b) + 1)]
    elif op < 0.8:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        b = bytearray(rng.choice([b"", b"{}", b"[]", b"null", b'{"format": 1}', b"\xff\xfe", b"\x00" * 64]))
    return bytes(b)


def _mutate_meta(data: bytes, rng: random.Random) -> bytes:
    """Structured edits of meta.json: hostile values for keys that exist."""
    try:
        meta = json.loads(data)
    except ValueError:
        return data
    value = rng.choice([None, -1, 0, 1e308, float("nan"), "x", "a\nb", [], {}, [1, "a"], True, 10 ** 40])
    target = rng.choice(["format", "kind", "version", "view", "canary", "files", "view.name", "view.version",
                         "view.shape", "view.dtype", "view.columns", "canary.atol", "output"])
    obj, _, key = target.rpartition(".")
    holder = meta.get(obj) if obj else meta
    if isinstance(holder, dict):
        holder[key] = value
    return json.dumps(meta).encode()


@pytest.mark.parametrize("seed", _cases(12))
def test_fuzz_artifact(small_artifact, tmp_path, seed):
    """Mutations of every file of a published artifact: rejected with an ArtifactError that
    names the file, or served and identical to the original on the canary."""
    from malsensor.daemon import artifact as A

    src, want = small_artifact
    rng = random.Random(seed)
    root = tmp_path / "a"
    shutil.copytree(src, root)
    names = [A.META_FILE, *A.ARTIFACT_FILES, A.CHECKSUMS_FILE]
    name = rng.choice(names)
    data = (root / name).read_bytes()
    mutated = _mutate_meta(data, rng) if name == A.META_FILE and rng.random() < 0.6 else _mutate_bytes(data, rng)
    (root / name).write_bytes(mutated)
    if name != A.CHECKSUMS_FILE and rng.random() < 0.7:  # get past the checksums: test the parsers
        (root / A.CHECKSUMS_FILE).write_text(A.checksums_text(root, (A.META_FILE, *A.ARTIFACT_FILES)))
    try:
        art = A.load_artifact(root)
    except A.ArtifactError as e:
        named = [n for n in names if str(e).startswith(f"{root / n}: ")]
        assert named or str(e).startswith(f"{root}: "), f"seed {seed}: {e}"
        assert "\n" not in str(e).replace("\\n", ""), f"seed {seed}: {e!r}"
        return
    got = art.predict_proba(art.canary_x)
    assert got.shape == want.shape and np.allclose(got, want, atol=A.MAX_CANARY_ATOL, rtol=0), f"seed {seed}"
    assert "\n" not in art.version and "\n" not in art.kind


# ---------------------------------------------------------------------------- trainer files


def _dataset_lines(kind: str, n: int) -> list[str]:
    from malsensor.daemon.views.conn import CONN_COLUMNS

    if kind == "jsonl":
        return [json.dumps({"fts": [float(i)] + [float(j) for j in range(1, 17)], "label": "ab"[i % 2]})
                for i in range(n)]
    return [",".join([*CONN_COLUMNS, "label"])] + [
        ",".join([str(i), *(str(j) for j in range(1, 17)), "ab"[i % 2]]) for i in range(n)]


def _mutate_line(line: str, rng: random.Random, kind: str) -> bytes:
    raw = line.encode()
    op = rng.random()
    if op < 0.3:
        b = bytearray(raw)
        alphabet = b"{}[],:0123456789.eE-+ntrufalsx\\\xff\xe9\x00" if kind == "jsonl" else \
            b",0123456789.eE-+nax\\\xff\xe9\x00 "  # (no quote or CR: they join CSV lines, legitimately)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.choice(alphabet)
        return bytes(b)
    if op < 0.5:
        return raw[:rng.randrange(len(raw))]
    if op < 0.7:
        big = "9" * rng.choice([20, 400, 5000])
        return raw.replace(b"1.0" if kind == "jsonl" else b",1,", (big if kind == "jsonl" else f",{big},").encode(), 1)
    if op < 0.85:
        depth = rng.choice([10, 1000, 100_000])
        if kind == "jsonl":
            return ('{"fts": ' + "[" * depth + "]" * depth + ', "label": "a"}').encode()
        return raw + b",extra"
    return rng.choice([b"caf\xe9", b"\xff\xfe\xfd", b"null", b"[]", b"{}", b"1,2,3", b'{"fts": "x"}'])


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@pytest.mark.parametrize("seed", _cases(15))
def test_fuzz_trainer_file(tmp_path, kind, seed):
    """Mutated lines of a JSONL or CSV file: without --skip-bad a `file:line: problem` error (or
    the file reads); with it exactly the bad rows are skipped and counted, every intact row kept."""
    from malsensor.models.data.csvsrc import read_csv
    from malsensor.models.data.jsonl import read_jsonl
    from malsensor.models.data.table import DataStats
    from malsensor.models.errors import TrainError
    from malsensor.daemon.views.conn import CONN

    rng = random.Random(seed)
    n = 200
    lines = _dataset_lines(kind, n)
    first = 1 if kind == "csv" else 0  # index of the first data row in `lines`
    mutated = set(rng.sample(range(first, len(lines)), rng.randint(1, 6)))
    out = [(_mutate_line(ln, rng, kind) if i in mutated else ln.encode()) for i, ln in enumerate(lines)]
    p = tmp_path / f"d.{kind}"
    p.write_bytes(b"\n".join(out) + b"\n")
    read = read_jsonl if kind == "jsonl" else read_csv
    try:
        read(p, CONN.info(), None, DataStats(), False)
    except TrainError as e:
        assert re.match(rf"^{re.escape(str(p))}:\d+(-\d+)?: ", str(e)), f"seed {seed}: {e}"
    st = DataStats()
    part = read(p, CONN.info(), None, st, True)
    kept = part.x[:, 0].tolist()
    intact = [float(i - first) for i in range(first, len(lines)) if i not in mutated]
    assert set(intact) <= set(kept), f"seed {seed}: intact rows lost"
    empty = sum(1 for i in mutated if not out[i].strip())
    assert st.rows_read == n - empty, f"seed {seed}"
    assert st.bad_rows == st.rows_read - len(kept), f"seed {seed}"


@pytest.mark.parametrize("seed", _cases(3))
def test_fuzz_config_accepted_means_the_daemon_runs(tmp_path, seed):
    """A mutated etc/malsensor.toml that --check-config accepts also runs: the daemon replays a
    capture with it (models from contrib/models, outputs in a temporary folder) and exits 0,
    or stops with a one-line error - never a traceback."""
    import subprocess
    import sys

    from conftest import PCAPS, require_data

    cap = require_data(PCAPS / "synscan.pcapng")
    rng = random.Random(seed)
    for _ in range(200):  # the first mutant of this seed's stream that is accepted
        text = _mutate_toml(SHIPPED.read_text(), rng)
        try:
            C.parse_config(text, "f.toml", tmp_path)
            break
        except C.ConfigError:
            continue
    cfg = tmp_path / "f.toml"
    cfg.write_text(text)
    (tmp_path / "logs").mkdir()
    daemon = [sys.executable, "-m", "malsensor.daemon.runtime.main", "-c", str(cfg)]
    check = subprocess.run([*daemon, "--check-config"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in check.stderr, check.stderr
    r = subprocess.run([*daemon, "--replay", str(cap), "--models-dir", str(REPO / "contrib" / "models"),
                        "--log-dir", str(tmp_path / "logs"), "--user", "", "--metrics-port", "0"],
                       capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, f"seed {seed}:\n{text}\n{r.stderr[-3000:]}"
    # (the models are contrib/models here: --check-config warned if a mutant names a missing one)
    missing_model = re.search(r"warning: model \S+: .* does not exist", check.stderr)
    if check.returncode == 0 and missing_model:
        assert r.returncode == 0 or "cannot start: model" in r.stderr, r.stderr[-2000:]
    elif check.returncode == 0:  # accepted: it runs, and every event reaches its file
        assert r.returncode == 0, f"seed {seed}:\n{text}\n{r.stderr[-3000:]}"
        assert re.search(r"stopped: \d+ connections, \d+ events written, 0 lost", r.stderr), r.stderr[-2000:]


# ---------------------------------------------------------------------------- compressed captures


@pytest.mark.parametrize("seed", _cases(40))
def test_fuzz_gzip_capture(tmp_path, seed):
    """Mutations of a gzip-compressed capture (the uncompressed ones: test_pcapfile.py): the
    reader yields packets in bounds and ends normally or with a CaptureFormatError naming the
    file - whatever the bytes of the compressed stream."""
    import gzip

    from conftest import PCAPS, require_data

    from malsensor.daemon.capture.pcapfile import CaptureFormatError, ReaderStats, read_capture

    raw = require_data(PCAPS / "synscan.pcapng").read_bytes()
    rng = random.Random(seed)
    comp = gzip.compress(raw[:rng.randrange(1000, len(raw))], mtime=0)
    if rng.random() < 0.3:  # several members
        comp += b"\0" * rng.randrange(3) + gzip.compress(raw[:5000], mtime=0)
    data = _mutate_bytes(comp, rng)
    p = tmp_path / "c.gz"
    p.write_bytes(data)
    st = ReaderStats()
    try:
        for b in read_capture(p, chunk_bytes=rng.choice([100, 4096, 1 << 20]), stats=st):
            assert (b.caplen >= 0).all() and (b.caplen <= b.wirelen).all()
            assert (b.offset >= 0).all() and (b.offset + b.caplen <= b.buf.shape[0]).all()
    except CaptureFormatError as e:
        assert e.path == str(p) and "\n" not in str(e), f"seed {seed}: {e!r}"
