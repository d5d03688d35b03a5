"""Custom error handling: retry what is transient, fail fast on the rest.

Port of the Catzilla guide's "Custom Error Handlers".  ``retry_on=(ConnectionError,)``
retries a connection failure; a ``ValueError`` (bad data: retrying cannot help)
fails at once.  The caller sees each outcome through the handle: ``.result()``
re-raises the task's own exception, ``.exception()`` returns it, and a done
callback can route failures (here to a dead-letter list).

    python examples/custom_errors.py
"""

from __future__ import annotations

from typing import Any

from cytask import Engine, TaskHandle, current_task, task

eng = Engine(workers=4)
dead_letters: list[str] = []


@task(engine=eng, retries=2, retry_backoff=0.01, retry_on=(ConnectionError,))
def potentially_failing_task(error_type: str) -> dict[str, str]:
    """Simulate different types of errors (chosen by the caller, not at random)."""
    attempt = current_task().attempt
    if error_type == "connection":
        raise ConnectionError(f"Failed to connect to external service (attempt {attempt})")
    if error_type == "flaky-connection" and attempt == 1:
        raise ConnectionError("connection reset by peer")
    if error_type == "validation":
        raise ValueError("Invalid data format")
    return {"status": "success", "message": f"Task completed on attempt {attempt}"}


def route_failure(h: TaskHandle[Any]) -> None:
    """A done callback: send failures to a dead-letter list."""
    if h.status == "failed":
        dead_letters.append(f"task {h.task_id}: {h.exception(timeout=0)!r}")


def main() -> None:
    try:
        kinds = ["success", "flaky-connection", "connection", "validation"]
        handles = {kind: potentially_failing_task.delay(kind) for kind in kinds}
        for h in handles.values():
            h.add_done_callback(route_failure)
        for kind, h in handles.items():
            try:
                outcome = f"ok: {h.result(timeout=10)['message']}"
            except ConnectionError as exc:
                outcome = f"ConnectionError, retried and gave up: {exc}"
            except ValueError as exc:
                outcome = f"ValueError, not retried: {exc}"
            print(f"{kind:>16}: {h.status} after {h.attempts} attempt(s) -> {outcome}")
    finally:
        eng.shutdown(wait=True)
    print("engine shut down")
    # Callbacks run on the worker just after waiters are woken (as with
    # concurrent.futures), so read the list once the workers have stopped.
    for letter in sorted(dead_letters):
        print(f"dead letter: {letter}")


if __name__ == "__main__":
    main()
