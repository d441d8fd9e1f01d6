"""The latent projection of CODI (SPEC §3.4): P(h) = LayerNorm(W2 GELU(W1 h + b1) + b2)."""

from __future__ import annotations

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
        return self.norm(self.fc2(self.act(self.fc1(h))))
