"""A tiny shared library of native tasks (the ct_native.h ABI), built with the C compiler."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = r"""
#include <stdint.h>
#include <time.h>

typedef union { int64_t i; double d; } ct_slot;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* wait without the GIL until the int32 at address args[0] is nonzero; result: 0 */
int32_t wait_gate(const ct_slot *args, ct_slot *result) {
    const int32_t *gate = (const int32_t *)(intptr_t)args[0].i;
    while (__atomic_load_n(gate, __ATOMIC_ACQUIRE) == 0) { }
    result->i = 0;
    return 0;
}

/* spin for args[0] ns without the GIL; result: the start time (CLOCK_MONOTONIC ns) */
int32_t spin_ns(const ct_slot *args, ct_slot *result) {
    int64_t start = now_ns();
    while (now_ns() - start < args[0].i) { }
    result->i = start;
    return 0;
}

int32_t add_i64(const ct_slot *args, ct_slot *result) {
    result->i = args[0].i + args[1].i;
    return 0;
}

int32_t scale(const ct_slot *args, ct_slot *result) {
    result->d = (double)args[0].i * args[1].d;
    return 0;
}

int32_t checked_div(const ct_slot *args, ct_slot *result) {
    if (args[1].i == 0) return 1;          /* ZeroDivisionError */
    result->i = args[0].i / args[1].i;
    return 0;
}

int32_t hand_back(const ct_slot *args, ct_slot *result) {
    (void)args; (void)result;
    return 2;                               /* run the Python fallback */
}
"""


class NativeLib:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))

    def run(self, script: str, *args: str, timeout: float = 60) -> list[str]:
        """Run `script` in a fresh interpreter with this library's path as its first
        argument; assert it exits 0 and return the words it printed."""
        out = subprocess.run(
            [sys.executable, "-c", script, str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    def address(self, name: str) -> int:
        value = ctypes.cast(getattr(self.lib, name), ctypes.c_void_p).value
        assert value is not None
        return value


@pytest.fixture(scope="session")
def native_lib(tmp_path_factory: pytest.TempPathFactory) -> NativeLib:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the test library")
    d = tmp_path_factory.mktemp("native")
    src = d / "tasks.c"
    src.write_text(SOURCE)
    out = d / "libtasks.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    return NativeLib(out)
