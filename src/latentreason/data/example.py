"""The one record type every loader yields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Kinds of gold answers, which decide how a prediction is compared (see ``data.answers``).
ANSWER_TYPES = ("number", "text", "bool", "choice", "math")


@dataclass
class Example:
    """One problem: ``question`` -> reasoning ``steps`` -> ``answer``.

    ``meta`` holds every extra field of the source record (graph of a ProsQA problem, the raw
    gold value of an evaluation set, the number of steps of a generated problem, ...). Its key
    ``answer_type`` (one of :data:`ANSWER_TYPES`, default ``"number"``) decides how answers
    are compared.
    """

    question: str
    steps: list[str]
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer_type(self) -> str:
        return self.meta.get("answer_type", "number")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
