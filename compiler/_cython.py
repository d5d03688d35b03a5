"""The Cython backend: the function's own source, compiled once per machine.

The function is compiled with ``annotation_typing=False``: its hints stay hints and
every value stays a Python object, so the compiled function keeps Python's
semantics exactly (unbounded ints, ``x: float`` still accepts an int and keeps it
an int).  What it gains is the interpreter's dispatch overhead, not C arithmetic;
numeric code that needs C speed goes through Numba.

The generated module is the function's source on its original lines, with three
changes that keep what Python would do when the source is compiled outside its
class and module:

* default values are the very objects in ``fn.__defaults__``/``__kwdefaults__``,
  handed to the module when it loads (a default naming a module global is that
  global's value at ``def`` time, and a mutable default is shared with Python);
* private names (``self.__x``) in a method are mangled as Python mangles them in
  its class (``self._Class__x``); the result is checked against the names of the
  loaded code object, and a function whose names still differ is refused;
* every global name the function or a nested scope (lambda, nested def,
  comprehension) reads is declared, and copied in from the function's module
  before each call (``CompiledTask.plan``); a name the module lacks raises
  ``NameError`` as it would in Python.

Tracebacks name the user's file and line, not the generated module.

The module is built in a subprocess in the cache folder, under a name keyed by
the source, Cython's version and the C compiler, so each function is compiled
once per machine and a second process just imports the ``.so`` after checking
it against its manifest (``_cache.check_binary``).  A build that fails is
remembered under the same key, so other processes do not spend seconds failing
again.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib.machinery
import io
import os
import re
import shutil
import subprocess
import symtable
import sys
import sysconfig
import tempfile
import threading
import tokenize
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cytask.compiler._analysis import Analysis, Reason
from cytask.compiler._cache import (
    cache_dir,
    check_binary,
    digest,
    load_module,
    manifest_for,
    read_json,
    write_json,
)
from cytask.compiler._errors import CythonCompileError

__all__ = ["CythonJob", "prepare"]

BUILD_TIMEOUT_S = 600.0
# infer_types=False: a local Cython types as a C double cannot be unbound, and reads
# garbage where Python raises UnboundLocalError; Python objects keep Python semantics
DIRECTIVES = "language_level=3,annotation_typing=False,binding=True,infer_types=False"
DEFAULTS = "__ct_defaults"
KWDEFAULTS = "__ct_kwdefaults"
POW_BASE = "__ct_pow_base"  # module globals that hold the bases of literal powers

#: runs in the build subprocess: cythonize, with the user's file as the name that
#: tracebacks and code objects show (Cython would show the generated .pyx)
_DRIVER = """
import os, sys
pyx, shown, directives = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    from Cython.Compiler import Scanning
    _init = Scanning.FileSourceDescriptor.__init__
    def __init__(self, filename, *args, **kwargs):
        _init(self, filename, *args, **kwargs)
        if os.path.basename(str(filename)) == pyx:
            self.file_path = shown
            self._short_path_description = shown
    Scanning.FileSourceDescriptor.__init__ = __init__
except Exception as exc:  # another Cython: tracebacks name the .pyx, nothing else changes
    print(f"cytask: traceback file names not patched: {exc!r}", file=sys.stderr)
from Cython.Build.Cythonize import main
main(["-i", "-q", "-X", directives, pyx])
"""

#: module name -> (defaults, kwdefaults) while that module loads; guarded by _init_lock,
#: which is held across the whole load (the module's init calls defaults_for, on the
#: same thread: hence an RLock), so two threads never load one module at once
_init_values: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
_init_lock = threading.RLock()


def defaults_for(module_name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Called by a generated module as it loads: the defaults of its function."""
    with _init_lock:
        return _init_values.get(module_name, ((), {}))


_locks_guard = threading.Lock()
#: module key -> the lock its builds take; guarded by _locks_guard
_locks: dict[str, threading.Lock] = {}


def _build_lock(key: str) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.Lock()
        return lock


def _c_compiler() -> str | None:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    exe = cc.split()[0]
    return shutil.which(exe)


def _cython_version() -> str | None:
    try:
        import Cython
    except ImportError:
        return None
    return str(getattr(Cython, "__version__", "unknown"))


# -- the generated source ---------------------------------------------------------------


@dataclass
class PyxSource:
    text: str
    #: the global names the function (and its nested scopes) read, copied in per call
    global_names: list[str] = field(default_factory=list)


