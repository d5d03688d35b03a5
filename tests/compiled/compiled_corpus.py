"""Functions the compile-stage tests compile: eligible ones first, then the rest.

Each ineligible function names, in ``INELIGIBLE``, the words its reason must contain.
"""

from __future__ import annotations

import math
from math import sqrt

import numpy as np

SCALE = 3
COUNTER = 0

# -- eligible: a C entry point (hinted int/float/bool) --------------------------------


def int_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += (i * i) % 7 - 3
    return total


def float_math(x: float) -> float:
    return math.sqrt(abs(x)) + math.sin(x) * 2.0 - math.atan2(x, 1.5)


def checked_math(x: float) -> float:
    return math.log(x) + sqrt(x) + math.exp(x / 100.0)


def int_div_mod(a: int, b: int) -> int:
    return a // b + (a % b) * 3


def float_div_mod(a: float, b: float) -> float:
    return a // b + a % b + a / b


def mixed(a: int, b: float) -> float:
    return a * b + a / 3 - b // 2


def compare_mixed(a: int, b: float) -> bool:
    return a < b or a == b


def add(a: int, b: int) -> int:
    return a + b


def mul(a: int, b: int) -> int:
    return a * b


def neg_abs(a: int) -> int:
    return -a + abs(a) * 2


def int_pow(a: int, b: int) -> int:
    return a**b


def float_pow(a: float, b: float) -> float:
    return a**b


def shifts(a: int, b: int) -> int:
    return (a << b) + (a >> b)


def collatz(n: int) -> int:
    steps = 0
    while n != 1 and steps < 10_000:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def to_int(x: float) -> int:
    return int(x) + math.floor(x) - math.ceil(x)


def min_max(a: int, b: int, c: float) -> float:
    return max(a, b) - min(a, c)


def uses_const(x: int) -> int:
    return x * SCALE


def pi_lcg(n: int, seed: int) -> float:
    """Monte Carlo estimate of pi with a linear congruential generator."""
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


def add_consts(x: int, k: int) -> int:
    """A constant on either side of + and -: each checked by one comparison of x."""
    if k == 0:
        return x + 1
    if k == 1:
        return 1 + x
    if k == 2:
        return x - 1
    if k == 3:
        return x + 9223372036854775807
    if k == 4:
        return x - 9223372036854775807
    if k == 5:
        return x + 0 - 0
    return 5 - x


def count_from(n: int, start: int) -> int:
    """A branch-free counter whose flag leaves through several returns."""
    c = start
    for i in range(n):
        if i % 3 == 0:
            c += 1
        if c < 0:
            return -1  # after c wrapped past int64: Python's c is a big int
        if c == 7:
            return c * 2
    return c


def no_return(x):
    y = x * 2
    if y > 10:
        return
    y = y + 1


def spin(n: int) -> int:
    x = 1
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def busy_walk(n: int) -> int:
    """A data-dependent walk LLVM cannot fold into a formula: runs ~n steps."""
    x = 1
    hits = 0
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if (x >> 16) & 1:
            hits += x & 7
        else:
            hits -= 1
    return hits


def returns_float_hinted_int(a: int) -> int:
    return a / 2  # type: ignore[return-value]


# -- eligible: Numba's dispatcher (no hints, NumPy arrays) -----------------------------


def poly(a, b):
    return a * a - 3 * b + a // (b + 1) if b != -1 else a


def array_sum(a: np.ndarray) -> float:
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * a[i]
    return s


def array_index(a: np.ndarray, i: int) -> float:
    return a[i] * 2.0


# -- ineligible ---------------------------------------------------------------------


def greet(name: str) -> str:
    return "hello " + name.upper()


def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def write_file(path, n):
    with open(path, "w") as f:
        f.write(str(n))
    return n


def say(n):
    print(n)
    return n


def bump(n):
    global COUNTER
    COUNTER += n
    return COUNTER


def make_adder(k):
    def adder(x):
        return x + k

    return adder


adder = make_adder(5)


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def safe_div(a, b):
    try:
        return a / b
    except ZeroDivisionError:
        return 0.0


def helper(x):
    return x + 1


def calls_helper(x: int) -> int:
    return helper(x) * 2


def gen(n):
    yield from range(n)


def huge_literal(x: int) -> int:
    return x + 123456789012345678901234567890


def star_args(*args):
    return len(args)


def raises(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x


lam = lambda x: x + 1  # noqa: E731


INELIGIBLE: dict[str, tuple[object, str]] = {
    "greet": (greet, "string"),
    "count_words": (count_words, "dict"),
    "write_file": (write_file, "with statement"),
    "say": (say, "I/O"),
    "bump": (bump, "writes the global COUNTER"),
    "adder": (adder, "closes over k"),
    "fib": (fib, "recursively"),
    "safe_div": (safe_div, "try/except"),
    "calls_helper": (calls_helper, "calls the Python function helper()"),
    "gen": (gen, "generators"),
    "huge_literal": (huge_literal, "does not fit in int64"),
    "star_args": (star_args, "*args"),
    "raises": (raises, "raise"),
    "lam": (lam, "lambda"),
}


def widened(n: int) -> float:
    total = 0
    for i in range(n):
        total += i * 0.5
    return total
