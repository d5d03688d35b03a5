"""Shared fixtures: engines that always stop, the --run-slow switch, a seeded RNG, a
real redis-server."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _redis_server import RedisServer

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
def hold() -> Iterator[Callable[..., threading.Event]]:
    """``hold(eng, n=1)`` occupies n workers of `eng` until the returned gate is set.

    Returns once all n hold tasks run, so what is submitted next stays queued.  Every
    gate is set at teardown, so no worker stays stuck after a failed test.
    """
    gates: list[threading.Event] = []

    def occupy(eng: cytask.Engine, n: int = 1) -> threading.Event:
        gate = threading.Event()
        gates.append(gate)
        running = threading.Barrier(n + 1)

        def held() -> None:
            running.wait()
            gate.wait()

        for _ in range(n):
            eng.submit(held)
        running.wait(timeout=30)
        return gate

    yield occupy
    for gate in gates:
        gate.set()


@pytest.fixture
def rng() -> random.Random:
    seed = random.randrange(2**32)
    print(f"random seed: {seed}")
    return random.Random(seed)


# -- a real redis-server, started by the tests ------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A durable store's URL: a file on disk, then a real redis-server (the tests that
    take it run once per store)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tasks.db"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def redis_url(redis_server: RedisServer, request: pytest.FixtureRequest) -> str:
    """A store URL with a prefix of this test's own: tests share the server, not keys."""
    import hashlib

    return redis_server.url(hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12])
