"""Unbiased Pass@k (Chen et al. 2021; SPEC §4.5).

With ``n`` samples of which ``c`` are correct, ``pass@k = 1 - C(n-c, k) / C(n, k)``, computed in
the stable product form ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``; it is 1 when ``n - c < k``.
"""

from __future__ import annotations

from statistics import mean
from typing import Sequence

from latentreason.errors import ConfigError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of ``k`` samples (out of ``n``, ``c`` correct) is correct."""
    if n < 1 or k < 1:
        raise ConfigError(f"pass@k: need n >= 1 and k >= 1, got n={n}, k={k}")
    if k > n:
        raise ConfigError(f"pass@k: k={k} is larger than the number of samples n={n}")
    if not 0 <= c <= n:
        raise ConfigError(f"pass@k: the number correct c={c} must be in [0, n={n}]")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(correct: Sequence[int], n: int, k: int) -> float:
    """Pass@k averaged over problems; ``correct[q]`` = number of correct samples of problem q."""
    if not correct:
        return 0.0
    return mean(pass_at_k(n, c, k) for c in correct)


__all__ = ["mean_pass_at_k", "pass_at_k"]
