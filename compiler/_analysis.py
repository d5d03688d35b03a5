"""Eligibility analysis and the safety rewrite, from the function's source.

``analyze(fn)`` reads the source with ``inspect`` and walks its ``ast``.  It returns
an ``Analysis``: the line-numbered ``Reason``s that keep Numba (and, separately,
Cython) from running the function with Python's exact semantics, the argument and
result kinds taken from the type hints, and, when Numba may compile it, the rewritten
source that Numba compiles.

Why a rewrite: native int64 and IEEE arithmetic differ from Python where Python
raises (division by zero, math domain errors), where its ints grow past 64 bits, and
where it compares an int with a float exactly.  The rewrite routes each such
operation through a checked helper (``cytask.compiler._nbhelpers``) that raises a
flag instead of diverging; loops stop once the flag is up, and the caller then runs
that one call in Python, which produces Python's own answer or exception.
"""

from __future__ import annotations

import ast
import builtins
import copy
import inspect
import sys
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cytask.compiler._counters import SAFE_COUNTER, mark_safe_counters
from cytask.compiler._intervals import SAFE_ARITH, mark_safe_arithmetic

__all__ = ["Analysis", "Reason", "analyze"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT64_RANGE = (INT64_MIN, INT64_MAX)  # what an int argument may be
MAX_NATIVE_ARGS = 8  # CT_MAX_NATIVE_ARGS in pyx/include/ct_native.h

RESERVED_PREFIX = "__ct_"  # every name the rewrite adds starts with it
ERR = "__ct_err"  # the function's own flag (a stack slot's address, see _nbhelpers)
ERR_OUT = "__ct_errout"  # the caller's flag, written when the function returns
USER = "__ct_user"

#: math functions of one float checked for domain and range errors
MATH_1 = frozenset(
    {
        "sqrt", "exp", "expm1", "log", "log2", "log10", "log1p",
        "sin", "cos", "tan", "asin", "acos", "atan",
        "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "fabs",
    }
)  # fmt: skip
MATH_2 = frozenset({"atan2", "hypot", "pow", "copysign"})
MATH_TO_INT = frozenset({"floor", "ceil", "trunc"})
MATH_PRED = frozenset({"isnan", "isinf", "isfinite"})
MATH_CONST = frozenset({"pi", "e", "tau", "inf", "nan"})
NUMPY_OK = frozenset({"zeros", "ones", "empty", "int64", "float64", "bool_", "pi", "e"})
NUMPY_ALLOC = frozenset({"zeros", "ones", "empty"})
BUILTINS_OK = frozenset({"range", "abs", "min", "max", "int", "float", "bool", "len", "pow"})
BUILTINS_IO = frozenset({"print", "open", "input"})
BUILTINS_DYNAMIC = frozenset(
    {"eval", "exec", "globals", "locals", "vars", "compile", "__import__", "breakpoint"}
)
ARRAY_ATTRS = frozenset({"shape", "size", "ndim"})

_BINOP_HELPER: dict[type[ast.operator], str] = {
    ast.Add: "ct_add",
    ast.Sub: "ct_sub",
    ast.Mult: "ct_mul",
    ast.Div: "ct_truediv",
    ast.FloorDiv: "ct_floordiv",
    ast.Mod: "ct_mod",
    ast.Pow: "ct_pow",
    ast.LShift: "ct_lshift",
    ast.RShift: "ct_rshift",
}
_CMP_HELPER: dict[type[ast.cmpop], str] = {
    ast.Lt: "ct_lt",
    ast.LtE: "ct_le",
    ast.Gt: "ct_gt",
    ast.GtE: "ct_ge",
    ast.Eq: "ct_eq",
    ast.NotEq: "ct_ne",
}


@dataclass(frozen=True)
class Reason:
    """Why a function does not compile: the source ``line`` and what to change."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class Analysis:
    """What ``analyze`` found out about one function."""

    fn: Callable[..., Any]
    name: str
    filename: str
    lineno: int
    source: str = ""
    reasons: list[Reason] = field(default_factory=list)
    cython_reasons: list[Reason] = field(default_factory=list)
    arg_names: list[str] = field(default_factory=list)
    #: one of "i", "d", "b", "A" (NumPy array) per argument, or None when not all hinted
    arg_kinds: str | None = None
    result_kind: str | None = None
    #: global name -> "import math" style line for the generated module
    imports: dict[str, str] = field(default_factory=dict)
    #: global name -> value frozen into the compiled code (checked at each call)
    constants: dict[str, int | float | bool] = field(default_factory=dict)
    #: global name of a module -> the attributes of it the code reads (``math.sqrt``):
    #: frozen too, so a patched ``math.sqrt`` sends the call back to Python
    module_attrs: dict[str, list[str]] = field(default_factory=dict)
    #: every global name the function reads (the Cython module gets these injected)
    global_names: list[str] = field(default_factory=list)
    #: the rewritten function (named ``__ct_user``) for Numba, when eligible
    numba_source: str | None = None
    #: the function may return a NumPy scalar (an array's element): the compiled code
    #: reports which one it returned, and there is no C entry point
    np_result: bool = False

    @property
    def native_signature(self) -> bool:
        """All arguments and the result are hinted as int/float/bool: a C entry point."""
        return (
            self.arg_kinds is not None
            and self.result_kind is not None
            and all(k in "idb" for k in self.arg_kinds)
            and len(self.arg_kinds) <= MAX_NATIVE_ARGS
            and not self.np_result
        )


def analyze(fn: Callable[..., Any]) -> Analysis:
    """Analyse ``fn``; never raises for user code (problems become reasons)."""
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    if not isinstance(code, types.CodeType) or not isinstance(fn, types.FunctionType):
        a = Analysis(fn, name, "<unknown>", 0)
        why = Reason(0, f"{type(fn).__name__} is not a plain Python function")
        a.reasons.append(why)
        a.cython_reasons.append(why)
        return a
    a = Analysis(fn, name, code.co_filename, code.co_firstlineno)
    try:
        # the code object, not the function: inspect follows ``__wrapped__`` from a
        # function, and would hand back the source of what a decorator wrapped
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError) as exc:
        why = Reason(0, f"source code is not available ({exc}); define it in a .py file")
        a.reasons.append(why)
        a.cython_reasons.append(why)
        return a
    a.source = textwrap.dedent("".join(lines))
    try:
        module = ast.parse(a.source)
    except SyntaxError:
        why = Reason(first, "source could not be parsed on its own (a lambda?); use a def")
        a.reasons.append(why)
        a.cython_reasons.append(why)
        return a
    node = module.body[0] if module.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        why = Reason(first, "not defined by a def statement (a lambda?); use a def")
        a.reasons.append(why)
        a.cython_reasons.append(why)
        return a
    ast.increment_lineno(module, first - 1)
    a.lineno = node.lineno
    if node.name != code.co_name:
        why = Reason(first, f"the source found for it defines {node.name}, not {code.co_name}")
        a.reasons.append(why)
        a.cython_reasons.append(why)
        return a
    _Checker(a, fn, node).run()
    if not code.co_freevars and not _source_matches(code, fn.__globals__):
        why = Reason(
            a.lineno,
            f"the source of {name} in {code.co_filename} does not match the code that is "
            "loaded (was the file edited after it was imported?); re-import it",
        )
        a.reasons.insert(0, why)
        a.cython_reasons.insert(0, why)
    if not a.reasons:
        a.numba_source = _rewrite(node, a)
    return a


# -- the source is the code that runs ------------------------------------------------

_CODE_FIELDS = (
    "co_code", "co_names", "co_varnames", "co_argcount", "co_posonlyargcount",
    "co_kwonlyargcount", "co_cellvars", "co_freevars", "co_name",
)  # fmt: skip


def _same_code(x: types.CodeType, y: types.CodeType) -> bool:
    if any(getattr(x, f) != getattr(y, f) for f in _CODE_FIELDS):
        return False
    if len(x.co_consts) != len(y.co_consts):
        return False
    for cx, cy in zip(x.co_consts, y.co_consts, strict=True):
        if isinstance(cx, types.CodeType) and isinstance(cy, types.CodeType):
            if not _same_code(cx, cy):
                return False
        elif type(cx) is not type(cy) or repr(cx) != repr(cy):  # repr: -0.0, nan
            return False
    return True


def _find_code(code: types.CodeType, name: str, line: int) -> types.CodeType | None:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_name == name and const.co_firstlineno == line:
                return const
            found = _find_code(const, name, line)
            if found is not None:
                return found
    return None


def _source_matches(code: types.CodeType, module_globals: dict[str, Any]) -> bool:
    """Whether the source found on disk compiles to the function's loaded code.

    The file may have changed since the module was imported (a deploy in progress):
    compiling it would run other code than the Python function does.  The whole file
    is compiled, as the import did (how a method call compiles depends on the
    module's imports).
    """
    import linecache

    text = "".join(linecache.getlines(code.co_filename, module_globals))
    try:
        compiled = compile(text, code.co_filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    found = _find_code(compiled, code.co_name, code.co_firstlineno)
    return found is not None and _same_code(found, code)


# -- type hints -------------------------------------------------------------------


def _kind_of(hint: Any) -> str | None:
    if hint is bool:
        return "b"
    if hint is int:
        return "i"
    if hint is float:
        return "d"
    np = sys.modules.get("numpy")
    if np is not None:
        origin = getattr(hint, "__origin__", hint)
        if origin is np.ndarray:
            return "A"
    return None


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return dict(inspect.get_annotations(fn, eval_str=True))
    except Exception:  # an unresolvable string annotation: treat as unhinted
        return {}


# -- the checker ------------------------------------------------------------------


def _kind_name(node: ast.AST) -> str:
    return {
        ast.Dict: "a dict",
        ast.DictComp: "a dict comprehension",
        ast.Set: "a set",
        ast.SetComp: "a set comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.JoinedStr: "an f-string",
        ast.Lambda: "a lambda",
        ast.ListComp: "a list comprehension",
    }.get(type(node), type(node).__name__)


class _Checker(ast.NodeVisitor):
    """Collects the reasons; resolves global names against the function's globals."""

    def __init__(self, a: Analysis, fn: types.FunctionType, node: ast.AST) -> None:
        self.a = a
        self.fn = fn
        self.node = node
        self.locals: set[str] = set()
        self.seen_globals: set[str] = set()
        self.arrays: set[str] = set()
        #: range() calls in a place that compiles exactly (a for loop, len())
        self.ranges_ok: set[int] = set()
        #: locals that may be a view of an argument array: by name, or a slice
        self.views: set[str] = set()
        #: locals that may be a row of an argument array (an element for 1-D arrays)
        self.rows: set[str] = set()

    def numba(self, node: ast.AST, message: str) -> None:
        reason = Reason(getattr(node, "lineno", self.a.lineno), message)
        if reason not in self.a.reasons:
            self.a.reasons.append(reason)

    def both(self, node: ast.AST, message: str) -> None:
        self.numba(node, message)
        reason = Reason(getattr(node, "lineno", self.a.lineno), message)
        if reason not in self.a.cython_reasons:
            self.a.cython_reasons.append(reason)

    # -- entry --

    def run(self) -> None:
        node = self.node
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        fn = self.fn
        if fn.__code__.co_freevars:
            names = ", ".join(fn.__code__.co_freevars)
            self.both(
                node,
                f"closes over {names} from an enclosing function; "
                "define it at module level and pass these as arguments",
            )
        if isinstance(node, ast.AsyncFunctionDef):
            self.numba(node, "async def: coroutines do not compile; use a plain def")
        args = node.args
        if args.vararg or args.kwarg:
            self.numba(node, "*args/**kwargs: give every argument a name")
        if args.kwonlyargs or args.posonlyargs:
            self.numba(node, "keyword-only or positional-only arguments; use plain arguments")
        self.a.arg_names = [x.arg for x in args.args]
        self.locals.update(self.a.arg_names)
        self.locals.update(fn.__code__.co_freevars)  # reported once, above
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
                self.locals.add(sub.id)
            elif isinstance(sub, ast.arg):
                self.locals.add(sub.arg)
            name = sub.id if isinstance(sub, ast.Name) else getattr(sub, "arg", None)
            if isinstance(name, str) and name.startswith(RESERVED_PREFIX):
                # the rewrite's own names (flags, loop counters): one of the user's
                # would be overwritten by them
                self.numba(sub, f"the name {name}: names starting with {RESERVED_PREFIX} are "
                                "cytask's own in compiled code; rename it")  # fmt: skip
        self._hints(node)
        self._find_views(node)
        body = list(node.body)
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:]  # the docstring
        for stmt in body:
            self.visit(stmt)
        self.a.global_names = sorted(self.seen_globals)

    def _find_views(self, node: ast.AST) -> None:
        """Locals that may share memory with an argument (``b = a``, ``b = a[1:]``)."""
        hints = _hints(self.fn)
        scalar = {n for n in self.a.arg_names if _kind_of(hints.get(n)) in ("i", "d", "b")}
        self.views = {n for n in self.a.arg_names if n not in scalar}
        pairs: list[tuple[ast.expr, ast.expr]] = []
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assign):
                pairs.extend((t, sub.value) for t in sub.targets)
            elif isinstance(sub, ast.AnnAssign | ast.AugAssign) and sub.value is not None:
                pairs.append((sub.target, sub.value))
            elif isinstance(sub, ast.For):
                pairs.append((sub.target, ast.Subscript(sub.iter, ast.Constant(0))))
        changed = True
        while changed:
            changed = False
            for target, value in pairs:
                kind = self._view_kind(value)
                if kind is None:
                    continue
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        into = self.views if kind == "view" else self.rows
                        if t.id not in into and t.id not in self.views:
                            into.add(t.id)
                            changed = True

    def _view_kind(self, value: ast.AST) -> str | None:
        """'view' if ``value`` may be an argument array or a slice of one, 'row' if it
        may be a row of one (an element of a 1-D array), None if neither."""
        if isinstance(value, ast.Name):
            if value.id in self.views:
                return "view"
            return "row" if value.id in self.rows else None
        if isinstance(value, ast.Subscript):
            base: ast.expr = value
            sliced = False
            while isinstance(base, ast.Subscript):
                sliced = sliced or any(isinstance(x, ast.Slice) for x in ast.walk(base.slice))
                base = base.value
            inner = self._view_kind(base)
            if inner is None:
                return None
            return "view" if sliced else "row"
        if isinstance(value, ast.IfExp | ast.BoolOp | ast.Tuple | ast.List | ast.NamedExpr):
            parts = [self._view_kind(c) for c in ast.iter_child_nodes(value)]
            if "view" in parts:
                return "view"
            return "row" if "row" in parts else None
        return None

    def _hints(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        hints = _hints(self.fn)
        kinds: list[str] = []
        for name in self.a.arg_names:
            if name not in hints:
                break
            kind = _kind_of(hints[name])
            if kind is None:
                self.numba(
                    node,
                    f"argument {name!r} is hinted as {_hint_name(hints[name])}; "
                    "only int, float, bool and NumPy arrays compile",
                )
                break
            kinds.append(kind)
            if kind == "A":
                self.arrays.add(name)
        else:
            self.a.arg_kinds = "".join(kinds)
        if "return" in hints:
            kind = _kind_of(hints["return"])
            if kind in ("i", "d", "b"):
                self.a.result_kind = kind

    # -- statements --

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.numba(node, "defines a nested function; move it to module level")

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.numba(node, "defines a nested coroutine; move it to module level")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.numba(node, "defines a class inside the task")

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.numba(node, "uses a lambda; write the expression inline")

    def visit_Global(self, node: ast.Global) -> None:
        self.both(
            node,
            f"writes the global {', '.join(node.names)}; compiled code cannot rebind "
            "module globals: return the value instead",
        )

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.numba(node, f"nonlocal {', '.join(node.names)}: closures do not compile")

    def visit_Try(self, node: ast.Try | ast.TryStar) -> None:
        self.numba(node, "try/except: Numba's nopython mode cannot catch exceptions here")
        self.generic_visit(node)

    visit_TryStar = visit_Try

    def visit_Raise(self, node: ast.Raise) -> None:
        self.numba(node, "raise: exceptions raised by compiled code lose their message")

    def visit_Assert(self, node: ast.Assert) -> None:
        self.numba(node, "assert: use an explicit check that returns a value")

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        self.numba(node, "with statement: context managers do not compile")
        self.generic_visit(node)

    visit_AsyncWith = visit_With

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self.numba(node, "async for does not compile")

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.numba(node, "imports inside the task; import at module level")

    visit_ImportFrom = visit_Import

    def visit_Delete(self, node: ast.Delete) -> None:
        self.numba(node, "del statement")

    def visit_Match(self, node: ast.Match) -> None:
        self.numba(node, "match statement does not compile")

    def visit_Yield(self, node: ast.Yield | ast.YieldFrom) -> None:
        self.numba(node, "yield: generators do not compile; return a value")

    visit_YieldFrom = visit_Yield

    def visit_Await(self, node: ast.Await) -> None:
        self.numba(node, "await: coroutines do not compile")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_store(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store(node.target)
        # (an in-place operation on an array is refused when Numba types it: ct_iadd)
        if type(node.op) is ast.MatMult:
            self.numba(node, "the @ operator does not compile here")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_store(node.target)
        if node.value is not None:
            self.visit(node.value)

    def _check_store(self, target: ast.AST) -> None:
        if isinstance(target, ast.Attribute):
            self.numba(target, "assigns to an attribute; compiled code has no objects")
        elif isinstance(target, ast.Subscript):
            base = target.value
            while isinstance(base, ast.Subscript):
                base = base.value
            if isinstance(base, ast.Name) and base.id in self.a.arg_names:
                self.numba(
                    target,
                    f"writes into the argument {base.id!r}; a call handed back to Python "
                    "would repeat the write: return a new array instead",
                )
            elif isinstance(base, ast.Name) and base.id in self.views | self.rows:
                self.numba(
                    target,
                    f"writes through {base.id!r}, which may share memory with an argument "
                    "array; a call handed back to Python would repeat the write: copy it "
                    "into a new array (np.zeros, then a loop) instead",
                )
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._check_store(elt)
        elif isinstance(target, ast.Starred):
            self.numba(target, "starred assignment does not compile")

    # -- expressions --

    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, str | bytes):
            self.numba(node, "string operations: Numba's nopython mode supports few of them")
        elif isinstance(v, complex):
            self.numba(node, "complex numbers are not supported")
        elif isinstance(v, int) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
            self.numba(node, f"the integer literal {v} does not fit in int64")
        elif v is None or v is Ellipsis:
            self.numba(node, f"{v!r} as a value does not compile; return a number")

    def generic_unsupported(self, node: ast.AST) -> None:
        self.numba(node, f"{_kind_name(node)} does not compile in nopython mode")
        self.generic_visit(node)

    visit_Dict = visit_DictComp = visit_Set = visit_SetComp = generic_unsupported
    visit_GeneratorExp = visit_JoinedStr = visit_ListComp = generic_unsupported

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.numba(node, "assignment expression (:=); assign on a line of its own")
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        it = node.iter
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range":
            self.ranges_ok.add(id(it))
        self.generic_visit(node)

    def visit_Starred(self, node: ast.Starred) -> None:
        self.numba(node, "star-unpacking in a call does not compile")

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) is ast.MatMult:
            self.numba(node, "the @ operator does not compile here")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op in node.ops:
            if type(op) not in _CMP_HELPER:
                sym = {ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
                self.numba(node, f"the {sym.get(type(op), '?')!r} operator does not compile")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = node.value
        if isinstance(base, ast.Name) and base.id not in self.locals:
            mod = self._global(base.id, node)
            if isinstance(mod, types.ModuleType):
                self._module_attr(mod, node)
            return
        if isinstance(base, ast.Name) and base.id in self.locals and node.attr in ARRAY_ATTRS:
            return
        self.numba(node, f"attribute .{node.attr}: method calls and objects do not compile")
        self.generic_visit(node)

    def _module_attr(self, mod: types.ModuleType, node: ast.Attribute) -> None:
        attr = node.attr
        if mod.__name__ == "math":
            if attr in MATH_1 | MATH_2 | MATH_TO_INT | MATH_PRED | MATH_CONST:
                self._read_attr(node, attr)
                return
            self.numba(node, f"math.{attr} is not among the functions compiled exactly")
        elif mod.__name__ == "numpy":
            if attr in NUMPY_OK:
                self._read_attr(node, attr)
                return
            self.numba(
                node,
                f"numpy.{attr}: Numba's version may round differently from NumPy's; "
                "write the loop out",
            )
        else:
            self.numba(node, f"uses the module {mod.__name__}, which does not compile")

    def _read_attr(self, node: ast.Attribute, attr: str) -> None:
        assert isinstance(node.value, ast.Name)
        attrs = self.a.module_attrs.setdefault(node.value.id, [])
        if attr not in attrs:
            attrs.append(attr)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if node.keywords and not _is_numpy_attr(func, self):
            self.numba(node, "keyword arguments in a call; pass them by position")
        if isinstance(func, ast.Name) and func.id not in self.locals:
            if self._global(func.id, func) is _BUILTIN:
                self._builtin_name(func.id, func)
                self._builtin_call(func.id, node)
        elif isinstance(func, ast.Attribute):
            self.visit(func)
        else:
            self.numba(node, "calls something that is not a known function")
            self.visit(func)
        for arg in node.args:
            self.visit(arg)
        for kw in node.keywords:
            self.visit(kw.value)

    def _builtin_call(self, name: str, node: ast.Call) -> None:
        if name == "len" and len(node.args) == 1:
            arg = node.args[0]
            if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name):
                self.ranges_ok.add(id(arg))
        if name == "range" and id(node) not in self.ranges_ok:
            self.numba(
                node,
                "range() as a value: only `for ... in range(...)` and `len(range(...))` "
                "compile exactly",
            )
        elif name == "range" and not 1 <= len(node.args) <= 3:
            self.numba(node, "range() takes 1 to 3 arguments")
        if name == "min" or name == "max":
            if len(node.args) < 2:
                self.numba(node, f"{name}() of one iterable; pass the values as arguments")
        elif name == "pow" and len(node.args) != 2:
            self.numba(node, "pow() with a modulus does not compile")

    def visit_Name(self, node: ast.Name) -> None:
        loads_global = isinstance(node.ctx, ast.Load) and node.id not in self.locals
        if loads_global and self._global(node.id, node) is _BUILTIN:
            self._builtin_name(node.id, node)

    def _builtin_name(self, name: str, node: ast.AST) -> None:
        if name not in BUILTINS_OK | BUILTINS_IO | BUILTINS_DYNAMIC:
            self.numba(node, f"the builtin {name} does not compile in nopython mode")

    def _global(self, name: str, node: ast.AST) -> Any:
        """Resolve a free name; record what the generated module needs; return it."""
        fn = self.fn
        self.seen_globals.add(name)
        g = fn.__globals__
        if name in g:
            value = g[name]
        elif hasattr(builtins, name):
            if name in BUILTINS_IO:
                self.numba(node, f"{name}() performs I/O; do I/O outside the compiled task")
            elif name in BUILTINS_DYNAMIC:
                self.both(node, f"{name}() needs the interpreter's frames and does not compile")
            return _BUILTIN
        else:
            self.numba(node, f"the name {name!r} is not defined")
            return None
        if isinstance(value, types.ModuleType):
            if value.__name__ in ("math", "numpy"):
                self.a.imports[name] = f"import {value.__name__} as {name}"
            else:
                self.numba(node, f"uses the module {value.__name__}, which does not compile")
            return value
        if value is fn or getattr(value, "fn", None) is fn:
            self.numba(node, f"calls itself recursively ({name}); write it as a loop")
            return value
        if getattr(value, "__module__", None) == "math" and callable(value):
            fname = getattr(value, "__name__", "")
            if fname in MATH_1 | MATH_2 | MATH_TO_INT | MATH_PRED:
                self.a.imports[name] = f"from math import {fname} as {name}"
            else:
                self.numba(node, f"math.{fname} is not among the functions compiled exactly")
            return value
        if type(value) in (int, float, bool):
            if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                self.numba(node, f"the global {name} = {value} does not fit in int64")
            else:
                self.a.constants[name] = value
            return value
        if callable(value):
            self.numba(
                node,
                f"calls the Python function {name}(); compiled code cannot call back "
                "into Python: inline it",
            )
        else:
            self.numba(
                node,
                f"reads the global {name!r} ({type(value).__name__}); pass it as an argument",
            )
        return value


