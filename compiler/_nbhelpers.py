"""Checked arithmetic for Numba: Python's answer, or a raised flag.

The rewrite in ``_analysis`` turns ``a + b`` into ``ct_add(a, b, err)`` and so on.
Each helper here is a Numba ``overload`` chosen by the operand types:

* ints (and bools) use LLVM's overflow-reporting instructions; where Python's
  unbounded int would differ from int64, the helper sets ``err[0]`` and returns a
  dummy value;
* floats follow CPython's own algorithms (``float_divmod``, ``float_pow``) where C
  and Python differ, and set the flag wherever Python raises (division by zero,
  math domain and range errors);
* an int compared with a float beyond 2**53 sets the flag too (Python compares
  exactly; a C conversion would round first).

The flag means "run this call in Python": the caller ignores the dummy result,
so every answer a compiled task gives is Python's answer.  This module imports
Numba, so only the Numba backend imports it, on the first compile.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir as llir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from cytask.compiler._analysis import MATH_1, MATH_2, MATH_TO_INT

__all__ = [
    "ct_abs",
    "ct_add",
    "ct_add_wrapped",
    "ct_addr",
    "ct_bound",
    "ct_eq",
    "ct_flag",
    "ct_flag_local",
    "ct_flag_set",
    "ct_floordiv",
    "ct_ge",
    "ct_gt",
    "ct_guard_ok",
    "ct_index",
    "ct_inplace",
    "ct_int",
    "ct_invert",
    "ct_le",
    "ct_lshift",
    "ct_lt",
    "ct_max",
    "ct_min",
    "ct_mod",
    "ct_mul",
    "ct_mul_wrapped",
    "ct_ne",
    "ct_neg",
    "ct_np_int64",
    "ct_pow",
    "ct_range",
    "ct_range_at",
    "ct_range_len",
    "ct_ret",
    "ct_ret_np",
    "ct_rshift",
    "ct_size",
    "ct_step",
    "ct_store",
    "ct_sub",
    "ct_sub_wrapped",
    "ct_truediv",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
EXACT = 2**53  # every int of at most this magnitude is exactly a double
TWO63 = 9.223372036854775808e18


def _isint(t: Any) -> bool:
    return isinstance(t, types.Integer | types.Boolean)


def _isfloat(t: Any) -> bool:
    return isinstance(t, types.Float)


def _isnum(t: Any) -> bool:
    return _isint(t) or _isfloat(t)


# -- LLVM overflow intrinsics --------------------------------------------------------


def _ovf_intrinsic(op: str) -> Any:
    def _impl(typingctx: Any, a: Any, b: Any) -> Any:
        sig = types.Tuple((types.int64, types.boolean))(types.int64, types.int64)  # type: ignore[no-untyped-call]

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            res = getattr(builder, op)(args[0], args[1])
            value = builder.extract_value(res, 0)
            over = builder.extract_value(res, 1)
            return context.make_tuple(builder, signature.return_type, [value, over])

        return sig, codegen

    _impl.__name__ = f"_{op}"
    return intrinsic(_impl)


def _wrap_intrinsic(op: str) -> Any:
    """``a + b`` or ``a - b`` wrapped to int64, and whether that overflowed.

    Spelled as plain instructions (Hacker's Delight 2-13: the signs of both
    operands of ``a + b`` agree and differ from the result's) rather than LLVM's
    ``*.with.overflow`` intrinsics, which the optimiser prices as calls and will
    not speculate: ``if c: n += 1`` then keeps a branch, one that mispredicts
    whenever ``c`` is random.  As plain instructions it folds into a ``select``,
    and a constant operand reduces the test to one comparison.
    """

    def _impl(typingctx: Any, a: Any, b: Any) -> Any:
        sig = types.Tuple((types.int64, types.boolean))(types.int64, types.int64)  # type: ignore[no-untyped-call]

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            x, y = args
            i64 = llir.IntType(64)
            if op == "add":
                r = builder.add(x, y)
                sign = builder.and_(builder.xor(x, r), builder.xor(y, r))
            else:
                r = builder.sub(x, y)
                sign = builder.and_(builder.xor(x, y), builder.xor(x, r))
            over = builder.icmp_signed("<", sign, llir.Constant(i64, 0))
            return context.make_tuple(builder, signature.return_type, [r, over])

        return sig, codegen

    _impl.__name__ = f"_{op}_wrap"
    return intrinsic(_impl)


_sadd: Any = _wrap_intrinsic("add")
_ssub: Any = _wrap_intrinsic("sub")
_smul: Any = _ovf_intrinsic("smul_with_overflow")


# -- the flag: an int64 in memory, passed around as its address --------------------------
# An address, not an array: arrays passed to every helper cost an atomic reference
# count update per operation (measured 10x slower on an LCG loop).
#
# The rewritten function keeps its own flag in a stack slot (``ct_flag_local``) and
# copies it to the caller's slot when it returns (``ct_ret``).  Once the helpers are
# inlined, LLVM folds ``inttoptr(ptrtoint(slot))`` back to the slot and promotes it
# to a register: a check becomes a ``select`` on the overflow bit instead of a
# conditional store to memory the optimiser cannot see through, so branches such as
# ``if c: n += 1`` stay branch-free (a caller's address would be memory LLVM must
# keep up to date at every store).


def _ct_flag_set_impl(typingctx: Any, addr: Any) -> Any:
    """Raise the flag at ``addr``: this call must run in Python."""
    sig = types.none(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = builder.inttoptr(args[0], llir.IntType(64).as_pointer())
        builder.store(llir.Constant(llir.IntType(64), 2), ptr)
        return context.get_dummy_value()

    return sig, codegen


ct_flag_set: Any = intrinsic(_ct_flag_set_impl)


def _ct_flag_impl(typingctx: Any, addr: Any) -> Any:
    """The flag at ``addr`` (0: no trouble so far)."""
    sig = types.int64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = builder.inttoptr(args[0], llir.IntType(64).as_pointer())
        return builder.load(ptr)

    return sig, codegen


ct_flag: Any = intrinsic(_ct_flag_impl)


def _ct_flag_local_impl(typingctx: Any) -> Any:
    """A fresh flag (0) in a stack slot of the calling function, as its address."""
    sig = types.int64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i64 = llir.IntType(64)
        slot = cgutils.alloca_once_value(builder, llir.Constant(i64, 0))  # type: ignore[no-untyped-call]
        return builder.ptrtoint(slot, i64)

    return sig, codegen


ct_flag_local: Any = intrinsic(_ct_flag_local_impl)


def _ct_flag_copy_impl(typingctx: Any, dst: Any, src: Any) -> Any:
    """Copy the flag at address ``src`` to address ``dst``."""
    sig = types.none(types.int64, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr_t = llir.IntType(64).as_pointer()
        value = builder.load(builder.inttoptr(args[1], ptr_t))
        builder.store(value, builder.inttoptr(args[0], ptr_t))
        return context.get_dummy_value()

    return sig, codegen


_ct_flag_copy: Any = intrinsic(_ct_flag_copy_impl)


def _ct_guard_ok_impl(typingctx: Any, symbol: Any) -> Any:
    """Whether the module globals are still those the code was compiled with.

    ``symbol`` (a string literal) names a two-word cell bound by ``_guard``: the
    address of the globals dict's version tag, and the version last verified.
    """
    if not isinstance(symbol, types.StringLiteral):
        return None
    name = str(symbol.literal_value)
    sig = types.boolean(symbol)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i64 = llir.IntType(64)
        module = builder.module
        try:
            cell = module.get_global(name)
        except KeyError:
            cell = llir.GlobalVariable(module, llir.ArrayType(i64, 2), name)
            cell.linkage = "external"
        zero = llir.Constant(llir.IntType(32), 0)
        one = llir.Constant(llir.IntType(32), 1)
        where = builder.load(builder.gep(cell, [zero, zero]))
        expected = builder.load(builder.gep(cell, [zero, one]))
        version = builder.load(builder.inttoptr(where, i64.as_pointer()))
        return builder.icmp_unsigned("==", version, expected)

    return sig, codegen


ct_guard_ok: Any = intrinsic(prefer_literal=True)(_ct_guard_ok_impl)


def _ct_addr_impl(typingctx: Any, ptr: Any) -> Any:
    """A ``voidptr`` as an int64 address (for the C entry point's result slot)."""
    sig = types.int64(types.voidptr)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ptrtoint(args[0], llir.IntType(64))

    return sig, codegen


ct_addr: Any = intrinsic(_ct_addr_impl)


def _stub(name: str) -> Callable[..., Any]:
    def stub(*args: Any) -> Any:
        raise NotImplementedError(f"{name} runs only inside Numba-compiled code")

    stub.__name__ = stub.__qualname__ = name
    return stub


ct_add = _stub("ct_add")
ct_sub = _stub("ct_sub")
ct_mul = _stub("ct_mul")
ct_add_wrapped = _stub("ct_add_wrapped")
ct_sub_wrapped = _stub("ct_sub_wrapped")
ct_mul_wrapped = _stub("ct_mul_wrapped")
ct_truediv = _stub("ct_truediv")
ct_floordiv = _stub("ct_floordiv")
ct_mod = _stub("ct_mod")
ct_pow = _stub("ct_pow")
ct_lshift = _stub("ct_lshift")
ct_rshift = _stub("ct_rshift")
ct_neg = _stub("ct_neg")
ct_invert = _stub("ct_invert")
ct_abs = _stub("ct_abs")
ct_int = _stub("ct_int")
ct_min = _stub("ct_min")
ct_max = _stub("ct_max")
ct_step = _stub("ct_step")
ct_lt = _stub("ct_lt")
ct_le = _stub("ct_le")
ct_gt = _stub("ct_gt")
ct_ge = _stub("ct_ge")
ct_eq = _stub("ct_eq")
ct_ne = _stub("ct_ne")
ct_ret = _stub("ct_ret")
ct_ret_np = _stub("ct_ret_np")
ct_bound = _stub("ct_bound")
ct_store = _stub("ct_store")
ct_inplace = _stub("ct_inplace")
ct_np_int64 = _stub("ct_np_int64")
ct_range = _stub("ct_range")
ct_range_at = _stub("ct_range_at")
ct_range_len = _stub("ct_range_len")
ct_index = _stub("ct_index")
ct_size = _stub("ct_size")


def _ct_store_at_impl(typingctx: Any, addr: Any, value: Any) -> Any:
    """Store the int64 ``value`` at address ``addr``."""
    sig = types.none(types.int64, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = builder.inttoptr(args[0], llir.IntType(64).as_pointer())
        builder.store(args[1], ptr)
        return context.get_dummy_value()

    return sig, codegen


_ct_store_at: Any = intrinsic(_ct_store_at_impl)


@overload(ct_ret_np)
def _ol_ret_np(value: Any, out: Any, err: Any, is_np: Any) -> Any:
    """``return value``, and whether Python's value is a NumPy scalar (at ``out + 8``)."""

    def impl(value: Any, out: Any, err: Any, is_np: Any) -> Any:
        _ct_flag_copy(out, err)
        _ct_store_at(out + 8, np.int64(1) if is_np else np.int64(0))
        return value

    return impl


@overload(ct_bound)
def _ol_bound(value: Any, bound: Any, err: Any) -> Any:
    """A local that no path may have assigned: Python raises UnboundLocalError."""

    def impl(value: Any, bound: Any, err: Any) -> Any:
        if not bound:
            ct_flag_set(err)
        return value

    return impl


@overload(ct_inplace)
def _ol_inplace(value: Any, err: Any) -> Any:
    if isinstance(value, types.Array):
        raise TypingError(
            "cytask: an augmented assignment (+= and the like) to an array: Python changes the "
            "array in place, which a call handed back to Python would do twice; "
            "write `b = a + x` into a new name instead"
        )

    def impl(value: Any, err: Any) -> Any:
        return value

    return impl


@overload(ct_store)
def _ol_store(array: Any, value: Any, err: Any) -> Any:
    """The value for ``array[i] = value``: NumPy raises for a float that is not an int64."""
    if (
        isinstance(array, types.Array)
        and isinstance(array.dtype, types.Integer)
        and _isfloat(value)
    ):

        def impl_f(array: Any, value: Any, err: Any) -> Any:
            x = float(value)
            if not (-TWO63 <= x < TWO63):  # also nan
                ct_flag_set(err)
            return value

        return impl_f
    if isinstance(array, types.Array) and isinstance(value, types.Array):
        if isinstance(array.dtype, types.Integer) and isinstance(value.dtype, types.Float):
            raise TypingError("cytask: stores an array of floats into an array of ints; use a loop")
        if isinstance(array.dtype, types.Boolean) != isinstance(value.dtype, types.Boolean):
            raise TypingError("cytask: stores an array into one of another dtype; use a loop")

    def impl(array: Any, value: Any, err: Any) -> Any:
        return value

    return impl


@overload(ct_np_int64)
def _ol_np_int64(a: Any, err: Any) -> Any:
    if _isfloat(a):

        def impl_f(a: Any, err: Any) -> Any:
            x = float(a)
            if not (-TWO63 <= x < TWO63):  # NumPy raises (nan, inf, out of range)
                ct_flag_set(err)
                return np.int64(0)
            return np.int64(x)

        return impl_f
    if _isint(a):

        def impl_i(a: Any, err: Any) -> Any:
            return np.int64(a)

        return impl_i
    return None


@overload(ct_size)
def _ol_size(shape: Any, err: Any) -> Any:
    """The shape for ``np.zeros``/``ones``/``empty``: zeros once the flag is up.

    A size computed after the flag went up may be a dummy (a wrapped product, say),
    and an array of it would be allocated and filled, at most once per iteration of
    a loop block, before the flag ends the call: gigabytes, in Python's place of an
    immediate exception.  The call's results are thrown away then, so nothing needs
    allocating.
    """
    if isinstance(shape, types.Integer):

        def impl_int(shape: Any, err: Any) -> Any:
            return shape if ct_flag(err) == 0 else 0

        return impl_int
    dims: tuple[Any, ...] = tuple(getattr(shape, "types", ()))  # (a tuple's element types)
    if (
        isinstance(shape, types.BaseTuple)
        and dims
        and all(isinstance(t, types.Integer) for t in dims)
    ):
        n = len(dims)
        each = "".join(f"shape[{i}] * keep, " for i in range(n))
        src = (  # (the overload's own annotations: Numba compares the signatures)
            "from __future__ import annotations\n"
            "def impl_tuple(shape: Any, err: Any) -> Any:\n"
            "    keep = 1 if ct_flag(err) == 0 else 0\n"
            f"    return ({each})\n"
        )
        scope: dict[str, Any] = {"ct_flag": ct_flag, "Any": Any}
        exec(src, scope)  # one element per dimension: no tuple comprehension in Numba
        return scope["impl_tuple"]

    def impl(shape: Any, err: Any) -> Any:
        return shape  # (a bool, an empty tuple: nothing large)

    return impl


# -- range() of int64 bounds, counted exactly ------------------------------------------


@overload(ct_index)
def _ol_index(value: Any, is_np: Any, err: Any) -> Any:
    """An argument of ``range()``: an int, or a Python bool (a NumPy bool raises).

    Python's ``range`` takes what has ``__index__``: ints, Python bools and
    ``np.int64``, but not floats or ``np.bool_``; Numba's counts to any number.
    """
    if _isfloat(value):
        raise TypingError(
            "cytask: range() of a float: Python raises TypeError; convert it with int()"
        )
    if isinstance(value, types.Boolean):

        def impl_b(value: Any, is_np: Any, err: Any) -> Any:
            if is_np:
                ct_flag_set(err)  # np.bool_ has no __index__: TypeError in Python
            return np.int64(value)

        return impl_b
    if isinstance(value, types.Integer):

        def impl_i(value: Any, is_np: Any, err: Any) -> Any:
            return value

        return impl_i
    return None


@overload(ct_range)
def _ol_range(start: Any, stop: Any, step: Any, err: Any) -> Any:
    """``(start, step, count)``: the count of ``range(start, stop, step)``, exactly.

    Numba's own range computes ``stop - start`` in int64, which overflows for bounds
    far apart.  Here the distance is taken as a uint64 (it is below 2**64); a count
    past int64 raises the flag (Python loops on; it cannot finish here anyway), and so
    does a zero step (ValueError).
    """
    if not (_isint(start) and _isint(stop) and _isint(step)):
        return None

    def impl(start: Any, stop: Any, step: Any, err: Any) -> Any:
        a = np.int64(start)
        b = np.int64(stop)
        c = np.int64(step)
        n = np.uint64(0)
        if c == 0:
            ct_flag_set(err)
        elif c > 0 and a < b:
            d = np.uint64(b) - np.uint64(a)
            n = (d - np.uint64(1)) // np.uint64(c) + np.uint64(1)
        elif c < 0 and a > b:
            d = np.uint64(a) - np.uint64(b)
            n = (d - np.uint64(1)) // (np.uint64(0) - np.uint64(c)) + np.uint64(1)
        if n > np.uint64(INT64_MAX):
            ct_flag_set(err)
            n = np.uint64(0)
        return (a, c, np.int64(n))

    return impl


@overload(ct_range_at)
def _ol_range_at(r: Any, k: Any) -> Any:
    """The ``k``-th value of the range ``r``: it fits in int64, so wrapping is exact."""

    def impl(r: Any, k: Any) -> Any:
        return np.int64(np.uint64(r[0]) + np.uint64(k) * np.uint64(r[1]))

    return impl


@overload(ct_range_len)
def _ol_range_len(start: Any, stop: Any, step: Any, err: Any) -> Any:
    """``len(range(...))``: Python raises OverflowError past sys.maxsize."""
    if not (_isint(start) and _isint(stop) and _isint(step)):
        return None

    def impl(start: Any, stop: Any, step: Any, err: Any) -> Any:
        return ct_range(start, stop, step, err)[2]

    return impl


@overload(ct_ret)
def _ol_ret(value: Any, out: Any, err: Any) -> Any:
    """``return value``, after copying the function's flag ``err`` to the caller's ``out``."""

    def impl(value: Any, out: Any, err: Any) -> Any:
        _ct_flag_copy(out, err)
        return value

    return impl


# -- + - * -----------------------------------------------------------------------


def _literal(t: Any) -> int | None:
    """The value of an int literal Numba typed as such (a constant in the source)."""
    if isinstance(t, types.IntegerLiteral) and INT64_MIN <= t.literal_value <= INT64_MAX:
        return int(t.literal_value)
    return None


def _const_bounds(sign: int, c: int) -> tuple[int, int]:
    """The ``x`` for which ``x + sign * c`` stays in int64: ``lo <= x <= hi``."""
    d = sign * c
    return max(INT64_MIN, INT64_MIN - d), min(INT64_MAX, INT64_MAX - d)


def _checked_const(ovf: Any, sign: int, c: int, const_first: bool) -> Callable[..., Any]:
    """``x + c``, ``c + x`` or ``x - c`` for a constant ``c``: one comparison of ``x``."""
    lo, hi = _const_bounds(sign, c)

    if const_first:

        def impl_cx(a: Any, b: Any, err: Any) -> Any:
            x = np.int64(b)
            r, _ = ovf(np.int64(a), x)
            if x < lo or x > hi:
                ct_flag_set(err)
            return r

        return impl_cx

    def impl_xc(a: Any, b: Any, err: Any) -> Any:
        x = np.int64(a)
        r, _ = ovf(x, np.int64(b))
        if x < lo or x > hi:
            ct_flag_set(err)
        return r

    return impl_xc


def _checked(
    ovf: Any, plain: Callable[[Any, Any], Any], sign: int | None = None
) -> Callable[..., Any]:
    """The overload of ``+``, ``-`` (``sign`` 1, -1) or ``*`` (``sign`` None)."""

    def typer(a: Any, b: Any, err: Any) -> Any:
        if _isint(a) and _isint(b) and sign is not None:
            cb = _literal(b)
            if cb is not None and not (sign < 0 and cb == INT64_MIN):
                return _checked_const(ovf, sign, cb, const_first=False)
            ca = _literal(a)
            if ca is not None and sign > 0:
                return _checked_const(ovf, sign, ca, const_first=True)
        if _isint(a) and _isint(b):

            def impl_int(a: Any, b: Any, err: Any) -> Any:
                r, over = ovf(np.int64(a), np.int64(b))
                if over:
                    ct_flag_set(err)
                return r

            return impl_int

        def impl(a: Any, b: Any, err: Any) -> Any:
            return plain(a, b)

        return impl

    return typer


overload(ct_add, prefer_literal=True)(_checked(_sadd, operator.add, 1))
overload(ct_sub, prefer_literal=True)(_checked(_ssub, operator.sub, -1))
overload(ct_mul)(_checked(_smul, operator.mul))


def _wrapping(ovf: Any, plain: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """``+ - *`` on ints proven unable to overflow (``_intervals``), as wrapping int64.

    Not Numba's own operators: those carry LLVM's ``nsw`` (an overflow is undefined
    behaviour), and the proof holds only until a check raises the flag.  After that,
    values are dummies that may overflow here, and undefined behaviour on that path
    would let LLVM drop the very check that raised the flag.
    """

    def typer(a: Any, b: Any) -> Any:
        if not (_isint(a) and _isint(b)):
            # (an argument hinted int that the dispatcher was given as a float: what
            # ct_add and the like do for floats)
            def impl_other(a: Any, b: Any) -> Any:
                return plain(a, b)

            return impl_other

        def impl(a: Any, b: Any) -> Any:
            return ovf(np.int64(a), np.int64(b))[0]

        return impl

    return typer


overload(ct_add_wrapped)(_wrapping(_sadd, operator.add))
overload(ct_sub_wrapped)(_wrapping(_ssub, operator.sub))
overload(ct_mul_wrapped)(_wrapping(_smul, operator.mul))


# -- / // % ----------------------------------------------------------------------


@overload(ct_truediv)
def _ol_truediv(a: Any, b: Any, err: Any) -> Any:
    if _isint(a) and _isint(b):

        def impl_int(a: Any, b: Any, err: Any) -> Any:
            x = np.int64(a)
            y = np.int64(b)
            if y == 0 or x > EXACT or x < -EXACT or y > EXACT or y < -EXACT:
                ct_flag_set(err)  # Python divides big ints exactly, then rounds once
                return 0.0
            return float(x) / float(y)

        return impl_int
    if _isnum(a) and _isnum(b):

        def impl(a: Any, b: Any, err: Any) -> Any:
            y = float(b)
            if y == 0.0:
                ct_flag_set(err)
                return 0.0
            return float(a) / y

        return impl

    def impl_other(a: Any, b: Any, err: Any) -> Any:
        return a / b

    return impl_other


@overload(ct_floordiv)
def _ol_floordiv(a: Any, b: Any, err: Any) -> Any:
    if _isint(a) and _isint(b):

        def impl_int(a: Any, b: Any, err: Any) -> Any:
            x = np.int64(a)
            y = np.int64(b)
            if y == 0 or (y == -1 and x == INT64_MIN):
                ct_flag_set(err)
                return np.int64(0)
            q = x // y
            return q

        return impl_int
    if _isnum(a) and _isnum(b):

        def impl(a: Any, b: Any, err: Any) -> Any:
            vx = float(a)
            wx = float(b)
            if wx == 0.0:
                ct_flag_set(err)
                return 0.0
            # CPython's _float_div_mod, step for step
            mod = np.fmod(vx, wx)
            div = (vx - mod) / wx
            if mod and (wx < 0) != (mod < 0):
                div -= 1.0
            if div:
                floordiv = np.floor(div)
                if div - floordiv > 0.5:
                    floordiv += 1.0
            else:
                floordiv = math.copysign(0.0, vx / wx)
            return floordiv

        return impl

    def impl_other(a: Any, b: Any, err: Any) -> Any:
        return a // b

    return impl_other


@overload(ct_mod)
def _ol_mod(a: Any, b: Any, err: Any) -> Any:
    if _isint(a) and _isint(b):

        def impl_int(a: Any, b: Any, err: Any) -> Any:
            x = np.int64(a)
            y = np.int64(b)
            if y == 0:
                ct_flag_set(err)
                return np.int64(0)
            if y == -1:
                return np.int64(0)
            r = x % y
            return r

        return impl_int
    if _isnum(a) and _isnum(b):

        def impl(a: Any, b: Any, err: Any) -> Any:
            vx = float(a)
            wx = float(b)
            if wx == 0.0:
                ct_flag_set(err)
                return 0.0
            # CPython's float_rem
            mod = np.fmod(vx, wx)
            if mod:
                if (wx < 0) != (mod < 0):
                    mod += wx
            else:
                mod = math.copysign(0.0, wx)
            return mod

        return impl

    def impl_other(a: Any, b: Any, err: Any) -> Any:
        return a % b

    return impl_other


# -- ** << >> ----------------------------------------------------------------------


@overload(ct_pow)
def _ol_pow(a: Any, b: Any, err: Any) -> Any:
    if _isint(a) and _isint(b):

        def impl_int(a: Any, b: Any, err: Any) -> Any:
            base = np.int64(a)
            e = np.int64(b)
            if e < 0:
                ct_flag_set(err)  # Python returns a float here
                return np.int64(0)
            r = np.int64(1)
            while e > 0:
                if e & 1:
                    r, over = _smul(r, base)
                    if over:
                        ct_flag_set(err)
                        return np.int64(0)
                e >>= 1
                if e > 0:
                    base, over = _smul(base, base)
                    if over:
                        ct_flag_set(err)
                        return np.int64(0)
            return r

        return impl_int
    if _isnum(a) and _isnum(b):

        def impl(a: Any, b: Any, err: Any) -> Any:
            x = float(a)
            y = float(b)
            if x == 0.0 and y < 0.0:
                ct_flag_set(err)  # ZeroDivisionError
                return 0.0
            if x < 0.0 and math.isfinite(y) and y != math.floor(y):
                ct_flag_set(err)  # Python returns a complex number
                return 0.0
            r = x**y
            if math.isinf(r) and math.isfinite(x) and math.isfinite(y):
                ct_flag_set(err)  # OverflowError
            return r

        return impl

    def impl_other(a: Any, b: Any, err: Any) -> Any:
        return a**b

    return impl_other


@overload(ct_lshift)
def _ol_lshift(a: Any, b: Any, err: Any) -> Any:
    if _isint(a) and _isint(b):

        def impl(a: Any, b: Any, err: Any) -> Any:
            x = np.int64(a)
            n = np.int64(b)
            if x == 0 and n >= 0:
                return np.int64(0)
            if n < 0 or n >= 63:
                ct_flag_set(err)
                return np.int64(0)
            r = x << n
            if (r >> n) != x:
                ct_flag_set(err)
            return r

        return impl
    return None


@overload(ct_rshift)
def _ol_rshift(a: Any, b: Any, err: Any) -> Any:
    if _isint(a) and _isint(b):

        def impl(a: Any, b: Any, err: Any) -> Any:
            x = np.int64(a)
            n = np.int64(b)
            if n < 0:
                ct_flag_set(err)
                return np.int64(0)
            if n >= 63:
                return np.int64(-1) if x < 0 else np.int64(0)
            return x >> n

        return impl
    return None


# -- unary ---------------------------------------------------------------------------


@overload(ct_neg)
def _ol_neg(a: Any, err: Any) -> Any:
    if _isint(a):

        def impl_int(a: Any, err: Any) -> Any:
            x = np.int64(a)
            if x == INT64_MIN:
                ct_flag_set(err)
                return x
            return -x

        return impl_int

    def impl(a: Any, err: Any) -> Any:
        return -a

    return impl


@overload(ct_invert)
def _ol_invert(a: Any, err: Any) -> Any:
    if _isint(a):

        def impl(a: Any, err: Any) -> Any:
            return ~np.int64(a)

        return impl
    return None


@overload(ct_abs)
def _ol_abs(a: Any, err: Any) -> Any:
    if _isint(a):

        def impl_int(a: Any, err: Any) -> Any:
            x = np.int64(a)
            if x == INT64_MIN:
                ct_flag_set(err)
                return x
            return -x if x < 0 else x

        return impl_int

    def impl(a: Any, err: Any) -> Any:
        return abs(a)

    return impl


@overload(ct_int)
def _ol_int(a: Any, err: Any) -> Any:
    if _isint(a):

        def impl_int(a: Any, err: Any) -> Any:
            return np.int64(a)

        return impl_int
    if _isfloat(a):

        def impl(a: Any, err: Any) -> Any:
            x = float(a)
            if not (-TWO63 <= x < TWO63):  # also nan
                ct_flag_set(err)
                return np.int64(0)
            return np.int64(x)

        return impl
    return None


@overload(ct_step)
def _ol_step(a: Any, err: Any) -> Any:
    if _isint(a):

        def impl(a: Any, err: Any) -> Any:
            if a == 0:
                ct_flag_set(err)  # ValueError: range() arg 3 must not be zero
                return np.int64(1)
            return np.int64(a)

        return impl
    return None


# -- comparisons ---------------------------------------------------------------------


def _compare(op: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    def typer(a: Any, b: Any, err: Any) -> Any:
        if _isint(a) and _isfloat(b):

            def impl_if(a: Any, b: Any, err: Any) -> Any:
                x = np.int64(a)
                if x > EXACT or x < -EXACT:
                    ct_flag_set(err)  # Python compares exactly, C would round x first
                    return False
                return op(float(x), b)

            return impl_if
        if _isfloat(a) and _isint(b):

            def impl_fi(a: Any, b: Any, err: Any) -> Any:
                y = np.int64(b)
                if y > EXACT or y < -EXACT:
                    ct_flag_set(err)
                    return False
                return op(a, float(y))

            return impl_fi

        def impl(a: Any, b: Any, err: Any) -> Any:
            return op(a, b)

        return impl

    return typer


overload(ct_lt)(_compare(operator.lt))
overload(ct_le)(_compare(operator.le))
overload(ct_gt)(_compare(operator.gt))
overload(ct_ge)(_compare(operator.ge))
overload(ct_eq)(_compare(operator.eq))
overload(ct_ne)(_compare(operator.ne))


def _pick(greater: bool) -> Callable[..., Any]:
    cmp = ct_gt if greater else ct_lt

    def typer(a: Any, b: Any, err: Any) -> Any:
        a_bool = isinstance(a, types.Boolean)
        if a_bool != isinstance(b, types.Boolean) and _isint(a) and _isint(b):
            # a bool and an int: Numba's result is an int, Python's is the bool when
            # it wins, so that case goes back to Python

            def impl_bool(a: Any, b: Any, err: Any) -> Any:
                if cmp(b, a, err):
                    if not a_bool:
                        ct_flag_set(err)
                    return np.int64(b)
                if a_bool:
                    ct_flag_set(err)
                return np.int64(a)

            return impl_bool
        if _isint(a) != _isint(b) and _isnum(a) and _isnum(b):
            # int and float: Numba's result is a float, Python's is the int when it
            # wins, so that case goes back to Python
            a_is_int = _isint(a)

            def impl_mixed(a: Any, b: Any, err: Any) -> Any:
                if cmp(b, a, err):
                    if not a_is_int:
                        ct_flag_set(err)
                    return float(b)
                if a_is_int:
                    ct_flag_set(err)
                return float(a)

            return impl_mixed

        def impl(a: Any, b: Any, err: Any) -> Any:
            return b if cmp(b, a, err) else a  # Python keeps the first of equals

        return impl

    return typer


overload(ct_min)(_pick(False))
overload(ct_max)(_pick(True))


# -- math ------------------------------------------------------------------------------


def _math1(name: str) -> Callable[..., Any]:
    f = getattr(math, name)
    stub = _stub(f"ct_m_{name}")

    @overload(stub)
    def _ol(a: Any, err: Any) -> Any:
        if not _isnum(a):
            return None

        def impl(a: Any, err: Any) -> Any:
            x = float(a)
            r = f(x)
            # CPython raises where C returns nan from a number or inf from a finite
            if (math.isnan(r) and not math.isnan(x)) or (math.isinf(r) and math.isfinite(x)):
                ct_flag_set(err)
            return r

        return impl

    return stub


def _math2(name: str) -> Callable[..., Any]:
    f = getattr(math, name)
    stub = _stub(f"ct_m_{name}")

    @overload(stub)
    def _ol(a: Any, b: Any, err: Any) -> Any:
        if not (_isnum(a) and _isnum(b)):
            return None

        def impl(a: Any, b: Any, err: Any) -> Any:
            x = float(a)
            y = float(b)
            r = f(x, y)
            if (math.isnan(r) and not (math.isnan(x) or math.isnan(y))) or (
                math.isinf(r) and math.isfinite(x) and math.isfinite(y)
            ):
                ct_flag_set(err)
            return r

        return impl

    return stub


def _math_to_int(name: str) -> Callable[..., Any]:
    f = getattr(np, name)  # math.floor would convert to int64 before the range check
    stub = _stub(f"ct_m_{name}")

    @overload(stub)
    def _ol(a: Any, err: Any) -> Any:
        if _isint(a):

            def impl_int(a: Any, err: Any) -> Any:
                return np.int64(a)

            return impl_int
        if not _isfloat(a):
            return None

        def impl(a: Any, err: Any) -> Any:
            x = f(float(a))
            if not (-TWO63 <= x < TWO63):  # also nan and inf
                ct_flag_set(err)
                return np.int64(0)
            return np.int64(x)

        return impl

    return stub


for _name in sorted(MATH_1):
    globals()[f"ct_m_{_name}"] = _math1(_name)
    __all__.append(f"ct_m_{_name}")
for _name in sorted(MATH_2):
    globals()[f"ct_m_{_name}"] = _math2(_name)
    __all__.append(f"ct_m_{_name}")
for _name in sorted(MATH_TO_INT):
    globals()[f"ct_m_{_name}"] = _math_to_int(_name)
    __all__.append(f"ct_m_{_name}")
