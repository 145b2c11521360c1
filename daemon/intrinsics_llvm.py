"""LLVM operations numba does not offer, for the per-packet kernels (imported through intrinsics.py).

``prefetch(array, i)``: a cache-prefetch hint (``llvm.prefetch``). The per-packet kernels are
long dependency chains, so the CPU does not run far enough ahead on its own to overlap the cache
misses of the next packets (index buckets and flow rows for the tracker). A hint for an element
a few packets ahead hides most of that latency. It never faults: any index is allowed.

``load_be16/32/48/64(buf, pos)``, ``load_le16/32(buf, pos)``: one unaligned load (plus a byte swap)
of a multi-byte integer at ``buf[pos]`` of a uint8 array, instead of assembling it byte by byte.
Like ``buf[pos]`` in a numba kernel they are not bounds-checked: the caller checks the length.

``copy16(dst, dpos, src, spos)``: 16 bytes from ``src[spos]`` to ``dst[dpos]`` (uint8 arrays), one
unaligned load and one store; the text writers copy a piece of text of n bytes with ceil(n/16)
of them. Not bounds-checked: both arrays must have 16 bytes from those places.

``f64_bits(x)``: the IEEE-754 bits of a float64 as uint64 (a register move).

``borrowed(array)``: the same array with no owner, so that numba counts no references for it.
A kernel borrows its array arguments before calling helpers per packet or per row (see below).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch", "load_be16", "load_be32", "load_be48", "load_be64", "load_le16", "load_le32", "copy16",
           "f64_bits", "borrowed"]


def _element_pointer(context, builder, arrty, arr, idx):
    """LLVM pointer to ``arr[idx]`` (no wraparound, no bounds check)."""
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint that ``arr[idx]`` (1-D array, integer index) will be read soon (into all cache levels)."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        i32 = ir.IntType(32)
        byte_ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [byte_ptr, i32(0), i32(3), i32(1)])  # read, high locality, data cache
        return context.get_dummy_value()

    return sig, codegen


def _loader(bits: int, swap: bool):
    @intrinsic
    def load(typingctx, buf, pos):
        if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.dtype == types.uint8
                and isinstance(pos, types.Integer)):
            return None
        sig = types.int64(buf, pos) if bits < 64 else types.uint64(buf, pos)

        def codegen(context, builder, signature, args):
            ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
            ity = ir.IntType(bits)
            v = builder.load(builder.bitcast(ptr, ity.as_pointer()), align=1)
            if swap:
                v = builder.call(builder.module.declare_intrinsic("llvm.bswap", [ity]), [v])
            return v if bits == 64 else builder.zext(v, ir.IntType(64))

        return sig, codegen

    return load


load_be16 = _loader(16, True)
load_be32 = _loader(32, True)
load_be48 = _loader(48, True)   # a MAC address
load_be64 = _loader(64, True)
load_le16 = _loader(16, False)
load_le32 = _loader(32, False)


def _is_bytes(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.uint8


@intrinsic
def copy16(typingctx, dst, dpos, src, spos):
    """``dst[dpos:dpos + 16] = src[spos:spos + 16]`` as one 16-byte load and store (no slices,
    no loop, no bounds check)."""
    if not (_is_bytes(dst) and _is_bytes(src) and isinstance(dpos, types.Integer) and isinstance(spos, types.Integer)):
        return None
    sig = types.void(dst, dpos, src, spos)

    def codegen(context, builder, signature, args):
        i128p = ir.IntType(128).as_pointer()
        s = _element_pointer(context, builder, signature.args[2], args[2], args[3])
        d = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        v = builder.load(builder.bitcast(s, i128p), align=1)
        builder.store(v, builder.bitcast(d, i128p), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def f64_bits(typingctx, x):
    """The IEEE-754 bits of a float64 as uint64 (a register move, no memory)."""
    if not isinstance(x, types.Float) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(x), codegen


@intrinsic
def borrowed(typingctx, arr):
    """The same array without its owner (meminfo and parent NULL): numba's reference counting
    does nothing for it (NRT_incref/NRT_decref return at once on a NULL meminfo).

    Every call of a helper that is not inlined, and every row view ``rec[i]``, costs two atomic
    reference-count operations on the array's owner; ``inline="always"`` does not remove them.
    With the arguments borrowed, tracking went from 78-93 to 62-69 ns a packet
    (bench/bench_stages.py, JIT, the two trees alternated three times) and a JSONL row from
    2.10-2.32 to 1.81-2.06 µs, a CSV row from 1.56-1.58 to 1.07-1.17 (bench/bench_rows.py
    --before, 2026-11-30).

    Only valid while ``arr`` is alive: borrow a kernel's own arguments (its caller holds them for
    the call), or an array the kernel still uses after the borrowed view's last use (a local
    array whose last use is the borrow is freed at once); never return or store the view."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        out = context.make_array(signature.return_type)(context, builder)
        for name in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(out, name, getattr(src, name))
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        out.parent = cgutils.get_null_value(out.parent.type)
        return out._getvalue()

    return arr(arr), codegen