_BUILTIN = object()


def _is_numpy_attr(func: ast.AST, checker: _Checker) -> bool:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        mod = checker.fn.__globals__.get(func.value.id)
        return isinstance(mod, types.ModuleType) and mod.__name__ == "numpy"
    return False


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)


# -- possibly unbound locals ----------------------------------------------------------
# Numba gives a local that no path assigned a value of zero (or whatever the register
# held); Python raises UnboundLocalError.  Each load of a local that is not assigned
# on every path to it reads it through ``ct_bound(x, __ct_d_x, err)``, where the
# boolean ``__ct_d_x`` is set after each assignment: an unbound read raises the flag.

UNBOUND = "_ct_unbound"  # attribute set on a Name load (or an AugAssign) to check
BOUND_PREFIX = "__ct_d_"
BLOCK = 256  # the iterations of a range loop between two tests of the flag, see _block
SHORT_LOOP = 8  # an inner range loop this short tests the flag at each iteration instead
PEEL_MAX_NODES = 400  # the largest loop body (in AST nodes) compiled twice, see _peel
NP_PREFIX = "__ct_n_"
_ALL = None  # an unreachable point: every name is (vacuously) assigned


def _targets(node: ast.AST) -> set[str]:
    return {t.id for t in ast.walk(node) if isinstance(t, ast.Name)}


