"""Counters that cannot overflow: ``n = 0`` then ``n += 1`` once per loop iteration.

Every ``+`` on ints in a compiled task is checked for int64 overflow, because Python's
ints do not overflow.  A counter is the one common case where the check can never
fire, and proving so needs no knowledge of the values involved:

* the name is bound exactly twice in the function: ``n = c0`` with an int literal
  ``c0 <= 0``, and ``n += 1``;
* the ``n += 1`` sits in the body of a ``for`` loop ``L`` with no other loop between
  them (``if`` and the like are fine), so it runs at most once per iteration of ``L``;
* ``n = c0`` is a statement of the same block as ``L``, before it.

Each time ``L`` starts, ``n = c0`` has run in the same pass through that block, and
only ``L`` changes ``n`` after it.  A ``for`` loop has fewer than 2**63 iterations
(a ``range`` with more hands the call to Python before it starts; arrays and tuples
are smaller), so before the ``k``-th increment ``n <= c0 + k - 1 <= INT64_MAX - 1``.

Such an increment compiles to a plain add, which LLVM folds into the loop like
hand-written code (``sbb`` for ``if c: n += 1``) instead of a compare and select.
"""

from __future__ import annotations

import ast

__all__ = ["SAFE_COUNTER", "mark_safe_counters"]

INT64_MIN = -(2**63)

SAFE_COUNTER = "_ct_safe_counter"  # attribute set on an AugAssign that cannot overflow


def _int_literal(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _stores(fn: ast.FunctionDef) -> dict[str, int]:
    count: dict[str, int] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            count[node.id] = count.get(node.id, 0) + 1
    for arg in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs):
        count[arg.arg] = count.get(arg.arg, 0) + 1
    return count


def _increments(body: list[ast.stmt]) -> list[ast.AugAssign]:
    """The ``name += 1`` statements of a loop body, not counting inner loops' bodies."""
    found: list[ast.AugAssign] = []
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.For | ast.While | ast.AsyncFor):
            continue  # another loop: its iterations are not ours
        if (
            isinstance(node, ast.AugAssign)
            and isinstance(node.op, ast.Add)
            and isinstance(node.target, ast.Name)
            and _int_literal(node.value) == 1
        ):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _blocks(fn: ast.FunctionDef) -> list[list[ast.stmt]]:
    """Every statement list of the function (bodies, else-branches, handlers)."""
    out: list[list[ast.stmt]] = []
    for node in ast.walk(fn):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                out.append(block)
    return out


def mark_safe_counters(fn: ast.FunctionDef) -> set[str]:
    """Mark the counters' increments (``SAFE_COUNTER``); returns the counters' names."""
    stores = _stores(fn)
    safe: set[str] = set()
    for block in _blocks(fn):
        inits: dict[str, int] = {}  # name -> c0, for ``name = c0`` seen so far in this block
        for stmt in block:
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                c0 = _int_literal(stmt.value)
                if c0 is not None and INT64_MIN <= c0 <= 0:
                    inits[stmt.targets[0].id] = c0
            if not isinstance(stmt, ast.For):
                continue
            for inc in _increments(stmt.body):
                assert isinstance(inc.target, ast.Name)
                name = inc.target.id
                if name in inits and stores.get(name) == 2:
                    setattr(inc, SAFE_COUNTER, True)
                    safe.add(name)
    return safe
