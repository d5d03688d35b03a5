"""The Numba backend: a C entry point for hinted functions, a dispatcher otherwise.

The rewritten function (see ``_analysis``) is written into a real ``.py`` file in
the cache folder and imported from there, so that Numba's ``cache=True`` can key
its on-disk cache by that file: a second process loads machine code instead of
compiling again.

For a function whose arguments and result are hinted ``int``/``float``/``bool``
the module also defines a ``cfunc`` with the core's native ABI
(``int32_t fn(const ct_slot *args, ct_slot *result)``, see ``ct_native.h``).  It
uses the result slot as the error flag while the function runs, catches any
exception Numba raises, and returns ``CT_RC_PYTHON`` (2) whenever the flag is up,
so the core reruns that call in Python.  The core calls it with no GIL.

Numba is imported here, lazily: ``import cytask`` never pays for it.
"""

from __future__ import annotations

import re
import struct
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cytask.compiler._analysis import ERR, ERR_OUT, USER, Analysis, Reason
from cytask.compiler._cache import (
    atomic_write,
    cache_dir,
    digest,
    load_module,
    purge_numba_cache,
    seal_numba_cache,
    verify_numba_cache,
)
from cytask.compiler._errors import NumbaCompileError

__all__ = ["NumbaBuild", "build", "numba_version"]

CT_RC_PYTHON = 2
_HELPERS = Path(__file__).with_name("_nbhelpers.py")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Numba's compiler is not re-entrant across threads for the same function; one
# lock serialises our compiles (Numba's dispatcher does the same internally).
_compile_lock = threading.RLock()


@dataclass
class NumbaBuild:
    """What the Numba backend produced for one function."""

    module: Any
    dispatcher: Any
    cfunc: Any | None  # the C entry point, or None (dispatcher only)
    path: Path
    #: why a hinted function got no C entry point (it still runs on the dispatcher)
    note: str | None = None
    #: what was wrong with Numba's cache for it, which was then rebuilt
    repaired: str | None = None
    #: the cell the C entry point checks for changed module globals (see _guard)
    guard: Any = None


def numba_version() -> str:
    import llvmlite
    import numba

    return f"numba {numba.__version__}, llvmlite {llvmlite.__version__}"


def _slot_read(kind: str, i: int) -> str:
    if kind == "i":
        return f"__ct_ai[{i}]"
    if kind == "d":
        return f"__ct_ad[{i}]"
    return f"__ct_ai[{i}] != 0"


def guard_symbol(a: Analysis) -> str | None:
    """The symbol of the globals guard, for a function that reads module globals."""
    if not a.constants and not a.imports:
        return None
    # the frozen values are part of the name: two builds that froze different values
    # (a constant rebound between them) must not share a verified version
    frozen = [f"{k}={_constant(v)}" for k, v in sorted(a.constants.items())]
    parts = [a.filename, a.name, a.numba_source or "", *frozen, *sorted(a.imports.values())]
    return "ct_guard_" + digest(*parts)[:24]


def module_guard_symbols(a: Analysis, symbol: str) -> list[tuple[str, str]]:
    """(symbol, module's global name) of the cells on the dicts of the modules whose
    attributes the function reads (``math.sqrt``), chained after its globals guard."""
    return [(f"{symbol}_{name}", name) for name in sorted(a.module_attrs)]