class _Unbound:
    """Forward "definitely assigned" analysis over a function body."""

    def __init__(self, local_names: set[str]) -> None:
        self.local_names = local_names
        self.needs: set[str] = set()  # names with at least one checked load
        self.loops: list[list[frozenset[str] | None]] = []  # the sets at each break

    def loads(self, node: ast.AST | None, d: frozenset[str] | None) -> None:
        if node is None or d is _ALL:
            return
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Name)
                and isinstance(sub.ctx, ast.Load)
                and sub.id in self.local_names
                and sub.id not in d
            ):
                setattr(sub, UNBOUND, True)
                self.needs.add(sub.id)

    @staticmethod
    def meet(x: frozenset[str] | None, y: frozenset[str] | None) -> frozenset[str] | None:
        if x is _ALL:
            return y
        if y is _ALL:
            return x
        return x & y

    def block(self, body: list[ast.stmt], d: frozenset[str] | None) -> frozenset[str] | None:
        for stmt in body:
            d = self.stmt(stmt, d)
        return d

    def stmt(self, node: ast.stmt, d: frozenset[str] | None) -> frozenset[str] | None:
        if d is _ALL:
            return _ALL
        if isinstance(node, ast.Assign):
            self.loads(node.value, d)
            for t in node.targets:
                if not isinstance(t, ast.Name):
                    self.loads(t, d)  # the array and index of a subscript store
            return d | {n for t in node.targets if not isinstance(t, ast.Subscript)
                        for n in _targets(t)}  # fmt: skip
        if isinstance(node, ast.AnnAssign):
            if node.value is None:
                return d
            self.loads(node.value, d)
            return d | _targets(node.target)
        if isinstance(node, ast.AugAssign):
            self.loads(node.value, d)
            t = node.target
            if isinstance(t, ast.Name):
                if t.id in self.local_names and t.id not in d:
                    setattr(node, UNBOUND, True)
                    self.needs.add(t.id)
                return d | {t.id}
            self.loads(t, d)
            return d
        if isinstance(node, ast.If):
            self.loads(node.test, d)
            return self.meet(self.block(node.body, d), self.block(node.orelse, d))
        if isinstance(node, ast.While):
            self.loads(node.test, d)
            self.loops.append([])
            self.block(node.body, d)
            breaks = self.loops.pop()
            forever = isinstance(node.test, ast.Constant) and bool(node.test.value)
            out = _ALL if forever else self.block(node.orelse, d)
            for b in breaks:
                out = self.meet(out, b)
            return out
        if isinstance(node, ast.For):
            self.loads(node.iter, d)
            self.loops.append([])
            self.block(node.body, d | _targets(node.target))
            breaks = self.loops.pop()
            out = self.block(node.orelse, d)  # (the loop may run zero times)
            for b in breaks:
                out = self.meet(out, b)
            return out
        if isinstance(node, ast.Break):
            if self.loops:
                self.loops[-1].append(d)
            return _ALL
        if isinstance(node, ast.Continue):
            return _ALL
        if isinstance(node, ast.Return):
            self.loads(node.value, d)
            return _ALL
        self.loads(node, d)
        return d


