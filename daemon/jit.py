"""numba kernels: compiled ahead of time when possible, just in time otherwise.

Every kernel module writes ``from ..jit import njit`` instead of ``from numba import njit``.
Decorating a function costs nothing here: numba is not imported. A call then goes

- to the ahead-of-time build in the extensions ``malsensor.daemon._aot*`` (numba.pycc, made by
  ``pip install``; see daemon/aot.py) when the kernel was exported there with exactly the types
  of the arguments (the same types numba's dispatcher would pick) and the call comes from the
  main thread (pycc functions hold the GIL, while the jitted ones release it for the capture
  and pipeline threads of the daemon);
- otherwise to numba's JIT (``cache=True``): the first such call imports numba and turns every
  kernel into its dispatcher, also rebinding the module globals, so kernels calling kernels
  (and ``inline="always"``) compile exactly as with plain ``numba.njit``.

Why: ``malsensor extract`` on a small capture spent ~0.75 s of its ~0.95 s in importing numba
(and scipy, which numba imports) and loading the cached kernels (numba 0.68, 2-core VM).

``MALSENSOR_KERNELS=jit`` never uses the ahead-of-time build; ``=aot`` makes a call that would
need the JIT an error (tests use it to prove a command path never imports numba).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Callable

import numpy as np

log = logging.getLogger("malsensor.jit")

MODE = os.environ.get("MALSENSOR_KERNELS", "auto")  # auto | jit | aot
_MAIN = threading.main_thread()

_deferred: list["Deferred"] = []
_materialized = False
_aot_module: Any = None  # the extension, False when absent
_lock = threading.RLock()


def off_main_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a helper thread; its result is returned and its exception raised here.

    For warming kernels: the ahead-of-time build serves the main thread only, so capture,
    pipeline, model and writer threads call numba's JIT kernels, and a warm-up on the main
    thread left those to compile (or load from numba's cache) on the first captured batch. With
    an empty cache the first live capture of tests/test_afpacket_parity.py dropped 390 of 1,095
    packets while the decoder compiled (3.5 s)."""
    result: list[Any] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            result.append(fn(*args))
        except BaseException as e:  # raised again in the caller's thread
            failed.append(e)

    t = threading.Thread(target=work, name="malsensor-warm")
    t.start()
    t.join()
    if failed:
        raise failed[0]
    return result[0]


class AotOnlyError(RuntimeError):
    """MALSENSOR_KERNELS=aot and a kernel call needs the JIT."""


