"""The errors and the warning of the compile stage.

::

    CytaskError                       (cytask._errors)
     +-- CompileError                  a task could not be compiled as requested
          +-- IneligibleError          the analysis found code no backend can run natively
          +-- NumbaCompileError        Numba rejected the function (typing, lowering, ...)
          +-- CythonCompileError       the Cython build failed (or no C compiler)

    UserWarning
     +-- CompileFallbackWarning        a task asked to be compiled runs as plain Python
     +-- CompileCacheWarning           the cache folder could not be used; another one is

Each ``CompileError`` keeps the ``reasons`` (line-numbered findings) that caused it,
so strict mode and the report tell the same story.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cytask._errors import CytaskError

if TYPE_CHECKING:
    from cytask.compiler._analysis import Reason

__all__ = [
    "CompileCacheWarning",
    "CompileError",
    "CompileFallbackWarning",
    "CythonCompileError",
    "IneligibleError",
    "NumbaCompileError",
]


class CompileError(CytaskError):
    """A task could not be compiled as requested (raised in strict mode)."""

    backend: str = "any"

    def __init__(self, message: str, reasons: list[Reason] | None = None) -> None:
        super().__init__(message)
        self.reasons: list[Reason] = list(reasons or [])


class IneligibleError(CompileError):
    """The analysis found constructs that no native backend runs with Python's semantics."""

    backend = "analysis"


class NumbaCompileError(CompileError):
    """Numba could not compile the function in nopython mode."""

    backend = "numba"


class CythonCompileError(CompileError):
    """Cython (or the C compiler behind it) could not build the function."""

    backend = "cython"


class CompileFallbackWarning(UserWarning):
    """A task asked for ``compile_to_c`` runs as plain Python; ``fallback_reason`` says why."""


class CompileCacheWarning(UserWarning):
    """The configured cache folder cannot be used; compiled code is cached elsewhere."""
