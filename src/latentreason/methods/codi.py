"""CODI: continuous chain of thought through self-distillation (Shen et al. 2025; SPEC §3.4).

One model plays two roles on every batch:

* **teacher** — CoT-SFT on ``Q + C⁻ + answer`` (C⁻ drops the last CoT step);
* **student** — ``Q + <bot>`` → n continuous thoughts → ``<eot> + answer``, where thought
  z₁ = P(h at <bot>) and z_{k+1} = P(h after feeding z_k), P = 2-layer MLP + LayerNorm.

L = α·L_student + β·L_KD + γ·L_teacher, where L_KD is the mean over all hidden-state outputs
(embeddings included) of SmoothL1(h_S[p_S], sg(h_T[p_T])) / std(sg(h_T[p_T])) at the token just
before the answer value (``:`` of ``The answer is:``; the space of ``#### `` on the default task).

Presets: ``codi_paper`` is the paper's method and the official GPT-2 recipe around it (its
serialisation, vocabulary, answer check, data filter, weight-decay set and micro-batch weighting);
``codi_paper_official_padding`` adds the official code's default padding handling
(``official_padding``: positions that count the left padding and latent / answer passes that
attend to it), which the parity tests reproduce exactly; ``codi_paper_default_task`` is the
paper's objective on the embedded task (the demo's row).

Project additions (named options, all off in the ``codi_paper*`` presets; see ``docs/codi.md``):

* ``align_steps`` — every thought is also aligned (all layers, same normalised distance) to the
  teacher's state at the position that predicts the matching CoT step's result (System-1.5's
  stage-1 idea). On a from-scratch tiny model this is what makes CODI learnable in CPU minutes.
* ``thoughts_per_step`` — with c > 1, thought j·c is aligned to step j.
* initialisation from a CoT-SFT checkpoint (``init_from`` of the run) rather than from scratch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from latentreason.data.example import Example
from latentreason.decoding.generate import Generation, hit_limit, left_pad, trim_at_stop
from latentreason.decoding.latent import identity_thought, latent_forward, latent_generate, right_pad
from latentreason.errors import ConfigError, DataError
from latentreason.methods.base import Method, TokExample, collate_lm
from latentreason.methods.objective import (
    Group,
    LatentObjectiveConfig,
    StepAnchors,
    answer_kd,
    shifted_ce,
    step_alignment,
    step_ce,
    teacher_pass,
)
from latentreason.models.projection import LatentProjection, projection_dtype, soft_token_embedding
from latentreason.models.tokenizer import require_ids


@dataclass
class CODIConfig(LatentObjectiveConfig):
    #: number of continuous thoughts (changeable at inference: ``eval --set n_latent=4``)
    n_latent: int = 6
    #: 2-layer MLP + LayerNorm on the thoughts (False: feed the raw last-layer state)
    projection: bool = True
    #: hidden width of the projection (default: the model width)
    projection_dim: int | None = None
    #: loss weights: student CE, distillation, teacher CE (the shared terms' options — distance, step alignment,
    #: step CE — are :class:`~latentreason.methods.objective.LatentObjectiveConfig`'s)
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    #: the teacher sees C⁻ (its last CoT step dropped), as in the paper
    teacher_drop_last_step: bool = True
    #: the text written before the answer value (default: the serialisation's own, "#### " / "The answer is: ");
    #: it is tokenised together with the value, and the distillation position is its last token that the value
    #: does not merge into (":" with GPT-2, the space with LLaMA-3, as in the official code)
    answer_prefix: str | None = None
    #: reproduce the official code's default padding handling (its fix_attn_mask=False): the question pass
    #: counts the left padding in its position ids, and the latent and answer passes run without an attention
    #: mask, so thoughts and answer attend to the padding (fully padded rows of the question pass attend to the
    #: whole row, as transformers does on CUDA). Results then depend on how a batch is padded. Off: padding is
    #: masked everywhere and positions count real tokens only. For parity tests and faithful reproduction.
    official_padding: bool = False
    #: at inference strip questions and replace double spaces by one (the official test script does; its
    #: training data keeps them)
    eval_question_cleanup: bool = False
    #: drop training examples whose answer does not start with a digit (negative numbers), as the official
    #: training script does
    digit_answers_only: bool = False
    #: step alignment: thought ``align_offset + j·thoughts_per_step`` is paired with step j
    thoughts_per_step: int = 1
    #: latent position aligned with the first step (0 = <bot>, 1 = first thought)
    align_offset: int = 1
    #: project addition: a thought is Soft Thinking's concept token of the state (LM-head distribution times the
    #: embedding matrix) plus the projection, whose output gain starts at 0 (so a fresh thought is the soft token)
    soft_token_thought: bool = False
    #: project addition (scheduled teacher forcing of thoughts): over the first N training steps a thought's input
    #: is mixed with the embedding of the previous step's result token, α·E[result] + (1 - α)·thought, α falling
    #: linearly from 1 to 0; a thought's mechanism can be learnt before the previous thought has learnt to carry
    #: the value (0 = off; needs align_steps and thoughts_per_step = 1)
    forced_thoughts_steps: int = 0
    max_new_tokens: int | None = None  # None: follow the training data (MethodConfig)

    def validate(self) -> None:
        super().validate()
        if self.n_latent < 0:
            raise ConfigError(f"method_args.n_latent must be >= 0, got {self.n_latent}")
        if self.forced_thoughts_steps < 0:
            raise ConfigError(f"method_args.forced_thoughts_steps must be >= 0, got {self.forced_thoughts_steps}")
        if self.forced_thoughts_steps and self.thoughts_per_step != 1:
            raise ConfigError("method_args.forced_thoughts_steps needs method_args.thoughts_per_step = 1")
        if self.thoughts_per_step < 1:
            raise ConfigError(f"method_args.thoughts_per_step must be >= 1, got {self.thoughts_per_step}")
        for k in ("alpha", "beta", "gamma"):
            if getattr(self, k) < 0:
                raise ConfigError(f"method_args.{k} must be >= 0, got {getattr(self, k)}")


# the paper's objective
OBJECTIVE = dict(n_latent=6, projection=True, alpha=1.0, beta=1.0, gamma=1.0, distill_loss="smooth_l1",
                 distill_normalize=True, distill_skip_embedding=False, teacher_drop_last_step=True, align_steps=False)
# the official GPT-2 recipe around it (train.py, test.py, src/model.py, scripts/train_gpt2_gsm8k-aug.sh), point by
# point: CODI's serialisation ("The answer is: A", tokenised as in train.py), answer check and 256-token limit, its
# vocabulary (pad, <bot>, <eot> at V..V+2, rows from the mean embedding), negative answers dropped, questions cleaned
# at test time, the Hugging Face Trainer's weight-decay set and equal weighting of accumulated micro-batches.
# lr, batch, epochs, LoRA, clipping, schedule: configs/codi_gpt2_gsm8k_aug.yaml
PAPER = dict(OBJECTIVE, serialization="codi", answer_mode="codi", max_new_tokens=256, special_tokens="codi",
             digit_answers_only=True, eval_question_cleanup=True, weight_decay_on="hf", micro_batch_weighting="equal")


class CODI(Method):
    name = "codi"
    Config = CODIConfig
    summary = "CODI: teacher (CoT) and student (continuous thoughts) in one model, aligned before the answer"
    presets = {
        # the paper's method and recipe (GPT-2 settings of SPEC §3.4)
        "codi_paper": dict(PAPER),
        # LLaMA-3.2-1B: beta 20
        "codi_paper_llama": {**PAPER, "beta": 20.0},
        # parity with the official code as it runs by default: padding handled as with its fix_attn_mask=False
        "codi_paper_official_padding": {**PAPER, "official_padding": True},
        # the paper's objective on the embedded task's serialisation and the project's training recipe (the demo's
        # codi_paper row)
        "codi_paper_default_task": dict(OBJECTIVE),
        # the project's best documented setting on the embedded default (docs/codi.md)
        "default_task": dict(n_latent=5, projection=True, teacher_drop_last_step=False, align_steps=True, align_offset=1,
                             align_skip_embedding=True, distill_skip_embedding=True, step_ce_weight=1.0,
                             align_first_layer=2),
        # the setting before step supervision (docs/codi.md: it learns the chain on some seeds only)
        "default_task_v1": dict(n_latent=5, projection=True, teacher_drop_last_step=False, align_steps=True,
                                align_offset=1, align_skip_embedding=True, distill_skip_embedding=True),
    }

    def __init__(self, backbone, config: CODIConfig | None = None):
        super().__init__(backbone, config)
        require_ids(self.ids, ("bot", "eot"), "CODI")
        first = self.config.align_first_layer
        if self.config.align_steps and first is not None and first > backbone.num_layers:
            raise ConfigError(f"method_args.align_first_layer={first}: the model has {backbone.num_layers} layer(s), "
                              f"so the step alignment would cover no hidden state (at most {backbone.num_layers})")
        d = backbone.hidden_size
        if self.config.projection:
            self.projection = LatentProjection(d, self.config.projection_dim)
            self.projection.to(dtype=projection_dtype(self.model))
            if self.config.soft_token_thought:
                torch.nn.init.zeros_(self.projection.norm.weight)
        self.anchors = StepAnchors(self.tokenizer)

    # ------------------------------------------------------------------ thoughts
    def thought(self, hidden: Tensor, step: Tensor, rows: Tensor | None = None) -> Tensor:
        out = self.projection(hidden) if self.config.projection else identity_thought(hidden, step)
        if self.config.soft_token_thought:
            out = out + soft_token_embedding(self.model, hidden)
        return out

    # ------------------------------------------------------------------ data
    def prepare(self, examples: list[Example], what: str = "data") -> list[TokExample]:
        if self.config.digit_answers_only:
            examples = [e for e in examples if e.answer.strip()[:1].isdigit()]
            if not examples:
                raise DataError(f"{what}: no example has an answer starting with a digit (digit_answers_only)")
        return super().prepare(examples, what)

    def _teacher_steps(self, t: TokExample) -> list[list[int]]:
        if self.config.teacher_drop_last_step and t.steps:
            return t.steps[:-1]
        return t.steps

    def sequence_length(self, t: TokExample) -> int:
        return max(len(t.prompt) + len(t.cot) + len(t.answer), len(t.prompt) + self.config.n_latent + 2 + len(t.answer))

    def features(self, t: TokExample) -> dict[str, Any]:
        steps = self._teacher_steps(t)
        cot = [x for s in steps for x in s] + (t.cot_close if steps else self.serializer.empty_cot)
        teacher = t.prompt + cot + t.answer
        t_labels = [-100] * len(t.prompt) + cot + t.answer
        p_t = len(t.prompt) + len(cot) + len(t.answer_prefix) - 1
        anchors = self.anchors(len(t.prompt), steps)
        suffix = [self.ids.eot] + t.answer
        return {
            "teacher": (teacher, t_labels),
            "p_t": p_t,
            "anchors": anchors,
            "prompt": t.prompt + [self.ids.bot],
            "suffix": suffix,
            "p_s": len(t.answer_prefix),  # index in the suffix: <eot> at 0, prefix tokens 1..len
        }

    def collate(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_lm([f["teacher"] for f in feats], self.ids.pad)
        p_ids, p_mask = left_pad([f["prompt"] for f in feats], self.ids.pad)
        s_ids, s_mask = right_pad([f["suffix"] for f in feats], self.ids.pad)
        s_labels = torch.full_like(s_ids, -100)
        for i, f in enumerate(feats):
            s = f["suffix"]
            s_labels[i, : len(s) - 1] = torch.tensor(s[1:])
        n_anchor = max((len(f["anchors"]) for f in feats), default=0)
        anchors = torch.full((len(feats), max(n_anchor, 1)), -1, dtype=torch.long)
        for i, f in enumerate(feats):
            if f["anchors"]:
                anchors[i, : len(f["anchors"])] = torch.tensor(f["anchors"])
        return {
            "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"],
            "p_t": torch.tensor([f["p_t"] for f in feats]), "anchors": anchors,
            "prompt_ids": p_ids, "prompt_mask": p_mask, "suffix_ids": s_ids, "suffix_mask": s_mask,
            "suffix_labels": s_labels, "p_s": torch.tensor([f["p_s"] for f in feats]),
        }

    # ------------------------------------------------------------------ loss
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """L = α·L_student + β·L_KD + γ·L_teacher (+ the step alignment and step CE when on)."""
        cfg = self.config
        B = batch["input_ids"].shape[0]
        rows = torch.arange(B, device=batch["input_ids"].device)
        t_out, loss_teacher = teacher_pass(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        override = self._forced_thoughts(batch) if self.training and self._forcing > 0 else None
        s = latent_forward(self.model, batch["prompt_ids"], batch["prompt_mask"], cfg.n_latent, self.thought,
                           batch["suffix_ids"], batch["suffix_mask"], count_padding=cfg.official_padding,
                           thought_override=override)
        loss_student = shifted_ce(s.suffix_logits, batch["suffix_labels"])
        loss_kd = answer_kd(s.suffix_hidden, t_out.hidden_states, rows, batch["p_s"], batch["p_t"], cfg)
        loss = cfg.alpha * loss_student + cfg.beta * loss_kd + cfg.gamma * loss_teacher
        out = {"loss_student": loss_student.detach(), "loss_kd": loss_kd.detach(), "loss_teacher": loss_teacher.detach()}
        out["loss"] = self.add_step_terms(loss, out, batch, t_out.hidden_states, s.latent_hidden)
        return out

    def add_step_terms(self, loss: Tensor, out: dict[str, Tensor], batch, teacher_hidden, latent_hidden) -> Tensor:
        """``loss`` plus the weighted step alignment and step CE (when on), each logged in ``out``."""
        cfg = self.config
        groups = self.step_groups(batch, latent_hidden) if cfg.align_steps or cfg.step_ce_weight > 0 else []
        if cfg.align_steps:
            loss_align = step_alignment(latent_hidden, teacher_hidden, groups, cfg.align_from_layer, cfg)
            if loss_align is not None:
                loss = loss + cfg.align_weight * loss_align
                out["loss_align"] = loss_align.detach()
        if cfg.step_ce_weight > 0:
            loss_step = step_ce(self.model, latent_hidden, batch["input_ids"], groups)
            if loss_step is not None:
                loss = loss + cfg.step_ce_weight * loss_step
                out["loss_step_ce"] = loss_step.detach()
        return loss

    def step_groups(self, batch, latent_hidden) -> list[Group]:
        """Latent position ``align_offset + j·c`` (0 = <bot>) ↔ the teacher position predicting step j's result,
        for the rows that have a step j."""
        c, anchors = self.config.thoughts_per_step, batch["anchors"]
        groups = []
        for j in range(anchors.shape[1]):
            m = self.config.align_offset + j * c
            if m >= len(latent_hidden):
                break
            idx = (anchors[:, j] >= 0).nonzero(as_tuple=True)[0]
            if idx.numel():
                groups.append((m, idx, anchors[idx, j]))
        return groups

    # ------------------------------------------------------------------ scheduled teacher forcing of thoughts
    @property
    def _forcing(self) -> float:
        return getattr(self, "_alpha", 0.0)

    def on_train_step(self, step: int, epoch: float, steps_per_epoch: int) -> bool:
        n = self.config.forced_thoughts_steps
        self._alpha = max(0.0, 1.0 - step / n) if n else 0.0
        return False

    def forced_tokens(self, batch) -> Tensor:
        """(B, n_latent): the token whose embedding a thought's input is mixed with: the result of the step before
        the one the thought is aligned with (thought kk + 1 <-> step kk + 1 - offset), the last step's result for
        carry thoughts, -1 where there is none (the first step's thought, rows without steps)."""
        anchors, ids = batch["anchors"], batch["input_ids"]
        B, n = anchors.shape[0], self.config.n_latent
        rows = torch.arange(B, device=anchors.device)
        n_valid = (anchors >= 0).sum(1)
        toks = torch.full((B, n), -1, dtype=torch.long, device=anchors.device)
        for kk in range(self.config.align_offset, n):
            prev = torch.clamp(torch.minimum(torch.full_like(n_valid, kk - self.config.align_offset), n_valid - 1), min=0)
            toks[:, kk] = torch.where(n_valid > 0, ids[rows, anchors[rows, prev].clamp(min=0) + 1], -1)
        return toks

    def _forced_thoughts(self, batch):
        toks, alpha = self.forced_tokens(batch), self._forcing
        emb = self.model.get_input_embeddings()

        def override(kk: int, h: Tensor) -> Tensor:
            e = self.thought(h, torch.full((h.shape[0],), kk, dtype=torch.long, device=h.device))
            tok = toks[:, kk].to(h.device)
            has = tok >= 0
            if not bool(has.any()):
                return e
            mixed = alpha * emb(tok.clamp(min=0)).to(e.dtype) + (1.0 - alpha) * e
            return torch.where(has[:, None], mixed, e)

        return override

    # ------------------------------------------------------------------ inference
    def latent_prompts(self, examples: list[Example]) -> list[list[int]]:
        if self.config.eval_question_cleanup:
            examples = [dataclasses.replace(e, question=e.question.strip().replace("  ", " ")) for e in examples]
        return [p + [self.ids.bot] for p in self.serializer.prompts(examples)]

    @torch.no_grad()
    def generate(self, examples: list[Example], record_hidden: bool = False, thought_fn=None, halt_fn=None,
                 n_latent: int | None = None, min_latent: int = 1, last_hidden=None) -> list[Generation]:
        prompts = self.latent_prompts(examples)
        n = self.config.n_latent if n_latent is None else n_latent
        budget = self.generation_budget(prompts, reserved=n + 1)
        res = latent_generate(
            self.model, prompts, n_latent=n, thought_fn=thought_fn or self.thought, eot_id=self.ids.eot,
            eos_id=self.ids.eos, pad_id=self.ids.pad, max_new_tokens=budget,
            stop_after_eos=self.serializer.stop_after_eos, halt_fn=halt_fn, min_latent=min_latent,
            record_hidden=record_hidden, last_hidden=last_hidden, count_padding=self.config.official_padding,
            compiled=self.config.compile_decode,
        )
        out = []
        for i, seq in enumerate(res.tokens):
            body = trim_at_stop(seq, self.ids.eos, self.serializer.stop_after_eos)
            extra = {"positions": res.n_thoughts[i] + 2 + len(seq)}
            if record_hidden:
                extra["hidden"] = res.hidden[i]
            out.append(Generation(
                text=self.tokenizer.decode(body, skip_special_tokens=True),
                generated_tokens=len(seq),
                reasoning_tokens=self.count_reasoning_tokens(body),
                latent_steps=res.n_thoughts[i],
                forward_passes=res.forward_passes[i],
                extra=extra,
                truncated=hit_limit(seq, body, budget),
            ))
        return out
