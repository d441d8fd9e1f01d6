"""The halting head of adaptive latent thinking (``codi_adaptive``, ``docs/adaptive.md``).

A linear map from the last layer's state after a thought to one logit, read through a sigmoid as
the probability that the thinking is done: "feed ``<eot>`` now, the answer is ready". It is one of
the method's extra modules, so the checkpoint code stores it in ``extra.safetensors``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
