"""Strict priority across levels, FIFO within a level."""

from __future__ import annotations

import threading

from cytask import Engine, Priority


def test_strict_priority_then_fifo(rng) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(workers=1)
    gate = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait()

    eng.submit(hold)
    assert started.wait(10)
    order: list[tuple[int, int]] = []
    submitted: list[tuple[int, int]] = []
    for seq in range(400):
        prio = rng.choice(list(Priority))
        submitted.append((int(prio), seq))
        eng.add_task(order.append, (int(prio), seq), priority=prio)
    gate.set()
    eng.shutdown(wait=True)
    assert order == sorted(submitted)


def test_higher_level_overtakes_lower_backlog() -> None:
    eng = Engine(workers=1)
    gate = threading.Event()
    started = threading.Event()
    eng.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    order: list[str] = []
    for i in range(100):
        eng.add_task(order.append, f"low{i}", priority=Priority.LOW)
    eng.add_task(order.append, "critical", priority=Priority.CRITICAL)
    gate.set()
    eng.shutdown(wait=True)
    assert order[0] == "critical"
    assert order[1:] == [f"low{i}" for i in range(100)]
