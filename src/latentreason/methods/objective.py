"""The objective terms the latent methods share, and their one config group.

CODI (and through it adaptive CODI and System-1.5's stage 1) and Coconut train continuous thoughts
with the same pieces; each method composes them with its own weights (``methods/codi.py`` reads as
the paper's ``L = α·L_student + β·L_KD + γ·L_teacher``):

* :func:`teacher_pass` — the model reading the explicit CoT: its hidden states are the targets of
  the distillation terms, its causal-LM loss the teacher CE;
* :func:`answer_kd` — CODI's distillation at the answer: per hidden-state output, the distance of the
  student's state just before the answer value to the teacher's (:func:`layerwise_distance`);
* :func:`step_alignment` — the project's step alignment: the latent state paired with step j is pulled
  to the teacher's state at the position that predicts step j's result (:class:`StepAnchors`);
* :func:`step_ce` — SIM-CoT-style step supervision: the LM head on that latent state must predict
  step j's result token.

A pairing of latent states with teacher positions is a list of groups ``(m, rows, positions)``:
latent index m (0 = ``<bot>``, i = the state after thought i) of the batch rows ``rows``, paired with
the teacher's ``positions`` in those rows. The terms concatenate the groups in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from latentreason.errors import ConfigError
from latentreason.methods.base import MethodConfig

DISTANCES = ("smooth_l1", "l1", "mse")

#: (latent index, batch rows, teacher positions in those rows)
Group = tuple[int, Tensor, Tensor]


@dataclass
class LatentObjectiveConfig(MethodConfig):
    """The options of the shared terms (``method_args``), the same for every latent method."""

    #: distance of the distillation terms: smooth_l1 (CODI's code) | l1 (CODI's paper text) | mse
    distill_loss: str = "smooth_l1"
    #: divide each layer's distance by the teacher's std at that layer
    distill_normalize: bool = True
    #: leave the embedding output (layer 0) out of the answer distillation; with absolute position embeddings
    #: (GPT-2) it only pulls the student's position vectors towards the teacher's
    distill_skip_embedding: bool = False
    #: project addition: align thought states with the teacher's step-result positions
    align_steps: bool = False
    align_weight: float = 1.0
    #: skip the embedding output (layer 0) in the step alignment: at a thought position it is the thought
    #: itself, which the teacher's token embedding there must not overwrite
    align_skip_embedding: bool = True
    #: first hidden-state output (0 = embeddings, 1 = first layer's, ...) the step alignment covers; overrides
    #: ``align_skip_embedding`` when set. 2 leaves the first layer free too: there a thought's state is mostly its
    #: own input, which must carry the previous step's value rather than look like the teacher's "=" token
    align_first_layer: int | None = None
    #: project addition (SIM-CoT-style step supervision): weight of a cross-entropy loss making the LM head read
    #: step j's result token off the latent state the step alignment pairs with step j (0 = off)
    step_ce_weight: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.distill_loss not in DISTANCES:
            raise ConfigError(f"method_args.distill_loss must be one of {', '.join(DISTANCES)}, got {self.distill_loss!r}")
        if self.align_first_layer is not None and self.align_first_layer < 0:
            raise ConfigError(f"method_args.align_first_layer must be >= 0, got {self.align_first_layer}")
        for k in ("align_weight", "step_ce_weight"):
            if getattr(self, k) < 0:
                raise ConfigError(f"method_args.{k} must be >= 0, got {getattr(self, k)}")

    @property
    def align_from_layer(self) -> int:
        """First hidden-state output the step alignment covers."""
        if self.align_first_layer is not None:
            return self.align_first_layer
        return 1 if self.align_skip_embedding else 0

    @property
    def kd_from_layer(self) -> int:
        """First hidden-state output the answer distillation covers."""
        return 1 if self.distill_skip_embedding else 0


# ---------------------------------------------------------------------- losses and distances
def _at_least_fp32(x: Tensor) -> Tensor:
    """Half-precision tensors computed in float32; float32 / float64 left as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The causal-LM loss transformers computes from ``labels`` (next-token CE, -100 ignored, mean),
    written out so that float64 models keep float64 (transformers casts logits to float32; half
    precision is still computed in float32 here)."""
    labels = F.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()
    return F.cross_entropy(_at_least_fp32(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def shifted_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits[:, i]`` predicting ``targets[:, i]`` (-100 ignored)."""
    return F.cross_entropy(_at_least_fp32(logits.reshape(-1, logits.shape[-1])), targets.reshape(-1), ignore_index=-100)


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