def _entry_source(a: Analysis) -> str:
    kinds = a.arg_kinds or ""
    symbol = guard_symbol(a)
    n = len(kinds)
    call_args = ", ".join([*(_slot_read(k, i) for i, k in enumerate(kinds)), "ct_addr(result)"])
    lines = [
        "@__ct_numba.cfunc(",
        "    __ct_numba.int32(__ct_numba.types.voidptr, __ct_numba.types.voidptr), cache=True",
        ")",
        "def __ct_entry(args, result):",
    ]
    if n:
        lines.append(f"    __ct_ai = __ct_numba.carray(args, ({n},), __ct_numba.int64)")
        lines.append(f"    __ct_ad = __ct_numba.carray(args, ({n},), __ct_numba.float64)")
    lines += [
        "    __ct_ri = __ct_numba.carray(result, (1,), __ct_numba.int64)",
        "    __ct_rd = __ct_numba.carray(result, (1,), __ct_numba.float64)",
        "    __ct_ri[0] = 0  # the error flag while the function runs",
    ]
    if symbol is not None:
        # the globals it froze are read when the call runs: changed, Python runs it
        lines += [f"    if not ct_guard_ok({symbol!r}):", f"        return {CT_RC_PYTHON}"]
        for module_symbol, _ in module_guard_symbols(a, symbol):  # math.sqrt patched?
            lines += [
                f"    if not ct_guard_ok({module_symbol!r}):",
                f"        return {CT_RC_PYTHON}",
            ]
    lines += [
        "    try:",
        f"        r = __ct_jit({call_args})",
        "    except Exception:",
        f"        return {CT_RC_PYTHON}",
        "    if __ct_ri[0] != 0:",
        f"        return {CT_RC_PYTHON}",
    ]
    if a.result_kind == "d":
        lines.append("    __ct_rd[0] = r")
    elif a.result_kind == "i":
        lines.append("    __ct_ri[0] = r")
    else:
        lines.append("    __ct_ri[0] = 1 if r else 0")
    lines.append("    return 0")
    return "\n".join(lines)


def _constant(value: int | float | bool) -> str:
    if isinstance(value, float):
        if value != value:  # a NaN: float.hex() drops its sign, which copysign reads
            bits = struct.pack("<d", value).hex()
            return f"__import__('struct').unpack('<d', bytes.fromhex({bits!r}))[0]"
        return f"float.fromhex({value.hex()!r})"
    return repr(value)


def module_source(a: Analysis, native: bool) -> str:
    assert a.numba_source is not None
    parts = [
        f"# generated by cytask from {a.filename}:{a.lineno} ({a.name}); do not edit",
        "import numba as __ct_numba",
        *sorted(set(a.imports.values())),
        "from cytask.compiler._nbhelpers import *  # noqa: F403",
        *(f"{k} = {_constant(v)}" for k, v in sorted(a.constants.items())),
        "",
        a.numba_source,
        "",
        f"__ct_jit = __ct_numba.njit(nogil=True, cache=True, boundscheck=True)({USER})",
    ]
    if native:
        parts += ["", _entry_source(a)]
    return "\n".join(parts) + "\n"


def _short(exc: BaseException) -> str:
    """The line of a (long, coloured) Numba error that says what went wrong."""
    text = _ANSI.sub("", str(exc))
    skip = ("Failed in", "During:", "File", "^", "<source", "raised from", "There are")
    lines = [ln.strip() for ln in text.splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith(skip)]
    head = useful[0] if useful else type(exc).__name__
    ours = [ln for ln in useful if "cytask: " in ln]  # a helper refused the types
    if ours:
        return ours[0][ours[0].index("cytask: ") + len("cytask: ") :]
    for ln in useful:
        if ln.startswith(("Unknown attribute", "Cannot unify", "Untyped global", "NameError")):
            head = ln
            break
    msg = f"{type(exc).__name__}: {head}"
    return msg.replace(f", {ERR_OUT}", "").replace(f", {ERR}", "").replace(USER, "the task")


def _numba_type(kind: str) -> Any:
    from numba import types

    return {"i": types.int64, "d": types.float64, "b": types.boolean}[kind]


def build(a: Analysis) -> NumbaBuild:
    """Compile ``a`` with Numba; raises ``NumbaCompileError`` with the reason.

    Numba's cache files are checked against their seal before Numba reads them
    (``_cache.verify_numba_cache``); a cache entry that still fails to load is
    deleted and the function compiled once more, never silently lost.
    """
    with _compile_lock:  # check, load and seal the cache as one step in this process
        return _build(a)


