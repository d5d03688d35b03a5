"""``cytask check`` and ``cytask compile``: what compiles, what does not, and why.

    cytask check TARGET [--json] [--verify]
    cytask compile TARGET

TARGET is a ``.py`` file, a module, ``module:function`` or ``file.py:function``.
In a file or module, the tasks are the module-level objects marked
``__cytask_task__ = True`` (with ``.fn``, and optionally ``.examples`` and
``.compile_to_c``); with ``:function`` the named object may also be a plain
function.  Tasks with ``compile_to_c=False`` are listed, not compiled.  A
``compile_to_c="strict"`` task is not compiled while its module is imported (that
would raise there): it is compiled and reported like the others.

Exit codes, for CI (``EXIT_CODES``): 0 every task compiles as requested, 1 some
fall back (or ``--verify`` found a difference), 2 usage error (missing file,
importing the target failed), 3 internal error in cytask (a bug: please report).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["main"]

EXIT_OK = 0
EXIT_FALLBACK = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  every task compiles as requested (and --verify found no difference)
  {EXIT_FALLBACK}  some task falls back to Python, or --verify found a difference
  {EXIT_USAGE}  usage error: no such file, importing the target failed, no tasks in it
  {EXIT_INTERNAL}  internal error in cytask (a bug: please report it with the traceback)"""


class UsageError(Exception):
    """Something about the command line or the target; exit code 2."""


@dataclass
class Target:
    name: str
    fn: Callable[..., Any]
    requested: bool = True
    strict: bool = False
    examples: list[tuple[Any, ...]] = field(default_factory=list)


# -- finding tasks ------------------------------------------------------------------


def _is_task(obj: object) -> bool:
    return getattr(obj, "__cytask_task__", False) is True and callable(getattr(obj, "fn", None))


def _as_target(name: str, obj: Any) -> Target:
    if _is_task(obj):
        opt = getattr(obj, "compile_to_c", True)
        examples = [tuple(e) for e in (getattr(obj, "examples", None) or [])]
        return Target(name, obj.fn, bool(opt), opt == "strict", examples)
    return Target(name, obj)


def _module_name_for(path: str) -> str:
    """The name to import a file under: its own, unless that would shadow a module."""
    name = os.path.splitext(os.path.basename(path))[0]
    if name.isidentifier() and name not in sys.modules and name not in sys.stdlib_module_names:
        return name
    # random.py, json.py ...: importing it as "random" would replace the standard
    # module for everything imported later (Numba included)
    safe = re.sub(r"\W", "_", name)
    return f"_cytask_check_{safe}"


def _import_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    plain = os.path.splitext(os.path.basename(path))[0]
    loaded = sys.modules.get(plain)
    loaded_from = getattr(loaded, "__file__", None)
    if loaded_from and os.path.exists(loaded_from) and os.path.samefile(loaded_from, path):
        return loaded  # this very file, already imported: not a second copy
    name = _module_name_for(path)
    if folder not in sys.path:
        # after the standard library and the installed packages: a file in the
        # folder named like one of them (random.py) must not replace it
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        _run_import(lambda: spec.loader.exec_module(module), path)  # type: ignore[union-attr]
    except UsageError:
        sys.modules.pop(name, None)
        raise
    return module


@contextlib.contextmanager
def _importing() -> Iterator[None]:
    """Import targets with strict compiles deferred (reported here, not raised there)."""
    from cytask._compile import deferred_strict

    with deferred_strict():
        yield


def _run_import(do: Callable[[], Any], what: str) -> Any:
    try:
        with _importing():
            return do()
    except UsageError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        raise UsageError(f"importing {what} failed: {last}") from exc


def _split_target(spec: str) -> tuple[str, str | None, bool]:
    """(module or file, attribute or None, is a file) for a TARGET string."""
    head, sep, tail = spec.rpartition(":")
    attr: str | None = None
    if sep and tail and all(part.isidentifier() for part in tail.split(".")):
        spec, attr = head, tail
    is_file = spec.endswith(".py") or os.sep in spec or (os.altsep or os.sep) in spec
    return spec, attr, is_file


