"""cytask.contrib.flask: the extension in Flask's conventions, in-process and under servers."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask")

import flask

import cytask
from cytask.contrib.flask import Cytask, CytaskState

from ._server import BIN, WEB, Server


@pytest.fixture
def ext() -> Iterator[Cytask]:
    """An extension whose apps' engines are all shut down after the test."""
    made: list[Any] = []
    e = Cytask(workers=2)
    real_init = e.init_app

    def init_app(app: Any) -> None:
        real_init(app)
        made.append(app)

    e.init_app = init_app  # type: ignore[method-assign]
    yield e
    for app in made:
        app.extensions["cytask"].shutdown(10)


def make_app(ext: Cytask, name: str, **config: Any) -> Any:
    app = flask.Flask(name)
    app.config.update(SITE=name, **config)
    ext.init_app(app)
    return app


def site() -> str:
    return str(flask.current_app.config["SITE"])


def test_state_lives_in_app_extensions_and_not_on_the_extension(ext: Cytask) -> None:
    app = make_app(ext, "one")
    state = app.extensions["cytask"]
    assert isinstance(state, CytaskState)
    assert not any(isinstance(v, flask.Flask) for v in vars(ext).values())
    assert not state.started  # no engine (no thread) until first use
    with app.app_context():
        h = ext.submit(sum, [1, 2])
        assert h.result(timeout=10) == 3
        assert ext.get(h.task_id) is h
        assert ext.engine is state.engine
    assert state.started
    assert state.engine.gil_share == 0.2 and state.engine.workers == 2


def test_several_apps_from_a_factory_each_get_their_engine(ext: Cytask) -> None:
    a, b = make_app(ext, "a"), make_app(ext, "b")
    results = {}
    for app in (a, b):
        with app.app_context():
            results[app.name] = ext.submit(site, app_context=True).result(timeout=10)
    assert results == {"a": "a", "b": "b"}
    assert a.extensions["cytask"].engine is not b.extensions["cytask"].engine


def test_app_context_only_when_asked(ext: Cytask) -> None:
    plain = make_app(ext, "plain")
    ctx = make_app(ext, "ctx", CYTASK_APP_CONTEXT=True)
    with plain.app_context():
        err = ext.submit(site).exception(timeout=10)
        assert isinstance(err, RuntimeError) and "application context" in str(err)
    with ctx.app_context():
        assert ext.submit(site).result(timeout=10) == "ctx"
        assert isinstance(ext.submit(site, app_context=False).exception(timeout=10), RuntimeError)


def test_app_context_for_async_tasks_and_task_options(ext: Cytask) -> None:
    app = make_app(ext, "opts", CYTASK_APP_CONTEXT=True)
    calls: list[int] = []

    async def async_site() -> str:
        await asyncio.sleep(0)
        return site()

    @cytask.task(retries=2, retry_backoff=0.0)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return site()

    with app.app_context():
        assert ext.submit(async_site).result(timeout=10) == "opts"
        h = ext.submit(flaky)
        assert h.result(timeout=10) == "opts"
        assert h.attempts == 3


def test_contextvars_are_copied_when_asked(ext: Cytask) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    plain = make_app(ext, "plain")
    copying = make_app(ext, "copying", CYTASK_COPY_CONTEXT=True)

    def read() -> str:
        return request_id.get("unset")

    request_id.set("req-9")
    with plain.app_context():
        assert ext.submit(read).result(timeout=10) == "unset"
    with copying.app_context():
        assert ext.submit(read).result(timeout=10) == "req-9"
        assert ext.submit(site).result(timeout=10) == "copying"  # Flask's own context too


def test_request_submits_to_its_app(ext: Cytask) -> None:
    app = make_app(ext, "req", CYTASK_APP_CONTEXT=True)

    @app.post("/go")
    def go() -> dict[str, Any]:
        h = ext.submit(site)
        return {"id": h.task_id, "site": h.result(timeout=10)}

    body = app.test_client().post("/go").get_json()
    assert body["site"] == "req"


def test_config_overrides_the_defaults(ext: Cytask) -> None:
    app = make_app(ext, "cfg", CYTASK_WORKERS=3, CYTASK_GIL_SHARE=1.0)
    eng = app.extensions["cytask"].engine
    assert (eng.workers, eng.gil_share) == (3, 1.0)


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"CYTASK_WORKERS": "2"}, TypeError, "CYTASK_WORKERS"),
        ({"CYTASK_GIL_SHARE": 2}, ValueError, "CYTASK_GIL_SHARE"),
        ({"CYTASK_DRAIN_TIMEOUT": -1}, ValueError, "CYTASK_DRAIN_TIMEOUT"),
        ({"CYTASK_APP_CONTEXT": "yes"}, TypeError, "CYTASK_APP_CONTEXT"),
        ({"CYTASK_COPY_CONTEXT": 1}, TypeError, "CYTASK_COPY_CONTEXT"),
    ],
)
def test_bad_config_fails_at_init_app(config: dict[str, Any], error: type, match: str) -> None:
    app = flask.Flask("bad")
    app.config.update(config)
    with pytest.raises(error, match=match):
        Cytask(app)


