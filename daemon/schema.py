"""The one validator for every configuration table the program reads.

A table is described by a dataclass whose fields carry their default and, in
their metadata (:func:`opt`), a one-line description and the allowed values or
range. :class:`Checker` validates a TOML table against such a dataclass: types,
choices, ranges, required and unknown keys (with a "did you mean"), and reports
every problem as ``FILE:LINE: key.path: what is wrong (allowed: ...)``.

The daemon's ``malsensor.toml`` (sections, ``[[source]]`` kinds, the keys a view
adds to ``[[model]]``) and the trainer's model specs (``[model]``, ``[train]``,
``[data]``) all go through it, so a key is checked the same way wherever it is.
"""
from __future__ import annotations

import math
import os
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from .runtime.tomlpos import KeyPath, format_path, line_of


def opt(default: Any = MISSING, doc: str = "", *, choices: Iterable[Any] | None = None,
        min: float | None = None, max: float | None = None, min_exclusive: bool = False,
        max_exclusive: bool = False, item_min: float | None = None, item_max: float | None = None,
        path: bool = False, kinds: tuple[str, ...] = (), required_for: tuple[str, ...] = ()) -> Any:
    """A configuration key: default, description and constraints (in field metadata).

    In a table with a ``kind`` key, ``kinds`` lists the kinds the key applies to (setting it
    for another kind is an error) and ``required_for`` the kinds that must set it."""
    meta = {"doc": doc, "choices": tuple(choices) if choices is not None else None, "min": min,
            "max": max, "min_exclusive": min_exclusive, "max_exclusive": max_exclusive, "item_min": item_min,
            "item_max": item_max, "path": path, "kinds": tuple(kinds), "required_for": tuple(required_for)}
    if isinstance(default, (list, tuple)):
        d = tuple(default)
        return field(default_factory=lambda: d, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class KeySpec:
    """One key of a table: what :func:`opt` declared, plus its type."""

    name: str
    type: Any
    default: Any
    doc: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    item_min: float | None = None
    item_max: float | None = None
    path: bool = False
    max_exclusive: bool = False
    kinds: tuple[str, ...] = ()
    required_for: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is MISSING


def specs_of(cls: type, skip: Iterable[str] = ()) -> list[KeySpec]:
    """The keys of a dataclass, in field order (fields in ``skip`` are not keys)."""
    hints = typing.get_type_hints(cls)
    skip = set(skip)
    out = []
    for f in fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)  # type: ignore[misc]
        m = f.metadata
        out.append(KeySpec(f.name, hints[f.name], default, m.get("doc", ""), m.get("choices"), m.get("min"),
                           m.get("max"), m.get("min_exclusive", False), m.get("item_min"), m.get("item_max"),
                           m.get("path", False), m.get("max_exclusive", False), m.get("kinds", ()),
                           m.get("required_for", ())))
    return out


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


