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
import inspect
import sys
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Analysis", "Reason", "analyze"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_NATIVE_ARGS = 8  # CT_MAX_NATIVE_ARGS in pyx/include/ct_native.h

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
    #: every global name the function reads (the Cython module gets these injected)
    global_names: list[str] = field(default_factory=list)
    #: the rewritten function (named ``__ct_user``) for Numba, when eligible
    numba_source: str | None = None

    @property
    def native_signature(self) -> bool:
        """All arguments and the result are hinted as int/float/bool: a C entry point."""
        return (
            self.arg_kinds is not None
            and self.result_kind is not None
            and all(k in "idb" for k in self.arg_kinds)
            and len(self.arg_kinds) <= MAX_NATIVE_ARGS
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
        lines, first = inspect.getsourcelines(fn)
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
    _Checker(a, fn, node).run()
    if not a.reasons:
        a.numba_source = _rewrite(node, a)
    return a


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
        self._hints(node)
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
                return
            self.numba(node, f"math.{attr} is not among the functions compiled exactly")
        elif mod.__name__ == "numpy":
            if attr in NUMPY_OK:
                return
            self.numba(
                node,
                f"numpy.{attr}: Numba's version may round differently from NumPy's; "
                "write the loop out",
            )
        else:
            self.numba(node, f"uses the module {mod.__name__}, which does not compile")

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


# -- the rewrite ------------------------------------------------------------------


def _err() -> ast.Name:
    return ast.Name(ERR, ast.Load())


def _flag_up() -> ast.Compare:
    flag = ast.Call(ast.Name("ct_flag", ast.Load()), [_err()], [])
    return ast.Compare(flag, [ast.NotEq()], [ast.Constant(0)])


def _helper(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(name, ast.Load()), [*args, _err()], [])


class _Rewriter(ast.NodeTransformer):
    def __init__(self, a: Analysis) -> None:
        self.a = a
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
        return ast.copy_location(_helper(helper, node.left, node.right), node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        self.generic_visit(node)
        helper = _BINOP_HELPER.get(type(node.op))
        if helper is None:
            return node
        load = _as_load(node.target)
        call = _helper(helper, load, node.value)
        return ast.copy_location(ast.Assign([node.target], call), node)

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
        if not isinstance(func, ast.Name) or func.id in self.a.fn.__globals__:
            return node
        name = func.id
        if name in ("abs", "int", "pow"):
            return ast.copy_location(_helper(f"ct_{name}", *node.args), node)
        if name in ("min", "max"):
            acc = node.args[0]
            for arg in node.args[1:]:
                acc = _helper(f"ct_{name}", acc, arg)
            return ast.copy_location(acc, node)
        if name == "range" and len(node.args) == 3:
            node.args[2] = _helper("ct_step", node.args[2])
        return node

    def visit_While(self, node: ast.While) -> ast.stmt:
        self.generic_visit(node)
        ok = ast.UnaryOp(ast.Not(), _flag_up())
        node.test = ast.BoolOp(ast.And(), [ok, node.test])
        return node

    def visit_For(self, node: ast.For) -> ast.stmt:
        self.generic_visit(node)
        node.body.insert(0, ast.If(_flag_up(), [ast.Break()], []))
        return node

    def visit_Return(self, node: ast.Return) -> ast.stmt | list[ast.stmt]:
        self.generic_visit(node)
        if node.value is None:
            return [_export_flag(node), node]
        node.value = ast.copy_location(_ret(node.value), node.value)
        return node


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


def _rewrite(node: ast.FunctionDef | ast.AsyncFunctionDef, a: Analysis) -> str:
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
    fn_node = _Rewriter(a).visit(fn_node)
    # the checks raise a flag local to the function, which LLVM keeps in a register;
    # every way out of the function copies it to the caller's slot
    local = ast.Assign([ast.Name(ERR, ast.Store())], ast.Call(ast.Name("ct_flag_local"), [], []))
    fn_node.body.insert(0, local)
    if not isinstance(fn_node.body[-1], ast.Return):
        fn_node.body.append(_export_flag(fn_node.body[-1]))
    ast.fix_missing_locations(fn_node)
    return ast.unparse(fn_node)