def _mangle_class(qualname: str) -> str | None:
    """The class whose private names Python mangled in this function, if any."""
    parts = qualname.split(".")[:-1]
    while parts and parts[-1] == "<locals>":
        parts = parts[:-2]  # a function inside a function: look further out
    if not parts:
        return None
    stripped = parts[-1].lstrip("_")
    return stripped or None  # a class named only with underscores mangles nothing


def _is_private(name: str) -> bool:
    return name.startswith("__") and not name.endswith("__")


def _offsets(text: str) -> list[int]:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _char_col(line: str, byte_col: int) -> int:
    """An ast column (UTF-8 bytes) as a str index."""
    return len(line.encode()[:byte_col].decode(errors="replace"))


def _literal(node: ast.expr) -> bool:
    """A number written as a literal (``2``, ``-0.5``, ``True``): Cython types it in C."""
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float, bool)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _code_names(code: types.CodeType) -> list[Any]:
    """The names a code object (and the code nested in it) binds and reads."""
    out: list[Any] = [code.co_names, code.co_varnames, code.co_cellvars, code.co_freevars]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.append((const.co_name, _code_names(const)))
    return out


def _global_reads(text: str, filename: str) -> list[str]:
    """Every global name the function in ``text`` or any scope nested in it reads."""
    found: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for sym in table.get_symbols():
            if sym.is_global() and (sym.is_referenced() or sym.is_assigned()):
                found.add(sym.get_name())
        for child in table.get_children():
            walk(child)

    for child in symtable.symtable(text, filename, "exec").get_children():
        walk(child)
    return sorted(found)