# -- NumPy scalars -----------------------------------------------------------------
# An array's element is a NumPy scalar in Python (np.int64, np.float64, np.bool_) and
# so is arithmetic on one; Numba returns plain numbers.  The kind of each value is
# "p" (a Python number, or not a scalar), "n" (a NumPy scalar) or "m" (depends on the
# path: the local ``__ct_n_x`` says which at run time); None: cannot be told.

_NP_SCALARS = frozenset({"int64", "float64", "bool_"})


class _NpKinds:
    def __init__(self, fn_node: ast.FunctionDef, a: Analysis) -> None:
        self.a = a
        self.g = a.fn.__globals__
        self.kinds: dict[str, str | None] = {}
        self.env: dict[str, str | None] = {}
        self.tuples: set[str] = set()  # locals assigned tuple displays
        self.pairs: list[tuple[ast.expr, ast.expr]] = []
        for sub in ast.walk(fn_node):
            if isinstance(sub, ast.Assign):
                self.pairs.extend((t, sub.value) for t in sub.targets)
            elif isinstance(sub, ast.AnnAssign) and sub.value is not None:
                self.pairs.append((sub.target, sub.value))
            elif isinstance(sub, ast.AugAssign):
                self.pairs.append((sub.target, ast.BinOp(_as_load(sub.target), sub.op, sub.value)))
            elif isinstance(sub, ast.For):
                self.pairs.append((sub.target, _ElementOf(sub.iter)))
        shape_all: dict[str, bool] = {}  # local -> every value assigned is an ``x.shape``
        for target, value in self.pairs:
            if isinstance(target, ast.Name) and isinstance(value, ast.Tuple):
                self.tuples.add(target.id)
            if isinstance(target, ast.Name):
                shape_all[target.id] = shape_all.get(target.id, True) and _is_shape(value)
        # an array's shape is a tuple of Python ints, never of NumPy scalars
        self.shapes = {n for n, every in shape_all.items() if every}
        self.local_names = {n for t, _ in self.pairs for n in _targets(t)}
        for _ in range(2 * len(self.pairs) + 2):  # a fixpoint: kinds only grow
            before = dict(self.kinds)
            self.env = before
            self.kinds = {}
            for target, value in self.pairs:
                if isinstance(target, ast.Name):
                    self._merge(target.id, self.kind(value))
                elif isinstance(target, ast.Tuple | ast.List):
                    elts = value.elts if isinstance(value, ast.Tuple | ast.List) else None
                    for j, t in enumerate(target.elts):
                        k = self.kind(elts[j]) if elts and j < len(elts) else self.kind(value)
                        for n in _targets(t):
                            self._merge(n, k)
            if before == self.kinds:
                break
        self.env = self.kinds

    def _merge(self, name: str, k: str | None) -> None:
        if k == "_":
            return
        if name not in self.kinds:
            self.kinds[name] = k
            return
        old = self.kinds[name]
        if old is None or k is None:
            self.kinds[name] = None
        elif old != k:
            self.kinds[name] = "m"

    def _is_shape(self, e: ast.AST) -> bool:
        """``e`` is an array's shape (``arr.shape``, or a local only ever assigned one)."""
        return _is_shape(e) or (isinstance(e, ast.Name) and e.id in self.shapes)

    def _global(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Name) and node.id not in self.kinds:
            return self.g.get(node.id, getattr(builtins, node.id, None))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            mod = self.g.get(node.value.id)
            if isinstance(mod, types.ModuleType):
                return (mod.__name__, node.attr)
        return None

    @staticmethod
    def join(ks: list[str | None], select: bool) -> str | None:
        """The kind of an operation on values of kinds ``ks``; ``select``: it returns
        one of them (min, max, and, or, if-else)."""
        ks = [k for k in ks if k != "_"]
        if not ks:
            return "_"
        if None in ks:
            return None
        if select:
            return ks[0] if all(k == ks[0] for k in ks) and ks[0] != "m" else None
        if "n" in ks:
            return "n"
        return "m" if "m" in ks else "p"

    def kind(self, e: ast.AST) -> str | None:
        if isinstance(e, _ElementOf):
            it = e.iter
            if isinstance(it, ast.Call) and self._global(it.func) is range:
                return "p"
            if self._is_shape(it):
                return "p"
            if isinstance(it, ast.Tuple | ast.List):  # for v in (k, 2): one of the elements
                return self.join([self.kind(x) for x in it.elts], True)
            if isinstance(it, ast.Name) and it.id in self.tuples:
                return "p" if self.env.get(it.id, "p") == "p" else None
            return "n"
        if isinstance(e, ast.Constant):
            return "p"
        if isinstance(e, ast.Name):
            if e.id in self.local_names:
                return self.env.get(e.id, "_")  # "_": not known yet
            return "p"  # an argument (never a NumPy scalar) or a frozen constant
        if isinstance(e, ast.Subscript):
            if self._is_shape(e.value):
                return "p"  # arr.shape[0]: a Python int
            if isinstance(e.value, ast.Name) and e.value.id in self.tuples:
                return "p" if self.env.get(e.value.id, "p") == "p" else None
            return "n"
        if isinstance(e, ast.Attribute):
            return "p"  # .shape, .size, .ndim, math constants
        if isinstance(e, ast.BinOp):
            return self.join([self.kind(e.left), self.kind(e.right)], False)
        if isinstance(e, ast.UnaryOp):
            return "p" if isinstance(e.op, ast.Not) else self.kind(e.operand)
        if isinstance(e, ast.Compare):
            ks = [self.kind(e.left), *(self.kind(c) for c in e.comparators)]
            if len(e.ops) > 1 and any(k != "p" for k in ks):
                return None  # a chain returns the first false comparison
            return self.join(ks, False)
        if isinstance(e, ast.BoolOp):
            return self.join([self.kind(v) for v in e.values], True)
        if isinstance(e, ast.IfExp):
            return self.join([self.kind(e.body), self.kind(e.orelse)], True)
        if isinstance(e, ast.Tuple | ast.List):
            return "p" if all(self.kind(x) == "p" for x in e.elts) else None
        if isinstance(e, ast.Call):
            f = self._global(e.func)
            if f in (int, float, bool, len, range):
                return "p"
            if isinstance(f, tuple):
                if f[0] == "numpy" and f[1] in _NP_SCALARS:
                    return "n"
                return "p"  # math functions, NumPy array constructors
            if f is abs:
                return self.kind(e.args[0]) if e.args else None
            if f in (min, max):
                return self.join([self.kind(x) for x in e.args], True)
            if f is pow:
                return self.join([self.kind(x) for x in e.args], False)
            if getattr(f, "__module__", None) == "math":
                return "p"
            return None
        return None

    def dyn(self, e: ast.AST) -> ast.expr:
        """A boolean expression: is ``e`` a NumPy scalar (kind "n" or "m")."""
        k = self.kind(e)
        if k != "m":
            return ast.Constant(k == "n")
        if isinstance(e, ast.Name):
            if e.id in self.local_names:
                return ast.Name(NP_PREFIX + e.id, ast.Load())
            return ast.Constant(False)
        if isinstance(e, ast.BinOp):
            return ast.BoolOp(ast.Or(), [self.dyn(e.left), self.dyn(e.right)])
        if isinstance(e, ast.Compare):
            return ast.BoolOp(ast.Or(), [self.dyn(x) for x in [e.left, *e.comparators]])
        if isinstance(e, ast.UnaryOp):
            return self.dyn(e.operand)
        if isinstance(e, ast.Call) and e.args:
            return ast.BoolOp(ast.Or(), [self.dyn(x) for x in e.args])
        return ast.Constant(True)  # not reached: other kinds are never "m"


