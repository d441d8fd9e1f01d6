"""ROUGE-L between a run's visible text and the greedy trace of the same prompt (SPEC §4.4).

Scores come from the ``rouge-score`` package (``RougeScorer(["rougeL"])``, F-measure) with an
explicit tokenizer, because its default one lower-cases and drops every non-alphanumeric
character (``4+7=1`` would become ``4 7 1``):

* ``whitespace`` (default, as in SPEC): ``text.split()``. On the default task a token is a whole
  step such as ``4+7=1`` (steps are separated by spaces), so one wrong digit costs the whole step.
* ``char``: every non-whitespace character is a token — a finer measure for texts, like the
  default task's, that have no spaces inside steps.

Two empty texts score 1.0; one empty text scores 0.0.
"""

from __future__ import annotations

from statistics import mean
from typing import Sequence

from latentreason.errors import ConfigError

TOKENIZATIONS = ("whitespace", "char")


class _Tokenizer:
    def __init__(self, kind: str):
        if kind not in TOKENIZATIONS:
            raise ConfigError(f"rouge tokens: must be one of {', '.join(TOKENIZATIONS)}, got {kind!r}")
        self.kind = kind

    def tokenize(self, text: str) -> list[str]:
        if self.kind == "whitespace":
            return text.split()
        return [c for c in text if not c.isspace()]


_SCORERS: dict[str, object] = {}


def _scorer(kind: str):
    if kind not in _SCORERS:
        from rouge_score import rouge_scorer  # imports nltk (slow); only ROUGE scoring needs it

        _SCORERS[kind] = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer(kind))
    return _SCORERS[kind]


def rouge_l(candidate: str, reference: str, tokens: str = "whitespace") -> float:
    """ROUGE-L F-measure of ``candidate`` against ``reference``."""
    tok = _Tokenizer(tokens)
    c, r = tok.tokenize(candidate), tok.tokenize(reference)
    if not c and not r:
        return 1.0
    if not c or not r:
        return 0.0
    return float(_scorer(tokens).score(reference, candidate)["rougeL"].fmeasure)


def mean_rouge_l(candidates: Sequence[str], references: Sequence[str], tokens: str = "whitespace") -> float:
    """Mean ROUGE-L F over aligned pairs."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
    if not candidates:
        return 0.0
    return mean(rouge_l(c, r, tokens) for c, r in zip(candidates, references))


__all__ = ["TOKENIZATIONS", "mean_rouge_l", "rouge_l"]
