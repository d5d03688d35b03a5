#!/usr/bin/env bash
# The many-core figures of benchmarks/README-compiled.md, on a bigger machine that has
# Python, Cython, NumPy and Numba installed but no network: builds cytask into a scratch
# folder (nothing installed) and runs the compiled benchmarks, each twice.
#
#     OUT=/some/folder bash benchmarks/many_cores.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/many-cores-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CYTASK_CACHE_DIR=$(mktemp -d)
export CYTASK_CACHE_DIR
{
    python3 -c "import sys, numba, numpy, Cython; print(sys.version.split()[0], 'numba',
        numba.__version__, 'numpy', numpy.__version__, 'Cython', Cython.__version__)"
    echo "nproc $(nproc)"
    lscpu | grep -E "^(Model name|Thread|Core|Socket|NUMA node\(s\))"
} | tee "$OUT/machine.txt"
site=$(mktemp -d)
if ! python3 setup.py build --build-base "$site" > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    exit 1
fi
PYTHONPATH=$(echo "$site"/lib*)
export PYTHONPATH
for run in 1 2; do
    for bench in compiled compiled_scaling compiled_checks; do
        echo "== $bench, run $run" | tee -a "$OUT/errors.txt"
        timeout 240 python3 "benchmarks/$bench.py" 2>> "$OUT/errors.txt"
    done
done | tee "$OUT/results.txt"
