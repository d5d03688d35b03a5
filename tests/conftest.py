"""Shared fixtures: engines that always stop, the --run-slow switch, a seeded RNG, a
real redis-server."""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections.abc import Callable, Iterator

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


class RedisServer:
    """A private redis-server on a free loopback port, stopped by its pid.

    ``persist=True`` turns on the append-only file with an fsync per write, so a
    restart (``stop()`` then ``start()``, same port and folder) keeps every write
    Redis acknowledged.
    """

    def __init__(self, folder: str, *, persist: bool = False) -> None:
        import shutil
        import socket

        self.binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if self.binary is None:
            pytest.fail("redis-server is missing: apt-get install redis-server (see README)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, prefix: str = "cytask", **options: object) -> str:
        query = "&".join([f"prefix={prefix}", *(f"{k}={v}" for k, v in options.items())])
        return f"redis://127.0.0.1:{self.port}/0?{query}"

    def start(self) -> None:
        import socket
        import time

        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        self.proc = subprocess.Popen(
            [self.binary or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.folder, "--save", "", "--appendonly", "no", *aof,
             "--logfile", os.path.join(self.folder, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:  # ready once it answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (Redis writes its files and exits) or SIGKILL; waits for the exit."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            proc.wait(30)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer, request: pytest.FixtureRequest) -> str:
    """A store URL with a prefix of this test's own: tests share the server, not keys."""
    import hashlib

    return redis_server.url(hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12])
