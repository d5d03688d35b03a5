"""Strict priority across levels, FIFO within a level."""

from __future__ import annotations

import itertools

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


def test_strict_priority_starves_low_behind_a_critical_backlog(hold) -> None:  # type: ignore[no-untyped-def]
    # the documented default: LOW waits for every CRITICAL task, however many
    eng = Engine(workers=1)
    gate = hold(eng)
    order: list[str] = []
    eng.add_task(order.append, "low", priority=Priority.LOW)
    for i in range(500):
        eng.add_task(order.append, f"c{i}", priority=Priority.CRITICAL)
    gate.set()
    eng.shutdown(wait=True)
    assert order.index("low") == 500
    assert eng.starvation_limit is None


def test_aging_serves_a_waiting_level_after_n_pops(hold) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(workers=1, starvation_limit=3)
    assert eng.starvation_limit == 3
    gate = hold(eng)
    order: list[str] = []
    for i in range(3):
        eng.add_task(order.append, f"L{i}", priority=Priority.LOW)
    for i in range(10):
        eng.add_task(order.append, f"C{i}", priority=Priority.CRITICAL)
    gate.set()
    eng.shutdown(wait=True)
    expected = "C0 C1 C2 L0 C3 C4 C5 L1 C6 C7 C8 L2 C9"
    assert " ".join(order) == expected


def test_aging_serves_every_waiting_level(rng, hold) -> None:  # type: ignore[no-untyped-def]
    limit = 4
    eng = Engine(workers=1, starvation_limit=limit)
    gate = hold(eng)
    order: list[tuple[int, int]] = []
    per_level = {Priority.CRITICAL: 300, Priority.HIGH: 60, Priority.NORMAL: 60, Priority.LOW: 60}
    items = [(p, i) for p, n in per_level.items() for i in range(n)]
    rng.shuffle(items)
    for prio, i in items:
        eng.add_task(order.append, (int(prio), i), priority=prio)
    gate.set()
    eng.shutdown(wait=True)
    assert sorted(order) == sorted((int(p), i) for p, i in items)  # nothing lost
    for level in (1, 2, 3):
        # FIFO within a level
        submitted = [i for p, i in items if p == level]
        assert [i for p, i in order if p == level] == submitted
        # while a level waits, it is passed over at most `limit` times, plus once for
        # each of the two other lower levels served on its own aging turn
        positions = [n for n, (p, _) in enumerate(order) if p == level]
        first_gap = positions[0]
        gaps = [b - a - 1 for a, b in itertools.pairwise(positions)]
        assert max([first_gap, *gaps]) <= limit + 2, (level, first_gap, gaps)


def test_aging_bounds_the_wait_with_several_workers(hold) -> None:  # type: ignore[no-untyped-def]
    workers, limit, flood = 2, 20, 3000
    for starvation_limit, bound in ((None, flood), (limit, limit + 4 * workers)):
        eng = Engine(workers=workers, starvation_limit=starvation_limit)
        gate = hold(eng, workers)
        done: list[int] = []
        seen_by_low: list[int] = []

        def low(done: list[int] = done, seen: list[int] = seen_by_low) -> None:
            seen.append(len(done))  # how many CRITICAL tasks ran before this one

        eng.add_task(low, priority=Priority.LOW)
        for i in range(flood):
            eng.add_task(done.append, i, priority=Priority.CRITICAL)
        gate.set()
        eng.shutdown(wait=True)
        assert len(done) == flood
        if starvation_limit is None:
            assert seen_by_low[0] >= flood - workers  # strict: after (nearly) all
        else:
            # racing workers may each miss a count: the bound grows with the workers
            assert seen_by_low[0] <= bound
