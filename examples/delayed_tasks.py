"""Delayed execution: run a task no earlier than asked.

Port of the Catzilla guide's "Delayed Execution".  The guide's example could only
run at once; cytask delays for real, three ways: ``add_task(..., delay=)``,
``apply_async(countdown=)`` and ``apply_async(eta=datetime)``.  Meanwhile the
status is "scheduled", and a scheduled task can still be cancelled.

    python examples/delayed_tasks.py
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from cytask import Engine, Priority, TaskStatus, task


def send_reminder(who: str) -> dict[str, str]:
    """Send a reminder notification (20 ms instead of 2 s)."""
    print(f"📧 Sending reminder email to {who}...", flush=True)
    time.sleep(0.02)
    return {"notification": f"Reminder sent to {who}", "timestamp": datetime.now().isoformat()}


def main() -> None:
    with Engine(workers=4) as eng:
        reminder = task(engine=eng, name="notify.reminder")(send_reminder)

        t0 = time.monotonic()
        now = datetime.now()
        handles = {
            "immediate": eng.add_task(send_reminder, "alice", priority=Priority.NORMAL),
            "delay=0.1": eng.add_task(send_reminder, "bob", delay=0.1),
            "countdown=0.15": reminder.apply_async(args=("carol",), countdown=0.15),
            "eta=now+0.2s": reminder.apply_async(args=("dave",), eta=now + timedelta(seconds=0.2)),
        }
        late = reminder.apply_async(args=("eve",), countdown=0.3)
        print({"message": "Reminders scheduled", "scheduled_for": now.isoformat()})
        for label, h in handles.items():
            print(f"  {label:>15}: task {h.task_id} is {h.status}")

        assert late.status is TaskStatus.SCHEDULED
        print(f"cancel the reminder for eve before it is due: {late.cancel()}")

        for label, h in handles.items():
            result = h.result(timeout=10)
            print(f"  {label:>15}: {result['notification']} after {time.monotonic() - t0:.2f} s")
        print(f"  eve's reminder: {late.status}")
    print("engine shut down")


if __name__ == "__main__":
    main()
