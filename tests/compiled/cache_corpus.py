"""Functions for the cache, report and Cython-exactness tests (their own, so that their
cache entries are theirs: a test may corrupt or delete them)."""

from __future__ import annotations

import math

LIMIT = 3
MISSING = float("nan")
DIRECTION = 0.0
SCALE = 2
OFFSET = 10
MESSAGE = "negative"


class Problem(Exception):
    pass


# -- Numba: native entries whose cache the tests corrupt ------------------------------


def tri(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def tri_float(n: int) -> float:
    total = 0.0
    for i in range(n):
        total += i * 0.5
    return total


def or_missing(x: float) -> float:
    return x if x > 0.0 else MISSING


def toward(x: float) -> float:
    return math.copysign(x, DIRECTION)


# Numba's typing rejects it (a tuple of two types indexed at run time), Cython builds it
def pick(n: int) -> float:
    pair = (1, 2.5)
    return pair[n]


# -- Cython: exactness -----------------------------------------------------------------


def clip(text, *, n=LIMIT):
    return text[:n]


def clip_capped(text, *, n=LIMIT):  # LIMIT is read in the body too
    return text[: min(n, LIMIT)]


def clip_positional(text, n=LIMIT, /):
    return text[:n]


def remember(x, seen=[]):  # noqa: B006  (the shared default is the point)
    seen.append(x)
    return len(seen)


class Account:
    def __init__(self, balance: int) -> None:
        self.__balance = balance

    @staticmethod
    def balance_of(acct):
        return acct.__balance

    @staticmethod
    def report(acct):
        __twice = acct.__balance * 2
        return dict(__key=__twice)  # a keyword is never mangled

    @staticmethod
    def shown(acct):
        return f"{acct.__balance}"  # mangled inside an f-string: refused, not wrong


def checked(x):
    if x < 0:
        raise Problem(MESSAGE)
    return x


def asserted(x):
    assert x >= 0, MESSAGE
    return x


def via_lambda(x):
    scale = lambda y: y * SCALE  # noqa: E731
    return scale(x)


def via_nested(x):
    def shift(y):
        return y + OFFSET

    return shift(x)


def scaled(n):
    for i in range(n):
        yield i * SCALE


def late(x):
    return x + NOT_YET  # noqa: F821  (defined by a test)


def count_chars(text):
    counts = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    return counts


def cython_rejects(x):
    counts = {}
    cdef = x + 1  # a Cython keyword: Cython's parser fails, Python's does not
    counts[x] = cdef
    return counts


def own_module(x):
    counts = {x: 1}
    return __name__, counts


def count_vowels(text):
    counts = {}
    for ch in text:
        if ch in "aeiou":
            counts[ch] = counts.get(ch, 0) + 1
    return counts


def literal_powers(which):
    table = {}  # (a dict: Cython compiles it, Numba does not)
    if which == 0:
        table[which] = 0**-1  # ZeroDivisionError: C's pow() gives inf
    elif which == 1:
        table[which] = -(0.0**-1.5)
    elif which == 2:
        table[which] = 10.0**400  # OverflowError: C's pow() gives inf
    elif which == 3:
        table[which] = (-8) ** 0.5  # a complex number
    else:
        table[which] = 2**-1 + (-3) ** 3 + True**-2
    return table
