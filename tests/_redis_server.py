"""A private redis-server for the tests (Debian's redis-server, or valkey-server)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class RedisServer:
    """A private redis-server on a free loopback port, stopped by its pid.

    ``persist=True`` turns on the append-only file with an fsync per write, so a
    restart (``stop()`` then ``start()``, same port and folder) keeps every write
    Redis acknowledged.
    """

    def __init__(self, folder: str, *, persist: bool = False, extra: tuple[str, ...] = ()) -> None:
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
        self.extra = extra  # more redis-server options: ("--requirepass", "x"), ...
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
             "--logfile", os.path.join(self.folder, "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:  # ready once it answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up (with a password)
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


def persistent_server(tmp_path: Path) -> Iterator[RedisServer]:
    """For a fixture: a persistent server in ``tmp_path/redis``, killed afterwards."""
    folder = tmp_path / "redis"
    folder.mkdir()
    s = RedisServer(str(folder), persist=True)
    s.start()
    try:
        yield s
    finally:
        s.stop(kill=True)