def pyx_source(a: Analysis) -> PyxSource:
    """The generated module for ``a``; raises ``CythonCompileError`` if it cannot be exact."""
    tree = ast.parse(a.source)
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    lines = a.source.splitlines(keepends=True)
    body = "".join(lines[node.lineno - 1 :])  # from the def line: decorators are dropped
    fn_tree = ast.parse(body)
    fn_node = fn_tree.body[0]
    assert isinstance(fn_node, ast.FunctionDef | ast.AsyncFunctionDef)
    body_lines = body.splitlines(keepends=True)
    starts = _offsets(body)

    def at(lineno: int, byte_col: int) -> int:
        return starts[lineno - 1] + _char_col(body_lines[lineno - 1], byte_col)

    # default values: the function's own objects, handed to the module as it loads
    spans: list[tuple[ast.expr, str]] = []
    args = fn_node.args
    for i, default in enumerate(args.defaults):
        spans.append((default, f"{DEFAULTS}[{i}]"))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if kw_default is not None:
            spans.append((kw_default, f"{KWDEFAULTS}[{arg.arg!r}]"))
    default_edits: list[tuple[int, int, str]] = []
    for expr, new in spans:
        assert expr.end_lineno is not None and expr.end_col_offset is not None
        start = at(expr.lineno, expr.col_offset)
        end = at(expr.end_lineno, expr.end_col_offset)
        newlines = body.count("\n", start, end)  # keep every later line where it was
        default_edits.append((start, end, new + "\n" * newlines))

    # private names: mangled as Python did in the class (keyword arguments are not)
    mangle_edits: list[tuple[int, int, str]] = []
    cls = _mangle_class(a.name)
    if cls is not None and "__" in body:
        keywords = {
            at(k.lineno, k.col_offset) for k in ast.walk(fn_node) if isinstance(k, ast.keyword)
        }
        tokens = list(tokenize.generate_tokens(io.StringIO(body).readline))
        for i, tok in enumerate(tokens):
            if tok.type != tokenize.NAME or not _is_private(tok.string):
                continue
            if i > 0 and tokens[i - 1].string == "def" and tok.start[0] == 1:
                continue  # the function's own name: the module attribute keeps it
            start = starts[tok.start[0] - 1] + tok.start[1]
            if start in keywords:
                continue
            mangle_edits.append((start, start + len(tok.string), f"_{cls}{tok.string}"))
    in_default = [(s, e) for s, e, _ in default_edits]
    mangle_edits = [m for m in mangle_edits if not any(s <= m[0] < e for s, e in in_default)]

    # the names Python's own compile produced must be the ones this source produces
    mangled = _apply(body, mangle_edits)
    try:
        module_code = compile(mangled, a.filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise CythonCompileError(f"the source could not be prepared for Cython: {exc}") from exc
    code = next((c for c in module_code.co_consts if isinstance(c, types.CodeType)), None)
    loaded = getattr(a.fn, "__code__", None)
    if code is None or loaded is None or _code_names(code) != _code_names(loaded):
        why = (
            "its source, compiled outside its class and module, does not give the names "
            "of the code that runs (private names Python mangles in an f-string, "
            "super(), or a source file edited since it was imported)"
        )
        raise CythonCompileError(f"Cython cannot compile it: {why}", [Reason(a.lineno, why)])

    # a power of two literals: Cython types both as C numbers and computes C's pow()
    # (``0 ** -1`` is inf, ``10.0 ** 400`` inf), where Python raises; with the base
    # a module global, a Python object, the power is Python's
    pow_edits: list[tuple[int, int, str]] = []
    pow_bases: list[tuple[str, str]] = []
    for sub in ast.walk(fn_node):
        if not (
            isinstance(sub, ast.BinOp)
            and isinstance(sub.op, ast.Pow)
            and _literal(sub.left)
            and _literal(sub.right)
        ):
            continue
        left = sub.left
        assert left.end_lineno is not None and left.end_col_offset is not None
        start = at(left.lineno, left.col_offset)
        if any(s <= start < e for s, e in in_default):
            continue  # (evaluated by Python, at def time)
        end = at(left.end_lineno, left.end_col_offset)
        name = f"{POW_BASE}{len(pow_bases)}"
        pow_bases.append((name, repr(ast.literal_eval(left))))
        pow_edits.append((start, end, name + "\n" * body.count("\n", start, end)))

    final = _apply(body, [*default_edits, *mangle_edits, *pow_edits])
    names = [n for n in _global_reads(final, a.filename) if not n.startswith(POW_BASE)]
    dunders = [n for n in names if n.startswith("__") and n.endswith("__")]
    if dunders:  # the generated module has its own __name__, __file__ ...
        why = f"reads the module attribute {dunders[0]}, which the compiled module has too"
        raise CythonCompileError(f"Cython cannot compile it: {why}", [Reason(a.lineno, why)])
    g = getattr(a.fn, "__globals__", {})
    # declared (so Cython compiles them as module globals), then deleted: each call
    # copies in the ones the function's module has; a missing one raises NameError
    copied = [n for n in names if n in g or not hasattr(builtins, n)]
    header = (
        f"from cytask.compiler._cython import defaults_for as __ct_init; "
        f"{DEFAULTS}, {KWDEFAULTS} = __ct_init(__name__)"
    )
    if copied:
        header += f"; {' = '.join(copied)} = None; del {', '.join(copied)}"
    # Cython inlines min() and max() and evaluates their arguments out of order (an
    # OverflowError from the second where Python raises ZeroDivisionError in the first):
    # as module globals they are the builtins, called as Python calls them
    plain = [n for n in ("min", "max") if n in names and n not in g]
    if plain:
        header += "; import builtins as __ct_builtins"
        header += "".join(f"; {n} = __ct_builtins.{n}" for n in plain)
    header += "".join(f"; {name} = {value}" for name, value in pow_bases)
    header += f"  # generated by cytask from {a.filename} ({a.name}); do not edit"
    pad = max(a.lineno - 2, 0)  # the header is line 1: the def stays on its own line
    text = "\n".join([header, *[""] * pad]) + "\n" + final
    if not text.endswith("\n"):
        text += "\n"
    return PyxSource(text, copied)


# -- building ---------------------------------------------------------------------------


def _compiler_identity(cc: str) -> str:
    try:
        st = os.stat(cc)
    except OSError:
        return cc
    return f"{cc} {st.st_size} {int(st.st_mtime)}"


def _run_build(cmd: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )


@dataclass
class CythonJob:
    """A prepared build: ``build()`` compiles (or finds) and imports the module."""

    analysis: Analysis
    source: str
    key: str
    folder: Path
    global_names: list[str] = field(default_factory=list)
    compiler: str = ""
    #: what was wrong with a cached module that was rebuilt (for the report)
    repaired: str | None = None

    @property
    def module_name(self) -> str:
        return f"ct_{self.key}"

    @property
    def target(self) -> Path:
        return self.folder / f"{self.module_name}{importlib.machinery.EXTENSION_SUFFIXES[0]}"

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{self.module_name}.json"

    @property
    def failure_path(self) -> Path:
        return self.folder / f"{self.module_name}.failed.json"

    def remembered_failure(self) -> CythonCompileError | None:
        """The failure of an earlier build of this very source with this compiler."""
        record = read_json(self.failure_path)
        if record is None or record.get("compiler") != self.compiler:
            return None
        reasons = [
            Reason(int(r[0]), str(r[1]))
            for r in record.get("reasons", [])
            if isinstance(r, list) and len(r) == 2
        ]
        return CythonCompileError(
            f"{record.get('message')} (remembered from an earlier build: delete "
            f"{self.failure_path} to build again)",
            reasons,
        )

    def build(self) -> tuple[Any, Callable[..., Any]]:
        with _build_lock(self.key):  # one build of a module at a time in this process
            return self._build()

    def _build(self) -> tuple[Any, Callable[..., Any]]:
        loaded = sys.modules.get(self.module_name)
        if loaded is None:
            target = self.target
            if target.exists() or self.manifest_path.exists():
                bad = check_binary(target, read_json(self.manifest_path))
                if bad is not None:
                    self.repaired = f"the cached Cython module {target.name} was rebuilt: {bad}"
                    target.unlink(missing_ok=True)
                    self.manifest_path.unlink(missing_ok=True)
            if not target.exists():
                failed = self.remembered_failure()
                if failed is not None:
                    raise failed
                self._compile(target)
        fn = self.analysis.fn
        defaults = (fn.__defaults__ or (), fn.__kwdefaults__ or {})
        with _init_lock:
            _init_values[self.module_name] = defaults
            try:
                module = load_module(self.module_name, self.target)
                compiled = getattr(module, fn.__name__)
            except Exception as exc:
                raise CythonCompileError(f"the Cython module did not load: {exc}") from exc
            finally:
                _init_values.pop(self.module_name, None)
        return module, compiled

    def _compile(self, target: Path) -> None:
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=".build-") as tmp:
            pyx = Path(tmp) / f"{self.module_name}.pyx"
            pyx.write_text(self.source)
            cmd = [sys.executable, "-c", _DRIVER, pyx.name, self.analysis.filename, DIRECTIVES]
            try:
                proc = _run_build(cmd, tmp)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise CythonCompileError(f"Cython build did not run: {exc}") from exc
            built = Path(tmp) / f"{self.module_name}{suffix}"
            if proc.returncode != 0 or not built.exists():
                self._fail(f"{proc.stdout}\n{proc.stderr}")
            # os.replace is atomic: a racing process sees no file or a whole one.  The
            # manifest describes the file now at the target (another process may have
            # put its own build there): a reader that sees a mismatch rebuilds, and that
            # costs time, never a crash
            os.replace(built, target)
            write_json(self.manifest_path, manifest_for(target))
            self.failure_path.unlink(missing_ok=True)

    def _fail(self, text: str) -> None:
        where = re.findall(r"\.pyx:(\d+):\d+: (.*)", text)
        if where:
            line, msg = where[0]
            message = f"Cython build failed: line {line}: {msg}"
            reasons = [Reason(int(line), f"Cython: {msg}")]
        else:  # the C compiler or the linker: maybe the machine (no Python.h), not the code
            tail = text.strip().splitlines()[-2:]
            raise CythonCompileError("Cython build failed: " + " | ".join(tail))
        # Cython rejected the source, which fails the same way every time: remember it
        # so that other processes do not spend seconds failing again
        with contextlib.suppress(OSError):
            write_json(
                self.failure_path,
                {
                    "compiler": self.compiler,
                    "message": message,
                    "reasons": [[r.line, r.message] for r in reasons],
                },
            )
        raise CythonCompileError(message, reasons)


def prepare(a: Analysis) -> CythonJob:
    """Check that Cython can build ``a``; raises ``CythonCompileError`` with the reason."""
    if a.cython_reasons:
        reasons = "; ".join(str(r) for r in a.cython_reasons[:2])
        raise CythonCompileError(f"Cython cannot compile it: {reasons}", a.cython_reasons)
    version = _cython_version()
    if version is None:
        raise CythonCompileError("Cython is not installed (pip install 'Cython>=3')")
    cc = _c_compiler()
    if cc is None:
        raise CythonCompileError("no C compiler found for the Cython build (set CC)")
    if isinstance(a.fn, type(prepare)) and a.fn.__name__ == "<lambda>":
        raise CythonCompileError("lambdas are not compiled; use a def")
    pyx = pyx_source(a)
    key = digest(pyx.text, f"cython {version}", DIRECTIVES, _DRIVER, cc)
    try:
        folder = cache_dir("cython")
    except OSError as exc:
        raise CythonCompileError(f"no cache folder for the Cython build: {exc}") from exc
    job = CythonJob(a, pyx.text, key, folder, pyx.global_names, _compiler_identity(cc))
    failed = job.remembered_failure()
    if failed is not None and not job.target.exists():
        raise failed
    return job
