"""The path-share experiment (SPEC §4.3): what a soft input's layers read, through the logit lens.

At a branching point with top-2 candidates ``a`` and ``b``, feed ``0.6·E[a] + 0.4·E[b]``, ``a``
alone and ``b`` alone after the same prefix; per layer, the share of ``a`` is
``|top10(soft) ∩ top5(a)| / 5`` (same for ``b``) **[open choice: ÷5, as in SPEC]**.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latentreason.analysis.logit_lens import logit_lens
from latentreason.data.example import Example
from latentreason.errors import ConfigError
from latentreason.methods.base import Method
from latentreason.soft_thinking.config import soft_config
from latentreason.soft_thinking.method import soft_think
from latentreason.soft_thinking.samplers import soft_embedding


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
def path_share_study(method: Method, examples: list[Example], weight_a: float = 0.6, batch_size: int = 100,
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
