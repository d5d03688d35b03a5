"""``import cytask`` stays light: no asyncio, numba or dataclasses until they are used."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import cytask
heavy = ("asyncio", "numba", "dataclasses", "inspect", "random", "datetime")
print(",".join(m for m in heavy if m in sys.modules))
"""


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    return set(out.split(",")) - {""}


def test_import_cytask_loads_no_asyncio_and_no_heavy_modules() -> None:
    assert _loaded_after(PROBE) == set()


@pytest.mark.parametrize(
    ("use", "needs"),
    [
        ("cytask.EngineStats", "dataclasses"),
        ("from cytask import Periodic", "datetime"),
        ("cytask.Engine(workers=1).stats()", "dataclasses"),
        (
            "e = cytask.Engine(workers=1)\n"
            "async def f():\n    return 1\n"
            "assert e.submit(f).result(timeout=30) == 1",
            "asyncio",
        ),
    ],
)
def test_lazy_modules_load_on_first_use(use: str, needs: str) -> None:
    assert needs in _loaded_after(PROBE.replace("import cytask\n", f"import cytask\n{use}\n"))