class Checker:
    """Collects the problems of one file (``lines``: key path -> line, from tomlpos)."""

    def __init__(self, file: str, lines: dict[KeyPath, int] | None = None) -> None:
        self.file = file
        self.lines = lines or {}
        self.problems: list[Problem] = []

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.file, line_of(self.lines, path), format_path(path), message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def value(self, spec: KeySpec, v: Any, path: KeyPath) -> tuple[bool, Any]:
        """Type-check and range-check one value; returns (ok, converted value)."""
        t = spec.type
        if typing.get_origin(t) is tuple:
            item_t = typing.get_args(t)[0]
            if not isinstance(v, list):
                self.problem(path, f"expected an array of {type_name(item_t)}s, got {describe(v)}")
                return False, None
            items = []
            ok = True
            for i, item in enumerate(v):
                good, conv = self._scalar(item_t, item, (*path, i), spec, is_item=True)
                ok &= good
                items.append(conv)
            return ok, tuple(items)
        return self._scalar(t, v, path, spec)

    def _scalar(self, t: Any, v: Any, path: KeyPath, spec: KeySpec, is_item: bool = False) -> tuple[bool, Any]:
        where = path[:-1] if is_item else path

        def bad(msg: str) -> tuple[bool, Any]:
            self.problem(where, f"item {path[-1]}: {msg}" if is_item else msg)
            return False, None

        if t is bool:
            if not isinstance(v, bool):
                return bad(f"expected true or false, got {describe(v)}")
        elif t is int:
            if isinstance(v, bool) or not isinstance(v, int):
                return bad(f"expected an integer, got {describe(v)}")
        elif t is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return bad(f"expected a number, got {describe(v)}")
            try:
                v = float(v)
            except OverflowError:  # a TOML integer of hundreds of digits
                return bad(f"{num(v)} is out of range (allowed: {range_of(spec)})")
            if not math.isfinite(v):
                return bad("expected a finite number")
        elif t is str:
            if not isinstance(v, str):
                return bad(f"expected a string, got {describe(v)}")
            if spec.path and "\x00" in v:   # (the OS would refuse it later, with no file or line)
                return bad("a path cannot contain a NUL character")
        if not is_item and spec.choices is not None and v not in spec.choices:
            return bad(f"{v!r} is not allowed (allowed: {', '.join(map(str, spec.choices))})")
        if t in (int, float):
            lo = spec.item_min if is_item else spec.min
            hi = spec.item_max if is_item else spec.max
            excl = spec.min_exclusive and not is_item
            hexcl = spec.max_exclusive and not is_item
            if (lo is not None and (v < lo or (excl and v == lo))) or \
                    (hi is not None and (v > hi or (hexcl and v == hi))):
                return bad(f"{num(v)} is out of range (allowed: {range_text(lo, hi, excl, hexcl)})")
        return True, v

    def table(self, specs: Iterable[KeySpec], data: Any, path: KeyPath, base_dir: Path | None = None,
              ignore: Iterable[str] = ()) -> dict[str, Any] | None:
        """Validate a table against ``specs``; the converted values, or None after a problem.
        Keys in ``ignore`` were handled by the caller (a ``kind`` selector, say)."""
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, got {describe(data)}")
            return None
        by_name = {s.name: s for s in specs}
        ignore = set(ignore)
        values: dict[str, Any] = {}
        ok = True
        for key, v in data.items():
            if key in ignore:
                continue
            spec = by_name.get(key)
            if spec is None:
                allowed = [*ignore, *by_name]
                import difflib  # only for a misspelt key: not a cost of every start-up

                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.problem((*path, key), f"unknown key{hint} (allowed: {', '.join(allowed)})")
                ok = False
                continue
            good, conv = self.value(spec, v, (*path, key))
            if not good:
                ok = False
                continue
            if spec.path and conv and base_dir is not None:
                conv = abspath(conv, base_dir)
            values[key] = conv
        for s in by_name.values():
            if s.required and s.name not in data:
                self.problem(path, f"missing required key {s.name!r}")
                ok = False
        if "kind" in by_name and (data.get("kind") is None or "kind" in values) and \
                not self._kind_keys(by_name, data, values, path):
            ok = False
        return values if ok else None

    def _kind_keys(self, specs: dict[str, KeySpec], data: dict, values: dict, path: KeyPath) -> bool:
        """Keys that belong to another ``kind`` of the table, and keys this kind requires."""
        kind = values.get("kind", specs["kind"].default)
        ok = True
        for key in data:
            s = specs.get(key)
            if s is not None and s.kinds and kind not in s.kinds:
                allowed = " or ".join(f'"{k}"' for k in s.kinds)
                self.problem((*path, key), f"only used with kind = {allowed} (here kind = \"{kind}\")")
                ok = False
        for s in specs.values():
            if kind in s.required_for and data.get(s.name, "") == "":
                self.problem(path, f"missing required key {s.name!r}")
                ok = False
        return ok

    def build(self, cls: type, data: Any, path: KeyPath, base_dir: Path | None = None) -> Any:
        """A dataclass instance from a table (None after a problem)."""
        values = self.table(specs_of(cls), data, path, base_dir)
        if values is None:
            return None
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:  # a __post_init__ rule
            msg = str(e)
            key = msg.split()[0] if msg else ""
            self.problem((*path, key) if key in values else path, msg)
            return None


def abspath(p: str, base: Path) -> str:
    pp = Path(os.path.expanduser(p))
    return str(pp if pp.is_absolute() else (base / pp))


def type_name(t: Any) -> str:
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(t, str(t))


def describe(v: Any) -> str:
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"number {num(v) if isinstance(v, int) else repr(v)}"
    if isinstance(v, str):
        return f"string {v!r}"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def num(v: float | None) -> str:
    if v is None:
        return "?"
    if isinstance(v, int):
        return str(v) if abs(v) < 10 ** 30 else f"an integer of {len(str(abs(v)))} digits"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else repr(v)


def range_text(lo: float | None, hi: float | None, excl: bool = False, hexcl: bool = False) -> str:
    """An allowed range as messages and docs/daemon.md write it: ``1..64``, ``> 0 and <= 3600``."""
    if lo is None:
        return f"{'<' if hexcl else '<='} {num(hi)}"
    if hi is None:
        return f"{'>' if excl else '>='} {num(lo)}"
    if excl or hexcl:
        return f"{'>' if excl else '>='} {num(lo)} and {'<' if hexcl else '<='} {num(hi)}"
    return f"{num(lo)}..{num(hi)}"


def range_of(spec: KeySpec) -> str:
    return range_text(spec.min, spec.max, spec.min_exclusive, spec.max_exclusive)