def layerwise_distance(student_layers, teacher_layers, kind: str, normalize: bool) -> Tensor:
    """Mean over layers of :func:`normalized_distance`."""
    losses = [normalized_distance(s, t, kind, normalize) for s, t in zip(student_layers, teacher_layers)]
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------- step anchors
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


class StepAnchors:
    """The teacher positions that predict each step's result (:func:`step_anchor`, cached per step)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[tuple[int, ...], int] = {}

    def __call__(self, start: int, steps: Sequence[list[int]]) -> list[int]:
        """Positions in a sequence whose steps start at ``start`` and follow one another."""
        out, off = [], start
        for s in steps:
            key = tuple(s)
            if key not in self._cache:
                self._cache[key] = step_anchor(self.tokenizer, s)
            out.append(off + self._cache[key])
            off += len(s)
        return out


# ---------------------------------------------------------------------- the terms
def teacher_pass(model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None) -> tuple[Any, Tensor | None]:
    """The model reading the explicit CoT (with hidden states) and, given ``labels``, its causal-LM loss.

    Call it under ``torch.no_grad()`` for a detached teacher (its states are only targets)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out, (causal_lm_loss(out.logits, labels) if labels is not None else None)


def answer_kd(student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor], rows: Tensor, p_s: Tensor, p_t: Tensor,
              cfg: LatentObjectiveConfig) -> Tensor:
    """CODI's distillation at the answer: every hidden-state output from ``cfg.kd_from_layer`` on, the student's
    state at suffix position ``p_s`` against the teacher's at ``p_t`` (per row of ``rows``)."""
    first = cfg.kd_from_layer
    t_states = [hs[rows, p_t] for hs in teacher_hidden[first:]]
    s_states = [hs[rows, p_s] for hs in student_hidden[first:]]
    return layerwise_distance(s_states, t_states, cfg.distill_loss, cfg.distill_normalize)


def step_alignment(latent_hidden: Sequence[Sequence[Tensor]], teacher_hidden: Sequence[Tensor], groups: list[Group],
                   first_layer: int, cfg: LatentObjectiveConfig) -> Tensor | None:
    """Latent states ↔ teacher states of ``groups``, every hidden-state output from ``first_layer`` on; None
    without pairs."""
    if not groups:
        return None
    n_layers = len(teacher_hidden)
    s_layers = [torch.cat([latent_hidden[m][layer][rows] for m, rows, _ in groups]) for layer in range(first_layer, n_layers)]
    t_layers = [torch.cat([teacher_hidden[layer][rows, pos] for _, rows, pos in groups]) for layer in range(first_layer, n_layers)]
    return layerwise_distance(s_layers, t_layers, cfg.distill_loss, cfg.distill_normalize)


def step_ce(model, latent_hidden: Sequence[Sequence[Tensor]], teacher_ids: Tensor, groups: list[Group]) -> Tensor | None:
    """Cross-entropy of the LM head on the last-layer latent states of ``groups`` against the token the teacher
    writes right after each paired position (the step's result); None without pairs."""
    if not groups:
        return None
    states = torch.cat([latent_hidden[m][-1][rows] for m, rows, _ in groups])
    targets = torch.cat([teacher_ids[rows, pos + 1] for _, rows, pos in groups])
    logits = model.get_output_embeddings()(states)
    return F.cross_entropy(logits.float(), targets)
