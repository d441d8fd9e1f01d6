"""Logit lens and the path-share experiment (SPEC §4.3).

For every layer ``l``, ``logits_l = LMHead(FinalNorm(h^l))``. ``hidden_states[0]`` is the
embedding output; in HF GPT-2 / LLaMA ``hidden_states[-1]`` is already after the final norm
(SPEC §1.3), so only the other layers get the norm applied. The final norm is found
model-agnostically by :func:`find_final_norm` (``ln_f``, ``norm``, ``final_layer_norm``, ...
on ``model.base_model``).

Path share: at a branching point with top-2 candidates ``a`` and ``b``, feed
``0.6·E[a] + 0.4·E[b]``, ``a`` alone and ``b`` alone after the same prefix; per layer, the share
of ``a`` is ``|top10(soft) ∩ top5(a)| / 5`` (same for ``b``) **[open choice: ÷5, as in SPEC]**.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from latentreason.decoding.soft_config import soft_config
from latentreason.decoding.soft_sampling import soft_embedding
from latentreason.errors import ConfigError
from latentreason.methods.soft_thinking import soft_think
from latentreason.models.backbone import FINAL_NORM_PATHS, find_final_norm  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from latentreason.data.example import Example
    from latentreason.methods.base import Method


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


@torch.no_grad()
def path_share(
    model: nn.Module,
    prefix_ids: list[int],
    a: int,
    b: int,
    weight_a: float = 0.6,
    soft_top: int = 10,
    single_top: int = 5,
    horizon: int = 1,
) -> dict[str, list[float]]:
    """SPEC §4.3 path share at one branching point (prefix, candidates ``a`` and ``b``).

    ``horizon`` 1 lenses the position of the candidate input itself (its next-token prediction);
    ``horizon`` h > 1 first appends the same h - 1 tokens to all three runs (the greedy
    continuation of the a-run) and lenses the last of them **[extension]**.
    Returns per layer (index 0 = embeddings): ``share_a``, ``share_b``, the soft run's
    ``entropy`` and ``top1_is_a`` / ``top1_is_b`` (soft run's top-1 equals the a-run's / b-run's).
    """
    if horizon < 1:
        raise ConfigError(f"path share: horizon must be >= 1, got {horizon}")
    emb = model.get_input_embeddings()
    device = next(model.parameters()).device
    cont: list[int] = []
    for _ in range(horizon - 1):  # greedy continuation of the a-run
        logits = model(input_ids=torch.tensor([prefix_ids + [a] + cont], device=device)).logits[0, -1]
        cont.append(int(logits.argmax()))
    pre = emb(torch.tensor([prefix_ids], device=device))  # (1, T, d)
    last = torch.stack([
        soft_embedding(torch.tensor([weight_a, 1.0 - weight_a], device=device), torch.tensor([a, b], device=device), emb),
        emb(torch.tensor(a, device=device)),
        emb(torch.tensor(b, device=device)),
    ])  # (3, d): soft, a, b
    parts = [pre.expand(3, -1, -1), last[:, None, :]]
    if cont:
        parts.append(emb(torch.tensor([cont], device=device)).expand(3, -1, -1))
    x = torch.cat(parts, dim=1)
    lens = logit_lens(model, inputs_embeds=x, top_k=max(soft_top, single_top))
    ti = lens["top_indices"]  # (L+1, 3, k)
    res: dict[str, list[float]] = {"share_a": [], "share_b": [], "entropy": [], "top1_is_a": [], "top1_is_b": []}
    for layer in range(ti.shape[0]):
        soft_set = set(ti[layer, 0, :soft_top].tolist())
        a_set = set(ti[layer, 1, :single_top].tolist())
        b_set = set(ti[layer, 2, :single_top].tolist())
        res["share_a"].append(len(soft_set & a_set) / single_top)
        res["share_b"].append(len(soft_set & b_set) / single_top)
        res["entropy"].append(float(lens["entropy"][layer, 0]))
        res["top1_is_a"].append(float(ti[layer, 0, 0] == ti[layer, 1, 0]))
        res["top1_is_b"].append(float(ti[layer, 0, 0] == ti[layer, 2, 0]))
    return res


@torch.no_grad()
def branching_point(model: nn.Module, prompt: list[int], completion: list[int], n_think: int) -> tuple[list[int], int, int, float]:
    """Among the first ``n_think`` positions of a completion, the one whose next-token
    distribution has the largest second probability: ``(prefix, a, b, p_b)``."""
    device = next(model.parameters()).device
    seq = prompt + completion
    logits = model(input_ids=torch.tensor([seq], device=device)).logits[0].to(torch.float64)
    probs = torch.softmax(logits, dim=-1)
    # position t predicts seq[t + 1]; candidates: the last prompt position .. before the marker
    lo, hi = len(prompt) - 1, len(prompt) - 1 + max(n_think, 1)
    hi = min(hi, probs.shape[0])
    top = probs[lo:hi].topk(2, dim=-1)
    j = int(top.values[:, 1].argmax())
    t = lo + j
    return seq[: t + 1], int(top.indices[j, 0]), int(top.indices[j, 1]), float(top.values[j, 1])


@torch.no_grad()
def path_share_study(method: "Method", examples: list["Example"], weight_a: float = 0.6, batch_size: int = 100,
                     horizon: int = 1) -> dict[str, Any]:
    """Mean per-layer path shares at one branching point per question of the greedy trace
    (the thinking position whose next-token distribution has the largest second probability)."""
    greedy = []
    for i in range(0, len(examples), batch_size):
        greedy.extend(soft_think(method, examples[i : i + batch_size], soft_config(mode="greedy")))
    prompts = method.serializer.prompts(examples)
    per_point = []
    p_bs = []
    for prompt, g in zip(prompts, greedy):
        if not g.tokens:
            continue
        prefix, a, b, pb = branching_point(method.model, prompt, g.tokens, g.reasoning_tokens)
        per_point.append(path_share(method.model, prefix, a, b, weight_a=weight_a, horizon=horizon))
        p_bs.append(pb)
    if not per_point:
        return {"points": 0}
    n_layers = len(per_point[0]["share_a"])
    out: dict[str, Any] = {"points": len(per_point), "weight_a": weight_a, "horizon": horizon, "layers": list(range(n_layers)),
                           "mean_second_prob": sum(p_bs) / len(p_bs)}
    for key in ("share_a", "share_b", "entropy", "top1_is_a", "top1_is_b"):
        out[key] = [sum(p[key][layer] for p in per_point) / len(per_point) for layer in range(n_layers)]
    return out


__all__ = ["FINAL_NORM_PATHS", "branching_point", "find_final_norm", "lens_logits", "logit_lens", "path_share", "path_share_study"]
