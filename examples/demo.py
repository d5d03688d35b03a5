"""The main job: an in-process engine runs a mixed workload and reports what it did.

No server, no broker: ``python examples/demo.py``.
"""

from __future__ import annotations

import time

from cytask import Engine, Priority


def checksum(n: int) -> int:
    """A little CPU work, like rendering a report."""
    total = 0
    for i in range(n):
        total = (total * 31 + i) % 1_000_003
    return total


def send_email(to: str) -> str:
    time.sleep(0.001)  # an I/O wait, like talking to an SMTP server
    return f"sent to {to}"


def main() -> None:
    with Engine(workers=4) as eng:
        t0 = time.perf_counter()
        noops = [eng.submit(int, i) for i in range(200_000)]
        submitted = time.perf_counter() - t0
        reports = [eng.add_task(checksum, 20_000, priority=Priority.LOW) for _ in range(20)]
        emails = [
            eng.add_task(send_email, f"user{i}@example.com", priority=Priority.HIGH)
            for i in range(200)
        ]
        alert = eng.add_task(lambda: "paged on-call", priority=Priority.CRITICAL)

        assert sum(h.result(timeout=60) for h in noops) == sum(range(200_000))
        print(
            f"200,000 no-op tasks submitted in {submitted * 1e3:.0f} ms "
            f"({200_000 / submitted / 1e6:.2f} M/s), all finished"
        )
        print(f"{len(emails)} emails: {emails[0].result(timeout=60)!r} ...")
        print(f"{len(reports)} reports, checksum {reports[0].result(timeout=60)}")
        print(f"critical alert: {alert.result(timeout=60)!r}")
        stats = eng.stats()
        print(
            f"processed={stats.total_tasks_processed} failed={stats.failed_tasks} "
            f"workers={stats.total_workers} p99={stats.p99_execution_time_ms * 1e3:.1f} us "
            f"uptime={stats.uptime_seconds:.2f} s"
        )
    print("engine drained and shut down")


if __name__ == "__main__":
    main()
