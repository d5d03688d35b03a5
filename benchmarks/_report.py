"""Shared formatting for the benchmark scripts: rates and markdown tables."""

from __future__ import annotations

from collections.abc import Sequence


def rate(x: float) -> str:
    if x != x:  # nan
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e5:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A markdown table; columns from index `right` on are right-aligned."""
    aligns = ["---" if i < right else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
