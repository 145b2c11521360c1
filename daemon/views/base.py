"""What a feature view is, and the registry of views (``name@version``).

A view turns what a source produces (finished connections, a decoded trace, a
/proc sample) into model inputs: a fixed per-sample shape and dtype, named axes,
one of which holds the features (normalisation works along it). The daemon and the
trainer both ask a view - never a dimension count - what a model reads:

* configuration: the keys a view adds to a ``[[model]]`` table (its ``options``
  dataclass, validated by the one schema checker) and their cross-rules (``check``);
* shape: ``shape(options)``, and ``info(options)``, the :class:`ViewInfo` an artifact
  records; ``options_for(view_info)`` goes back from an artifact's view to options;
* live: ``router(options, facts)`` picks, from each batch the source hands over, the
  rows a model classifies now (its triggers) and their inputs (:class:`EntityRows`);
* training: ``reader`` names the trainer-side reader (``module:attribute``) that reads
  the view from files; the daemon never imports it.

Views register themselves in :data:`VIEWS` when their module is imported; a view
``foo@1`` is looked up in the module ``malsensor.daemon.views.foo``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from ..plugins import Registry
from ..schema import Checker, KeySpec, specs_of
from ..runtime.tomlpos import KeyPath

if TYPE_CHECKING:  # imported where used: `malsensor extract` needs no artifacts (hashlib, msgpack: ~10 ms)
    from ..artifact import ViewInfo


@dataclass(frozen=True)
class NoOptions:
    """A view that adds no key to ``[[model]]``."""


@dataclass(slots=True)
class EntityRows:
    """Rows a router selected for one model: ``keys`` identify each entity for its event (flow
    records for connections; any numpy array with one row per entity), ``x`` are the model
    inputs ``(n, *shape)``, ``detail`` what the event shows of them (None: ``x`` itself)."""

    keys: np.ndarray
    x: np.ndarray
    detail: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


class Router:
    """A model's live selection over a source's batches (one per model, shared by the threads
    of its source; must be thread-safe if it keeps state)."""

    trigger: str = "end"

    def route(self, batch: Any) -> EntityRows | None:
        raise NotImplementedError

    def pending(self) -> int:
        """Entities held back waiting for more data (shown in stats)."""
        return 0

    def counters(self) -> dict[str, int]:
        """What the view counts (shown in stats as the model's ``view``): rows it had to cut,
        windows it closed early..."""
        return {}

    def finish(self) -> EntityRows | None:
        """End of input (a replay's end, a stop that emits open connections): what the router
        still holds that is complete enough to classify (windowed views close their windows)."""
        return None


class WindowedRouter(Router):
    """A router whose state spans batches (windows over packet time), shared by the capture
    threads under one lock. Subclasses say how a batch is fed (``_feed``), what the end of input
    closes (``_finish``) and how what those give becomes rows (``_rows``)."""

    trigger = "window"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _feed(self, batch: Any) -> Any:
        raise NotImplementedError

    def _finish(self) -> Any:
        raise NotImplementedError

    def _rows(self, got: Any) -> EntityRows | None:
        raise NotImplementedError

    def route(self, batch: Any) -> EntityRows | None:
        with self._lock:
            got = self._feed(batch)
        return self._rows(got)

    def finish(self) -> EntityRows | None:
        with self._lock:
            got = self._finish()
        return self._rows(got)


class View:
    name: ClassVar[str]
    version: ClassVar[int]
    entity: ClassVar[str]                  # what one sample describes; picks the event formatter
    consumes: ClassVar[str]                # what a source must produce for it ("connections", ...)
    axes: ClassVar[tuple[str, ...]]        # names of the per-sample axes
    feature_axis: ClassVar[int] = -1       # the axis whose entries are features (normalisation)
    columns: ClassVar[tuple[str, ...]] = ()  # the names along the feature axis
    dtype: ClassVar[str] = "float32"
    options: ClassVar[type] = NoOptions    # the keys this view adds to a [[model]] table
    reader: ClassVar[str] = ""             # trainer-side reader, "module:attribute"
    description: ClassVar[str] = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def shape(self, options: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def info(self, options: Any = None) -> ViewInfo:
        from ..artifact import ViewInfo

        o = self.options() if options is None else options
        return ViewInfo(self.name, self.version, tuple(self.shape(o)), self.dtype, tuple(self.columns),
                        self.feature_axis)

    def options_for(self, info: ViewInfo) -> Any:
        """The options that give an artifact's recorded view (ValueError if none can)."""
        o = self.options()
        if tuple(self.shape(o)) != tuple(info.shape):
            raise ValueError(f"{self.ref} has shape {list(self.shape(o))}, the artifact says {list(info.shape)}")
        return o

    def sized_axes(self, info: ViewInfo, names: Sequence[str], last: int) -> tuple[int, ...]:
        """For :meth:`options_for` of a view shaped ``[*names, last]`` whose leading sizes are
        options: those sizes as the artifact recorded them (ValueError if its shape is not of that form)."""
        shape = tuple(info.shape)
        if len(shape) != len(names) + 1 or shape[-1] != last:
            raise ValueError(f"{self.ref} has shape [{', '.join(names)}, {last}], the artifact says {list(shape)}")
        return tuple(int(n) for n in shape[:-1])

    def option_specs(self) -> list[KeySpec]:
        return specs_of(self.options)

    def check(self, options: Any, ck: Checker, path: KeyPath) -> None:
        """Rules that involve several of the view's keys (report through ``ck.problem``)."""

    def router(self, options: Any, facts: Mapping[str, Any]) -> Router:
        """The live selection for one model. ``facts`` are what the running sources tell (for
        connections: the tracker's ``snapshot_points``)."""
        raise NotImplementedError

    def router_key(self, options: Any, facts: Mapping[str, Any]) -> tuple:
        """Routers with equal keys are interchangeable: a reload keeps a stateful router (and
        what it holds) while this stays the same."""
        return (self.ref, options)


VIEWS: Registry[View] = Registry("view", "malsensor.daemon.views", module_of=lambda ref: ref.partition("@")[0])


def register_view(view: View) -> View:
    return VIEWS.register(view.ref, view)


def get_view(ref: str) -> View:
    return VIEWS.get(ref)


def parse_ref(ref: str) -> tuple[str, int]:
    name, _, version = ref.partition("@")
    if not name or not version.isdigit():
        raise ValueError(f"{ref!r} is not a view reference (name@version)")
    return name, int(version)
