"""Soft Thinking on any trained method's model (SPEC §3.6): the method-level entry point.

Soft Thinking is training-free: :func:`soft_think` decodes a trained CoT-style method's questions
with :func:`~latentreason.soft_thinking.loop.soft_generate`, taking the prompts from the
method's serializer, the think-end string from its answer marker (:func:`method_think_end`), the
text Cold Stop / the budget inject from its serialisation (:func:`method_inject_ids`) and the
generation limit from its ``max_new_tokens`` (capped by the context). The decoding loop, its
configuration and the samplers live in :mod:`latentreason.soft_thinking.loop`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from latentreason.data.example import Example
from latentreason.methods.base import Method
from latentreason.soft_thinking.config import SoftThinkingConfig
from latentreason.soft_thinking.loop import SoftThinkingOutput, StepProbe, soft_generate


def method_think_end(method: Method, config: SoftThinkingConfig) -> str:
    return config.think_end or method.serializer.answer_marker


def method_inject_ids(method: Method, config: SoftThinkingConfig) -> list[int]:
    """What Cold Stop / the budget feed: ``config.inject`` tokenised, else the serialisation's own
    text from the end of the last step to the end of the answer marker (``"\\n####"`` by default)."""
    tok = method.tokenizer
    if config.inject is not None:
        return tok(config.inject, add_special_tokens=False).input_ids
    marker = method_think_end(method, config)
    if config.think_end is None:
        t = method.serializer.tokenize([Example(question="0", steps=["0"], answer="0")])[0]
        seq = list(t.cot_close) + list(t.answer_prefix)
        for n in range(1, len(seq) + 1):
            if marker in tok.decode(seq[:n], skip_special_tokens=False):
                return seq[:n]
    return tok(marker, add_special_tokens=False).input_ids


@torch.no_grad()
def soft_think(
    method: Method,
    examples: list[Example],
    config: SoftThinkingConfig | None = None,
    *,
    seed: int = 0,
    row_ids: Sequence[int] | None = None,
    record_distributions: bool = False,
    probe: StepProbe | None = None,
) -> list[SoftThinkingOutput]:
    """Soft-thinking decoding of ``examples`` with any trained CoT-style method's model.

    Prompts are built by the method's serializer; the think-end string defaults to its answer
    marker and the generation limit to its ``max_new_tokens`` (capped by the context).
    """
    cfg = (config or SoftThinkingConfig()).validate()
    if not examples:
        return []
    was_training = method.training
    method.eval()
    try:
        prompts = method.serializer.prompts(examples)
        if cfg.max_new_tokens is not None:
            saved = method.config.max_new_tokens
            method.config.max_new_tokens = cfg.max_new_tokens
            try:
                budget = method.generation_budget(prompts)
            finally:
                method.config.max_new_tokens = saved
        else:
            budget = method.generation_budget(prompts)
        return soft_generate(
            method.model, prompts, method.tokenizer, config=cfg, eos_id=method.ids.eos, pad_id=method.ids.pad,
            think_end=method_think_end(method, cfg), inject_ids=method_inject_ids(method, cfg), max_new_tokens=budget,
            stop_after_eos=method.serializer.stop_after_eos, seed=seed, row_ids=row_ids,
            record_distributions=record_distributions, probe=probe,
        )
    finally:
        method.train(was_training)


__all__ = ["method_inject_ids", "method_think_end", "soft_think"]
