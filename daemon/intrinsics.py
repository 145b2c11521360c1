"""LLVM operations numba does not offer, for the per-packet kernels (built in intrinsics_llvm.py).

``prefetch(array, i)``, ``load_be16/32/48/64(buf, pos)``, ``load_le16/32(buf, pos)``, ``copy16(dst, i, src, j)``, ``f64_bits(x)``,
``borrowed(array)``: see intrinsics_llvm.py. Here they are placeholders (daemon/jit.py) so that importing a kernel
module does not import numba; numba sees the real intrinsics when it compiles a kernel.
"""
from __future__ import annotations

from .jit import Intrinsic

__all__ = ["prefetch", "load_be16", "load_be32", "load_be48", "load_be64", "load_le16", "load_le32", "copy16",
           "f64_bits", "borrowed"]

_IMPL = "malsensor.daemon.intrinsics_llvm"
prefetch = Intrinsic(_IMPL, "prefetch")
load_be16 = Intrinsic(_IMPL, "load_be16")
load_be32 = Intrinsic(_IMPL, "load_be32")
load_be48 = Intrinsic(_IMPL, "load_be48")
load_be64 = Intrinsic(_IMPL, "load_be64")
load_le16 = Intrinsic(_IMPL, "load_le16")
load_le32 = Intrinsic(_IMPL, "load_le32")
copy16 = Intrinsic(_IMPL, "copy16")
f64_bits = Intrinsic(_IMPL, "f64_bits")
borrowed = Intrinsic(_IMPL, "borrowed")
