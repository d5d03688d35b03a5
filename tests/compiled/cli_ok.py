"""A module whose every task compiles (the CLI's exit code 0)."""

from cli_tasks import FakeTask


def _square(x: int) -> int:
    return x * x


square = FakeTask(_square, examples=[(3,), (2**40,), (-(2**62),)])
