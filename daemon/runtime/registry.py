"""Model registry: the artifact each configured model serves, and hot reload.

One :class:`ModelSlot` per ``[[model]]``. ``slot.current`` is the :class:`LoadedModel`
that serves; a model worker reads it once per batch, so swapping it (a single attribute
assignment) never affects a batch already running: in-flight batches finish on the old
model and every event carries the version that produced it.

A new artifact is loaded in a background thread (:class:`Watcher`) when a watched
``MODELS_DIR/NAME/current`` link points somewhere new: load and verify (checksums, view
name/version/shape, exported signature), replay the canary inputs, compile and run every
configured batch size, then swap. Anything that fails rejects the artifact with one log
line naming it and the reason, counts it (``rejected``), remembers it (so a bad artifact
is not retried every second) and leaves the old model serving.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..artifact import META_FILE, Artifact, ArtifactError, load_artifact, log_text, options_doc, resolve
from .config import ModelSection, model_artifact_path

log = logging.getLogger("malsensor.models")
LOADER_NICE = 10


@dataclass
class LoadedModel:
    """A verified, warmed artifact plus the settings it serves with."""

    artifact: Artifact
    labels: list[str]
    target: str                   # resolved artifact directory
    signature: tuple              # what identifies the files on disk (see _signature)
    warmup_s: dict[int, float]
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def n_classes(self) -> int:
        return self.artifact.n_classes


def _signature(target: Path) -> tuple:
    """(path, meta.json mtime, size): a re-published or edited artifact differs."""
    try:
        st = (target / META_FILE).stat()
        return (str(target), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(target), None, None)


def read_labels(path: str) -> list[str]:
    """A labels override file: a JSON array of strings."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ArtifactError(path, f"cannot read labels file: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(path, f"labels file is not valid JSON: {e}") from None
    if not isinstance(doc, list) or not all(isinstance(s, str) for s in doc):
        raise ArtifactError(path, "labels file must be a JSON array of strings")
    return doc


def load_model(cfg: ModelSection, batch_sizes: Sequence[int], semantics: str | None = None,
               sample_intervals: Sequence[float] = ()) -> LoadedModel:
    """Load, verify, canary-check and warm one artifact for ``cfg`` (raises ArtifactError).
    The artifact must read the model's view with the shape the view's options give, computed as
    the sensor computes it: the same feature ``semantics`` and, for a model trained on a sampled
    source (/proc), one of the configured ``sample_intervals`` (its rates are per second, but a
    volume of D samples spans D intervals: 8 x 0.25 s is not 8 x 1 s)."""
    target = resolve(model_artifact_path(cfg))
    sig = _signature(target)
    view = cfg.view_spec()
    art = load_artifact(target, expect_view=(view.name, view.version, cfg.input_shape()), check_canary=True)
    trained = art.meta.get("view", {}).get("semantics")
    if semantics and trained and trained != semantics:
        raise ArtifactError(target / META_FILE, f"the model was trained on {trained}-semantics features but the "
                                                f"sensor computes {semantics} ([tracking] semantics)")
    every = art.meta.get("view", {}).get("sample_interval_s")
    if every and sample_intervals and not any(abs(every - i) <= 1e-6 * every for i in sample_intervals):
        given = ", ".join(f"{i:g} s" for i in sample_intervals)
        raise ArtifactError(target / META_FILE, f"the model was trained on samples every {every:g} s but the "
                                                f"sensor samples every {given} ([[source]] interval); set "
                                                f"interval = {every:g} or train on samples recorded at {given}")
    trained_keys = art.meta.get("view", {}).get("options")
    ours = options_doc(cfg.options)
    if isinstance(trained_keys, dict) and ours is not None:
        differ = [k for k, v in trained_keys.items() if k in ours and ours[k] != v]
        if differ:
            said = ", ".join(f"{k} = {json.dumps(trained_keys[k])}" for k in differ)
            raise ArtifactError(target / META_FILE, f"the model was trained with {said} but this [[model]] table "
                                                    f"gives {', '.join(f'{k} = {json.dumps(ours[k])}' for k in differ)}")
    labels = read_labels(cfg.labels) if cfg.labels else list(art.labels)
    try:
        warm = art.warmup(batch_sizes)
        # the padded sizes must give the same answers as the canary (a broken compile for one
        # shape would otherwise only show up in production)
        cx = art.canary_x
        got = art.predict_padded(cx, batch_sizes)
        if not np.isfinite(got).all():
            raise ArtifactError(target, "non-finite probabilities at a warmed batch size")
    except ArtifactError:
        raise
    except Exception as e:  # an XLA compile/run failure: the artifact is unusable here
        raise ArtifactError(target, f"compiling/warming batch sizes {list(batch_sizes)} failed: "
                                    f"{type(e).__name__}: {e}") from None
    return LoadedModel(art, labels, str(target), sig, warm)


