"""``cytask worker``: options, usage errors, and a drain on SIGTERM within its deadline."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cytask._cli import main

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


def test_sigterm_drains_within_the_deadline_and_gives_back_the_rest(tmp_path: Path) -> None:
    (tmp_path / "clitasks.py").write_text(TASKS)
    url = f"sqlite:///{tmp_path}/t.db"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    produce = (
        "import sys, cytask, clitasks\n"
        "eng = cytask.Engine(workers=0, store=sys.argv[1])\n"
        "eng.submit(clitasks.slow, 0.5)\n"
        "eng.submit_many(clitasks.slow, [(0.5,)] * 5)\n"
    )
    subprocess.run([sys.executable, "-c", produce, url], env=env, check=True, timeout=60)
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