def find_targets(spec: str) -> list[Target]:
    """The tasks named by a TARGET string; raises ``UsageError``."""
    where, attr, is_file = _split_target(spec)
    if is_file:
        module = _import_file(where)
    else:
        modname = where
        if ":" in modname or not modname:
            raise UsageError(f"expected MODULE, MODULE:FUNCTION or FILE.py, got {spec!r}")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = _run_import(lambda: importlib.import_module(modname), modname)
    if attr:
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UsageError(f"{module.__name__} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if not (_is_task(obj) or inspect.isfunction(obj)):
            raise UsageError(f"{spec} is a {type(obj).__name__}, not a task or a function")
        return [_as_target(attr, obj)]
    found = [
        _as_target(name, obj)
        for name, obj in vars(module).items()
        if _is_task(obj) and not name.startswith("__")
    ]
    if not found:
        raise UsageError(f"no cytask tasks in {spec}; name one function with MODULE:FUNCTION")
    found.sort(key=lambda t: getattr(getattr(t.fn, "__code__", None), "co_firstlineno", 0))
    return found


# -- checking ------------------------------------------------------------------------


@dataclass
class Row:
    target: Target
    compiled: Any  # cytask.compiler.CompiledTask
    differences: list[str] = field(default_factory=list)
    #: examples whose compiled run was compared with Python's
    verified: int = 0
    #: examples that ran as plain Python on the compiled side too (nothing compared)
    in_python: int = 0

    @property
    def ok(self) -> bool:
        if self.differences:
            return False
        return not self.target.requested or self.compiled.backend != "python"

    @property
    def status(self) -> str:
        c = self.compiled
        if not self.target.requested:
            return "not requested"
        if self.differences:
            return "DIFFERS"
        if c.backend == "python":
            return "STRICT: NOT COMPILED" if self.target.strict else "FALLBACK"
        if c.native is not None:
            return "native, no GIL"
        return "compiled"

    def as_json(self) -> dict[str, Any]:
        c = self.compiled
        return {
            "name": self.target.name,
            "file": c.filename,
            "line": c.lineno,
            "backend": c.backend,
            "status": self.status,
            "reasons": [{"line": r.line, "message": r.message} for r in c.reasons],
            "errors": [{"backend": e.backend, "message": str(e)} for e in c.errors],
            "notes": list(c.notes),
            "compile_ms": round(c.compile_ms, 3),
            "fallback_reason": c.fallback_reason,
            "native": c.native is not None,
            "requested": self.target.requested,
            "strict": self.target.strict,
            "verified": self.verified,
            "in_python": self.in_python,
            "differences": self.differences,
        }


def _compile(target: Target) -> Any:
    from cytask.compiler import CompiledTask, compile_task

    if not target.requested:  # compile_to_c=False: listed, never compiled
        ct = CompiledTask(target.fn)
        ct.fallback_reason = "not compiled (compile_to_c=False)"
        return ct
    ct = compile_task(target.fn)
    ct.wait()
    return ct


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, float) and a == 0.0:
        return math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        import numpy as np

        if isinstance(a, np.ndarray):
            return bool(a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True))
    except ImportError:
        pass
    return bool(a == b)


def _outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", run()
    except Exception as exc:
        return "raises", type(exc)


def _watching(code: Any, run: Callable[[], Any]) -> tuple[tuple[str, Any], bool]:
    """``run``'s outcome, and whether the Python function (``code``) ran inside it.

    A compiled caller hands a call it cannot answer exactly back to the Python
    function; such a call compares Python with itself, so it is not counted.
    """
    ran = False

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal ran
        if event == "call" and frame.f_code is code:
            ran = True

    old = sys.getprofile()
    sys.setprofile(profile)
    try:
        got = _outcome(run)
    finally:
        sys.setprofile(old)
    return got, ran


def _verify(row: Row, engine: Any) -> None:
    ct = row.compiled
    if not row.target.requested:
        return
    code = getattr(ct.python_fn, "__code__", None)
    for args in row.target.examples:
        want = _outcome(lambda a=args: ct.python_fn(*a))  # type: ignore[misc]
        plan = ct.plan(args, {})
        ran_python = False
        if plan is None:
            row.in_python += 1  # this call runs as plain Python: nothing to compare
            continue
        if callable(plan) and ct.backend == "cython":  # never hands a call back
            got = _outcome(lambda p=plan, a=args: p(*a))  # type: ignore[misc]
        elif callable(plan):  # Numba's dispatcher: may hand the call back to Python
            got, ran_python = _watching(code, lambda p=plan, a=args: p(*a))  # type: ignore[misc]
        else:

            def fallback(*a: Any) -> Any:
                nonlocal ran_python
                ran_python = True  # the native code handed this call back to Python
                return ct.python_fn(*a)

            def native(p: Any = plan, a: tuple[Any, ...] = args) -> Any:
                h = engine.submit_native(
                    p.address, a, p.arg_kinds, p.result_kind, fallback=fallback
                )
                return h.result(timeout=60)

            got = _outcome(native)
        if ran_python:
            row.in_python += 1
            continue
        row.verified += 1
        same = want[0] == got[0] and (
            want[1] is got[1] if want[0] == "raises" else _same(want[1], got[1])
        )
        if not same:
            row.differences.append(
                f"{ct.name}{args!r}: Python {_show(want)}, {ct.backend} {_show(got)}"
            )


