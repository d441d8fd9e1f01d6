"""Logit lens (SPEC §4.3).

For every layer ``l``, ``logits_l = LMHead(FinalNorm(h^l))``. ``hidden_states[0]`` is the
embedding output; in HF GPT-2 / LLaMA ``hidden_states[-1]`` is already after the final norm
(SPEC §1.3), so only the other layers get the norm applied. The final norm is found
model-agnostically by :func:`find_final_norm` (``ln_f``, ``norm``, ``final_layer_norm``, ...
on ``model.base_model``).

The path-share experiment that reads soft inputs through the lens is
:mod:`latentreason.soft_thinking.path_share`.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from latentreason.errors import ConfigError
from latentreason.models.backbone import find_final_norm


def lens_logits(model: nn.Module, hidden_states: tuple[Tensor, ...] | list[Tensor]) -> Tensor:
    """``(n_layers + 1, *h.shape[:-1], V)`` logits: every layer through final norm + LM head.

    The last entry of ``hidden_states`` is used as is (already normalised in HF models).
    """
    norm = find_final_norm(model)
    head = model.get_output_embeddings()
    if head is None:
        raise ConfigError(f"logit lens: {type(model).__name__} has no output embeddings (LM head)")
    outs = []
    last = len(hidden_states) - 1
    for i, h in enumerate(hidden_states):
        outs.append(head(h if i == last else norm(h)))
    return torch.stack(outs)


@torch.no_grad()
def logit_lens(
    model: nn.Module,
    input_ids: Tensor | None = None,
    inputs_embeds: Tensor | None = None,
    attention_mask: Tensor | None = None,
    position: int = -1,
    top_k: int = 5,
) -> dict[str, Tensor]:
    """Per-layer lens at one position of a batch.

    Returns ``top_indices``/``top_probs`` ``(L+1, B, top_k)``, ``entropy`` ``(L+1, B)`` (nats),
    ``top1_agrees_final`` ``(L+1, B)`` (layer's top-1 = final layer's top-1) and ``probs``
    ``(L+1, B, V)``.
    """
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_hidden_states=True)
    hs = [h[:, position, :] for h in out.hidden_states]
    logits = lens_logits(model, hs).to(torch.float64)
    probs = torch.softmax(logits, dim=-1)
    tp, ti = probs.topk(top_k, dim=-1)
    ent = torch.special.entr(probs).sum(-1)
    agree = ti[..., 0] == ti[-1:, :, 0]
    return {"top_indices": ti, "top_probs": tp, "entropy": ent, "top1_agrees_final": agree, "probs": probs}
