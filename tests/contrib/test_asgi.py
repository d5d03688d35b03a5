"""cytask.contrib.asgi: the lifespan helper, in-process and under a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from starlette.requests import Request

import cytask
from cytask.contrib.asgi import WEB_LINGER, drain, lifespan, running

from ._server import BIN, WEB, Server, uvicorn


def test_drain_keeps_the_event_loop_running() -> None:
    """The loop must go on serving while the engine drains: a task that can only
    finish when a coroutine runs during the drain proves it (a blocked loop would
    leave it running until the deadline, and the drain would abandon it)."""
    ticks: list[float] = []

    async def main() -> cytask.TaskHandle[Any]:
        release = threading.Event()

        async def heartbeat() -> None:
            while len(ticks) < 5:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.001)
            release.set()

        async with running(workers=1, drain_timeout=20) as eng:
            h = eng.submit(release.wait, 20)
            beat = asyncio.ensure_future(heartbeat())
        await beat
        return h

    start = time.monotonic()
    h = asyncio.run(main())
    assert h.result(timeout=0) is True
    assert len(ticks) == 5
    assert time.monotonic() - start < 10


def test_drain_runs_queued_tasks_and_stops_the_engine() -> None:
    async def main() -> tuple[cytask.Engine, list[cytask.TaskHandle[int]]]:
        async with running(workers=2) as eng:
            hs = [eng.submit(time.sleep, 0.01) for _ in range(20)]
        return eng, hs  # type: ignore[return-value]

    eng, hs = asyncio.run(main())
    assert eng.closed
    assert all(h.status is cytask.TaskStatus.SUCCEEDED for h in hs)


def test_drain_deadline_cancels_what_is_left() -> None:
    gate = threading.Event()

    async def main() -> list[cytask.TaskHandle[Any]]:
        async with running(workers=1, drain_timeout=0.2) as eng:
            hs = [eng.submit(gate.wait, 10) for _ in range(3)]
        return hs

    start = time.monotonic()
    hs = asyncio.run(main())
    took = time.monotonic() - start
    gate.set()
    assert took < 5
    assert hs[1].status is cytask.TaskStatus.CANCELLED
    assert hs[2].status is cytask.TaskStatus.CANCELLED


def test_cancelled_drain_still_finishes() -> None:
    """Cancelling the coroutine (a second Ctrl-C) does not leave the engine half-stopped."""
    gate = threading.Event()
    eng = cytask.Engine(workers=1)
    h = eng.submit(gate.wait, 10)

    async def main() -> None:
        task = asyncio.ensure_future(drain(eng, 10))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    gate.set()
    assert h.result(timeout=10) is True
    deadline = time.monotonic() + 10
    while eng._live() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert eng.closed and not eng._live()


def test_lifespan_makes_a_fresh_engine_per_run() -> None:
    made: list[cytask.Engine] = []

    def factory() -> cytask.Engine:
        made.append(cytask.Engine(workers=1))
        return made[-1]

    ls = lifespan(factory, drain_timeout=5)

    async def one_run() -> int:
        async with ls(object()) as state:
            h = state["cytask"].submit(sum, [1, 2, 3])
            result: int = await h
            return result

    assert asyncio.run(one_run()) == 6
    assert asyncio.run(one_run()) == 6
    assert len(made) == 2 and made[0] is not made[1]
    assert all(e.closed for e in made)


def test_a_given_engine_serves_one_run_and_the_second_says_so() -> None:
    """An app run twice (a TestClient per test) with lifespan(eng): the first run drains
    eng, so the second fails at startup, naming the fix, not at its first request."""
    eng = cytask.Engine(workers=1)
    ls = lifespan(eng, drain_timeout=5)

    async def one_run() -> int:
        async with ls(object()) as state:
            result: int = await state["cytask"].submit(sum, [1, 2])
            return result

    assert asyncio.run(one_run()) == 3
    assert eng.closed
    with pytest.raises(RuntimeError, match=r"shut down .*pass a function that makes one"):
        asyncio.run(one_run())


def test_default_engine_is_polite_and_copies_the_context() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    async def main() -> tuple[float, str]:
        async with lifespan(workers=1)(object()) as state:
            eng = state["cytask"]
            request_id.set("req-7")  # as a middleware would, per request
            seen: str = await eng.submit(request_id.get)
            return eng.gil_share, seen, eng.linger

    assert asyncio.run(main()) == (0.2, "req-7", WEB_LINGER)
    assert WEB_LINGER == 0.0005  # batches of a request stream: see Engine(linger=...)


def test_default_engine_with_a_store_does_not_copy_the_context(tmp_path: Any) -> None:
    """A stored task may run in another process, where the endpoint's context does not
    exist: ``lifespan(store=...)`` leaves copy_context off instead of failing at startup."""
    store = f"sqlite:///{tmp_path / 'tasks.db'}"

    async def main() -> tuple[bool, int, int]:
        async with lifespan(workers=1, store=store, drain_timeout=10)(object()) as state:
            eng = state["cytask"]
            h = await eng.asubmit(pow, 2, 5)
            result: int = await h
            again = eng.get(h.task_id)
            assert again is not None
            return eng.copy_context, result, again.result(timeout=0)

    assert asyncio.run(main()) == (False, 32, 32)

    async def asked_for_it() -> None:  # asked for explicitly, the conflict is still named
        async with lifespan(store=store, copy_context=True)(object()):
            pass

    with pytest.raises(ValueError, match="copy_context=True needs the memory store"):
        asyncio.run(asked_for_it())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"drain_timeout": "1"}, TypeError, "drain_timeout"),
        ({"drain_timeout": -1}, ValueError, "drain_timeout"),
        ({"state_key": 1}, TypeError, "state_key"),
        ({"engine": 5}, TypeError, "Expected an Engine, a function returning one"),
    ],
)
def test_lifespan_rejects_bad_arguments(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        lifespan(**kwargs)


def test_lifespan_rejects_options_beside_an_engine() -> None:
    eng = cytask.Engine(workers=1)
    try:
        with pytest.raises(TypeError, match="engine options only without an engine"):
            lifespan(eng, workers=2)
    finally:
        eng.shutdown()


# starlette's TestClient warns about httpx (it wants httpx2); the app is what is tested
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_fastapi_app_with_the_lifespan() -> None:
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    app = fastapi.FastAPI(lifespan=lifespan(workers=2, drain_timeout=10))
    seen: list[cytask.Engine] = []

    @app.post("/add")
    async def add(request: Request, x: int, y: int) -> dict[str, int]:
        seen.append(request.state.cytask)
        h = request.state.cytask.submit(int.__add__, x, y)
        return {"id": h.task_id, "sum": await h}

    with TestClient(app) as client:
        assert client.post("/add", params={"x": 2, "y": 3}).json()["sum"] == 5
    assert seen and seen[0].closed


# -- the example app under a real uvicorn -------------------------------------------


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    env: dict[str, str] = getattr(request, "param", {})
    s = uvicorn("starlette_app:app", env=env)
    try:
        yield s
    finally:
        s.close()


def test_example_enqueues_and_reads_results(server: Server) -> None:
    status, body = server.request("POST", "/tasks?n=7")
    assert status == 200
    tid = body["id"]
    assert server.request("GET", f"/tasks/{tid}/wait")[1] == {
        "id": tid,
        "status": "succeeded",
        "result": 49,
    }
    assert server.request("GET", f"/tasks/{tid}")[1]["result"] == 49
    assert server.request("GET", "/tasks/999999")[0] == 404
    rc, _ = server.stop(signal.SIGINT)
    assert rc == 0
    assert "drained: 1 succeeded, 0 failed, 0 cancelled" in server.output


@pytest.mark.parametrize("server", [{"TASK_SECONDS": "0.1"}], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_example_drains_queued_tasks_on_signal(server: Server, sig: int) -> None:
    """20 tasks of 0.1 s on 4 workers: ~0.5 s of queued work when the signal comes."""
    ids = [server.request("POST", f"/tasks?n={i}")[1]["id"] for i in range(20)]
    assert len(set(ids)) == 20
    rc, _took = server.stop(sig)
    # uvicorn re-raises the signal it caught once it has shut down (default action)
    assert rc in (0, -sig), server.output
    assert "shutting down: draining" in server.output
    assert "drained: 20 succeeded, 0 failed, 0 cancelled" in server.output


@pytest.mark.parametrize("server", [{"TASK_SECONDS": "0.3", "DRAIN_TIMEOUT": "0.5"}], indirect=True)
def test_example_drain_stops_at_its_deadline(server: Server) -> None:
    """40 tasks of 0.3 s on 4 workers is 3 s of work; the drain gives up after 0.5 s."""
    for i in range(40):
        server.request("POST", f"/tasks?n={i}")
    rc, took = server.stop(signal.SIGTERM)
    assert rc in (0, -signal.SIGTERM), server.output
    m = server.wait_for(r"drained: (\d+) succeeded, (\d+) failed, (\d+) cancelled")
    succeeded, failed, cancelled = map(int, m.groups())
    # at the deadline, queued tasks are cancelled; the (at most 4) running ones cannot
    # be stopped (Python threads), so they end with the process
    assert failed == 0 and cancelled > 0 and 36 <= succeeded + cancelled <= 40
    assert took < 0.5 + 0.3 + 2.0, f"took {took:.2f} s to exit"


@pytest.mark.parametrize("server", [{"TASK_SECONDS": "2"}], indirect=True)
def test_example_second_ctrl_c_cancels_the_queue(server: Server) -> None:
    """20 tasks of 2 s on 4 workers: a 10 s drain.  uvicorn awaits the lifespan's
    shutdown even after its "force quit" Ctrl-C; the second Ctrl-C must cancel what is
    queued (handles report it) so the server exits once the 4 running tasks return."""
    for i in range(20):
        assert server.request("POST", f"/tasks?n={i}")[0] == 200
    server.proc.send_signal(signal.SIGINT)
    server.wait_for("shutting down: draining")
    done = r"drained: (\d+) succeeded, (\d+) failed, (\d+) cancelled"
    # Ctrl-C again and again, as an impatient user does, until the drain has ended (the
    # first of them may come before the drain began; without the fix none shortens it)
    deadline = time.monotonic() + 30
    while not re.search(done, server.output):
        assert time.monotonic() < deadline, server.output
        server.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(AssertionError):
            server.wait_for(done, timeout=0.1)
    rc = server.proc.wait(timeout=30)
    assert rc in (0, -signal.SIGINT), server.output
    m = server.wait_for(done)
    succeeded, failed, cancelled = map(int, m.groups())
    # the (at most 4) tasks running at the second Ctrl-C finish after this count
    assert failed == 0 and cancelled >= 8 and 16 <= succeeded + cancelled <= 20, m.group(0)
    assert "Traceback" not in server.output


def test_example_under_gunicorn_quick_shutdown_during_the_drain() -> None:
    """gunicorn with uvicorn's worker: SIGTERM starts the drain; Ctrl-C on the master
    then asks for a quick shutdown: it sends the worker SIGQUIT and kills it 2 s later.
    The SIGQUIT must cancel what is queued so the lifespan ends (and logs) in time
    (before: uvicorn ignored it, the drain went on, and SIGKILL ended it unlogged)."""
    server = Server(
        [
            str(BIN / "gunicorn"),
            "--chdir",
            str(WEB),
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
            "-k",
            "uvicorn.workers.UvicornWorker",
            "starlette_app:app",
        ],
        ready=r"Listening at: http://127\.0\.0\.1:(\d+)",
        env={"TASK_SECONDS": "1"},
    )
    try:
        server.wait_for("Application startup complete")
        for i in range(20):
            assert server.request("POST", f"/tasks?n={i}")[0] == 200
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("shutting down: draining")
        rc, _ = server.stop(signal.SIGINT)
        assert rc == 0, server.output
        m = server.wait_for(r"drained: (\d+) succeeded, (\d+) failed, (\d+) cancelled", 0)
        succeeded, failed, cancelled = map(int, m.groups())
        assert failed == 0 and cancelled >= 8 and 16 <= succeeded + cancelled <= 20, m.group(0)
    finally:
        server.close()


def test_fastapi_example_under_uvicorn() -> None:
    pytest.importorskip("fastapi")
    server = uvicorn("fastapi_app:app", env={"TASK_SECONDS": "0.1"})
    try:
        status, body = server.request("POST", "/emails?to=ann@example.org")
        assert status == 200
        tid = body["id"]
        done = server.request("GET", f"/emails/{tid}/wait")[1]
        assert done == {
            "id": tid,
            "status": "succeeded",
            "attempts": 1,
            "result": "sent to ann@example.org",
        }
        assert server.request("GET", "/emails/424242")[0] == 404
        queued = [server.request("POST", f"/emails?to=u{i}")[1]["id"] for i in range(12)]
        assert len(set(queued)) == 12
        rc, took = server.stop(signal.SIGTERM)
        assert rc in (0, -signal.SIGTERM), server.output
        assert "Application shutdown complete" in server.output
        assert took < 20
    finally:
        server.close()
