"""Smoke test: every script in examples/ runs on its own and says what it should.

Each example runs in a fresh interpreter (as a user would run it), with warnings
turned into errors.  Adding an example without an entry in EXPECTED fails the
test, so every example gets a meaningful check, not just "it exited".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))

# graceful_shutdown.py sends itself SIGTERM; the engine's handler drains the
# queue, then exits with 128 + SIGTERM, as documented in the script.
EXIT_CODES = {"graceful_shutdown.py": 128 + signal.SIGTERM}

# Lines (substrings) each script must print: evidence it did the real work.
EXPECTED: dict[str, list[str]] = {
    "analytics.py": [
        "summary: 1000 tasks, 60 failed (error rate 6%)",
        '"total_tasks_executed": 1000',
    ],
    "async_tasks.py": ["'total_items': 5", "awaited 100 async tasks in", "sum=4950"],
    "batch_processing.py": [
        "batch of 10: 10 processed",
        "executor batch completed in this order:",
    ],
    "custom_errors.py": [
        "flaky-connection: succeeded after 2 attempt(s)",
        "connection: failed after 3 attempt(s) -> ConnectionError, retried and gave up",
        "validation: failed after 1 attempt(s) -> ValueError, not retried",
        "dead letter: task 4: ValueError('Invalid data format')",
    ],
    "delayed_tasks.py": [
        "delay=0.1: task 2 is scheduled",
        "eta=now+0.2s: Reminder sent to dave",
        "cancel the reminder for eve before it is due: True",
        "eve's reminder: cancelled",
    ],
    "demo.py": [
        "200,000 no-op tasks: submitted",
        "on attempt 3', status succeeded",
        "same answer as Python: True",
        "engine drained and shut down",
    ],
    "durable_demo.py": [
        "committed 2000 tasks to tasks.db",
        "worker killed with SIGKILL:",
        "recovered: 2000/2000 succeeded;",
        "none lost",
    ],
    "redis_demo.py": [
        "committed 3000 tasks to Redis",
        "worker 1 killed with SIGKILL",
        "Redis started again from its append-only file",
        "done: 3000/3000 succeeded;",
        "none lost",
    ],
    "graceful_shutdown.py": [
        "drained: 20/20 tasks succeeded before exit",
        "new work is refused after shutdown",
        "exiting with status 143",
    ],
    "priorities.py": [
        "execution order: critical-alert > maintenance > normal-0 > normal-1 > low-0 > low-1",
    ],
    "progress_tracking.py": [
        "'progress_percent': 100.0, 'current_step': 'Saving results...', 'status': 'succeeded'",
        "unknown id: {'error': 'Task not found'}",
    ],
    "quick_start.py": [
        "Task progress: 10/10",
        "succeeded: {'result': 'Task completed successfully'}",
    ],
    "realtime_stats.py": [
        "active tasks: 4",
        "'total_queued': 20",
        "active tasks after the run: 0",
    ],
    "recurring_tasks.py": [
        "System monitoring started",
        "System Health - CPU:",
        "monitoring stopped",
    ],
    "result_storage.py": [
        "'result': 2666646666700000",
        "after result_ttl: {'error': 'Result not found or not yet available'}",
        "eng.get -> None",
        "the held handle keeps its result: 332833500",
    ],
    "retries.py": [
        "2 of 10 tasks needed a retry; all succeeded",
        "while backing off: status=retrying",
        "gave up after 3 attempts: ConnectionError: service unreachable (attempt 3)",
    ],
}


def test_every_example_has_expectations() -> None:
    assert set(SCRIPTS) == set(EXPECTED)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env=env,
        cwd=EXAMPLES.parent,
    )
    output = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == EXIT_CODES.get(script, 0), output
    for line in EXPECTED.get(script, []):
        assert line in proc.stdout, f"expected {line!r} in the output\n{output}"
    # nothing on stderr: no warning, no "Exception ignored in" from a callback or timer
    assert proc.stderr == "", output
