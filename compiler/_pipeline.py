"""The compile pipeline: Numba, then Cython, then plain Python, never silently.

``compile_task(fn)`` analyses ``fn`` and tries the backends in order; each failure
is kept as its own ``CompileError`` subclass and its reasons.  The result is a
``CompiledTask`` that says which backend won (``backend``), why not a better one
(``fallback_reason``, ``reasons``), and, per call, how to run it (``plan``).

A Cython build takes seconds, so it runs in the background: meanwhile the task's
``backend`` is "python" and ``state`` is "building"; when the build finishes the
task switches to "cython" (or stays "python" with the build error as its reason).
``CompiledTask.wait()`` blocks until then, for the CLI and for strict mode.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from cytask.compiler._analysis import INT64_MAX, INT64_MIN, Analysis, Reason, analyze
from cytask.compiler._errors import (
    CompileCacheWarning,
    CompileError,
    CompileFallbackWarning,
    CythonCompileError,
    IneligibleError,
    NumbaCompileError,
)

__all__ = [
    "CompiledTask",
    "NativeEntry",
    "compile_disabled",
    "compile_task",
    "compile_task_async",
    "warn_cache",
    "warn_fallback",
]

Backend = Literal["numba", "cython", "python"]
State = Literal["ready", "building", "failed"]

DISABLE_ENV = "CYTASK_DISABLE_COMPILE"


def compile_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


@dataclass(frozen=True)
class NativeEntry:
    """A C entry point with the core's ABI, ready for ``Engine.submit_native``."""

    address: int
    arg_kinds: bytes
    result_kind: bytes
    #: the object that owns the machine code; keep it alive as long as the address
    keepalive: Any = field(repr=False, compare=False)


#: a native argument kind (a byte of ``NativeEntry.arg_kinds``) -> the exact type that fits
_KIND_TYPE: dict[int, type] = {ord("i"): int, ord("d"): float, ord("b"): bool}


def _fits_dispatcher(value: object) -> bool:
    """Arguments whose Numba typing gives Python's semantics (see the README)."""
    t = type(value)
    if isinstance(value, int) and t is int:
        return bool(INT64_MIN <= value <= INT64_MAX)
    if t is float or t is bool:
        return True
    np = _numpy()
    if np is not None and t is np.ndarray:
        return bool(value.dtype in (np.int64, np.float64, np.bool_))  # type: ignore[attr-defined]
    return False


def _numpy() -> Any:
    import sys

    return sys.modules.get("numpy")


