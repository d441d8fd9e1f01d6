"""The halting head and the stop rules of adaptive latent thinking (``codi_adaptive``, ``docs/adaptive.md``).

:class:`HaltingHead` is a linear map from the last layer's state after a thought to one logit, read
through a sigmoid as the probability that the thinking is done: "feed ``<eot>`` now, the answer is
ready". It is one of the method's extra modules, so the checkpoint code stores it in
``extra.safetensors``.

The stop rules are ``halt_fn(h, k) -> bool`` for ``latent_generate``.

The latent engine consults ``halt_fn`` after every thought once a row has fed ``min_latent``
thoughts; ``h`` (R, d) is the last layer's state (pre-projection) after the row's latest thought
and ``k`` (R,) the number of thoughts it has fed. A row for which ``halt_fn`` returns True feeds
``<eot>`` next and decodes its answer; the others keep thinking (``docs/adaptive.md``).

* :func:`head_halt_fn` — a trained :class:`~latentreason.methods.adaptive.halting.HaltingHead`: stop when
  p(stop | h) > threshold (compared in logit space, so threshold 0 always stops and 1 never does).
* :func:`probe_halt_fn` — training-free: read the state through the model's own LM head (the
  logit lens) and stop when the probe says the reasoning is over: the probability mass it puts on
  the tokens that end a chain of thought (``"\\n"`` / ``"#"`` before ``#### A`` in the default
  serialisation, ``<eot>`` itself) exceeds the threshold.

Both functions are stateless (a row's decision depends on its own state and thought count only),
so batched decoding gives the same stops as one-by-one decoding.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from latentreason.decoding.latent import HaltFn

HALTING_MODES = ("none", "head", "probe")


class HaltingHead(nn.Module):
    """p(stop | h) = sigmoid(w·h + b) on the last-layer state h (pre-projection) after a thought."""

    def __init__(self, d_model: int, init_bias: float = -2.0):
        super().__init__()
        self.linear = nn.Linear(d_model, 1)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 0.02)
            self.linear.bias.fill_(init_bias)  # starts out "keep thinking" (p ≈ 0.12)

    def logits(self, h: Tensor) -> Tensor:
        """(..., d) -> (...) stop logits."""
        return self.linear(h.to(self.linear.weight.dtype)).squeeze(-1)

    def forward(self, h: Tensor) -> Tensor:
        """(..., d) -> (...) stop probabilities."""
        return torch.sigmoid(self.logits(h))


def threshold_logit(threshold: float) -> float:
    """logit(threshold), with logit(0) = -inf and logit(1) = +inf."""
    if threshold <= 0.0:
        return -math.inf
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold) - math.log1p(-threshold)


def head_halt_fn(head: HaltingHead, threshold: float = 0.5) -> HaltFn:
    """Stop the rows whose halting head gives p(stop | h) > ``threshold``."""
    cut = threshold_logit(threshold)

    def halt(h: Tensor, k: Tensor) -> Tensor:
        return head.logits(h) > cut

    return halt


def stop_token_ids(tokenizer, texts: Iterable[str], extra_ids: Iterable[int] = ()) -> list[int]:
    """Token ids of the first token of each text (the tokens that open "the answer comes now")."""
    out: list[int] = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False).input_ids
        if ids and ids[0] not in out:
            out.append(int(ids[0]))
    for i in extra_ids:
        if int(i) not in out:
            out.append(int(i))
    return out


def probe_stop_probability(lm_head: Callable[[Tensor], Tensor], h: Tensor, token_ids: list[int]) -> Tensor:
    """Probability mass the logit lens of ``h`` (R, d) puts on ``token_ids``: (R,)."""
    logits = lm_head(h).float()
    p = torch.softmax(logits, dim=-1)
    return p[:, token_ids].sum(-1)


def probe_halt_fn(lm_head: Callable[[Tensor], Tensor], token_ids: list[int], threshold: float = 0.5) -> HaltFn:
    """Training-free stop: the LM-head probe of the state puts more than ``threshold`` on ``token_ids``."""
    if not token_ids:
        raise ValueError("probe_halt_fn needs at least one stop token id")
    ids = list(token_ids)

    def halt(h: Tensor, k: Tensor) -> Tensor:
        if threshold <= 0.0:
            return torch.ones(h.shape[0], dtype=torch.bool, device=h.device)
        if threshold >= 1.0:
            return torch.zeros(h.shape[0], dtype=torch.bool, device=h.device)
        return probe_stop_probability(lm_head, h, ids) > threshold

    return halt