class Deferred:
    """A numba object (dispatcher, intrinsic) made only when numba is first needed."""

    def resolve(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def _numba_type_(self):
        """numba types a global holding this object as the real one (a test's own ``@njit``
        function calling a kernel, compiled before anything materialized the kernels)."""
        from numba import typeof

        materialize()
        return typeof(self.resolve())


class Intrinsic(Deferred):
    """An ``@intrinsic`` of ``module``, named ``name`` (see daemon/intrinsics.py)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        _deferred.append(self)

    def resolve(self) -> Any:
        __import__(self.module)
        return getattr(sys.modules[self.module], self.name)


# numpy scalar codes of the signature text (numba's own notation) and the Python types that
# numba's dispatcher types as them
_DTYPES = {"u1": np.uint8, "i1": np.int8, "u2": np.uint16, "i2": np.int16, "u4": np.uint32, "i4": np.int32,
           "u8": np.uint64, "i8": np.int64, "f4": np.float32, "f8": np.float64, "b1": np.bool_}
_SCALARS = {"i8": (int, np.int64), "b1": (bool, np.bool_), "f8": (float, np.float64), "u8": (np.uint64,),
            "i4": (np.int32,), "u4": (np.uint32,), "u1": (np.uint8,), "i2": (np.int16,), "u2": (np.uint16,)}


def split_args(sig: str) -> list[str]:
    """``"UniTuple(i8, 6)(u1[::1], i8)"`` -> ``["u1[::1]", "i8"]`` (top-level commas only)."""
    depth, start = 0, None
    for i, ch in enumerate(sig):  # the argument list is the last top-level parenthesis
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
    body = sig[start + 1:-1]
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def arg_checker(sig: str) -> Callable[[tuple], bool]:
    """A predicate: do these arguments have exactly the types of ``sig``'s parameters?"""
    checks = []
    for a in split_args(sig):
        if "[" in a:
            code, dims = a.split("[", 1)
            dims = dims.rstrip("]")
            ndim = dims.count(":") - dims.count("::1")
            checks.append(("a", np.dtype(_DTYPES[code.strip()]), ndim, dims.strip().endswith("::1")))
        else:
            checks.append(("s", _SCALARS[a], 0, False))

    def ok(args: tuple) -> bool:
        if len(args) != len(checks):
            return False
        for v, (kind, want, ndim, contiguous) in zip(args, checks):
            if kind == "s":
                if type(v) not in want:
                    return False
            elif (type(v) is not np.ndarray or v.dtype != want or v.ndim != ndim
                  or (contiguous and not v.flags.c_contiguous) or not v.flags.writeable
                  or not v.flags.aligned):
                return False
        return True

    return ok


def _load_aot() -> Any:
    """The ahead-of-time build: ``(aot module, {extension name: module})``, or False."""
    global _aot_module
    if _aot_module is None:
        _aot_module = False
        if MODE != "jit":
            from . import aot

            try:
                mods = {}
                for ext in aot.EXTENSIONS:
                    name = f"{__package__}.{ext}"
                    __import__(name)
                    mods[ext] = sys.modules[name]
            except ImportError as exc:
                log.debug("no ahead-of-time kernels (%s): using numba's JIT", exc)
                return _aot_module
            want = aot.digest()
            stale = [ext for ext, m in mods.items() if m.aot_digest() != want]
            if stale:
                log.warning("the ahead-of-time kernels were built from other sources (%s): using numba's JIT "
                            "until the next `pip install`", ", ".join(stale))
                return _aot_module
            _aot_module = (aot, mods)
    return _aot_module


class Kernel(Deferred):
    """A function decorated with :func:`njit` (see the module docstring)."""

    def __init__(self, py_func: Callable, options: dict) -> None:
        self.py_func = py_func
        self.options = options
        self.key = f"{py_func.__module__.rsplit('.', 1)[-1]}.{py_func.__name__}"
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__module__ = py_func.__module__
        self.__doc__ = py_func.__doc__
        self.__wrapped__ = py_func
        self._dispatcher = None
        self._aot: list[tuple[Callable[[tuple], bool], Callable]] | None = None
        _deferred.append(self)

    def resolve(self) -> Any:
        if self._dispatcher is None:
            with _lock:
                if self._dispatcher is None:
                    import numba

                    self._dispatcher = numba.njit(**self.options)(self.py_func)
        return self._dispatcher

    def _aot_variants(self) -> list:
        if self._aot is None:
            loaded = _load_aot()
            found = []
            if loaded:
                aot, mods = loaded
                mod = mods[aot.extension_of(self.key)]
                for i, sig in enumerate(aot.SPEC.get(self.key, ())):
                    fn = getattr(mod, aot.export_name(self.key, i), None)
                    if fn is not None:
                        found.append((arg_checker(sig), fn))
            self._aot = found
        return self._aot

    def __call__(self, *args):
        if threading.current_thread() is _MAIN:
            for ok, fn in self._aot_variants():
                if ok(args):
                    return fn(*args)
        if MODE == "aot":
            raise AotOnlyError(f"kernel {self.key} has no ahead-of-time build for "
                               f"({', '.join(_describe(a) for a in args)}) (MALSENSOR_KERNELS=aot)")
        if not _materialized:
            materialize()
        return self.resolve()(*args)

    def __repr__(self) -> str:
        return f"<kernel {self.key}>"


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"{v.dtype}[{v.ndim}d{', C' if v.flags.c_contiguous else ''}]"
    return type(v).__name__


def njit(*args, **options):
    """``numba.njit`` with the same options, deferred (see the module docstring)."""
    if args and callable(args[0]):
        return njit(**options)(args[0])
    if _materialized:  # numba is loaded already: plain dispatchers
        import numba

        return numba.njit(**options)
    return lambda f: Kernel(f, options)


def materialize() -> None:
    """Import numba, make every deferred object and rebind the module globals that refer to one
    (so numba, compiling a kernel, sees dispatchers and intrinsics, as with plain numba.njit)."""
    global _materialized
    with _lock:
        if _materialized:
            return
        import numba  # noqa: F401

        real = {id(d): d.resolve() for d in list(_deferred)}
        for name, mod in list(sys.modules.items()):
            if not name.startswith("malsensor.") or mod is None:
                continue
            for k, v in list(vars(mod).items()):
                if isinstance(v, Deferred) and id(v) in real:
                    setattr(mod, k, real[id(v)])
        _materialized = True