class CompiledTask:
    """One function after the compile stage: which backend runs it, and why.

    Attributes are replaced (never mutated piecemeal) under ``_lock`` by the
    background Cython build; readers without the lock may see the state just
    before a switch, which is always a correct way to run the task (Python).
    """

    def __init__(self, fn: Callable[..., Any], analysis: Analysis | None = None) -> None:
        self.python_fn: Callable[..., Any] = fn
        self.name: str = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
        self.backend: Backend = "python"
        self.state: State = "ready"
        self.fallback_reason: str | None = None
        self.reasons: list[Reason] = []
        self.errors: list[CompileError] = []
        #: what the compile stage repaired or worked around (an unusable cache folder,
        #: a corrupt cache entry that was rebuilt): true, and not a reason to fall back
        self.notes: list[str] = []
        self._notes_warned = 0  # how many of ``notes`` warn_cache has looked at
        self.compile_ms: float = 0.0
        self.native: NativeEntry | None = None
        self.analysis = analysis
        self._callable: Callable[..., Any] | None = None
        self._nargs = len(analysis.arg_names) if analysis else -1
        self._constants: dict[str, object] = dict(analysis.constants) if analysis else {}
        g = getattr(fn, "__globals__", {})
        #: global name -> the module or math function the compiled code calls in its place
        self._imports: dict[str, object] = (
            {n: g[n] for n in analysis.imports if n in g} if analysis else {}
        )
        #: (module's global name, attribute) -> what the compiled code calls for it
        self._module_attrs: dict[tuple[str, str], object] = {
            (n, attr): getattr(self._imports[n], attr, _MISSING)
            for n, attrs in (analysis.module_attrs.items() if analysis else ())
            if n in self._imports
            for attr in attrs
        }
        if self._imports:
            self._constants.setdefault(_IMPORTS_KEY, None)  # plan() must look at them too
        #: the C entry point's check of the globals (see _guard), when it has one
        self._guard: Any = None
        #: (native, the exact type of each argument) for plan(); rebuilt if native changes
        self._native_types: tuple[NativeEntry, tuple[type, ...]] | None = None
        #: ((address, arg_kinds, result_kind, guard cell or 0, python_fn), options) once
        #: a call of a task with these options (no retries, no time limit) planned
        #: native: the engine's submit path then checks the arguments and the globals
        #: in C (``Core._submit_native_exact``) without calling plan().  None where
        #: plan() must run; cleared whenever ``native`` or ``backend`` changes.
        self._fast: tuple[tuple[int, bytes, int, int, Callable[..., Any]], Any] | None = None
        self._cython_globals: list[str] = []
        self._cython_module: Any = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self._warned = False

    def __repr__(self) -> str:
        why = f" ({self.fallback_reason})" if self.fallback_reason else ""
        return f"<CompiledTask {self.name} backend={self.backend} state={self.state}{why}>"

    @property
    def filename(self) -> str:
        if self.analysis:
            return self.analysis.filename
        code = getattr(self.python_fn, "__code__", None)
        return str(code.co_filename) if code is not None else "<unknown>"

    @property
    def lineno(self) -> int:
        if self.analysis:
            return self.analysis.lineno
        code = getattr(self.python_fn, "__code__", None)
        return int(code.co_firstlineno) if code is not None else 0

    @property
    def numba_error(self) -> CompileError | None:
        """Why Numba did not compile it (kept when Cython then did), or None."""
        for exc in self.errors:
            if isinstance(exc, IneligibleError | NumbaCompileError):
                return exc
        return None

    # -- per call --------------------------------------------------------------

    def plan(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> NativeEntry | Callable[..., Any] | None:
        """How to run one call: a ``NativeEntry``, a Python callable, or None (plain Python).

        Arguments that do not fit the compiled signature (another type, an int past
        int64, keyword arguments, a rebound global constant) get None: that call
        runs as plain Python, with Python's semantics.
        """
        if kwargs or len(args) != self._nargs:
            if self.backend == "cython" and self._callable is not None:
                # Cython binds arguments as Python does: keywords, defaults, *args
                self._refresh_cython_globals()
                return self._callable
            return None
        if self._constants:
            guard = self._guard
            if guard is None:
                if not self._constants_unchanged():
                    return None
            else:
                version = guard.version()  # read before the values are compared
                if version != guard.verified:
                    if not self._constants_unchanged():
                        return None
                    guard.verify(version)
        native = self.native
        if native is not None:
            # the hot path of every native submission: an exact type test per argument
            # (a bool is not an int here), then the int64 range for ints
            checks = self._native_types
            if checks is None or checks[0] is not native:
                types = tuple(_KIND_TYPE[k] for k in native.arg_kinds)
                checks = self._native_types = (native, types)
            types = checks[1]
            i = 0  # an index, not zip() or enumerate(): measured cheaper on CPython 3.11
            for v in args:
                t = types[i]
                # (mypy narrows v to `t`'s static type, object; it is an int here)
                if type(v) is not t or (t is int and not INT64_MIN <= v <= INT64_MAX):  # type: ignore[operator]
                    return None
                i += 1  # noqa: SIM113  (enumerate() costs more here)
            return native
        caller = self._callable
        if caller is None:
            return None
        if self.backend == "numba":
            return caller if all(_fits_dispatcher(v) for v in args) else None
        return caller

    def enable_fast(self, options: Any) -> None:
        """Let submissions with ``options`` skip plan() (see ``_fast``) if they may.

        Called after plan() returned ``native`` for a call; a task whose module
        constants have no guard is left to plan(), which compares them every call.
        """
        native = self.native
        guard = self._guard
        if native is None or (self._constants and guard is None):
            return
        if options is not None and (options.retries or options.timeout):
            return  # the Python task machinery runs those
        entry = (
            native.address,
            native.arg_kinds,
            native.result_kind[0],
            guard.address if guard is not None else 0,
            self.python_fn,
        )
        self._fast = (entry, options)

    def _constants_unchanged(self) -> bool:
        """Whether the globals frozen into the compiled code still hold their values.

        Floats compare by bit pattern: ``-0.0 == 0.0`` and ``nan != nan``, yet
        ``copysign`` tells the zeros apart and a NaN constant is unchanged.  Modules and
        math functions compare by identity (``mock.patch`` of a ``from math import``,
        and of ``math.sqrt`` itself).
        """
        if not self._constants:
            return True
        g = getattr(self.python_fn, "__globals__", {})
        for k, v in self._constants.items():
            if k != _IMPORTS_KEY and not _same_constant(g.get(k, _MISSING), v):
                return False
        if not all(g.get(k, _MISSING) is v for k, v in self._imports.items()):
            return False
        return all(
            getattr(self._imports[n], attr, _MISSING) is v
            for (n, attr), v in self._module_attrs.items()
        )

    def _refresh_cython_globals(self) -> None:
        # the compiled module has its own globals: copy the ones the function reads,
        # and drop the ones its module no longer has (a call then raises NameError)
        mod = self._cython_module
        g = getattr(self.python_fn, "__globals__", {})
        d = mod.__dict__
        for name in self._cython_globals:
            if name in g:
                d[name] = g[name]
            else:
                d.pop(name, None)

    # -- waiting for a background build ----------------------------------------

    def wait(self, timeout: float | None = None) -> CompiledTask:
        """Block until a background (Cython) build has finished; returns self."""
        self._done.wait(timeout)
        return self

    # -- switches (called by the pipeline) --------------------------------------

    def _disable_dispatcher(self, why: str, reasons: list[Reason]) -> None:
        with self._lock:
            self._fast = None  # submissions plan again (and warn once)
            self._callable = None
            self.backend = "python"
            self.fallback_reason = why
            self.reasons.extend(reasons)


_MISSING = object()
_IMPORTS_KEY = "\0imports"  # not a Python name: marks that imports are checked too


def _same_constant(now: object, frozen: object) -> bool:
    """Is a global still the value frozen into the compiled code?

    Floats compare by their bits: NaN is still NaN (``==`` says no, and every call
    would run in Python), ``-0.0`` is not ``0.0`` (``==`` says it is), and a NaN of
    the other sign is another constant (``math.copysign(x, nan)`` tells them apart).
    """
    if type(now) is not type(frozen):
        return False
    if type(now) is float:
        return _DOUBLE.pack(now) == _DOUBLE.pack(frozen)
    return now == frozen


_DOUBLE = struct.Struct("<d")


_cache_warned: set[str] = set()


def warn_cache(compiled: CompiledTask, *, stacklevel: int = 2) -> None:
    """Emit ``CompileCacheWarning`` once per process for each cache problem worked around."""
    seen = len(compiled.notes)
    if compiled._notes_warned == seen:
        return  # the per-submission cost once every note has been looked at
    compiled._notes_warned = seen
    for note in compiled.notes:
        if note.startswith("cache: ") and note not in _cache_warned:
            _cache_warned.add(note)
            warnings.warn(note, CompileCacheWarning, stacklevel=stacklevel + 1)


def warn_fallback(compiled: CompiledTask, *, stacklevel: int = 2) -> None:
    """Emit ``CompileFallbackWarning`` once for a task that runs as plain Python."""
    if compiled.backend != "python" or compiled._warned:
        return
    compiled._warned = True
    warnings.warn(
        f"task {compiled.name} runs as plain Python: {compiled.fallback_reason}",
        CompileFallbackWarning,
        stacklevel=stacklevel + 1,
    )


# -- the pipeline ------------------------------------------------------------------


def _summary(reasons: list[Reason], limit: int = 2) -> str:
    text = "; ".join(str(r) for r in reasons[:limit])
    if len(reasons) > limit:
        text += f"; and {len(reasons) - limit} more"
    return text


def _unexpected(kind: type[CompileError], where: str, exc: BaseException) -> CompileError:
    """A ``CompileError`` for an exception no backend anticipated (a cache folder that
    vanished, a bug): the task falls back to Python and says so, never raises."""
    err = kind(f"{where} failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _note_cache(ct: CompiledTask) -> None:
    from cytask.compiler._cache import cache_note

    note = cache_note()
    if note is not None and f"cache: {note}" not in ct.notes:
        ct.notes.append(f"cache: {note}")


def compile_task(fn: Callable[..., Any], *, strict: bool = False) -> CompiledTask:
    """Compile ``fn`` with the best backend that keeps Python's answers.

    Never raises unless ``strict``: then a task that would run as plain Python
    raises the ``CompileError`` of the last backend tried (also when compiling is
    disabled by ``CYTASK_DISABLE_COMPILE``).  A Cython build, when it is needed,
    runs in the background unless ``strict`` (see ``CompiledTask.wait``).
    """
    t0 = time.perf_counter()
    if compile_disabled():
        ct = CompiledTask(fn)
        ct.fallback_reason = f"compiling is disabled by {DISABLE_ENV}=1"
        if strict:
            raise CompileError(f"{ct.name} cannot be compiled: {ct.fallback_reason}")
        return ct
    try:
        analysis = analyze(fn)
    except Exception as exc:  # a bug in the analysis must not break submitting
        ct = CompiledTask(fn)
        err = _unexpected(IneligibleError, "the analysis", exc)
        ct.errors.append(err)
        ct.fallback_reason = str(err)
        if strict:
            raise err from exc
        return ct
    ct = CompiledTask(fn, analysis)
    try:
        _try_numba(ct, analysis)
    except CompileError as exc:
        _numba_failed(ct, analysis, exc)
    except Exception as exc:
        _numba_failed(ct, analysis, _unexpected(NumbaCompileError, "the Numba build", exc))
    else:
        _note_cache(ct)
        ct.compile_ms = (time.perf_counter() - t0) * 1000.0
        return ct
    numba_why = str(ct.errors[-1])
    from cytask.compiler import _cython

    try:
        try:
            job = _cython.prepare(analysis)
        except CythonCompileError:
            raise
        except Exception as exc:
            raise _unexpected(CythonCompileError, "preparing the Cython build", exc) from exc
    except CythonCompileError as exc:
        ct.errors.append(exc)
        ct.reasons.extend(r for r in exc.reasons if r not in ct.reasons)
        ct.fallback_reason = f"{numba_why}; {exc}"
        _note_cache(ct)
        ct.compile_ms = (time.perf_counter() - t0) * 1000.0
        if strict:
            raise exc
        return ct
    ct.fallback_reason = f"{numba_why}; Cython build in progress"
    ct.state = "building"
    ct._done.clear()

    def finish() -> None:
        try:
            try:
                module, fn_c = job.build()
            except CythonCompileError:
                raise
            except Exception as exc:
                raise _unexpected(CythonCompileError, "the Cython build", exc) from exc
        except CythonCompileError as exc:
            with ct._lock:
                ct.errors.append(exc)
                ct.reasons.extend(r for r in exc.reasons if r not in ct.reasons)
                ct.fallback_reason = f"{numba_why}; {exc}"
                ct.state = "failed"
        else:
            with ct._lock:
                ct._cython_module = module
                ct._cython_globals = list(job.global_names)

                def call_cython(*args: Any, **kwargs: Any) -> Any:
                    # the globals it reads, when it runs (not when it was submitted)
                    ct._refresh_cython_globals()
                    return fn_c(*args, **kwargs)

                ct._callable = call_cython
                ct.backend = "cython"
                ct.fallback_reason = None  # compiled; why not Numba stays in errors/reasons
                ct.state = "ready"
        finally:
            if job.repaired is not None:
                ct.notes.append(f"repaired: {job.repaired}")
            _note_cache(ct)
            ct.compile_ms = (time.perf_counter() - t0) * 1000.0
            ct._done.set()

    if strict:
        finish()
        if ct.backend != "cython":
            raise ct.errors[-1]
        return ct
    _background().submit(finish)
    ct.compile_ms = (time.perf_counter() - t0) * 1000.0
    return ct


def _numba_failed(ct: CompiledTask, analysis: Analysis, exc: CompileError) -> None:
    """Record why Numba did not compile it; the task is back to plain Python."""
    ct.native = None
    ct._fast = None
    ct._callable = None
    ct.backend = "python"
    ct.errors.append(exc)
    reasons = exc.reasons or [Reason(analysis.lineno, str(exc))]  # always on record
    ct.reasons.extend(r for r in reasons if r not in ct.reasons)


def _try_numba(ct: CompiledTask, analysis: Analysis) -> None:
    if analysis.reasons:
        raise IneligibleError(
            f"Numba cannot run it exactly: {_summary(analysis.reasons)}", analysis.reasons
        )
    from cytask.compiler import _numba

    build = _numba.build(analysis)  # raises NumbaCompileError
    if build.repaired is not None:
        ct.notes.append(f"repaired: {build.repaired}")
    if build.cfunc is not None:
        assert analysis.arg_kinds is not None and analysis.result_kind is not None
        if build.guard is not None:
            ct._guard = build.guard
            version = build.guard.version()
            if ct._constants_unchanged():
                build.guard.verify(version)
        ct.native = NativeEntry(
            address=int(build.cfunc.address),
            arg_kinds=analysis.arg_kinds.encode(),
            result_kind=analysis.result_kind.encode(),
            keepalive=build,
        )
    if build.note is not None:
        ct.reasons.append(Reason(analysis.lineno, build.note))
    ct._callable = _numba.make_caller(
        analysis, build, ct.python_fn, ct._disable_dispatcher, ct._constants_unchanged
    )
    ct.backend = "numba"


# Two pools, so that a compile waiting for a build can never starve the builds.
_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _background(kind: str = "build") -> ThreadPoolExecutor:
    """A small pool per kind of job: compiles never run on a submitter's thread."""
    with _pools_lock:
        pool = _pools.get(kind)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"cytask-{kind}")
            _pools[kind] = pool
        return pool


def compile_task_async(
    fn: Callable[..., Any],
    strict: bool = False,
    *,
    on_compiled: Callable[[CompiledTask], None] | None = None,
) -> Future[CompiledTask]:
    """``compile_task`` on a background thread, so submitting never waits for a compiler.

    The future resolves once Numba has decided; a Cython build may still be running
    then (``state == "building"``) and the task switches to it when it finishes.
    ``on_compiled`` runs with the result before the future resolves (the engine
    publishes it on its task there, so ``task.backend`` is current without another
    submission).  In strict mode the future waits for the build and carries its
    ``CompileError``.
    """

    def run() -> CompiledTask:
        ct = compile_task(fn, strict=strict)
        if on_compiled is not None:
            on_compiled(ct)
        return ct

    return _background("compile").submit(run)
