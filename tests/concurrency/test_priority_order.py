"""Strict priority across levels, FIFO within a level."""

from __future__ import annotations

from cytask import Engine, Priority


def test_strict_priority_then_fifo(rng, hold) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(workers=1)
    gate = hold(eng)
    order: list[tuple[int, int]] = []
    submitted: list[tuple[int, int]] = []
    for seq in range(400):
        prio = rng.choice(list(Priority))
        submitted.append((int(prio), seq))
        eng.add_task(order.append, (int(prio), seq), priority=prio)
    gate.set()
    eng.shutdown(wait=True)
    assert order == sorted(submitted)


def test_higher_level_overtakes_lower_backlog(hold) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(workers=1)
    gate = hold(eng)
    order: list[str] = []
    for i in range(100):
        eng.add_task(order.append, f"low{i}", priority=Priority.LOW)
    eng.add_task(order.append, "critical", priority=Priority.CRITICAL)
    gate.set()
    eng.shutdown(wait=True)
    assert order[0] == "critical"
    assert order[1:] == [f"low{i}" for i in range(100)]
