"""Build script: the native core lives in pyx/, the Python packages in engine/ and compiler/.

Everything installs as ONE import package, ``cytask``:

* ``engine/``   -> ``cytask``            (the runtime users touch)
* ``compiler/`` -> ``cytask.compiler``   (the compile stage)
* ``pyx/_core.pyx`` (including ``pyx/core/*.pyx``, one file per concern) -> extension
  ``cytask._core`` (lock-free queues, worker loop)

``CYTASK_DEBUG=1`` at build time selects the debug build: Cython bounds and
wrap-around checks, C assertions (``-UNDEBUG``), and the queue's balance counters.
"""

import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - only without build isolation
    sys.exit("cytask needs Cython>=3.0,<4 to build: pip install 'Cython>=3.0,<4'")

DEBUG = os.environ.get("CYTASK_DEBUG", "") not in ("", "0")

compile_args = ["-O2", "-std=gnu11", "-Wno-unused-function"]
define_macros = [("CYTASK_DEBUG", "1" if DEBUG else "0")]
if DEBUG:
    compile_args += ["-O0", "-g", "-UNDEBUG"]
else:
    define_macros.append(("NDEBUG", "1"))

extensions = [
    Extension(
        "cytask._core",
        ["pyx/_core.pyx"],
        include_dirs=["pyx/include"],
        define_macros=define_macros,
        extra_compile_args=compile_args,
    )
]

setup(
    package_dir={"cytask": "engine", "cytask.compiler": "compiler"},
    packages=["cytask", "cytask.compiler", "cytask.contrib"],
    package_data={
        "cytask": ["py.typed", "_core.pyi"],
        "cytask.compiler": ["py.typed"],
        "cytask.contrib": ["py.typed"],
    },
    ext_modules=cythonize(
        extensions,
        # separate generated C per build mode: a debug build never reuses release C
        build_dir=f"build/cython-{'debug' if DEBUG else 'release'}",
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "initializedcheck": DEBUG,
            "embedsignature": True,
        },
        compile_time_env={"DEBUG": DEBUG},
    ),
)
