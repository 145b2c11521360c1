"""Registries found by name, and plugins that add to them.

The sensor has four seams - capture *sources* by kind, feature *views* by
``name@version``, model *kinds* (the trainer's) and event *formatters* by entity -
and each is a :class:`Registry`. An entry is found by name, as big_vision finds a
model: ``Registry.get("pcap")`` imports ``malsensor.daemon.sources.pcap`` the first
time, and that module registers what it defines. Adding a modality is therefore a
few new modules and no edit to any list.

Code outside the package (a site's own modality, or a test) registers its entries
from a module named in ``MALSENSOR_PLUGINS`` (comma-separated module names, imported
by ``malsensord``, ``malsensor`` and ``malsensor-train`` before they read their
configuration), or in ``[service] plugins``.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, Generic, Iterable, TypeVar

log = logging.getLogger("malsensor.plugins")

T = TypeVar("T")
PLUGINS_ENV = "MALSENSOR_PLUGINS"


class RegistryError(LookupError):
    """No entry of that name (the message lists the known ones)."""


class Registry(Generic[T]):
    """Entries by name; a missing name imports ``package.<module_of(name)>`` once, then looks again."""

    def __init__(self, what: str, package: str, module_of: Callable[[str], str] = lambda n: n) -> None:
        self.what = what
        self.package = package
        self.module_of = module_of
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        old = self._entries.get(name)
        if old is not None and old is not entry:
            log.debug("%s %r registered again (replacing %r)", self.what, name, old)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def find(self, name: str) -> T | None:
        """The entry, importing its built-in module if needed; None if there is none."""
        if name not in self._entries:
            mod = self.module_of(name)
            if mod.isidentifier():
                try:
                    importlib.import_module(f"{self.package}.{mod}")
                except ModuleNotFoundError as e:
                    if e.name != f"{self.package}.{mod}":
                        raise  # the module exists but an import inside it failed: say so
        return self._entries.get(name)

    def get(self, name: str) -> T:
        entry = self.find(name)
        if entry is None:
            raise RegistryError(f"unknown {self.what} {name!r} (known: {', '.join(self.names()) or 'none'})")
        return entry

    def names(self) -> list[str]:
        """Every entry: those registered so far plus the package's built-in modules (imported now)."""
        self.load_builtins()
        return sorted(self._entries)

    def load_builtins(self) -> None:
        pkg = importlib.import_module(self.package)
        import pkgutil  # only when a registry lists its folder: not a cost of every start-up

        for m in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if not m.name.startswith("_"):
                importlib.import_module(f"{self.package}.{m.name}")

    def items(self) -> Iterable[tuple[str, T]]:
        return list(self._entries.items())


_loaded: set[str] = set()


def load_plugins(extra: Iterable[str] = ()) -> list[str]:
    """Import the plugin modules named in ``$MALSENSOR_PLUGINS`` and ``extra`` (once each).
    Raises ImportError naming the module that failed."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    names += [n for n in extra if n]
    done = []
    for n in names:
        if n in _loaded:
            continue
        try:
            importlib.import_module(n)
        except Exception as e:
            raise ImportError(f"plugin module {n!r} failed to import: {type(e).__name__}: {e}") from e
        _loaded.add(n)
        done.append(n)
        log.info("plugin %s loaded", n)
    return done