def test_misuse_is_named() -> None:
    with pytest.raises(TypeError, match=r"flask\.Flask for app"):
        Cytask(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"cytask\.Engine or None for engine"):
        Cytask(engine=1)  # type: ignore[arg-type]
    app = flask.Flask("twice")
    ext = Cytask(app)
    with pytest.raises(RuntimeError, match="already registered"):
        ext.init_app(app)
    other = flask.Flask("other")
    with other.app_context(), pytest.raises(RuntimeError, match="init_app"):
        ext.submit(int)


Shared = tuple[cytask.Engine, Cytask, Any, Any]


@pytest.fixture
def shared() -> Iterator[Shared]:
    """One engine of the user's, given to the extension, and two apps that share it."""
    eng = cytask.Engine(workers=1)
    try:
        ext = Cytask(engine=eng)
        a, b = flask.Flask("a"), flask.Flask("b")
        ext.init_app(a)
        ext.init_app(b)
        yield eng, ext, a, b
    finally:
        eng.shutdown()


def test_shared_engine(shared: Shared) -> None:
    eng, ext, a, b = shared
    for app in (a, b):
        with app.app_context():
            assert ext.engine is eng
            assert ext.submit(int, "5").result(timeout=10) == 5


def test_shutting_down_one_app_leaves_a_shared_engine_running(shared: Shared) -> None:
    """``shutdown(a)`` drains a's tasks; b and the engine's owner go on using it."""
    eng, ext, a, b = shared
    gate = threading.Event()
    with a.app_context():
        blocker = ext.submit(gate.wait, 10)
        queued = [ext.submit(int, str(i)) for i in range(5)]
    state = ext.state(a)

    def open_gate_once_the_drain_began() -> None:
        while not state._closed:
            time.sleep(0.001)
        gate.set()

    threading.Thread(target=open_gate_once_the_drain_began).start()
    ext.shutdown(a, timeout=10)
    assert blocker.result(timeout=0) is True
    assert [h.result(timeout=0) for h in queued] == [0, 1, 2, 3, 4]
    assert not eng.closed
    with b.app_context():
        assert ext.submit(int, "7").result(timeout=10) == 7
    assert eng.submit(int, "8").result(timeout=10) == 8
    with a.app_context(), pytest.raises(RuntimeError, match="shut down for app 'a'"):
        ext.submit(int, "9")


def test_a_shared_engine_drain_cancels_what_is_queued_past_its_deadline(shared: Shared) -> None:
    eng, ext, a, _ = shared
    gate = threading.Event()
    with a.app_context():
        running = ext.submit(gate.wait, 30)
        queued = ext.submit(int, "1")
    ext.shutdown(a, timeout=0.05)
    assert queued.cancelled()  # a terminal state, reported by its handle
    assert not running.done() and not running.cancel_requested and not eng.closed
    gate.set()
    assert running.result(timeout=10) is True


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fork_child_makes_its_own_engine() -> None:
    """gunicorn --preload and multiprocessing 'fork': the parent's engine has no
    threads in the child, so the child's first use makes a fresh one (else a task
    submitted there would never run)."""
    out = run_script(
        """
        import os, flask
        from cytask.contrib.flask import Cytask
        app = flask.Flask("forked")
        ext = Cytask(app, workers=1)
        with app.app_context():
            parent = ext.engine
            assert ext.submit(int, "1").result(timeout=10) == 1
        pid = os.fork()
        if pid == 0:
            with app.app_context():
                ok = ext.engine is not parent and ext.submit(int, "2").result(timeout=10) == 2
                ok = ok and parent.closed  # the inherited engine does not linger
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        with app.app_context():
            assert ext.engine is parent and ext.submit(int, "3").result(timeout=10) == 3
        print("child exit", os.waitstatus_to_exitcode(status))
        """
    )
    assert out.returncode == 0, out.stderr
    assert "child exit 0" in out.stdout


