"""The latent projection of CODI (SPEC §3.4): P(h) = LayerNorm(W2 GELU(W1 h + b1) + b2); the soft-token thought."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LatentProjection(nn.Module):
    def __init__(self, d_model: int, hidden: int | None = None, layer_norm_eps: float = 1e-5):
        super().__init__()
        hidden = hidden or d_model
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d_model)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        """``h`` in the model's dtype; computed in the projection's own (float32 over a half-precision model, as the
        official CODI's projection over its bfloat16 base), returned in ``h``'s."""
        dtype = self.fc1.weight.dtype
        return self.norm(self.fc2(self.act(self.fc1(h.to(dtype))))).to(h.dtype)


def projection_dtype(model) -> torch.dtype:
    """The dtype of a latent projection trained with ``model``: the model's, float32 at least (trainable weights of
    their own, like peft's LoRA adapters over a bfloat16 base)."""
    return torch.promote_types(model.get_input_embeddings().weight.dtype, torch.float32)


def soft_token_embedding(model, hidden: Tensor) -> Tensor:
    """Soft Thinking's concept token for states ``hidden`` (R, d): the LM head's distribution over the
    vocabulary times the input embedding matrix (SPEC §3.6.1 without filtering). CODI and Coconut add it
    to the projection with ``soft_token_thought``."""
    logits = model.get_output_embeddings()(hidden)
    weight = model.get_input_embeddings().weight
    probs = torch.softmax(logits, -1, dtype=torch.promote_types(logits.dtype, torch.float32))  # fp32 at least
    return (probs.to(weight.dtype) @ weight).to(hidden.dtype)
