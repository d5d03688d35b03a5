# Developer shortcuts; CI runs .ci/run.
PY ?= python3

.PHONY: build debug test lint bench

build:  ## rebuild the native core in place (editable installs)
	$(PY) setup.py build_ext --inplace -q

debug:  ## debug build: bounds checks, C asserts, balance counters
	CYTASK_DEBUG=1 $(PY) setup.py build_ext --inplace -q --force

test:
	$(PY) -m pytest

lint:
	ruff check engine compiler tests benchmarks examples
	ruff format --check engine compiler tests benchmarks examples
	cython-lint pyx

bench:
	$(PY) benchmarks/core.py
	$(PY) benchmarks/vtasks.py
	$(PY) benchmarks/compiled.py
