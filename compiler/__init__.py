"""cytask.compiler: the compile stage (Numba, then Cython, then Python).

    from cytask.compiler import compile_task

    ct = compile_task(fn)            # never raises; compile_task(fn, strict=True) does
    ct.backend                       # "numba", "cython" or "python"
    ct.fallback_reason               # why not compiled (None when compiled)
    ct.reasons                       # [Reason(line, message), ...]
    ct.plan(args, kwargs)            # NativeEntry | callable | None, per call

Importing this package does not import Numba; the first compile does.
"""

from cytask.compiler._analysis import Analysis, Reason, analyze
from cytask.compiler._errors import (
    CompileCacheWarning,
    CompileError,
    CompileFallbackWarning,
    CythonCompileError,
    IneligibleError,
    NumbaCompileError,
)
from cytask.compiler._pipeline import (
    CompiledTask,
    NativeEntry,
    compile_disabled,
    compile_task,
    compile_task_async,
    warn_cache,
    warn_fallback,
)

__all__ = [
    "Analysis",
    "CompileCacheWarning",
    "CompileError",
    "CompileFallbackWarning",
    "CompiledTask",
    "CythonCompileError",
    "IneligibleError",
    "NativeEntry",
    "NumbaCompileError",
    "Reason",
    "analyze",
    "compile_disabled",
    "compile_task",
    "compile_task_async",
    "warn_cache",
    "warn_fallback",
]
