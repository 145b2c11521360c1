"""``malsensor-train dataset``: input files -> rows, in parallel over files, as Parquet shards.

Every input file is one task: hash it, and either reuse its shard (same digest, same build
options, shard present) or read it with the view's own trainer-side reader (captures go
through the sensor's extractor, as in ``fit``: one extraction path), label it and write its
shard. Tasks run

* in this process (``--workers 1``),
* on local worker processes (default: one per 256 MB of input, up to one per CPU;
  ``spawn``ed, so nothing of this process's state, threads or numba caches, is forked into
  them), or
* on a Dask cluster (``--dask SCHEDULER_ADDRESS``): ``Client.map`` over the files. The
  inputs and the output folder must be visible under the same paths on every worker (a
  shared filesystem), as for any Dask job that reads files.

The manifest lists the shards in input order, so reading the folder back gives the rows
``load_dataset`` gives for the inputs, whichever way they were built (tests/test_dataset_dask.py).
A file that cannot be read is one line naming it, counted in the manifest's ``failed``
list, and the build goes on with the others.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from malsensor.daemon.artifact import ViewInfo

from .data.labels import Labeller, LabelSpec
from .data.load import DataOptions, list_files, view_reader
from .data.shards import (FORMAT, MANIFEST, SHARDS, file_digest, read_manifest, shard_entry, shard_name,
                          view_doc, write_shard)
from .data.table import DataStats
from .errors import TrainError
from .fsutil import atomic_write
from .progress import ProgressBar

log = logging.getLogger("malsensor.train")
LOG_EVERY_S = 30.0


@dataclass
class BuildOptions:
    data: Sequence[str | Path]
    out: Path
    view: ViewInfo
    data_opts: DataOptions = field(default_factory=DataOptions)
    workers: int = 0                 # 0: one per CPU; 1: in this process
    dask: str | None = None          # scheduler address: run the tasks on that cluster
    rebuild: bool = False            # ignore existing shards
    progress: bool = True


@dataclass
class BuildResult:
    manifest: dict
    built: int
    reused: int
    failed: int

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])


@dataclass(frozen=True)
class Task:
    """One input file (what a worker needs: plain data, picklable)."""

    file: str
    file_type: str
    out: str
    view: ViewInfo
    opts: DataOptions
    options_key: str
    rebuild: bool


def options_key(view: ViewInfo, opts: DataOptions) -> str:
    """What, besides an input's bytes, decides its rows: view, semantics, labels (tables by
    digest), malformed-row policy and the trainer's version."""
    from importlib import metadata

    ls = opts.labels
    try:
        version = metadata.version("malsensor")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        version = "?"
    doc = {"format": FORMAT, "view": view_doc(view), "semantics": opts.semantics, "skip_bad": bool(opts.skip_bad),
           "labels": {"mode": ls.mode, "column": ls.column, "ip_default": ls.ip_default, "ip_label": ls.ip_label,
                      "macs": file_digest(ls.macs) if ls.macs else None,
                      "ips": file_digest(ls.ips) if ls.ips else None},
           "malsensor": version}
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# A spawned worker costs its interpreter start-up (numpy, pyarrow, the kernels' modules) before
# its first file: on the IoT Sentinel captures (414 files, 48 MB) one process built the shards in
# 6.5 s and two spawned workers in 12.9 s (bench/bench_dataset.py, loaded 2-core VM). By default,
# a worker per this many bytes of input, up to one per CPU; --workers N overrides.
BYTES_PER_WORKER = 256 << 20


def auto_workers(files: Sequence[Path]) -> int:
    total = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
    return max(1, min(os.cpu_count() or 1, total // BYTES_PER_WORKER))


def build_one(task: Task) -> dict:
    """Run one task (in a worker): the file's manifest entry, with ``reused`` or ``error``."""
    t0 = time.monotonic()
    shard = shard_name(task.file)
    path = Path(task.out) / shard
    try:
        digest = file_digest(Path(task.file))
    except OSError as e:
        return {"file": task.file, "error": f"cannot read: {e.strerror or e}"}
    if not task.rebuild:
        old = shard_entry(path)
        if old and old.get("digest") == digest and old.get("options_key") == task.options_key \
                and old.get("file") == task.file:
            return {**old, "reused": True}
    stats = DataStats()
    try:
        reader = view_reader(task.view)
        part = reader.read(Path(task.file), task.file_type, task.view, task.opts, stats)
        labels, note = _labels(part, task.opts, stats)
    except TrainError as e:
        return {"file": task.file, "error": str(e)}
    except Exception as e:  # a reader bug must not sink the whole build: name the file, go on
        return {"file": task.file, "error": f"{type(e).__name__}: {e}"}
    counts = Counter(v for v in (labels or []) if v is not None)
    unlabelled = part.n - sum(counts.values())
    entry = {"file": task.file, "file_type": task.file_type, "digest": digest, "size": os.path.getsize(task.file),
             "shard": shard, "options_key": task.options_key, "view": view_doc(task.view),
             "rows": part.n - unlabelled, "rows_in_shard": part.n, "unlabelled": unlabelled,
             "labels": dict(sorted(counts.items())), "label_column": task.opts.labels.column or "label",
             "folder_label": part.folder_label, "is_capture": part.is_capture, "semantics": part.semantics,
             "stats": {"rows_read": stats.rows_read, "bad_rows": stats.bad_rows,
                       "bad_examples": stats.bad_examples, "merged_labels": stats.merged_labels},
             "seconds": round(time.monotonic() - t0, 3)}
    if note:
        entry["note"] = note
    try:
        write_shard(path, part, labels, entry)
    except OSError as e:
        return {"file": task.file, "error": f"cannot write its shard {path}: {e.strerror or e}"}
    return entry


def _labels(part, opts: DataOptions, stats: DataStats):
    """The rows' labels by ``opts.labels``. Without any label option, a file with no label
    column (a capture) is kept unlabelled (for ``predict``; ``fit`` needs labels at read time)."""
    ls = opts.labels
    labeller = Labeller(ls, stats)
    try:
        return labeller.labels(part), None
    except TrainError as e:
        if ls != LabelSpec() or part.label is not None:
            raise
        return None, str(e)


# --------------------------------------------------------------------------- running the tasks

def _run_local(tasks: list[Task], workers: int):
    """(index, entry) as tasks finish, on ``workers`` spawned processes (or in this process)."""
    if workers <= 1 or len(tasks) == 1:
        for i, t in enumerate(tasks):
            yield i, build_one(t)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(build_one, t): i for i, t in enumerate(tasks)}
        for f in as_completed(futs):
            i = futs[f]
            try:
                yield i, f.result()
            except Exception as e:  # a worker that died (killed, out of memory)
                yield i, {"file": tasks[i].file, "error": f"worker failed: {type(e).__name__}: {e}"}


def _run_dask(tasks: list[Task], address: str):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise TrainError("--dask needs dask.distributed: install the train extra (pip install 'malsensor[train]')") \
            from None
    try:
        client = Client(address)  # connect timeout: distributed.comm.timeouts.connect (30 s)
    except (OSError, TimeoutError) as e:
        raise TrainError(f"--dask {address}: cannot reach the scheduler ({e})") from None
    try:
        n = len(client.scheduler_info().get("workers", {}))
        log.info("dask: %s, %d worker(s)", address, n)
        futs = client.map(build_one, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futs)}
        for f in as_completed(futs):
            i = index[f.key]
            try:
                yield i, f.result()
            except Exception as e:
                yield i, {"file": tasks[i].file, "error": f"dask task failed: {type(e).__name__}: {e}"}
    finally:
        client.close()