@dataclass
class SlotCounters:
    swaps: int = 0
    rejected: int = 0
    load_seconds: float = 0.0


class ModelSlot:
    """One configured model: its settings, the model serving now, and its history."""

    def __init__(self, cfg: ModelSection) -> None:
        self.cfg = cfg
        self.current: LoadedModel | None = None
        self.counters = SlotCounters()
        self.last_error: str | None = None
        self.rejected_signature: tuple | None = None
        self.loading = False
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def watched(self) -> bool:
        return not self.cfg.path

    @property
    def version(self) -> str | None:
        cur = self.current
        return cur.version if cur is not None else None

    def describe(self) -> str:
        cur = self.current
        return f"{self.name} {cur.version}" if cur is not None else f"{self.name} (no model)"


class ModelRegistry:
    """The slots of all configured models, with loading, swapping and rejection."""

    def __init__(self, batch_sizes: Sequence[int], semantics: str | None = None,
                 sample_intervals: Sequence[float] = ()) -> None:
        self.batch_sizes = tuple(batch_sizes)
        self.semantics = semantics
        self.sample_intervals = tuple(sample_intervals)
        self.slots: dict[str, ModelSlot] = {}
        self._load_lock = threading.Lock()  # one compile at a time: the box has few cores

    def add(self, cfg: ModelSection) -> ModelSlot:
        slot = ModelSlot(cfg)
        self.slots[cfg.name] = slot
        return slot

    def remove(self, name: str) -> ModelSlot | None:
        return self.slots.pop(name, None)

    def load_into(self, slot: ModelSlot, *, reason: str = "start") -> bool:
        """Load the artifact ``slot.cfg`` points at now and swap it in. False when rejected."""
        if slot.current is None:
            try:
                resolve(model_artifact_path(slot.cfg))
            except ArtifactError as e:  # nothing published yet: wait for it, this is no rejection
                if slot.last_error != str(e):
                    log.warning("model %s: %s; waiting for an artifact to be published", slot.name,
                                log_text(str(e), 1000))
                slot.last_error = str(e)
                return False
        with self._load_lock:
            slot.loading = True
            t0 = time.perf_counter()
            try:
                new = load_model(slot.cfg, self.batch_sizes, self.semantics, self.sample_intervals)
            except ArtifactError as e:
                self._reject(slot, e)
                return False
            except Exception as e:  # never let one artifact take the daemon down
                self._reject(slot, ArtifactError(model_artifact_path(slot.cfg), f"{type(e).__name__}: {e}"))
                return False
            finally:
                slot.loading = False
            dt = time.perf_counter() - t0
        old = slot.current
        slot.current = new  # the swap: workers pick it up at their next batch
        slot.counters.swaps += 1
        slot.counters.load_seconds = dt
        slot.last_error = None
        slot.rejected_signature = None
        warm = ", ".join(f"{b}:{s * 1000:.0f}ms" for b, s in new.warmup_s.items())
        if not new.artifact.covers_meta:
            log.warning("model %s: %s has no SHA256SUMS (published before it existed): meta.json is not "
                        "checksummed; publish it again", slot.name, new.target)
        if old is None:
            log.info("model %s: serving %s version %s (%s, %d classes) loaded in %.2fs (warm-up %s)",
                     slot.name, new.target, new.version, new.artifact.kind, new.n_classes, dt, warm)
        else:
            log.info("model %s: swapped version %s -> %s (%s, %s) in %.2fs (warm-up %s)", slot.name,
                     old.version, new.version, new.target, reason, dt, warm)
        if old is not None:
            del old
            refreeze_gc()  # the replaced model's objects may be frozen and cyclic
        return True

    def _reject(self, slot: ModelSlot, e: ArtifactError) -> None:
        slot.counters.rejected += 1
        try:
            slot.rejected_signature = _signature(resolve(model_artifact_path(slot.cfg)))
        except ArtifactError:
            slot.rejected_signature = ("unresolvable", str(e))
        slot.last_error = str(e)
        cur = slot.current
        keep = f"still serving version {cur.version}" if cur is not None else "the model serves nothing yet"
        log.error("model %s: rejected artifact: %s; %s", slot.name, log_text(str(e), 1000), keep)

    # ------------------------------------------------------------------ watching

    def pending(self, slot: ModelSlot) -> bool:
        """Whether the slot's artifact location now resolves to something new (and not
        already rejected as it is)."""
        try:
            target = resolve(model_artifact_path(slot.cfg))
        except ArtifactError as e:
            if slot.current is None:
                if slot.last_error != str(e):
                    # report a missing or unreadable model directory once per distinct problem
                    slot.last_error = str(e)
                    log.warning("model %s: %s; waiting for an artifact to be published", slot.name,
                                log_text(str(e), 1000))
            elif slot.rejected_signature != ("unresolvable", str(e)):
                self._reject(slot, e)  # e.g. current now dangles: keep serving, say so once
            return False
        sig = _signature(target)
        cur = slot.current
        if cur is not None and cur.signature == sig:
            return False
        return sig != slot.rejected_signature

    def check_all(self, *, include_fixed: bool = False, reason: str = "watch") -> int:
        """Load every slot whose artifact changed; returns how many were swapped in."""
        n = 0
        for slot in list(self.slots.values()):
            if (slot.watched or include_fixed or slot.current is None) and self.pending(slot):
                n += self.load_into(slot, reason=reason)
        return n


