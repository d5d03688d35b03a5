"""The machine code of a compiled task, for the tests and benchmarks that read it.

Numba keeps no assembly for code it loaded from its cache, so ``uncached_dispatcher`` builds
the generated module again, uncached, in a folder of the caller's.  ``innermost_loops``
finds the loops in it: a label and a later jump back to it, within the first function
(the compiled function itself; Numba's Python wrapper follows it).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

__all__ = ["innermost_loops", "uncached_dispatcher"]


def uncached_dispatcher(ct: Any, folder: Path) -> Any:
    """`ct`'s Numba dispatcher built again without the cache, in `folder`.

    It takes the task's arguments, then the address of an int64[2] error slot (the
    flag, then whether the result is a NumPy scalar); once called, its
    ``inspect_asm(signature)`` has the machine code.
    """
    build = ct.native.keepalive if ct.native is not None else None
    if build is None:
        raise ValueError(f"{ct.name} has no C entry point: {ct.fallback_reason}")
    fresh = folder / f"{build.path.stem}_fresh.py"
    fresh.write_text(build.path.read_text().replace("cache=True", "cache=False"))
    spec = importlib.util.spec_from_file_location(fresh.stem, fresh)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.__ct_jit


def innermost_loops(asm: str) -> list[list[str]]:
    """The instructions of each loop of the first function that holds no other loop."""
    lines = asm.split(".Lfunc_end0")[0].splitlines()
    labels: dict[str, int] = {}
    spans: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        if label := re.match(r"^(\.LBB\d+_\d+):", line):
            labels[label.group(1)] = i
        back = re.match(r"^\s+j\w+\s+(\.LBB\d+_\d+)", line)
        if back and labels.get(back.group(1), i) < i:
            spans.append((labels[back.group(1)], i))
    inner = [s for s in spans if not any(s[0] <= t[0] and t[1] <= s[1] and t != s for t in spans)]
    return [
        [x for x in lines[a + 1 : b + 1] if x.startswith("\t") and not x.strip().startswith(".")]
        for a, b in inner
    ]