def _is_shape(e: ast.AST) -> bool:
    return isinstance(e, ast.Attribute) and e.attr == "shape"


class _ElementOf(ast.expr):
    """An element of the iterable ``iter`` (a for loop's target)."""

    def __init__(self, it: ast.expr) -> None:
        super().__init__()
        self.iter = it


# -- the rewrite ------------------------------------------------------------------


def _err() -> ast.Name:
    return ast.Name(ERR, ast.Load())


def _flag_up() -> ast.Compare:
    flag = ast.Call(ast.Name("ct_flag", ast.Load()), [_err()], [])
    return ast.Compare(flag, [ast.NotEq()], [ast.Constant(0)])


def _helper(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(name, ast.Load()), [*args, _err()], [])


class _Rewriter(ast.NodeTransformer):
    def __init__(self, a: Analysis, unbound: set[str], mixed: set[str], np_kinds: _NpKinds) -> None:
        self.a = a
        self.unbound = unbound  # locals read through ct_bound somewhere
        self.mixed = mixed  # locals that hold a NumPy scalar on some paths only
        self.np_kinds = np_kinds
        self.loops = 0  # a counter for the names of range loops
        self.depth = 0  # the for loops around the node being rewritten
        self.numpy_modules = {
            n for n, v in a.fn.__globals__.items()
            if isinstance(v, types.ModuleType) and v.__name__ == "numpy"
        }  # fmt: skip
        self.math_names: dict[str, str] = {}  # global name -> math function name
        g = a.fn.__globals__
        self.math_modules = {
            n for n, v in g.items() if isinstance(v, types.ModuleType) and v.__name__ == "math"
        }
        for n in a.imports:
            v = g.get(n)
            if not isinstance(v, types.ModuleType) and getattr(v, "__module__", None) == "math":
                self.math_names[n] = str(getattr(v, "__name__", n))

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        helper = _BINOP_HELPER.get(type(node.op))
        if helper is None:
            return node
        if getattr(node, SAFE_ARITH, False):  # cannot overflow: see _intervals
            wrapped = ast.Call(
                ast.Name(f"{helper}_wrapped", ast.Load()), [node.left, node.right], []
            )
            return ast.copy_location(wrapped, node)
        return ast.copy_location(_helper(helper, node.left, node.right), node)

    # -- assignments: shadow locals, checked stores --

    def _after(self, target: ast.expr, value: ast.expr | None) -> list[ast.stmt]:
        """What to set after ``target = value``: bound flags, NumPy-scalar flags."""
        out: list[ast.stmt] = []
        pairs: list[tuple[ast.expr, ast.expr | None]] = [(target, value)]
        if isinstance(target, ast.Tuple | ast.List):
            elts = value.elts if isinstance(value, ast.Tuple | ast.List) else None
            pairs = [
                (t, elts[j] if elts is not None and j < len(elts) else None)
                for j, t in enumerate(target.elts)
            ]
        shadows: list[tuple[str, ast.expr]] = []
        for t, v in pairs:
            if not isinstance(t, ast.Name):
                continue
            if t.id in self.unbound:
                out.append(_set(BOUND_PREFIX + t.id, ast.Constant(True)))
            if t.id in self.mixed:
                is_np = self.np_kinds.dyn(v) if v is not None else ast.Constant(False)
                shadows.append((NP_PREFIX + t.id, is_np))
        if len(shadows) == 1:
            out.append(_set(*shadows[0]))
        elif shadows:  # all at once, as Python assigns ``x, y = y, x``
            names: list[ast.expr] = [ast.Name(n, ast.Store()) for n, _ in shadows]
            values = ast.Tuple([v for _, v in shadows], ast.Load())
            out.append(ast.Assign([ast.Tuple(names, ast.Store())], values))
        return out

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if getattr(node, UNBOUND, False):
            flag = ast.Name(BOUND_PREFIX + node.id, ast.Load())
            return ast.copy_location(_helper("ct_bound", node, flag), node)
        return node

    def _store(self, target: ast.expr, value: ast.expr) -> ast.expr:
        """``a[i] = v``: checked where NumPy would raise (a float into an int array)."""
        if isinstance(target, ast.Subscript):
            return _helper("ct_store", _as_load(target.value), value)
        return value

    def visit_Assign(self, node: ast.Assign) -> list[ast.stmt]:
        after = [s for t in node.targets for s in self._after(t, node.value)]
        self.generic_visit(node)
        if len(node.targets) == 1:
            node.value = self._store(node.targets[0], node.value)
        return [node, *after]

    def visit_AnnAssign(self, node: ast.AnnAssign) -> list[ast.stmt]:
        after = self._after(node.target, node.value) if node.value is not None else []
        self.generic_visit(node)
        if node.value is not None:
            node.value = self._store(node.target, node.value)
        return [node, *after]

    def visit_AugAssign(self, node: ast.AugAssign) -> list[ast.stmt]:
        # Python changes an array in place (the caller's, or one an alias shares);
        # ``a = a + b`` would not: ct_inplace refuses arrays when Numba types it
        whole = ast.BinOp(_as_load(node.target), node.op, node.value)
        after = self._after(node.target, whole)
        self.generic_visit(node)
        load: ast.expr = _as_load(node.target)
        if isinstance(load, ast.Name) and getattr(node, UNBOUND, False):
            load = _helper("ct_bound", load, ast.Name(BOUND_PREFIX + load.id, ast.Load()))
        load = _helper("ct_inplace", load)
        helper = _BINOP_HELPER.get(type(node.op))
        value: ast.expr = (
            _helper(helper, load, node.value)
            if helper is not None
            else ast.BinOp(load, node.op, node.value)
        )
        if getattr(node, SAFE_COUNTER, False):  # see _counters (never a dummy: plain +)
            value = ast.BinOp(load, node.op, node.value)
        elif getattr(node, SAFE_ARITH, False) and helper is not None:  # see _intervals
            value = ast.Call(ast.Name(f"{helper}_wrapped", ast.Load()), [load, node.value], [])
        assign = ast.Assign([node.target], self._store(node.target, value))
        return [ast.copy_location(assign, node), *after]

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        if isinstance(node.op, ast.USub):
            return ast.copy_location(_helper("ct_neg", node.operand), node)
        if isinstance(node.op, ast.Invert):
            return ast.copy_location(_helper("ct_invert", node.operand), node)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        parts: list[ast.expr] = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(_helper(_CMP_HELPER[type(op)], left, right))
            left = right
        out: ast.expr = parts[0] if len(parts) == 1 else ast.BoolOp(ast.And(), parts)
        return ast.copy_location(out, node)

    def visit_Call(self, node: ast.Call) -> ast.expr:
        if _is_range(node, self.a):
            return self._range(node)
        self.generic_visit(node)
        func = node.func
        math_fn: str | None = None
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.math_modules
        ):
            math_fn = func.attr
        elif isinstance(func, ast.Name) and func.id in self.math_names:
            math_fn = self.math_names[func.id]
        if math_fn is not None and math_fn not in MATH_PRED:
            return ast.copy_location(_helper(f"ct_m_{math_fn}", *node.args), node)
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.numpy_modules
            and func.attr == "int64"
            and len(node.args) == 1
        ):
            # NumPy raises for nan, inf and floats past int64; a C cast would not
            return ast.copy_location(_helper("ct_np_int64", node.args[0]), node)
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.numpy_modules
            and func.attr in NUMPY_ALLOC
        ):
            # a size computed after the flag went up is a dummy: allocate nothing
            if node.args:
                node.args[0] = _helper("ct_size", node.args[0])
            for kw in node.keywords:
                if kw.arg == "shape":
                    kw.value = _helper("ct_size", kw.value)
            return node
        if not isinstance(func, ast.Name) or func.id in self.a.fn.__globals__:
            return node
        name = func.id
        if name == "len" and len(node.args) == 1 and _is_range(node.args[0], self.a):
            rng = node.args[0]
            assert isinstance(rng, ast.Call)
            return ast.copy_location(_helper("ct_range_len", *_range_args(rng)), node)
        if name in ("abs", "int", "pow"):
            return ast.copy_location(_helper(f"ct_{name}", *node.args), node)
        if name in ("min", "max"):
            acc = node.args[0]
            for arg in node.args[1:]:
                acc = _helper(f"ct_{name}", acc, arg)
            return ast.copy_location(acc, node)
        return node

    def _range(self, node: ast.Call) -> ast.Call:
        """``range(...)``, each argument checked to be one Python accepts.

        Numba also counts to a float and to a NumPy bool; Python raises TypeError
        for both (``np.bool_`` has no ``__index__``).  ``ct_index`` refuses floats
        and raises the flag for a NumPy bool (``is_np``: whether the argument is a
        NumPy scalar; assumed when that cannot be told).
        """
        is_np = [
            ast.Constant(True) if self.np_kinds.kind(x) is None else self.np_kinds.dyn(x)
            for x in node.args
        ]
        self.generic_visit(node)
        node.args = [_helper("ct_index", x, np_) for x, np_ in zip(node.args, is_np, strict=True)]
        return node

    def visit_While(self, node: ast.While) -> ast.stmt:
        self.generic_visit(node)
        ok = ast.UnaryOp(ast.Not(), _flag_up())
        node.test = ast.BoolOp(ast.And(), [ok, node.test])
        return node

    def visit_For(self, node: ast.For) -> ast.stmt | list[ast.stmt]:
        after = self._after(node.target, None)
        if isinstance(node.target, ast.Name) and node.target.id in self.mixed:
            is_np = self.np_kinds.dyn(_ElementOf(node.iter))
            after = [s for s in after if not _sets(s, NP_PREFIX + node.target.id)]
            after.append(_set(NP_PREFIX + node.target.id, is_np))
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1
        it = node.iter
        pre: list[ast.stmt] = []
        if _is_range(it, self.a) and isinstance(it, ast.Call) and len(it.args) >= 2:
            # Numba's range computes its length in int64, which overflows for ranges
            # of more than 2**63 - 1 steps (and for some shorter ones with big bounds):
            # count exactly (flag past int64) and compute each value by wrapping
            self.loops += 1
            r = f"__ct_r{self.loops}"
            k = f"__ct_k{self.loops}"
            pre.append(_set(r, _helper("ct_range", *_range_args(it))))
            count = ast.Subscript(ast.Name(r, ast.Load()), ast.Constant(2), ast.Load())
            node.iter = ast.Call(ast.Name("range", ast.Load()), [count], [])
            at = ast.Call(
                ast.Name("ct_range_at", ast.Load()),
                [ast.Name(r, ast.Load()), ast.Name(k, ast.Load())],
                [],
            )
            target = node.target
            node.target = ast.Name(k, ast.Store())
            after.insert(0, ast.Assign([target], at))
        node.body[:0] = [ast.If(_flag_up(), [ast.Break()], []), *after]
        if not pre and _peelable(node, self.a):
            return self._peel(node)
        if _is_range(node.iter, self.a) and _blockable(node):
            assert isinstance(node.iter, ast.Call)
            start, stop = (
                (ast.Constant(0), *node.iter.args) if len(node.iter.args) == 1 else node.iter.args
            )
            return [*pre, *self._block(node, start, stop)]
        return [*pre, node] if pre else node

    def _block(self, node: ast.For, start: ast.expr, stop: ast.expr) -> list[ast.stmt]:
        """``for t in range(start, stop)`` in blocks of ``BLOCK`` iterations.

        The flag is tested once per block instead of once per iteration, so the inner
        loop has one exit and LLVM unrolls and schedules it as it would hand-written
        code (it unrolls ``range(m)``, not ``range(s, e)``, so ``t`` is ``s + j``).  A
        raised flag still ends the loop, at most ``BLOCK - 1`` iterations late; those
        run on dummy values whose results are thrown away (the call runs again in
        Python), and every inner loop tests the flag before it starts.  Only for a
        body without a ``break`` of its own, which would end the block instead of the
        loop.
        """
        assert isinstance(node.target, ast.Name)
        self.loops += 1
        s, m, b, j = (f"__ct_{x}{self.loops}" for x in "smbj")

        def load(name: str) -> ast.Name:
            return ast.Name(name, ast.Load())

        short: ast.For | None = None
        if self.depth > 0:
            # an inner loop may be entered millions of times for a few iterations:
            # then the flag test at each one costs less than a block's set-up
            short = copy.deepcopy(node)
            short.iter = ast.Call(load("range"), [load(s), load(b)], [])

        at = ast.Assign([node.target], ast.BinOp(load(s), ast.Add(), load(j)))
        node.body = [at, *node.body[1:]]  # (without the per-iteration flag test)
        node.target = ast.Name(j, ast.Store())
        node.iter = ast.Call(load("range"), [load(m)], [])
        left = ast.BinOp(load(b), ast.Sub(), load(s))
        more = ast.Compare(load(s), [ast.Lt()], [load(b)])
        blocks = ast.While(
            ast.BoolOp(ast.And(), [more, ast.UnaryOp(ast.Not(), _flag_up())]),
            [
                _set(m, ast.Call(load("min"), [ast.Constant(BLOCK), left], [])),
                node,
                ast.AugAssign(ast.Name(s, ast.Store()), ast.Add(), load(m)),
            ],
            [],
        )
        if short is None:
            return [_set(b, stop), _set(s, start), blocks]
        few = ast.Compare(
            ast.BinOp(load(b), ast.Sub(), load(s)), [ast.LtE()], [ast.Constant(SHORT_LOOP)]
        )
        return [_set(b, stop), _set(s, start), ast.If(few, [short], [blocks])]

    def _peel(self, node: ast.For) -> list[ast.stmt]:
        """``for t in range(n)``: the first iteration on its own, then the rest.

        After one pass of the body, LLVM knows the ranges of the values the loop
        carries (``x = (x * C + D) & 0x7FFFFFFF`` is below 2**31 whatever ``x`` started
        as), and drops the overflow checks those ranges make impossible.  Only for a
        body without break, continue, return or inner loops, where the two forms are
        the same program.
        """
        assert isinstance(node.iter, ast.Call)
        self.loops += 1
        count = f"__ct_p{self.loops}"
        n = node.iter.args[0]  # evaluated once, as range() does
        body = node.body[1:]  # (without the flag check, which needs a loop)
        first: list[ast.stmt] = [
            ast.Assign([copy.deepcopy(node.target)], ast.Constant(0)),
            *copy.deepcopy(body),
        ]
        node.iter = ast.Call(
            ast.Name("range", ast.Load()), [ast.Constant(1), ast.Name(count, ast.Load())], []
        )
        go = ast.BoolOp(
            ast.And(),
            [
                ast.Compare(ast.Name(count, ast.Load()), [ast.Gt()], [ast.Constant(0)]),
                ast.UnaryOp(ast.Not(), _flag_up()),
            ],
        )
        rest: list[ast.stmt] = [node]
        if _blockable(node):
            rest = self._block(node, ast.Constant(1), ast.Name(count, ast.Load()))
        return [_set(count, n), ast.If(go, [*first, *rest], [])]

    def visit_Return(self, node: ast.Return) -> ast.stmt | list[ast.stmt]:
        is_np = self.np_kinds.dyn(node.value) if node.value is not None else None
        self.generic_visit(node)
        if node.value is None:
            return [_export_flag(node), node]
        if self.a.np_result and is_np is not None:
            call = ast.Call(
                ast.Name("ct_ret_np", ast.Load()),
                [node.value, ast.Name(ERR_OUT, ast.Load()), _err(), is_np],
                [],
            )
            node.value = ast.copy_location(call, node.value)
            return node
        node.value = ast.copy_location(_ret(node.value), node.value)
        return node