class Watcher(threading.Thread):
    """Polls every watched model's ``current`` link and loads new versions in the background."""

    def __init__(self, registry: ModelRegistry, interval: float) -> None:
        super().__init__(name="malsensor-model-watch", daemon=True)
        self.registry = registry
        self.interval = interval
        self.stop_event = threading.Event()
        self.heartbeat = time.monotonic()

    def run(self) -> None:
        try:  # compiling a new version yields the CPU to capture and inference (Linux: per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICE)
        except (OSError, AttributeError):  # pragma: no cover
            pass
        while not self.stop_event.wait(self.interval):
            self.heartbeat = time.monotonic()
            try:
                self.registry.check_all()
            except Exception:  # pragma: no cover - check_all already contains failures
                log.exception("model watcher")
            self.heartbeat = time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()


def settle_gc() -> None:
    """Collect once and move every object alive now (modules, JAX, compiled models) out of the
    cyclic collector's reach: its full collections otherwise walk them all, stopping every
    thread for tens of milliseconds (measured: 100 ms event latency spikes)."""
    gc.collect()
    gc.freeze()


def refreeze_gc() -> None:
    """After a swap or reload: let the collector see the frozen objects again (a replaced model
    may hold reference cycles), collect, freeze what is alive."""
    gc.unfreeze()
    settle_gc()


def describe_models(registry: ModelRegistry) -> str:
    return ", ".join(s.describe() for s in registry.slots.values()) or "no models"
