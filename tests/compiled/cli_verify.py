"""Tasks for ``check --verify`` through Numba's dispatcher and through Cython."""

from cli_tasks import FakeTask


def _scale(a, b):  # no hints: Numba's dispatcher, called from Python
    return a * b


def _tally(text):  # a dict: Cython
    counts = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    return counts


# (2**62, 4) overflows int64: the dispatcher hands it back to Python
scale = FakeTask(_scale, examples=[(3, 4), (2**62, 4)])
tally = FakeTask(_tally, examples=[("abca",), ("",)])
