"""Shared fixtures: engines that always stop, the --run-slow switch, a seeded RNG."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

import cytask
from cytask import _core


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run soak tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="soak test: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    build = "debug" if _core.DEBUG_BUILD else "release"
    return f"cytask {cytask.__version__} ({build} build) from {os.path.dirname(cytask.__file__)}"


@pytest.fixture
def engine() -> Iterator[cytask.Engine]:
    eng = cytask.Engine(workers=2)
    try:
        yield eng
    finally:
        eng.shutdown(wait=True, timeout=30)


@pytest.fixture
def make_engine() -> Iterator[object]:
    """Factory for engines with custom options; every one is shut down afterwards."""
    made: list[cytask.Engine] = []

    def make(**kwargs: object) -> cytask.Engine:
        eng = cytask.Engine(**kwargs)  # type: ignore[arg-type]
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.shutdown(wait=True, timeout=30)


@pytest.fixture
def rng() -> random.Random:
    seed = random.randrange(2**32)
    print(f"random seed: {seed}")
    return random.Random(seed)
