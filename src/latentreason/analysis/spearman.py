"""Spearman's rank correlation, with tie-averaged ranks (no scipy): how well thoughts used follow difficulty."""

from __future__ import annotations

from statistics import mean
from typing import Sequence


def rankdata(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        r = (i + j) / 2 + 1
        for t in range(i, j + 1):
            ranks[order[t]] = r
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson correlation of the tie-averaged ranks).

    None when it is undefined: fewer than two points, or one of the sequences is constant.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman: sequences of different lengths ({len(x)} and {len(y)})")
    if len(x) < 2:
        return None
    rx, ry = rankdata(x), rankdata(y)
    mx, my = mean(rx), mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / (sxx * syy) ** 0.5


__all__ = ["rankdata", "spearman"]
