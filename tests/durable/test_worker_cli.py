"""``cytask worker``: options, usage errors, and a drain on SIGTERM within its deadline."""

from __future__ import annotations

import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cytask._cli import main
from cytask._worker_cli import next_progress_line

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TASKS = textwrap.dedent("""
    import time
    from cytask import task

    @task(name="cli.slow")
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "finished"
""")


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--store", "--workers", "--max-workers", "--serializer", "--lease",
                   "--drain-timeout", "--result-ttl", "--burst", "--quiet"):  # fmt: skip
        assert option in out
    assert main(["--help"]) == 0
    assert "worker" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    assert main(["worker", "no_such_module_xyz", "--store", url]) == 2
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err
    assert main(["worker", "json", "--store", f"sqlite:///{tmp_path}/no/dir/t.db"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["worker", "json"]) == 2  # --store is required


def _produce(tmp_path: Path, submits: str) -> tuple[str, dict[str, str]]:
    """A store of `TASKS` filled by another process running `submits` (on `eng`);
    returns its URL and the environment that imports the tasks."""
    (tmp_path / "clitasks.py").write_text(TASKS)
    url = f"sqlite:///{tmp_path}/t.db"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    produce = (
        "import sys, cytask, clitasks\n"
        f"eng = cytask.Engine(workers=0, store=sys.argv[1])\n{submits}\n"
    )
    subprocess.run([sys.executable, "-c", produce, url], env=env, check=True, timeout=60)
    return url, env


def test_sigterm_drains_within_the_deadline_and_gives_back_the_rest(tmp_path: Path) -> None:
    url, env = _produce(
        tmp_path,
        "eng.submit(clitasks.slow, 0.5)\neng.submit_many(clitasks.slow, [(0.5,)] * 5)",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "cytask", "worker", "clitasks", "--store", url, "--workers", "1",
         "--drain-timeout", "5"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    db = sqlite3.connect(tmp_path / "t.db")
    deadline = time.monotonic() + 30
    while db.execute("SELECT count(*) FROM tasks WHERE state = 2").fetchone()[0] == 0:
        assert time.monotonic() < deadline, "the worker never claimed"
        time.sleep(0.01)
    time.sleep(0.1)  # the first task is running now
    t0 = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert time.monotonic() - t0 < 5.0
    assert "draining" in err and "stopped" in err
    states = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    db.close()
    # nothing left leased to the stopped worker: finished, or back to pending for the next
    assert states.get(2, 0) == 0, states
    assert states.get(4, 0) >= 1 and states.get(4, 0) + states.get(0, 0) == 6, states


def test_on_a_terminal_the_worker_shows_its_progress(tmp_path: Path) -> None:
    url, env = _produce(tmp_path, "eng.submit_many(clitasks.slow, [(0.0,)] * 3)")
    terminal, stderr = pty.openpty()
    worker = subprocess.Popen(
        [sys.executable, "-m", "cytask", "worker", "clitasks", "--store", url],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip
    os.close(stderr)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"succeeded 3  (" not in seen and time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.5)[0]:
                seen += os.read(terminal, 4096)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        os.close(terminal)
    assert b"succeeded 3  (" in seen, seen


def test_the_progress_line_costs_at_most_a_twentieth_of_its_interval() -> None:
    assert next_progress_line(100.0, 0.002) == 101.0  # once a second
    assert next_progress_line(100.0, 0.3) == pytest.approx(106.0)  # counting took 0.3 s


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "argument --workers: Expected --workers in [1, "),
        (["--workers", "x"], "argument --workers: Expected a whole number, got 'x'"),
        (["--max-workers", "0"], "argument --max-workers: Expected --max-workers in [1, "),
        (["--workers", "4", "--max-workers", "2"],
         "argument --max-workers: Expected --max-workers >= --workers (4), got 2"),
        (["--lease", "0"], "argument --lease: Expected --lease > 0, got 0.0"),
        (["--lease", "inf"], "argument --lease: Expected a finite number of seconds for --lease"),
        (["--lease", "x"], "argument --lease: Expected a number of seconds, got 'x'"),
        (["--lease", "0.02"], "argument --lease: Expected --lease >= 0.1, got 0.02"),
        (["--drain-timeout", "-1"], "argument --drain-timeout: Expected --drain-timeout >= 0"),
        (["--drain-timeout", "nan"], "argument --drain-timeout: Expected --drain-timeout >= 0"),
        (["--result-ttl", "-5"], "argument --result-ttl: Expected --result-ttl >= 0"),
        (["--result-ttl", "inf"], "argument --result-ttl: Expected a finite number of seconds"),
    ],
)  # fmt: skip
def test_a_bad_option_value_is_a_usage_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    # Checked before the worker starts.  Before: --workers 0 started a worker that ran
    # nothing, forever; --drain-timeout -1 ran, then failed with a traceback when asked
    # to drain; --lease inf left the feeder failing (select() cannot sleep that long);
    # the rest named the Engine argument (lease, result_ttl), not the option
    url = f"sqlite:///{tmp_path}/t.db"
    assert main(["worker", "json", "--store", url, "--burst", "--quiet", *options]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_a_lease_must_be_a_finite_number_of_seconds(tmp_path: Path) -> None:
    from cytask import Engine

    url = f"sqlite:///{tmp_path}/t.db"
    with pytest.raises(ValueError, match="Expected a finite number of seconds for lease"):
        Engine(workers=1, store=url, lease=float("inf"))
    with pytest.raises(TypeError, match="Expected int or float for lease, got str"):
        Engine(workers=1, store=url, lease="30")  # type: ignore[arg-type]


def test_a_sigterm_while_the_engine_starts_drains(tmp_path: Path) -> None:
    # the signal lands once the engine's feeder runs (it may have claimed tasks), before
    # Engine() returned: the worker must drain, not die holding claimed tasks
    (tmp_path / "clitasks.py").write_text(
        TASKS
        + textwrap.dedent("""
        import os, signal
        from cytask import _durable

        init = _durable.DurableRuntime.__init__

        def init_then_sigterm(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if not _durable.PRODUCE_ONLY:
                os.kill(os.getpid(), signal.SIGTERM)

        _durable.DurableRuntime.__init__ = init_then_sigterm
    """)
    )
    url = f"sqlite:///{tmp_path}/t.db"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    worker = subprocess.run(
        [sys.executable, "-m", "cytask", "worker", "clitasks", "--store", url, "--workers", "1"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert "draining" in worker.stderr and "stopped" in worker.stderr
