"""The ahead-of-time kernels: which ones, with which argument types, and how they are built.

``pip install`` (setup.py) compiles the kernels in :data:`SPEC` with numba.pycc into the
extensions ``malsensor.daemon._aot*``, which need numpy but not numba at run time
(daemon/jit.py decides per call). The extension carries a digest of the kernel sources
(:data:`KERNEL_SOURCES`): when the sources change after the build (an editable checkout),
the digests differ and the JIT is used until the next ``pip install``.

:data:`SPEC` lists the signatures the command paths really call, in numba's notation. Print
them again after changing a kernel's arguments (they come from the JIT's own dispatch)::

    .venv/bin/python -m malsensor.daemon.aot collect CAPTURE...   # prints SPEC
    .venv/bin/python -m malsensor.daemon.aot build DIR            # what setup.py runs

``MALSENSOR_AOT_CPU`` chooses the CPU the code is compiled for: unset, the build machine's own
(``host``, as the JIT does); ``generic`` for a package that must run on any x86-64.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# pycc fails to type decode's kernel in one library with the row kernels (its int literals stay
# literal, numba 0.68): it gets an extension of its own
EXTENSIONS = {"_aot_decode": ("decode.",), "_aot": ("",)}
DAEMON = Path(__file__).resolve().parent

# every module whose code or constants end up inside a kernel
KERNEL_SOURCES = ("jit.py", "aot.py", "intrinsics.py", "intrinsics_llvm.py", "decode.py", "capture/batch.py",
                  "capture/pcapfile.py", "flows/layout.py", "flows/config.py", "flows/signature.py", "flows/table.py", "views/conn.py",
                  "views/argus.py", "outputs/jsontext.py", "outputs/rows.py", "outputs/parquet.py",
                  "outputs/community_id.py")

# kernel ("module.function") -> signatures; from `collect` over pcap and pcapng files, both
# semantics, every row format
SPEC: dict[str, tuple[str, ...]] = {
    'community_id._record_ids': (
        'none(i8[:, ::1], i8, u1[:, ::1])',
    ),
    'argus._argus_rows': (
        'none(i8[:, ::1], f8[:, ::1])',
    ),
    'argus._orient_rows': (
        'none(i8[:, ::1], b1[::1])',
    ),
    'argus._swap_sides': (
        'none(i8[::1])',
    ),
    'conn._malsensor_rows': (
        'none(i8[:, ::1], f8[:, ::1])',
    ),
    'decode._decode_kernel': (
        'none(u1[::1], i8[::1], i4[::1], i4[::1], i4[::1], i4[::1], u1[::1], u1[::1], u1[::1], u1[::1], u1[::1], u8[::1], u8[::1], u8[::1], u8[::1], u2[::1], u2[::1], i4[::1], u4[::1], u4[::1], i4[::1], u8[::1], u8[::1], i4[::1], u8[::1], u8[::1], u2[::1], u2[::1], u1[::1], i4[::1])',
    ),
    'jsontext.put_ip': (
        'i8(u1[::1], i8, i8, i8)',
    ),
    'jsontext.put_mac': (
        'i8(u1[::1], i8, i8)',
    ),
    'parquet._ip_text': (
        'i8(i8[:, ::1], i8, i8, u1[::1], i4[::1])',
    ),
    'parquet._mac_text': (
        'i8(i8[:, ::1], i8, u1[::1], i4[::1])',
    ),
    'pcapfile._walk_pcap': (
        'UniTuple(i8, 6)(u1[::1], i8, i8, b1, i8, i8[::1], i4[::1], i4[::1], i8[::1])',
    ),
    'pcapfile._walk_pcapng': (
        'Tuple((i8, i8, i8, i8, i8, i8,))(u1[::1], i8, i8, b1, i8, i4[::1], u1[::1], i8[::1], i8[::1], i8[::1], u8[::1], i8[::1], u1[::1], i8[::1], i8[::1], i4[::1], i4[::1], i8[::1], i4[::1])',
    ),
    'rows._csv_kernel': (
        'i8(i8[:, ::1], f8[:, ::1], u1[::1], i8[::1], u1[::1], i8[::1], i8, u1[::1])',
    ),
    'rows._jsonl_kernel': (
        'i8(i8[:, ::1], f8[:, ::1], i8[::1], u1[::1], i8[::1], u1[::1], i8[::1], i8, u1[::1])',
    ),
    'table.flush_kernel': (
        'i8(i8[:, ::1], i4[::1], i4[::1], i8[::1], i8, i8[:, ::1])',
    ),
    'table.track_kernel': (
        'UniTuple(i8, 2)(i8[:, ::1], i4[::1], i4[::1], i8[::1], i8[::1], i8[::1], i8, i8[::1], u1[::1], u1[::1], u1[::1], u1[::1], u8[::1], u8[::1], u8[::1], u8[::1], u2[::1], u2[::1], i4[::1], i4[::1], u4[::1], u4[::1], u8[::1], u8[::1], u1[::1], u8[::1], u8[::1], u2[::1], u2[::1], u1[::1], i4[::1], i4[::1], u1[::1], i8[::1], i4[::1], i8[:, ::1], i8[::1])',
    ),
}


def _sha256():
    """SHA-256 from Python's builtin module: hashlib loads OpenSSL first (~6 ms of every start-up)."""
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # 3.12 and later
        except ImportError:
            from hashlib import sha256
    return sha256()