def _show(outcome: tuple[str, Any]) -> str:
    kind, value = outcome
    if kind == "raises":
        return f"raises {value.__name__}"
    return f"returns {value!r} ({type(value).__name__})"


# -- output --------------------------------------------------------------------------


def _progress(i: int, n: int, name: str, out: TextIO) -> None:
    if n < 5 or not out.isatty():
        return
    width = 30
    done = int(width * i / n)
    out.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {name[:30]:<30}")
    if i == n:
        out.write("\r" + " " * (width + 45) + "\r")
    out.flush()


def _table(rows: list[Row], out: TextIO) -> None:
    head = ("task", "file:line", "backend", "compile ms", "status")
    body = []
    for row in rows:
        c = row.compiled
        where = f"{os.path.relpath(c.filename) if c.lineno else c.filename}:{c.lineno}"
        body.append((row.target.name, where, c.backend, f"{c.compile_ms:.1f}", row.status))
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out.write(line(head) + "\n")
    out.write(line(["-" * w for w in widths]) + "\n")
    for row, cells in zip(rows, body, strict=True):
        out.write(line(cells) + "\n")
        c = row.compiled
        if c.fallback_reason:
            out.write(f"    why: {c.fallback_reason}\n")
        elif c.backend == "cython" and c.numba_error is not None:
            out.write(f"    why not numba: {c.numba_error}\n")
        for r in c.reasons:
            out.write(f"    line {r.line}: {r.message}\n")
        for note in c.notes:
            out.write(f"    note: {note}\n")
        if row.verified:
            out.write(f"    verified {row.verified} example(s)\n")
        if row.in_python:
            out.write(
                f"    {row.in_python} example(s) ran as Python on both sides (not compared)\n"
            )
        for d in row.differences:
            out.write(f"    DIFFERENCE {d}\n")
    n_fallback = sum(1 for r in rows if not r.ok)
    out.write(f"\n{len(rows)} task(s), {n_fallback} not compiled as requested\n")


# -- main ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cytask",
        description="cytask command line",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    target_help = "FILE.py, FILE.py:FUNCTION, MODULE or MODULE:FUNCTION"
    check = sub.add_parser(
        "check",
        help="report which tasks compile, and why not",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("target", metavar="TARGET", help=target_help)
    check.add_argument("--json", action="store_true", help="print a JSON array")
    check.add_argument(
        "--verify",
        action="store_true",
        help="run each task's examples compiled and in Python, and compare",
    )
    comp = sub.add_parser(
        "compile",
        help="compile tasks ahead of time (fills the caches)",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("target", metavar="TARGET", help=target_help)
    sub.add_parser("worker", help="run a store's durable tasks (cytask worker --help)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see ``EXIT_CODES``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":  # cytask worker: engine/_worker_cli.py
        from cytask._worker_cli import worker_main

        return worker_main(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args)
    except KeyboardInterrupt:
        raise
    except Exception:
        print(
            "cytask: internal error (a bug in cytask, not in your code; please report it):",
            file=sys.stderr,
        )
        traceback.print_exc(file=sys.stderr)
        return EXIT_INTERNAL


def _run(args: argparse.Namespace) -> int:
    try:
        targets = find_targets(args.target)
    except UsageError as exc:
        print(f"cytask: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows: list[Row] = []
    for i, target in enumerate(targets):
        _progress(i, len(targets), target.name, sys.stderr)
        rows.append(Row(target, _compile(target)))
    _progress(len(targets), len(targets), "", sys.stderr)
    warned = set()
    for row in rows:
        for note in row.compiled.notes:
            if note.startswith("cache: ") and note not in warned:
                warned.add(note)
                print(f"cytask: {note}", file=sys.stderr)
    if args.command == "check" and args.verify:
        import cytask

        with cytask.Engine(workers=1) as engine:
            for row in rows:
                _verify(row, engine)
    if args.command == "check" and args.json:
        json.dump([row.as_json() for row in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.command == "check":
        _table(rows, sys.stdout)
    else:
        for row in rows:
            c = row.compiled
            print(f"{row.target.name}: {c.backend} ({c.compile_ms:.1f} ms) {row.status}")
            if c.fallback_reason:
                print(f"    why: {c.fallback_reason}")
    return EXIT_OK if all(row.ok for row in rows) else EXIT_FALLBACK