def _build(a: Analysis, _repaired: str | None = None) -> NumbaBuild:
    native = a.native_signature
    guard = None
    symbol = guard_symbol(a)
    if native and symbol is not None:
        from cytask.compiler import _guard

        guard = _guard.guard_for(symbol, a.fn.__globals__)
        for module_symbol, name in module_guard_symbols(a, symbol):
            module = a.fn.__globals__.get(name)
            cell = None
            if guard is not None and isinstance(module, types.ModuleType):
                cell = _guard.guard_for(module_symbol, module.__dict__)
            if guard is None or cell is None:
                guard = None
                break
            guard.link(cell)
        native = guard is not None  # else the dispatcher, which checks with the GIL
    try:
        import numpy  # noqa: F401  (the helpers need it)

        import cytask.compiler._nbhelpers  # noqa: F401  (imports numba)
    except ImportError as exc:
        raise NumbaCompileError(f"Numba is not installed ({exc})") from exc
    src = module_source(a, native)
    key = digest(src, numba_version(), _HELPERS.read_text())
    path = cache_dir("numba") / f"ct_{key}.py"
    atomic_write(path, src)
    repaired = _repaired or verify_numba_cache(path)
    try:
        with _compile_lock:
            mod = load_module(f"_cytask_nb_{key}", path)
            dispatcher = mod.__ct_jit
            cfunc = getattr(mod, "__ct_entry", None) if native else None
            note = None
            if cfunc is not None:
                note = _check_result_type(a, dispatcher)
                if note is not None:
                    cfunc = None
                else:
                    argtypes = (*(_numba_type(k) for k in a.arg_kinds or ""), _err_type())
                    mixed = mixed_types(a, dispatcher, argtypes, path)
                    if mixed:
                        raise NumbaCompileError(
                            f"Numba would change result types: {mixed[0]}", mixed
                        )
    except NumbaCompileError:
        raise
    except Exception as exc:
        if _repaired is None and purge_numba_cache(path):  # a cache entry that fails to load
            why = f"the Numba cache for {path.name} did not load ({_short(exc)}); it was rebuilt"
            return _build(a, why)
        raise NumbaCompileError(f"Numba could not compile {a.name}: {_short(exc)}") from exc
    seal_numba_cache(path)
    return NumbaBuild(
        mod, dispatcher, cfunc, path, note, repaired, guard if cfunc is not None else None
    )


def _err_type() -> Any:
    from numba import types

    return types.int64  # the flag's address


