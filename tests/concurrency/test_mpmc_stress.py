"""Many producers, the engine's workers as consumers: every task runs exactly once."""

from __future__ import annotations

import threading

import pytest

from cytask import Engine, TaskStatus


def _produce_and_count(eng: Engine, producers: int, per_producer: int) -> bytearray:
    total = producers * per_producer
    counts = bytearray(total)
    barrier = threading.Barrier(producers)

    def bump(i: int) -> None:
        counts[i] += 1

    def producer(p: int) -> None:
        submit = eng.submit
        barrier.wait()
        for i in range(p * per_producer, (p + 1) * per_producer):
            submit(bump, i)

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eng.shutdown(wait=True)
    return counts


def test_one_million_tasks_from_four_producers_each_run_once() -> None:
    eng = Engine(workers=2, max_results=0)
    counts = _produce_and_count(eng, producers=4, per_producer=250_000)
    assert counts.count(1) == len(counts), "some task ran zero or several times"
    assert eng.stats().total_tasks_processed == 1_000_000


@pytest.mark.parametrize("queue_size", [2, 16])
def test_tiny_queue_forces_backpressure_without_loss(queue_size: int) -> None:
    eng = Engine(workers=2, queue_size=queue_size, max_results=0)
    counts = _produce_and_count(eng, producers=4, per_producer=25_000)
    assert counts.count(1) == len(counts)


def test_queue_full_after_submit_timeout_fails_the_handle(hold) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(workers=1, queue_size=2, submit_timeout=0.0)
    gate = hold(eng)
    accepted = [eng.submit(int, i) for i in range(2)]
    from cytask import QueueFull

    with pytest.raises(QueueFull, match="queue is full") as info:
        eng.submit(int, 99)
    rejected = info.value.handle
    assert rejected is not None and rejected.status is TaskStatus.FAILED
    assert isinstance(rejected.exception(), QueueFull)
    gate.set()
    assert [h.result(timeout=10) for h in accepted] == [0, 1]
    eng.shutdown()


def test_blocked_submit_resumes_when_space_frees(hold) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(workers=1, queue_size=2, submit_timeout=None)
    gate = hold(eng)
    eng.submit(int)
    eng.submit(int)
    submitted = threading.Event()

    def blocked_producer() -> None:
        eng.submit(int)  # the ring is full: this waits for a pop
        submitted.set()

    t = threading.Thread(target=blocked_producer)
    t.start()
    assert not submitted.is_set()
    gate.set()
    t.join(timeout=30)
    assert submitted.is_set()
    eng.shutdown()


@pytest.mark.slow
def test_soak_ten_million_tasks() -> None:
    eng = Engine(workers=2, max_results=0)
    counts = _produce_and_count(eng, producers=4, per_producer=2_500_000)
    assert counts.count(1) == len(counts)
