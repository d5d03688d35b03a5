"""The Redis store attacked at its edges, with real parts only: a private redis-server
(with a password, on a unix socket, restarted), real ``cytask worker`` processes
stopped and killed.  Each test failed on the code before its fix."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _redis_server import RedisServer

from cytask import StoreError
from cytask._store import open_store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with a password, listening on TCP and on a unix socket."""
    folder = tmp_path / "redis"
    folder.mkdir()
    s = RedisServer(
        str(folder), extra=("--requirepass", "sekret", "--unixsocket", str(folder / "r.sock"))
    )
    s.start()
    try:
        yield s
    finally:
        s.stop(kill=True)


def test_refused_credentials_fail_at_once_naming_the_fix(locked: RedisServer) -> None:
    # Before: redis-py's AuthenticationError is a ConnectionError, so a wrong or missing
    # password was retried for retry_for (forever with retry_for=inf: a worker hung)
    # and then reported as "Redis was unreachable ... start it"
    base = f"127.0.0.1:{locked.port}/0?retry_for=8"
    for url in (f"redis://{base}", f"redis://:wrong@{base}", f"redis://someone:pw@{base}"):
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"refused the credentials.*redis://user:password@"):
            open_store(url)
        assert time.monotonic() - t0 < 5, url
    with pytest.raises(StoreError, match=r"database number 99 in the store URL"):
        open_store(f"redis://:sekret@127.0.0.1:{locked.port}/99")
    store = open_store(f"redis://:sekret@{base}")
    assert store.counts()["pending"] == 0
    store.close()


def test_a_unix_socket_url_opens(locked: RedisServer) -> None:
    # Before: unix:///path became unix:/path (urlunsplit drops "//" without a host),
    # which redis-py refused; and unix sockets refuse socket_keepalive
    sock = Path(locked.folder) / "r.sock"
    store = open_store(f"unix://:sekret@{sock}?db=3&prefix=u")
    try:
        assert store.counts()["pending"] == 0
        assert store._redis.connection_pool.connection_kwargs["db"] == 3  # type: ignore[attr-defined]
    finally:
        store.close()
    with pytest.raises(StoreError, match="No such file"):
        open_store(f"unix://{sock}.missing?retry_for=0.1")
