"""The compiled kernel's hot loop against hand-written ``njit``: instructions, uops, cycles.

    python benchmarks/compiled_mca.py

Timing on a 2-core VM cannot show what a 16-core Xeon with two hyperthreads per core
does with a loop.  Its machine code can: this prints the innermost loop of the LCG
kernel (benchmarks/kernels.py) as cytask compiles it and as ``numba.njit(nogil=True)``
does, per LCG step, and, where LLVM's ``llvm-mca`` is installed (Debian: ``llvm``), its
model of cycles and uops on several server cores.  One thread is bound by the LCG's
dependency chain; two hyperthreads on one core share its issue width, so there uops per
step are what counts.  Numbers in benchmarks/README-compiled.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np
from kernels import pi_lcg

from cytask.compiler import compile_task
from cytask.compiler._asm import innermost_loops, uncached_dispatcher

STEP = "$1103515245"  # the LCG's multiplier: one per step in the machine code
CPUS = ["skylake-avx512", "icelake-server", "znver3"]


def hot(asm: str) -> tuple[list[str], int]:
    """The innermost loop with the most LCG steps, and its step count."""
    body = max(innermost_loops(asm), key=lambda b: sum(STEP in x for x in b))
    return body, sum(STEP in x for x in body)


def mca(body: list[str], cpu: str) -> tuple[float, float]:
    """llvm-mca's (cycles, uops) per pass of `body`, back jump left out."""
    text = "\n".join(x for x in body if not re.match(r"\s+j\w+\s", x)) + "\n"
    out = subprocess.run(
        ["llvm-mca", f"-mcpu={cpu}", "-iterations=2000"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    uops = int(re.search(r"Total uOps:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return cycles / 2000, uops / 2000


def compiled_asm(folder: Path) -> str:
    """cytask's compiled kernel, built afresh (code from Numba's cache has no assembly)."""
    jit = uncached_dispatcher(compile_task(pi_lcg), folder)
    err = np.zeros(2, np.int64)
    assert jit(1000, 7, err.ctypes.data) == pi_lcg(1000, 7) and err[0] == 0
    return str(jit.inspect_asm(jit.signatures[0]))


def main() -> None:
    hand = numba.njit(nogil=True)(pi_lcg)
    hand(10, 1)
    with tempfile.TemporaryDirectory() as folder:
        loops = {
            "cytask": hot(compiled_asm(Path(folder))),
            "njit": hot(hand.inspect_asm(hand.signatures[0])),
        }
    print(f"Numba {numba.__version__}, Python {sys.version.split()[0]}")
    for name, (body, steps) in loops.items():
        per_step = len(body) / steps
        print(f"{name}: {len(body)} instructions for {steps} LCG steps: {per_step:.2f}/step")
    if shutil.which("llvm-mca") is None:
        print("llvm-mca not found (Debian package llvm): no cycle model")
        return
    for cpu in CPUS:
        per = {}
        for name, (body, steps) in loops.items():
            cycles, uops = mca(body, cpu)
            per[name] = (cycles / steps, uops / steps)
        (c1, u1), (c2, u2) = per["cytask"], per["njit"]
        print(
            f"{cpu}: cycles/step cytask {c1:.2f} njit {c2:.2f} ({c2 / c1:.3f}x), "
            f"uops/step cytask {u1:.2f} njit {u2:.2f} ({u2 / u1:.3f}x)"
        )


if __name__ == "__main__":
    main()
