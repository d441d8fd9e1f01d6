"""Generator of iCoT's k x k multiplication data (SPEC §2.5).

The CoT of a shipped line is a deterministic function of its operands; this module computes it,
so the missing (LFS-only) training sets can be regenerated: ``generate_multiplication(4, 4, n)``.
Digits are written least-significant first, separated by spaces.
"""

from __future__ import annotations

import random

from latentreason.data.example import Example


def _digits(x: int, width: int) -> str:
    s = str(x).zfill(width)[::-1]
    return " ".join(s)


def multiplication_line(a: int, b: int, n: int, m: int) -> tuple[str, list[str], str]:
    """(question, steps, answer) for ``a * b`` with ``n`` and ``m`` digits."""
    b_digits = [int(c) for c in str(b).zfill(m)[::-1]]
    steps = []
    running = 0
    for j, bj in enumerate(b_digits):
        partial = a * bj
        running += partial * 10**j
        part = " ".join(["0"] * j + [_digits(partial, n + 1)])
        if 1 <= j <= m - 2:
            part += f" ( {_digits(running, n + 1 + j)} )"
        steps.append(part)
    question = f"{_digits(a, n)} * {_digits(b, m)}"
    return question, steps, _digits(a * b, n + m)


def generate_multiplication(n: int, m: int, count: int, seed: int = 0, exclude: set[str] | None = None) -> list[Example]:
    """``count`` random n-digit x m-digit problems (leading digit non-zero), excluding given questions."""
    rng = random.Random(f"latentreason-mult-{n}x{m}-{seed}")
    exclude = exclude or set()
    out = []
    while len(out) < count:
        a = rng.randint(10 ** (n - 1), 10**n - 1)
        b = rng.randint(10 ** (m - 1), 10**m - 1)
        q, steps, ans = multiplication_line(a, b, n, m)
        if q in exclude:
            continue
        out.append(Example(q, steps, ans, {"answer_type": "text", "task": f"mult_{n}x{m}", "step_sep": " + "}))
    return out