def digest() -> int:
    """A 63-bit digest of the kernel sources (what the extension was built from)."""
    h = _sha256()
    for rel in KERNEL_SOURCES:
        h.update(rel.encode() + b"\0" + (DAEMON / rel).read_bytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


def _import_kernel_modules() -> None:
    """Import every kernel module before numba is (their kernels register as deferred ones)."""
    for rel in KERNEL_SOURCES:
        if rel not in ("jit.py", "aot.py"):
            __import__("malsensor.daemon." + rel[:-3].replace("/", "."))


def export_name(key: str, i: int) -> str:
    return f"{key.replace('.', '__')}__{i}"


def extension_of(key: str) -> str:
    return next(name for name, prefixes in EXTENSIONS.items() if key.startswith(prefixes))


def build(output_dir: str | os.PathLike, cpu: str | None = None, only: str | None = None) -> list[Path]:
    """Compile :data:`SPEC` into the extensions ``output_dir/_aot*.<ext suffix>``; returns their paths."""
    import warnings

    import numba.pycc.compiler as pycc_compiler
    from numba.core.compiler import Flags
    from numba.core.errors import NumbaPendingDeprecationWarning
    from numba.pycc import CC

    class NjitFlags(Flags):
        """pycc's own flags lack ``nopython``, under which numba types integer constants as njit
        does (without it, ``st = STATUS_OK`` then ``st = LINK_TRUNCATED`` fails to unify)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.nopython = True
            self.nogil = True

    pycc_compiler.Flags = NjitFlags

    from . import jit

    _import_kernel_modules()
    jit.materialize()
    by_key = {d.key: d for d in jit._deferred if isinstance(d, jit.Kernel)}
    for key in SPEC:
        if key not in by_key:
            raise KeyError(f"daemon/aot.py SPEC names {key}, which is no kernel")
    cpu = cpu if cpu is not None else os.environ.get("MALSENSOR_AOT_CPU", "host")
    if cpu == "host":
        import llvmlite.binding as llvm

        cpu = llvm.get_host_cpu_name()
    value = digest()
    scope: dict = {}
    exec(compile(f"def aot_digest():\n    return {value}\n", "<aot digest>", "exec"), scope)  # noqa: S102
    built = []
    for ext in EXTENSIONS if only is None else (only,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
            cc = CC(ext)
        cc.output_dir = str(output_dir)
        if cpu != "generic":
            cc.target_cpu = cpu
        for key, sigs in SPEC.items():
            if extension_of(key) == ext:
                for i, sig in enumerate(sigs):
                    cc.export(export_name(key, i), sig)(by_key[key].py_func)
        cc.export("aot_digest", "i8()")(scope["aot_digest"])
        cc.compile()
        built.append(Path(output_dir) / cc.output_file)
    return built


def collect(captures: list[str]) -> dict[str, list[str]]:
    """Run the extract paths with the JIT over ``captures`` and return the signatures used."""
    import io

    os.environ["MALSENSOR_KERNELS"] = "jit"
    from numba import types

    from . import jit
    from .cli import main

    _import_kernel_modules()
    for cap in captures:
        for sem in ("malsensor", "argus"):
            for fmt in ("jsonl", "csv", "parquet"):
                out = io.BytesIO()
                sys.stdout, saved = io.TextIOWrapper(out), sys.stdout
                try:
                    main(["-l", "warning", "extract", cap, "--semantics", sem, "--format", fmt, "-o", os.devnull])
                finally:
                    sys.stdout = saved
    found: dict[str, list[str]] = {}
    for d in jit._deferred:
        if isinstance(d, jit.Kernel) and d._dispatcher is not None and d.options.get("inline") != "always":
            sigs = [_sig_text(types, d._dispatcher.overloads[s].signature) for s in d._dispatcher.signatures]
            sigs = list(dict.fromkeys(sigs))
            if sigs:
                found[d.key] = sigs
    return found


def _type_text(types, t) -> str:
    if isinstance(t, types.Array):
        dims = [":"] * t.ndim
        if t.layout == "C":
            dims[-1] = "::1"
        return f"{_type_text(types, t.dtype)}[{', '.join(dims)}]"
    if isinstance(t, types.Boolean):
        return "b1"
    if isinstance(t, types.Integer):
        return f"{'i' if t.signed else 'u'}{t.bitwidth // 8}"
    if isinstance(t, types.Float):
        return f"f{t.bitwidth // 8}"
    if isinstance(t, types.UniTuple):
        return f"UniTuple({_type_text(types, t.dtype)}, {t.count})"
    if isinstance(t, types.Tuple):
        return f"Tuple(({', '.join(_type_text(types, x) for x in t.types)},))"
    if isinstance(t, types.NoneType):
        return "none"
    raise TypeError(f"no signature text for {t}")


def _sig_text(types, sig) -> str:
    return f"{_type_text(types, sig.return_type)}({', '.join(_type_text(types, a) for a in sig.args)})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["collect"] and len(argv) > 1:
        print("SPEC: dict[str, tuple[str, ...]] = {")
        for key, sigs in sorted(collect(argv[1:]).items()):
            print(f"    {key!r}: (\n" + "".join(f"        {s!r},\n" for s in sigs) + "    ),")
        print("}")
        return 0
    if argv[:1] == ["build"] and len(argv) == 2:
        print("\n".join(map(str, build(argv[1]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
