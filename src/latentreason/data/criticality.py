"""Which reasoning steps matter for the answer: criticality from the dependency graph of the steps.

System-1.5 (SPEC §3.5, open choice 8) lets a *non-critical* step leave the layer stack early. The
paper labels steps with an Atom-of-Thoughts decomposition of the CoT into a dependency DAG; this
module labels them offline, from the steps themselves:

* a step is **critical** when the answer depends on its result, directly or through later steps
  (its node reaches the answer in the DAG); otherwise — nothing that the answer uses reads its
  result — it is non-critical;
* :func:`equation_dag` builds the DAG of GSM8k-Aug-style equation chains (``<<16-3-4=9>>
  <<9*2=18>>``): a step reads the result of the latest earlier step whose result equals one of
  the numbers in its expression, and the answer reads the latest step whose result equals it; a
  restatement (``<<125=125>>``, ``x*1``, ``x+0``) produces no new value, so it is never read;
* the procedural task records its DAG when it is generated (``meta["parents"]``, distractor steps
  included: ``TaskConfig.distractors``).

:func:`step_criticality` is what methods call: the example's own ``meta["critical"]`` when present,
else the equation DAG when every step is an equation, else every step critical.
"""

from __future__ import annotations

import re

from latentreason.data.example import Example

_RESTATE = re.compile(r"^\(?\s*(?P<x>\d*\.?\d+)\s*\)?(?:\s*(?:[*/]\s*1(?:\.0+)?|[+-]\s*0(?:\.0+)?))?$")
_EQ = re.compile(r"^\s*(?:<<)?(?P<expr>[^=<>]*)=(?P<res>[^=<>]+?)(?:>>)?\s*$")
_NUM = re.compile(r"\d*\.?\d+")  # unsigned: a "-" inside an expression is an operator


def _num(text: str) -> float | None:
    text = text.replace(",", "").strip()
    try:
        return float(text)
    except ValueError:
        return None


def reaches_answer(parents: list[list[int]], answer_parents: list[int]) -> list[bool]:
    """Per step, whether the answer depends on it: ``parents[j]`` are the earlier steps step j reads,
    ``answer_parents`` the steps the answer reads."""
    critical = [False] * len(parents)
    stack = [p for p in answer_parents if 0 <= p < len(parents)]
    while stack:
        j = stack.pop()
        if critical[j]:
            continue
        critical[j] = True
        stack.extend(p for p in parents[j] if 0 <= p < j and not critical[p])
    return critical


def equation_dag(steps: list[str], answer: str) -> tuple[list[list[int]], list[int]] | None:
    """``(parents, answer_parents)`` of an equation chain, or None when a step is not ``expr=result``."""
    results: list[float | None] = []
    parents: list[list[int]] = []
    for j, step in enumerate(steps):
        m = _EQ.match(step)
        if m is None:
            return None
        used = {_num(x) for x in _NUM.findall(m.group("expr"))}
        ps = []
        for v in used:
            if v is None:
                continue
            src = next((i for i in range(j - 1, -1, -1) if results[i] == v), None)
            if src is not None:
                ps.append(src)
        parents.append(sorted(set(ps)))
        res = _num(m.group("res"))
        r = _RESTATE.match(m.group("expr").strip())
        # a restatement (``<<125=125>>``, ``x*1``, ``x+0``) produces no new value: readers of the value read
        # the step that computed it
        results.append(None if r is not None and _num(r.group("x")) == res and ps else res)
    a = _num(answer)
    last = next((i for i in range(len(steps) - 1, -1, -1) if a is not None and results[i] == a), None)
    return parents, ([last] if last is not None else [])


def step_criticality(ex: Example) -> list[bool]:
    """Per reasoning step of ``ex``: does the answer depend on it (see the module docstring)."""
    crit = ex.meta.get("critical")
    if isinstance(crit, list) and len(crit) == len(ex.steps):
        return [bool(c) for c in crit]
    dag = equation_dag(ex.steps, ex.answer)
    if dag is None or not dag[1]:
        return [True] * len(ex.steps)
    return reaches_answer(*dag)
