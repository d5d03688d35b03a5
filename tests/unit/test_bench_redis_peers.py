"""benchmarks/redis_peers.py parses its arguments and plans its runs without Redis or peers."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("redis_peers", BENCH / "redis_peers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["redis_peers"] = mod  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules["redis_peers"]
        if str(BENCH) in sys.path:  # the script puts benchmarks/ first, for its own imports
            sys.path.remove(str(BENCH))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--systems", "cytask,sidekiq"], "Expected --systems from"),
        (["--rounds", "0"], "Expected --rounds >= 1, got 0"),
        (["--tasks", "3"], "Expected --tasks >= 8, got 3"),
        (["--rounds", "x"], "invalid int value"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plan_gives_every_system_both_scenarios_and_rq_a_tenth(bench: ModuleType) -> None:
    rows = bench.plan(["cytask", "celery", "rq"], 5_000, quick=False)
    got = [(r.system, r.scenario, r.tasks) for r in rows]
    for scenario in ("noop", "sleep"):
        assert ("cytask", scenario, 5_000) in got
        assert ("celery", scenario, 5_000) in got
        assert ("rq", scenario, 500) in got
    cytask_only = {s for sys_, s, _ in got if sys_ == "cytask"} - {"noop", "sleep"}
    assert cytask_only == {"bulk", "bulk-sleep", "submit_many", "producers", "wake", "scale"}
    assert [r.scenario for r in bench.plan(["huey"], 1_000, quick=True)] == ["noop", "sleep"]


def test_report_compares_cytask_with_the_best_peer_and_marks_goals(bench: ModuleType) -> None:
    rows = bench.plan(["cytask", "huey", "dramatiq"], 5_000, quick=False)
    by = {(r.system, r.scenario): r for r in rows}
    by["cytask", "noop"].results = [{"enqueue": 10_000.0, "process": 40_000.0}]
    by["huey", "noop"].results = [{"enqueue": 8_000.0, "process": 2_000.0}]
    by["dramatiq", "noop"].results = [{"enqueue": 5_000.0, "process": 4_000.0}]
    by["cytask", "submit_many"].results = [{"rate": 40_000.0}]
    by["cytask", "sleep"].error = "RuntimeError: boom | bad"
    out = bench.report(rows)
    assert "| 1.2x / 10.0x |" in out  # against Huey's enqueue and Dramatiq's processed
    assert "| single `delay()` enqueue >= best peer's (8.0k/s) | 10.0k | PASS |" in out
    assert "| `submit_many` of 5,000 >= 50k/s | 40.0k | FAIL |" in out
    assert "n/a (RuntimeError: boom / bad)" in out  # a pipe would break the table