def test_drain_at_exit_runs_queued_tasks_within_the_deadline() -> None:
    out = run_script(
        """
        import logging, time, flask
        from cytask.contrib.flask import Cytask
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        app = flask.Flask("exiting")
        Cytask(app, workers=2, drain_timeout=10)
        ext = app.extensions["cytask"]
        hs = [ext.engine.submit(time.sleep, 0.02) for _ in range(20)]
        print("submitted", flush=True)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "app 'exiting' drained: 20 succeeded, 0 failed, 0 cancelled" in out.stderr


def test_drain_at_exit_stops_at_its_deadline() -> None:
    out = run_script(
        """
        import logging, time, flask
        from cytask.contrib.flask import Cytask
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        app = flask.Flask("late")
        Cytask(app, workers=1, drain_timeout=0.3)
        eng = app.extensions["cytask"].engine
        hs = [eng.submit(time.sleep, 0.2) for _ in range(20)]
        t0 = time.monotonic()
        import atexit
        atexit.register(lambda: print(f"exit took {time.monotonic() - t0:.2f}", flush=True))
        """
    )
    assert out.returncode == 0, out.stderr
    assert "cancelled" in out.stderr and "0 cancelled" not in out.stderr
    took = float(out.stdout.split("exit took ")[1])
    assert took < 3.0


# -- the example app under real servers -----------------------------------------------


def flask_run(env: dict[str, str] | None = None) -> Server:
    return Server(
        [str(BIN / "flask"), "--app", str(WEB / "flask_app"), "run", "--port", "0"],
        ready=r"Running on http://127\.0\.0\.1:(\d+)",
        env=env,
    )


def gunicorn(*extra: str, env: dict[str, str] | None = None) -> Server:
    return Server(
        [
            str(BIN / "gunicorn"),
            "--chdir",
            str(WEB),
            "-b",
            "127.0.0.1:0",
            "--graceful-timeout",
            "20",
            *extra,
            "flask_app:create_app()",
        ],
        ready=r"Listening at: http://127\.0\.0\.1:(\d+)",
        env=env,
    )


def test_example_under_flask_run() -> None:
    server = flask_run({"TASK_SECONDS": "0.1"})
    try:
        tid = server.request("POST", "/tasks?n=7")[1]["id"]
        assert server.request("GET", f"/tasks/{tid}/wait")[1]["result"] == 49
        assert server.request("GET", f"/tasks/{tid}")[1]["status"] == "succeeded"
        assert server.request("GET", "/tasks/99999")[0] == 404
        assert server.request("POST", "/report")[1]["result"].startswith("report for example.org")
        for i in range(20):
            server.request("POST", f"/tasks?n={i}")
        rc, _ = server.stop(signal.SIGINT)
        assert rc == 0, server.output
        assert "drained: 22 succeeded, 0 failed, 0 cancelled" in server.output
    finally:
        server.close()


def test_example_second_ctrl_c_cancels_the_queue() -> None:
    """20 tasks of 2 s on 4 workers: a 10 s drain at exit.  A second Ctrl-C during it
    cancels what is queued and the process exits at once, logging what the drain did
    (before: a KeyboardInterrupt traceback out of threading's exit hooks, no log line)."""
    server = flask_run({"TASK_SECONDS": "2"})
    try:
        for i in range(20):
            assert server.request("POST", f"/tasks?n={i}")[0] == 200
        server.proc.send_signal(signal.SIGINT)
        server.wait_for("draining")
        rc, _ = server.stop(signal.SIGINT)
        assert rc == 0, server.output
        m = server.wait_for(r"drained: (\d+) succeeded, (\d+) failed, (\d+) cancelled")
        succeeded, failed, cancelled = map(int, m.groups())
        assert failed == 0 and cancelled >= 8 and 16 <= succeeded + cancelled <= 20, m.group(0)
        assert "Traceback" not in server.output, server.output
    finally:
        server.close()


def test_example_under_gunicorn_drains_on_sigterm() -> None:
    server = gunicorn("-w", "1", "--threads", "4", env={"TASK_SECONDS": "0.1"})
    try:
        for i in range(20):
            assert server.request("POST", f"/tasks?n={i}")[0] == 200
        rc, _ = server.stop(signal.SIGTERM)
        assert rc == 0, server.output
        assert "drained: 20 succeeded, 0 failed, 0 cancelled" in server.output
    finally:
        server.close()


def test_example_under_gunicorn_preload_with_two_workers() -> None:
    """The app is imported (and its extension set up) in gunicorn's master before it
    forks: each worker process makes its own engine and runs its tasks."""
    server = gunicorn("-w", "2", "--preload")
    try:
        bodies = [server.request("POST", f"/tasks?n={i}&wait=1")[1] for i in range(12)]
        assert [b["result"] for b in bodies] == [i * i for i in range(12)]
        assert all(b["status"] == "succeeded" for b in bodies)
        assert server.request("POST", "/report")[1]["status"] == "succeeded"
        rc, _ = server.stop(signal.SIGTERM)
        assert rc == 0, server.output
    finally:
        server.close()
