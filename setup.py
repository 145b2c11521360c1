"""Builds the ahead-of-time kernels (daemon/aot.py, numba.pycc) during ``pip install``.

Everything else is in pyproject.toml. Without a C compiler or with numba failing, the install
goes on without them: the kernels then run under numba's JIT (daemon/jit.py), only start-up is
slower. MALSENSOR_AOT=0 skips the build.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _import_daemon():
    """``malsensor.daemon`` from daemon/ (the package-dir mapping exists only once installed)."""
    if "malsensor.daemon" not in sys.modules:
        ns = sys.modules.setdefault("malsensor", types.ModuleType("malsensor"))
        ns.__path__ = getattr(ns, "__path__", [])
        spec = importlib.util.spec_from_file_location("malsensor.daemon", HERE / "daemon" / "__init__.py",
                                                      submodule_search_locations=[str(HERE / "daemon")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["malsensor.daemon"] = mod
        spec.loader.exec_module(mod)
    return importlib.import_module("malsensor.daemon.aot")


class BuildAot(build_ext):
    """Builds what it can; an extension that could not be built is left out of the install
    (setuptools would otherwise fail copying a file that does not exist)."""

    def _built(self, ext: Extension) -> bool:
        return os.path.exists(os.path.join(self.build_lib, self.get_ext_filename(self.get_ext_fullname(ext.name))))

    def get_outputs(self) -> list[str]:
        return [p for p in super().get_outputs() if os.path.exists(p)]

    def get_output_mapping(self) -> dict[str, str]:
        return {k: v for k, v in super().get_output_mapping().items() if os.path.exists(v)}

    def copy_extensions_to_source(self) -> None:
        keep = self.extensions
        self.extensions = [e for e in keep if self._built(e)]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = keep

    def build_extension(self, ext: Extension) -> None:
        if os.environ.get("MALSENSOR_AOT", "1") == "0":
            return
        out = Path(self.get_ext_fullpath(ext.name)).parent
        out.mkdir(parents=True, exist_ok=True)
        try:
            for path in _import_daemon().build(out, only=ext.name.rsplit(".", 1)[-1]):
                print(f"built {path}")
        except Exception as exc:  # noqa: BLE001 - the JIT covers every kernel
            print(f"warning: ahead-of-time kernels not built ({exc!r}); numba's JIT will be used",
                  file=sys.stderr)


# one extension per group of daemon/aot.py EXTENSIONS (setuptools copies each declared one into place)
setup(ext_modules=[Extension(f"malsensor.daemon.{name}", sources=[]) for name in ("_aot_decode", "_aot")],
      cmdclass={"build_ext": BuildAot})