def _set(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign([ast.Name(name, ast.Store())], value)


def _sets(stmt: ast.stmt, name: str) -> bool:
    return (
        isinstance(stmt, ast.Assign)
        and isinstance(stmt.targets[0], ast.Name)
        and stmt.targets[0].id == name
    )


def _peelable(node: ast.For, a: Analysis) -> bool:
    """A ``for name in range(n)`` loop whose first iteration can stand on its own."""
    if node.orelse or not isinstance(node.target, ast.Name):
        return False
    if not (_is_range(node.iter, a) and isinstance(node.iter, ast.Call)):
        return False
    if len(node.iter.args) != 1:
        return False
    size = 0
    for stmt in node.body[1:]:
        for sub in ast.walk(stmt):
            size += 1
            if isinstance(sub, ast.Break | ast.Continue | ast.Return | ast.For | ast.While):
                return False
    return size <= PEEL_MAX_NODES


def _blockable(node: ast.For) -> bool:
    """A loop that ``_block`` may split: no ``else``, no ``break`` of its own."""
    if node.orelse or not isinstance(node.target, ast.Name):
        return False
    todo: list[ast.AST] = list(node.body[1:])  # (after the flag test)
    while todo:
        sub = todo.pop()
        if isinstance(sub, ast.Break):
            return False
        if isinstance(sub, ast.For | ast.While):
            # an inner loop's body breaks out of that loop, but its ``else`` runs
            # after it: a break there ends this loop
            todo.extend(sub.orelse)
        else:
            todo.extend(ast.iter_child_nodes(sub))
    return True


def _is_range(node: ast.AST, a: Analysis) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and "range" not in a.fn.__globals__
        and 1 <= len(node.args) <= 3
    )


