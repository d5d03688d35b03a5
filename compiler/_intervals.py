"""Value ranges of int locals: the ``+ - *`` that can never overflow go unchecked.

Every int operation in a compiled task is checked for int64 overflow (Python's ints do
not overflow).  Many cannot: ``(x * 1103515245 + 12345) & 0x7FFFFFFF`` is below 2**31,
so multiplying it again by a 31-bit constant stays below 2**62.  This module proves
that from the source, before the rewrite, and marks such operations (``SAFE_ARITH``);
the rewrite compiles them as wrapping int64 arithmetic (``ct_add_wrapped`` and the
like), which LLVM then optimises as it would hand-written code.

The analysis is flow-insensitive and deliberately simple, so that it is easy to trust:

* each local's range is the hull of the ranges of every value ever stored in it (an
  assignment, an augmented assignment, a ``for`` target), found by iterating to a fixed
  point; a local still growing after a few rounds is widened to all of int64;
* a value in compiled code that is an int is an int64 (an operation that leaves int64
  raises the flag and the call runs in Python, whose results replace every value this
  call computed), so a range is clipped to int64 after each operation;
* only ints are ranged: anything that may be a float, a bool, a NumPy scalar or an
  array (an argument without an ``int`` hint, a subscript, a call other than a few
  builtins) has no range, and no operation on it is marked.

An operation is marked when both operands have ranges and every result in their
product lies in int64.  Values computed after the flag was raised are dummies that may
lie outside these ranges; the wrapping operations (not Numba's, whose overflow is
undefined behaviour for LLVM) compute something on them, which is thrown away.
"""

from __future__ import annotations

import ast
import builtins
import itertools
from collections.abc import Iterator
from typing import Any

