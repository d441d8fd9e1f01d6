"""Pieces shared by the latent methods: step anchors and the normalised hidden-state distance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DISTANCES = ("smooth_l1", "l1", "mse")


def step_anchor(tokenizer, step_ids: list[int]) -> int:
    """Index (within a step's tokens) of the token that predicts the step's result.

    The token holding the step's last ``=`` (its next token is the result, as in ``4+7=1`` or
    ``<<16-3-4=9>>``); for steps without ``=`` (natural-language CoT) the step's last token.
    """
    if not step_ids:
        return 0
    text = tokenizer.decode(step_ids, skip_special_tokens=False)
    target = text.rfind("=")
    if target < 0:
        return len(step_ids) - 1
    lo, hi = 0, len(step_ids) - 1
    while lo < hi:  # smallest k with len(decode(ids[:k+1])) > target
        mid = (lo + hi) // 2
        if len(tokenizer.decode(step_ids[: mid + 1], skip_special_tokens=False)) > target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def normalized_distance(student: Tensor, teacher: Tensor, kind: str = "smooth_l1", normalize: bool = True) -> Tensor:
    """CODI's distillation distance for one layer: loss(student, sg(teacher)) / std(sg(teacher)).

    ``student``/``teacher``: (N, d) states at aligned positions; the teacher side is detached here;
    the std is the scalar standard deviation of the detached teacher tensor.
    """
    t = teacher.detach()
    if kind == "smooth_l1":
        d = F.smooth_l1_loss(student, t, beta=1.0)
    elif kind == "l1":
        d = F.l1_loss(student, t)
    elif kind == "mse":
        d = F.mse_loss(student, t)
    else:
        raise ValueError(kind)
    if normalize:
        std = _at_least_fp32(t).std() if t.numel() > 1 else torch.ones((), device=t.device)
        d = d / std.clamp(min=1e-6).to(d.dtype)
    return d


def _at_least_fp32(x: Tensor) -> Tensor:
    """Half-precision tensors computed in float32; float32 / float64 left as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def layerwise_distance(student_layers, teacher_layers, kind: str, normalize: bool) -> Tensor:
    """Mean over layers of :func:`normalized_distance` (all hidden-state outputs, embeddings included)."""
    losses = [normalized_distance(s, t, kind, normalize) for s, t in zip(student_layers, teacher_layers)]
    return torch.stack(losses).mean()


def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The causal-LM loss transformers computes from ``labels`` (next-token CE, -100 ignored, mean),
    written out so that float64 models keep float64 (transformers casts logits to float32; half
    precision is still computed in float32 here)."""
    labels = F.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()
    return F.cross_entropy(_at_least_fp32(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def shifted_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits[:, i]`` predicting ``targets[:, i]`` (-100 ignored)."""
    return F.cross_entropy(_at_least_fp32(logits.reshape(-1, logits.shape[-1])), targets.reshape(-1), ignore_index=-100)


def gather_aligned(latent_hidden, teacher_hidden, pairs, first_layer: int = 1):
    """Per layer, the student latent states and detached teacher states of aligned pairs.

    ``pairs``: (row, latent index, teacher position) triples; latent index 0 is ``<bot>``, i the
    state after thought i. Returns two lists over layers ``first_layer..L`` of (P, d) tensors.
    """
    device = teacher_hidden[0].device
    rows = torch.tensor([p[0] for p in pairs], device=device)
    t_pos = torch.tensor([p[2] for p in pairs], device=device)
    s_layers, t_layers = [], []
    for layer in range(first_layer, len(teacher_hidden)):
        s_layers.append(torch.stack([latent_hidden[m][layer][r] for r, m, _ in pairs]))
        t_layers.append(teacher_hidden[layer][rows, t_pos].detach())
    return s_layers, t_layers


def soft_token_embedding(model, hidden: Tensor) -> Tensor:
    """Soft Thinking's concept token for states ``hidden`` (R, d): the LM head's distribution over the
    vocabulary times the input embedding matrix (SPEC §3.6.1 without filtering)."""
    logits = model.get_output_embeddings()(hidden)
    weight = model.get_input_embeddings().weight
    probs = torch.softmax(logits, -1, dtype=torch.promote_types(logits.dtype, torch.float32))  # fp32 at least
    return (probs.to(weight.dtype) @ weight).to(hidden.dtype)


def step_result_ce(model, states: list[Tensor], targets: list[Tensor]) -> Tensor | None:
    """Cross-entropy of the LM head on latent states (each (R, d)) against the step-result tokens the
    teacher writes after each step's anchor (SIM-CoT-style step supervision); None without pairs."""
    if not states:
        return None
    logits = model.get_output_embeddings()(torch.cat(states))
    return F.cross_entropy(logits.float(), torch.cat(targets))
