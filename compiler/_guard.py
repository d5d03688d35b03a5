"""A run-time check, without the GIL, that a module's globals have not changed.

Compiled code freezes the module constants and math functions it reads.  Python reads
them when the call runs, which for a queued or delayed task is later than when it was
submitted.  The C entry point therefore compares, before it runs, the version tag of
the function's globals dict (CPython bumps ``ma_version_tag``, PEP 509, on every change
to a dict) with the last version at which the frozen values were verified; on any
difference it hands the call back to Python (``CT_RC_PYTHON``), which reads today's
globals.  ``plan()`` re-verifies the values, and moves the expected version on, only
when the dict changed.

The compiled code finds its guard through a symbol (``ct_guard_<digest>``) that this
process binds to a cell: the address of the version tag, the version verified, and
the address of the next cell or 0.  A function that reads a module's attributes
(``math.sqrt``) gets one more cell, chained, on that module's dict: ``mock.patch``
of ``math.sqrt`` changes that dict, not the function's globals.  The compiled code
checks each cell by its own symbol; the engine's fast submit path walks the chain.
The machine code in Numba's cache stays valid across processes.

Where the layout cannot be confirmed (another Python than CPython 3.11-3.13, a
free-threaded build), ``available()`` is False and a task that reads module globals
gets no C entry point: it runs through the dispatcher, which checks with the GIL.
"""

from __future__ import annotations

import ctypes
import sys
import sysconfig
import threading
from typing import Any

__all__ = ["Guard", "available", "guard_for"]

#: offset of ``ma_version_tag`` in a ``PyDictObject`` (after PyObject_HEAD, ma_used)
_OFFSET = ctypes.sizeof(ctypes.c_ssize_t) * 2 + ctypes.sizeof(ctypes.c_ssize_t)


def _version(d: dict[str, Any]) -> int:
    return int(ctypes.c_uint64.from_address(id(d) + _OFFSET).value)


def _probe() -> bool:
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        return False
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    d: dict[str, Any] = {"a": 1}
    v0 = _version(d)
    _ = d["a"]
    if _version(d) != v0:
        return False
    d["a"] = 2
    v1 = _version(d)
    d["b"] = 3
    v2 = _version(d)
    del d["b"]
    return len({v0, v1, v2, _version(d)}) == 4


_AVAILABLE = _probe()


def available() -> bool:
    return _AVAILABLE


class Guard:
    """The cells one compiled function's C entry point checks, and how to move them on.

    Invariants: ``cell[1]`` only ever holds a version of its dict at which the frozen
    values were verified equal to the live ones; versions are never reused, so the
    dict's current version equals ``cell[1]`` only if nothing changed since.
    ``cell[2]`` is the address of the next cell of the chain (a module's dict) or 0;
    set before the code that reads it can run, never changed after.
    """

    def __init__(self, symbol: str, globals_: dict[str, Any]) -> None:
        self.symbol = symbol
        self.globals = globals_
        self.cell = (ctypes.c_uint64 * 3)(id(globals_) + _OFFSET, 0, 0)
        self._view = ctypes.c_uint64.from_address(id(globals_) + _OFFSET)
        self.chain: list[Guard] = [self]
        self.verified: tuple[int, ...] | int = -1

    @property
    def address(self) -> int:
        return ctypes.addressof(self.cell)

    def link(self, other: Guard) -> None:
        """Check ``other`` (a module's dict) too, after the cells already chained."""
        if other not in self.chain:
            self.chain[-1].cell[2] = other.address
            self.chain.append(other)

    def version(self) -> tuple[int, ...]:
        """The versions of every dict of the chain, read now."""
        return tuple(int(g._view.value) for g in self.chain)

    def verify(self, version: tuple[int, ...]) -> None:
        """The frozen values matched the dicts at ``version``: let the C code run."""
        self.verified = version
        for g, v in zip(self.chain, version, strict=True):
            g.cell[1] = v


_guards: dict[str, Guard] = {}  # symbol -> its guard, for the life of the process
_lock = threading.Lock()


def guard_for(symbol: str, globals_: dict[str, Any]) -> Guard | None:
    """This process's guard for ``symbol``, bound to ``globals_``; None if not possible.

    The symbol is registered with LLVM before the code that uses it is loaded.  Two
    functions with the same source, file and name but different globals (a module
    executed twice) cannot share one: the second gets None.
    """
    if not _AVAILABLE:
        return None
    with _lock:
        g = _guards.get(symbol)
        if g is None:
            import llvmlite.binding as llvm

            g = Guard(symbol, globals_)
            llvm.add_symbol(symbol, g.address)
            _guards[symbol] = g
        return g if g.globals is globals_ else None