def _names_lines(a: Analysis) -> dict[str, int]:
    """The first line each local name is assigned on, in the original source."""
    import ast

    out: dict[str, int] = {}
    tree = ast.parse(a.source)
    ast.increment_lineno(tree, a.lineno - tree.body[0].lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            line = out.get(node.id)
            if line is None or node.lineno < line:
                out[node.id] = node.lineno
    return out


BOOL_ARITH = "<bool arithmetic>"
_ARITHMETIC = frozenset(
    {
        "ct_add", "ct_sub", "ct_mul", "ct_truediv", "ct_floordiv", "ct_mod", "ct_pow",
        "ct_lshift", "ct_rshift", "ct_neg", "ct_invert", "ct_abs", "ct_min", "ct_max",
        "and_", "or_", "xor", "iand", "ior", "ixor",
    }
)  # fmt: skip


def _unifications(cres: Any) -> list[str] | None:
    """Variables Numba widened from int to float (or bool to int); None if unknown.

    Python keeps each value's own type: ``x = 0`` then ``x += 0.5`` in a loop that
    never runs returns the int 0, where Numba, which gives ``x`` one type, returns
    0.0.  Such a function may return a value of another type than Python's.
    """
    from numba.core import ir, types

    ta = cres.type_annotation
    typemap = getattr(ta, "typemap", None)
    if not isinstance(typemap, dict):
        return None  # loaded from Numba's cache: no typed IR kept

    def widened(target: Any, source: Any) -> bool:
        if isinstance(target, types.BaseTuple) and isinstance(source, types.BaseTuple):
            # (x, 0.5) then (0.0, 1.0): Numba widens the int inside the tuple
            tt: list[Any] = list(target)  # type: ignore[call-overload]  # (iterates its types)
            st: list[Any] = list(source)  # type: ignore[call-overload]
            return len(tt) == len(st) and any(widened(t, s) for t, s in zip(tt, st, strict=True))
        return (
            isinstance(target, types.Float) and isinstance(source, types.Integer | types.Boolean)
        ) or (isinstance(target, types.Integer) and isinstance(source, types.Boolean))

    bool_arrays = any(
        isinstance(t, types.Array) and isinstance(t.dtype, types.Boolean) for t in typemap.values()
    )
    globals_: dict[str, Any] = {}
    found: set[str] = set()
    for block in ta.blocks.values():
        for inst in block.body:
            if not isinstance(inst, ir.Assign):
                continue
            value = inst.value
            if isinstance(value, ir.Global | ir.FreeVar):
                globals_[inst.target.name] = value.value
            if bool_arrays and isinstance(value, ir.Expr) and value.op in ("call", "binop"):
                # NumPy's bools are not Python's: np.True_ + np.True_ is np.True_,
                # ~np.False_ is np.True_, and - raises; Numba computes them as ints
                fn = globals_.get(value.func.name) if value.op == "call" else value.fn
                name = getattr(fn, "__name__", "")
                operands = value.args if value.op == "call" else [value.lhs, value.rhs]
                if name in _ARITHMETIC and any(
                    isinstance(typemap.get(v.name), types.Boolean) for v in operands
                ):
                    found.add(BOOL_ARITH)
            if isinstance(value, ir.Expr) and value.op == "cast":
                value = value.value
            if not isinstance(value, ir.Var):
                continue
            target = typemap.get(inst.target.name)
            source = typemap.get(value.name)
            if widened(target, source):
                name = inst.target.name.split(".")[0]
                found.add(name if not name.startswith("$") else "")
    return sorted(found)


def mixed_types(
    a: Analysis, dispatcher: Any, argtypes: tuple[Any, ...], path: Path
) -> list[Reason]:
    """Reasons for each variable whose type Numba unified differently from Python.

    Remembered per signature in a JSON file next to the generated module, because
    a function loaded from Numba's cache has no typed IR to look at.
    """
    import json

    import numba

    side = path.with_suffix(".types.json")
    key = str(argtypes)
    try:
        known: dict[str, list[str]] = json.loads(side.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        names = known[key]
    else:
        cres = dispatcher.overloads.get(argtypes)
        names_or_none = _unifications(cres) if cres is not None else None
        if names_or_none is None:
            fresh = numba.njit(nogil=True, cache=False, boundscheck=True)(dispatcher.py_func)
            fresh.compile(argtypes)
            names_or_none = _unifications(fresh.overloads[argtypes]) or []
        names = names_or_none
        known[key] = names
        atomic_write(side, json.dumps(known, indent=1, sort_keys=True))
    lines = _names_lines(a)
    reasons = []
    for name in names:
        if name == BOOL_ARITH:
            reasons.append(
                Reason(
                    a.lineno,
                    "arithmetic on the elements of a bool array: NumPy's bools add, "
                    "negate and invert differently from Python's and Numba's; convert "
                    "them with int() first",
                )
            )
        elif name:
            reasons.append(
                Reason(
                    lines.get(name, a.lineno),
                    f"{name!r} holds an int on one path and a float (or a bool and an "
                    "int) on another; Python keeps each type, compiled code would not: "
                    f"give {name} one type (e.g. start it as 0.0)",
                )
            )
        else:
            reasons.append(
                Reason(
                    a.lineno,
                    "an expression gives an int on one path and a float on another "
                    "(a conditional expression?); make both paths the same type",
                )
            )
    return reasons


def _check_result_type(a: Analysis, dispatcher: Any) -> str | None:
    """None if Numba's inferred result type is the hinted one, else why not."""

    assert a.arg_kinds is not None and a.result_kind is not None
    argtypes = (*(_numba_type(k) for k in a.arg_kinds), _err_type())
    cres = dispatcher.overloads.get(argtypes)
    if cres is None:
        dispatcher.compile(argtypes)
        cres = dispatcher.overloads[argtypes]
    got = cres.signature.return_type
    want = _numba_type(a.result_kind)
    if got != want:
        hint = {"i": "int", "d": "float", "b": "bool"}[a.result_kind]
        return (
            f"returns {got} where its hint says -> {hint}, so there is no C entry point "
            "(it runs through Numba's dispatcher, called from Python)"
        )
    return None


def _as_numpy(np: Any, value: Any) -> Any:
    """The NumPy scalar Python's code returns where Numba returns a plain number."""
    t = type(value)
    if t is bool:
        return np.bool_(value)
    if t is int:
        return np.int64(value)
    if t is float:
        return np.float64(value)
    return value


def make_caller(
    a: Analysis,
    build: NumbaBuild,
    python_fn: Callable[..., Any],
    on_failure: Callable[[str, list[Reason]], None],
    globals_unchanged: Callable[[], bool] | None = None,
) -> Callable[..., Any]:
    """A Python callable that runs the dispatcher and hands odd calls back to Python.

    The dispatcher releases the GIL while it runs (``nogil=True``).  A raised flag
    or any exception from compiled code reruns the call in Python, which gives
    Python's exact answer or exception.  The first call with new argument types
    also checks Numba's typing for widened variables (``mixed_types``); a typing
    error or a widening turns the dispatcher off for good through ``on_failure``.
    """
    import numpy as np
    from numba.core.errors import NumbaError

    dispatcher = build.dispatcher
    checked: set[tuple[Any, ...]] = set()  # argument shapes whose typing was checked
    off = False

    def shape(v: Any) -> Any:
        if type(v) is np.ndarray:
            return (np.ndarray, v.dtype.str, v.ndim, v.flags.c_contiguous)
        return type(v)

    def call(*args: Any) -> Any:
        nonlocal off
        if off or (globals_unchanged is not None and not globals_unchanged()):
            # (checked when the call runs: a delayed task reads today's globals)
            return python_fn(*args)
        err = np.zeros(2, np.int64)  # the flag; whether the result is a NumPy scalar
        try:
            result = dispatcher(*args, err.ctypes.data)
        except NumbaError as exc:
            off = True
            why = f"Numba could not compile it for these arguments: {_short(exc)}"
            on_failure(why, [Reason(a.lineno, why)])
            return python_fn(*args)
        except Exception:
            return python_fn(*args)
        key = tuple(shape(v) for v in args)
        if key not in checked:
            with _compile_lock:
                argtypes = (*(dispatcher.typeof_pyval(v) for v in args), _err_type())
                mixed = mixed_types(a, dispatcher, argtypes, build.path)
                seal_numba_cache(build.path)  # Numba may have cached a new signature
            if mixed:
                off = True
                on_failure(f"Numba would change result types: {mixed[0]}", mixed)
                return python_fn(*args)
            checked.add(key)
        if err[0]:
            return python_fn(*args)
        if err[1]:
            return _as_numpy(np, result)
        return result

    call.__name__ = getattr(python_fn, "__name__", "call")
    call.__qualname__ = getattr(python_fn, "__qualname__", call.__name__)
    call.__wrapped__ = python_fn  # type: ignore[attr-defined]
    return call