def build_dataset(o: BuildOptions) -> BuildResult:
    """Build (or bring up to date) the dataset folder ``o.out``."""
    reader = view_reader(o.view)
    files = list_files(o.data, reader)
    if any(t == "shard" for _, t in files):
        raise TrainError("a dataset folder cannot be an input of another dataset: give the files it was built from")
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    key = options_key(o.view, o.data_opts)
    tasks = [Task(str(f), t, str(out), o.view, o.data_opts, key, o.rebuild) for f, t in files]
    workers = o.workers or auto_workers([f for f, _ in files])
    how = f"dask {o.dask}" if o.dask else f"{min(workers, len(tasks))} process(es)"
    log.info("dataset %s: %d input file(s), view %s, on %s", out, len(tasks), o.view.ref, how)
    entries: list[dict | None] = [None] * len(tasks)
    rows = built = reused = failed = 0
    unlabelled_files: list[dict] = []
    t0 = last = time.monotonic()
    run = _run_dask(tasks, o.dask) if o.dask else _run_local(tasks, workers)
    with ProgressBar("building dataset", len(tasks), enabled=o.progress, unit="file") as bar:
        for i, e in run:
            entries[i] = e
            if "error" in e:
                failed += 1
                log.error("%s: %s", e["file"], e["error"])
            else:
                reused += bool(e.get("reused"))
                built += not e.get("reused")
                rows += e["rows_in_shard"]
                if e.get("note"):
                    unlabelled_files.append(e)
            bar.update(1, rows=rows)
            now = time.monotonic()
            if now - last >= LOG_EVERY_S:
                last = now
                done = built + reused + failed
                log.info("dataset: %d/%d files (%d built, %d reused, %d failed), %d rows, %.0f s", done,
                         len(tasks), built, reused, failed, rows, now - t0)
    if unlabelled_files:
        log.warning("%d file(s) kept unlabelled, for predict (first: %s); give --macs, --ips, --label or "
                    "--label-from to label them", len(unlabelled_files), unlabelled_files[0]["note"])
    manifest = _manifest(o, entries, key)
    atomic_write(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    _remove_stale(out, {e["shard"] for e in manifest["files"]})
    log.info("dataset %s: %d rows (%d labelled) from %d file(s): %d built, %d reused, %d failed, %.1f s", out,
             manifest["rows_in_shards"], manifest["rows"], len(tasks), built, reused, failed, time.monotonic() - t0)
    return BuildResult(manifest, built, reused, failed)


def _manifest(o: BuildOptions, entries: list[dict | None], key: str) -> dict:
    ok = [{k: v for k, v in e.items() if k != "reused"} for e in entries if e and "error" not in e]
    labels: Counter = Counter()
    for e in ok:
        labels.update(e["labels"])
    ls = o.data_opts.labels
    return {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "view": view_doc(o.view), "semantics": o.data_opts.semantics, "options_key": key,
            "label_source": {"mode": ls.mode, "column": ls.column, "macs": str(ls.macs) if ls.macs else None,
                             "ips": str(ls.ips) if ls.ips else None},
            "rows": sum(e["rows"] for e in ok), "rows_in_shards": sum(e["rows_in_shard"] for e in ok),
            "unlabelled": sum(e["unlabelled"] for e in ok), "label_counts": dict(sorted(labels.items())),
            "files": ok, "failed": [e for e in entries if e and "error" in e]}


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Shards of inputs no longer listed (removed, or failed this time) go."""
    folder = out / SHARDS
    if not folder.is_dir():
        return
    for p in folder.glob("*.parquet"):
        if f"{SHARDS}/{p.name}" not in keep:
            p.unlink(missing_ok=True)


def describe(path: Path) -> dict:
    """The manifest of a dataset folder (for ``dataset --show``)."""
    return read_manifest(Path(path))