__all__ = ["SAFE_ARITH", "mark_safe_arithmetic"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
ROUNDS = 6  # rounds of the fixed point before a local still growing is widened
SAFE_ARITH = "_ct_safe_arith"  # attribute set on a BinOp or AugAssign that cannot overflow

Range = tuple[int, int]
_EMPTY: Any = object()  # no value stored yet (the lattice's bottom)
_FULL: Range = (INT64_MIN, INT64_MAX)


def _clip(lo: int, hi: int) -> Range:
    return max(lo, INT64_MIN), min(hi, INT64_MAX)


def _join(x: Any, y: Any) -> Any:
    if x is _EMPTY:
        return y
    if y is _EMPTY:
        return x
    if x is None or y is None:
        return None
    return min(x[0], y[0]), max(x[1], y[1])


def _corners(op: type[ast.operator], x: Range, y: Range) -> Range | None:
    """The exact range of ``x op y`` for ``+ - *`` (may leave int64), else None."""
    if op is ast.Add:
        return x[0] + y[0], x[1] + y[1]
    if op is ast.Sub:
        return x[0] - y[1], x[1] - y[0]
    if op is ast.Mult:
        products = [a * b for a, b in itertools.product(x, y)]
        return min(products), max(products)
    return None


def _bits(hi: int) -> int:
    """The largest value with as many bits as ``hi`` (``hi >= 0``)."""
    return (1 << hi.bit_length()) - 1


def _binop(op: type[ast.operator], x: Range, y: Range) -> Range | None:
    """The range of ``x op y`` on ints, within int64; None where it may be no int."""
    exact = _corners(op, x, y)
    if exact is not None:
        return _clip(*exact)
    if op is ast.BitAnd:
        if x[0] >= 0 and y[0] >= 0:
            return 0, min(x[1], y[1])
        if x[0] >= 0 or y[0] >= 0:  # and-ing with a non-negative value
            return 0, x[1] if x[0] >= 0 else y[1]
        return _FULL
    if op in (ast.BitOr, ast.BitXor):
        if x[0] >= 0 and y[0] >= 0:
            return 0, _bits(max(x[1], y[1]))
        return _FULL
    if op is ast.Mod:
        if y[0] > 0:  # Python's % takes the divisor's sign
            return 0, y[1] - 1
        return _FULL
    if op is ast.FloorDiv:
        if y[0] > 0:  # floor(a / b) is monotonic in a, and in b for a fixed sign of a
            qs = [a // b for a, b in itertools.product(x, y)]
            return _clip(min(qs), max(qs))
        return _FULL
    if op is ast.RShift:
        if y[0] >= 0:
            qs = [a >> min(b, 64) for a, b in itertools.product(x, y)]
            return min(qs), max(qs)
        return _FULL
    if op is ast.LShift:
        return _FULL
    if op is ast.Pow and x[0] == x[1] and y[0] == y[1] and y[0] >= 0:
        if abs(x[0]) >= 2 and y[0] >= 64:
            return None  # (past int64: refused or run in Python)
        v = x[0] ** y[0]  # a constant such as 2**52
        return (v, v) if INT64_MIN <= v <= INT64_MAX else None
    return None  # / and other ** may give floats


def _stores(fn: ast.FunctionDef) -> Iterator[tuple[str, Any]]:
    """Each (name, source) of a value stored in a local; a source of _ANY: no range."""
    covered: set[int] = set()  # the target Names of the stores understood below
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                yield from _unpack(target, node.value, covered)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            yield from _unpack(node.target, node.value, covered)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            covered.add(id(node.target))
            yield node.target.id, node
        elif isinstance(node, ast.For | ast.AsyncFor) and isinstance(node.target, ast.Name):
            covered.add(id(node.target))
            yield node.target.id, node  # a range(): between its start and stop
    for node in ast.walk(fn):
        stored = isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
        if stored and id(node) not in covered:  # any other store (a tuple target, with...)
            assert isinstance(node, ast.Name)
            yield node.id, _ANY


_ANY: Any = object()  # a source that has no range


def _unpack(target: ast.expr, value: ast.expr, covered: set[int]) -> Iterator[tuple[str, Any]]:
    """``name = value``, and ``a, b = x, y`` element by element (other targets: _ANY)."""
    if isinstance(target, ast.Name):
        covered.add(id(target))
        yield target.id, value
    elif (
        isinstance(target, ast.Tuple | ast.List)
        and isinstance(value, ast.Tuple | ast.List)
        and len(value.elts) == len(target.elts)
    ):
        for t, v in zip(target.elts, value.elts, strict=True):
            yield from _unpack(t, v, covered)


class _Ranges:
    def __init__(
        self,
        fn: ast.FunctionDef,
        params: dict[str, Range | None],
        consts: dict[str, Any],
        fn_globals: dict[str, Any],
    ) -> None:
        self.params = params
        self.consts = consts
        self.fn_globals = fn_globals
        self.sources: dict[str, list[Any]] = {}
        for name, source in _stores(fn):
            self.sources.setdefault(name, []).append(source)
        self.ranges: dict[str, Any] = {name: _EMPTY for name in self.sources}
        for name in params:  # a parameter rebound in the body keeps its own values too
            self.sources.setdefault(name, []).append(_PARAM)
            self.ranges[name] = _EMPTY
        self._solve()

    def _solve(self) -> None:
        for round_ in itertools.count():
            changed = False
            for name, sources in self.sources.items():
                new: Any = _EMPTY
                for source in sources:
                    new = _join(new, self._source(name, source))
                old = self.ranges[name]
                if new == old:
                    continue
                if round_ >= ROUNDS and new is not None and new is not _EMPTY:
                    new = _FULL  # still growing: all of int64 (it cannot grow again)
                if new != old:
                    self.ranges[name] = new
                    changed = True
            if not changed:
                return

    def _source(self, name: str, source: Any) -> Any:
        if source is _ANY:
            return None
        if source is _PARAM:
            return self.params[name]
        if isinstance(source, ast.AugAssign):
            return self.binop(source.op, ast.Name(name, ast.Load()), source.value)
        if isinstance(source, ast.For | ast.AsyncFor):
            return self._range_target(source.iter)
        return self.of(source)

    def _builtin(self, node: ast.expr, *names: str) -> bool:
        return (
            isinstance(node, ast.Name)
            and node.id in names
            and node.id not in self.fn_globals
            and node.id not in self.sources
            and hasattr(builtins, node.id)
        )

    def _range_target(self, it: ast.expr) -> Any:
        """Each value of ``range(start, stop[, step])`` lies between start and stop."""
        if not (isinstance(it, ast.Call) and self._builtin(it.func, "range") and not it.keywords):
            return None
        if not 1 <= len(it.args) <= 3:
            return None
        start = self.of(it.args[0]) if len(it.args) > 1 else (0, 0)
        stop = self.of(it.args[1] if len(it.args) > 1 else it.args[0])
        if start is _EMPTY or stop is _EMPTY:
            return _EMPTY
        if start is None or stop is None:
            return None
        return min(start[0], stop[0]), max(start[1], stop[1])

    def binop(self, op: ast.operator, left: ast.expr, right: ast.expr) -> Any:
        x, y = self.of(left), self.of(right)
        if x is _EMPTY or y is _EMPTY:
            return _EMPTY
        if x is None or y is None:
            return None
        return _binop(type(op), x, y)

    def of(self, e: ast.expr) -> Any:
        """The range of the int expression `e`; None: it may be no int (or unbounded)."""
        if isinstance(e, ast.Constant):
            v = e.value
            return (v, v) if type(v) is int and INT64_MIN <= v <= INT64_MAX else None
        if isinstance(e, ast.Name):
            if e.id in self.ranges:
                return self.ranges[e.id]
            v = self.consts.get(e.id)
            return (v, v) if type(v) is int else None
        if isinstance(e, ast.BinOp):
            return self.binop(e.op, e.left, e.right)
        if isinstance(e, ast.UnaryOp):
            x = self.of(e.operand)
            if x is _EMPTY or x is None:
                return x
            if isinstance(e.op, ast.USub):
                return _clip(-x[1], -x[0])
            if isinstance(e.op, ast.UAdd):
                return x
            if isinstance(e.op, ast.Invert):
                return -x[1] - 1, -x[0] - 1
            return None
        if isinstance(e, ast.IfExp):
            return _join(self.of(e.body), self.of(e.orelse))
        if isinstance(e, ast.Call) and not e.keywords:
            return self._call(e)
        return None  # subscripts (NumPy scalars), attributes, bools, floats, tuples...

    def _call(self, e: ast.Call) -> Any:
        args = [self.of(a) for a in e.args]
        if any(a is _EMPTY for a in args):
            return _EMPTY
        if any(a is None for a in args) or not args:
            return None
        if self._builtin(e.func, "abs") and len(args) == 1:
            lo, hi = args[0]
            if lo >= 0:
                return lo, hi
            return _clip(0 if hi >= 0 else -hi, max(-lo, hi))
        if self._builtin(e.func, "min", "max") and len(args) >= 2:
            pick = min if self._builtin(e.func, "min") else max
            return pick(a[0] for a in args), pick(a[1] for a in args)
        if self._builtin(e.func, "int") and len(args) == 1:
            return args[0]
        return None


_PARAM: Any = object()  # a source: the argument the call was given


def mark_safe_arithmetic(
    fn: ast.FunctionDef,
    params: dict[str, Range | None],
    consts: dict[str, Any],
    fn_globals: dict[str, Any],
) -> int:
    """Mark the ``+ - *`` of `fn` that cannot overflow; returns how many.

    `params` gives each parameter's range (``_FULL`` for an ``int`` hint, None for
    anything else); `consts`, the module constants frozen into the compiled code.
    """
    ranges = _Ranges(fn, params, consts, fn_globals)
    marked = 0
    for node in ast.walk(fn):
        if isinstance(node, ast.BinOp):
            x, y, op = ranges.of(node.left), ranges.of(node.right), type(node.op)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            x = ranges.of(ast.Name(node.target.id, ast.Load()))
            y, op = ranges.of(node.value), type(node.op)
        else:
            continue
        if x is _EMPTY or y is _EMPTY or x is None or y is None:
            continue
        exact = _corners(op, x, y)
        if exact is not None and exact[0] >= INT64_MIN and exact[1] <= INT64_MAX:
            setattr(node, SAFE_ARITH, True)
            marked += 1
    return marked
