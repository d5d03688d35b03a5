"""The main job: an in-process engine runs a mixed workload and reports what it did.

No server, no broker: ``python examples/demo.py``.  It shows the pieces together:
a burst of no-op tasks through the lock-free queues, priorities, I/O-bound tasks,
retries, a delayed task, and a compiled numeric task running on every core.
"""

from __future__ import annotations

import time
import warnings

from cytask import Engine, Priority, current_task, task
from cytask.compiler import CompileFallbackWarning

eng = Engine(workers=2, max_workers=32)


def send_email(to: str) -> str:
    time.sleep(0.005)  # an I/O wait, like talking to an SMTP server
    return f"sent to {to}"


@task(engine=eng, retries=3, retry_backoff=0.01, retry_on=(ConnectionError,))
def flaky_webhook(url: str) -> str:
    if current_task().attempt < 3:
        raise ConnectionError(f"{url} refused the connection")
    return f"delivered to {url} on attempt {current_task().attempt}"


@task(engine=eng, compile_to_c=True)
def monte_carlo_pi(n: int, seed: int) -> float:
    """Numeric Python that cytask compiles to native code run without the GIL."""
    x = seed
    hits = 0
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2147483648
        a = x / 2147483648.0
        x = (x * 1103515245 + 12345) % 2147483648
        b = x / 2147483648.0
        if a * a + b * b <= 1.0:
            hits += 1
    return 4.0 * hits / n


def main() -> None:
    t0 = time.perf_counter()
    noops = [eng.submit(int, i) for i in range(200_000)]
    submitted = time.perf_counter() - t0
    assert sum(h.result(timeout=60) for h in noops) == sum(range(200_000))
    done = time.perf_counter() - t0
    print(
        f"200,000 no-op tasks: submitted in {submitted * 1e3:.0f} ms, all done in "
        f"{done * 1e3:.0f} ms ({200_000 / done / 1e6:.2f} M tasks/s)"
    )

    emails = [
        eng.add_task(send_email, f"user{i}@example.com", priority=Priority.HIGH) for i in range(200)
    ]
    alert = eng.add_task(lambda: "paged on-call", priority=Priority.CRITICAL)
    asked = time.monotonic()
    later = eng.add_task(time.monotonic, delay=0.05)
    webhook = flaky_webhook.delay("https://example.com/hook")
    print(f"critical alert: {alert.result(timeout=60)!r}")
    print(f"{len(emails)} emails: {emails[-1].result(timeout=60)!r}; ", end="")
    print(f"the pool grew to {eng.stats().total_workers} workers while they waited on I/O")
    print(f"webhook: {webhook.result(timeout=60)!r}, status {webhook.status}")
    print(f"a task delayed by 0.050 s started {later.result(timeout=60) - asked:.3f} s later")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileFallbackWarning)
        print(f"compiling monte_carlo_pi: {eng.warmup()}")
    start = time.perf_counter()
    python_estimate = monte_carlo_pi(200_000, 1)  # calling the task runs it inline, in Python
    python_ms = (time.perf_counter() - start) * 1e3 * 10
    start = time.perf_counter()
    handles = [monte_carlo_pi.delay(2_000_000, seed) for seed in range(1, 9)]
    estimates = [h.result(timeout=60) for h in handles]
    native_ms = (time.perf_counter() - start) * 1e3 / len(handles)
    exact = monte_carlo_pi.delay(200_000, 1).result(timeout=60) == python_estimate
    print(
        f"pi ~ {sum(estimates) / len(estimates):.4f} from 8 tasks of 2M samples "
        f"({monte_carlo_pi.backend}, no GIL): {native_ms:.1f} ms per task on the pool "
        f"vs ~{python_ms:.0f} ms in Python; same answer as Python: {exact}"
    )

    stats = eng.stats()
    print(
        f"processed={stats.total_tasks_processed} failed={stats.failed_tasks} "
        f"retried={stats.retried_tasks} workers={stats.total_workers} "
        f"p99={stats.p99_execution_time_ms * 1e3:.1f} us rss={stats.memory_usage_mb:.0f} MB"
    )
    eng.shutdown(wait=True)
    print("engine drained and shut down")


if __name__ == "__main__":
    main()
