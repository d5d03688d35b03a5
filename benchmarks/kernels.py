"""The CPU-bound kernel the compiled-task benchmarks share (compiled.py, redis_peers.py).

A Monte Carlo estimate of pi with a linear congruential generator: ~1 ns per step
compiled, each step depends on the last (no closed form to fold), and only int and float
arithmetic, so Numba compiles it with the exactness checks that every compiled task pays.
"""

from __future__ import annotations

__all__ = ["pi_lcg"]


def pi_lcg(n: int, seed: int) -> float:
    x = seed
    inside = 0
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        u = x / 2147483648.0
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        v = x / 2147483648.0
        if u * u + v * v <= 1.0:
            inside += 1
    return 4.0 * inside / n