def _range_args(node: ast.Call) -> list[ast.expr]:
    """``start, stop, step`` of a range() call, with the defaults filled in."""
    args = list(node.args)
    if len(args) == 1:
        return [ast.Constant(0), args[0], ast.Constant(1)]
    if len(args) == 2:
        return [*args, ast.Constant(1)]
    return args


def _ret(value: ast.expr) -> ast.Call:
    """``ct_ret(value, out, err)``: the value, after copying the flag to the caller."""
    return ast.Call(ast.Name("ct_ret", ast.Load()), [value, ast.Name(ERR_OUT), _err()], [])


def _export_flag(where: ast.AST) -> ast.stmt:
    return ast.copy_location(ast.Expr(_ret(ast.Constant(0))), where)


def _as_load(target: ast.expr) -> ast.expr:
    import copy

    load = copy.deepcopy(target)
    for sub in ast.walk(load):
        if hasattr(sub, "ctx"):
            sub.ctx = ast.Load()
    return load


def _rewrite(node: ast.FunctionDef | ast.AsyncFunctionDef, a: Analysis) -> str | None:
    assert isinstance(node, ast.FunctionDef)
    import copy

    fn_node = copy.deepcopy(node)
    fn_node.decorator_list = []
    fn_node.returns = None
    fn_node.name = USER
    for arg in fn_node.args.args:
        arg.annotation = None
    fn_node.args.args.append(ast.arg(ERR_OUT))
    fn_node.args.defaults = []  # the dispatcher binds arguments itself
    params = {x.arg for x in fn_node.args.args}
    stored = {
        n.id for n in ast.walk(fn_node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    } - params
    unbound = _Unbound(stored)
    unbound.block(fn_node.body, frozenset(params))
    np_kinds = _NpKinds(fn_node, a)
    for ret in ast.walk(fn_node):
        if isinstance(ret, ast.Return) and ret.value is not None:
            kind = np_kinds.kind(ret.value)
            if kind is None:
                a.reasons.append(
                    Reason(
                        ret.lineno,
                        "returns a NumPy scalar (an array's element) on some paths and "
                        "a Python number on others, in a way compiled code cannot tell "
                        "apart: convert it with int() or float()",
                    )
                )
                return None
            if kind in ("n", "m"):
                a.np_result = True
    mixed = {n for n, k in np_kinds.kinds.items() if k == "m"}
    mark_safe_counters(fn_node)
    kinds = a.arg_kinds or ""
    arg_ranges = {
        n: INT64_RANGE if kinds[i : i + 1] == "i" else None for i, n in enumerate(a.arg_names)
    }
    mark_safe_arithmetic(fn_node, arg_ranges, a.constants, a.fn.__globals__)
    fn_node = _Rewriter(a, unbound.needs, mixed, np_kinds).visit(fn_node)
    # the checks raise a flag local to the function, which LLVM keeps in a register;
    # every way out of the function copies it to the caller's slot
    local = ast.Assign([ast.Name(ERR, ast.Store())], ast.Call(ast.Name("ct_flag_local"), [], []))
    fn_node.body[:0] = [
        local,
        *(_set(BOUND_PREFIX + n, ast.Constant(False)) for n in sorted(unbound.needs)),
        *(_set(NP_PREFIX + n, ast.Constant(False)) for n in sorted(mixed)),
    ]
    if not isinstance(fn_node.body[-1], ast.Return):
        fn_node.body.append(_export_flag(fn_node.body[-1]))
    ast.fix_missing_locations(fn_node)
    return ast.unparse(fn_node)
