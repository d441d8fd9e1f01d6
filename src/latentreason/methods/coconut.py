"""Coconut: chain of continuous thought with a language-to-latent curriculum (Hao et al. 2024; SPEC §3.3).

Stage k replaces the first k reasoning steps with c·k continuous thoughts::

    Q\\n <bot> [thought]×(c·min(k, K)) <eot> s_{k+1} … s_n  #### A <eos>

A thought is the last layer's state at the previous position fed back as the next input
embedding. Training runs the extra forward passes thoughts need on one KV cache (the prompt is
never recomputed, see ``decoding.latent.latent_forward``); the loss covers only the remaining
language steps and the answer. Past the last stage K every step is removed and c·K thoughts are
kept. The optimiser is reset at every stage change, or every epoch as the official code does
(``reset_optimizer_every_epoch``, on in ``coconut_paper``).

Variants of the paper behind flags: ``no_curriculum`` (train on the final stage directly),
``pause_as_thought`` (a fixed ``<pause>`` embedding instead of continuous thoughts), c = 0
("w/o thought").

Project additions that make the curriculum learn on small compute (all off in the
``coconut_paper`` preset; see ``docs/coconut.md``): ``projection`` (CODI's MLP + LayerNorm on
thoughts), ``align_steps`` (each thought's state aligned, layers 1..L, to the state of the same
model reading the explicit CoT at the position that predicts the replaced step's result; the
teacher pass is detached and costs one extra no-grad forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from latentreason.data.example import Example
from latentreason.decoding.generate import Generation, hit_limit, left_pad, trim_at_stop
from latentreason.decoding.latent import identity_thought, latent_forward, latent_generate, right_pad
from latentreason.errors import ConfigError
from latentreason.methods.base import Method, TokExample, collate_lm
from latentreason.methods.objective import (
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
class CoconutConfig(LatentObjectiveConfig):
    #: continuous thoughts per replaced step (c)
    thoughts_per_step: int = 2
    #: last curriculum stage K (thoughts at the end: c·K)
    max_latent_stage: int = 3
    #: stage length in optimiser steps (the paper counts epochs: ``epochs_per_stage``)
    steps_per_stage: int | None = None
    epochs_per_stage: float = 3.0
    #: stage at the first training step (1 when starting from a CoT-SFT model, as the paper does)
    start_stage: int = 1
    #: probability of drawing a batch's stage uniformly from 0..current (analysis runs; the paper draws per
    #: example, here per batch so that a batch shares its number of thoughts)
    uniform_prob: float = 0.0
    #: re-create AdamW at every stage change
    reset_optimizer: bool = True
    #: re-create AdamW at the start of every epoch (the official code; stage changes fall on epoch starts)
    reset_optimizer_every_epoch: bool = False
    #: paper variants
    no_curriculum: bool = False
    pause_as_thought: bool = False
    #: project additions; the step alignment (``align_steps``, ``align_weight``), the step CE (``step_ce_weight``)
    #: and the distance are the shared terms' options (:class:`~latentreason.methods.objective.LatentObjectiveConfig`)
    projection: bool = False
    #: CODI's distillation at the answer: the state before the answer value aligned with the teacher's (weighted
    #: by ``align_weight``)
    answer_align: bool = False
    #: the answer distillation leaves the embedding output out, as the step alignment does
    distill_skip_embedding: bool = True
    #: weight of a CoT-SFT loss on the full explicit CoT (the alignment teacher keeps its CoT skill); 0 = none
    teacher_weight: float = 0.0
    #: as CODI's: a thought is the state's soft token plus the projection (whose output gain starts at 0)
    soft_token_thought: bool = False
    max_new_tokens: int | None = None  # None: follow the training data (MethodConfig)

    def validate(self) -> None:
        super().validate()
        if self.thoughts_per_step < 0:
            raise ConfigError(f"method_args.thoughts_per_step must be >= 0, got {self.thoughts_per_step}")
        if self.max_latent_stage < 0:
            raise ConfigError(f"method_args.max_latent_stage must be >= 0, got {self.max_latent_stage}")
        if self.steps_per_stage is not None and self.steps_per_stage < 1:
            raise ConfigError(f"method_args.steps_per_stage must be >= 1, got {self.steps_per_stage}")
        if self.epochs_per_stage <= 0:
            raise ConfigError(f"method_args.epochs_per_stage must be > 0, got {self.epochs_per_stage}")
        if not 0.0 <= self.uniform_prob <= 1.0:
            raise ConfigError(f"method_args.uniform_prob must be in [0, 1], got {self.uniform_prob}")
        if self.start_stage < 0:
            raise ConfigError(f"method_args.start_stage must be >= 0, got {self.start_stage}")


# the official recipe (args/gsm_coconut.yaml, run.py, dataset.py, coconut.py), point by point: Coconut's serialisation
# and answer check, its vocabulary (pad = EOS; <bot>, <eot>, <latent> added, rows from "<<"), c = 2, K = 3, 3 epochs
# per stage from a CoT-SFT model (stage 1 first), AdamW re-created every epoch with decay on every parameter, and
# the 4 GPUs' micro-batches weighted equally. lr, batch, epochs, no clipping: configs/coconut_gpt2_gsm8k_aug.yaml
PAPER_GSM = dict(thoughts_per_step=2, max_latent_stage=3, epochs_per_stage=3.0, start_stage=1, reset_optimizer=True,
                 reset_optimizer_every_epoch=True, projection=False, align_steps=False, serialization="coconut",
                 answer_mode="coconut", max_new_tokens=64, special_tokens="coconut", weight_decay_on="all",
                 micro_batch_weighting="equal")


class Coconut(Method):
    name = "coconut"
    Config = CoconutConfig
    summary = "Coconut: continuous thoughts (last hidden state fed back) replace CoT steps along a curriculum"
    presets = {
        # the paper's GSM8k setting (args/gsm_coconut.yaml); pair with configs/coconut_gpt2_gsm8k_aug.yaml
        # (lr 1e-4, batch 128 = 4 x 32, 22 epochs from the CoT-SFT checkpoint, no clipping, constant lr)
        "coconut_paper": dict(PAPER_GSM),
        # ProsQA / ProntoQA: c = 1, K = 6, 5 epochs per stage, from GPT-2
        "coconut_paper_prosqa": {**PAPER_GSM, "thoughts_per_step": 1, "max_latent_stage": 6, "epochs_per_stage": 5.0,
                                 "start_stage": 0, "max_new_tokens": 128},
        # the paper's mechanics on the default task (the demo's row): one thought per step, all 4 steps latent,
        # identity thoughts, optimiser reset at every stage change; stage length, optimiser and vocabulary as in the
        # project's setting (same budget and training recipe as the other demo rows)
        "coconut_paper_default_task": dict(thoughts_per_step=1, max_latent_stage=4, steps_per_stage=30, start_stage=1,
                                           reset_optimizer=True),
        # the project's best documented setting on the default task (docs/coconut.md)
        "default_task": dict(thoughts_per_step=1, max_latent_stage=5, steps_per_stage=30, start_stage=1,
                             reset_optimizer=False, projection=True, align_steps=True, answer_align=True,
                             teacher_weight=1.0, step_ce_weight=1.0),
    }

    def __init__(self, backbone, config: CoconutConfig | None = None):
        super().__init__(backbone, config)
        require_ids(self.ids, ("bot", "eot") + (("pause",) if self.config.pause_as_thought else ()), "Coconut")
        if self.config.projection:
            self.projection = LatentProjection(backbone.hidden_size)
            self.projection.to(dtype=projection_dtype(self.model))
            if self.config.soft_token_thought:
                torch.nn.init.zeros_(self.projection.norm.weight)
        # a loaded model answers at the final stage; training sets the stage from the step (on_train_step)
        self.stage = self.final_stage
        self.anchors = StepAnchors(self.tokenizer)
        self._rng = torch.Generator().manual_seed(0)

    # ------------------------------------------------------------------ curriculum
    @property
    def final_stage(self) -> int:
        return self.config.max_latent_stage + 1

    def n_latent(self, stage: int) -> int:
        return self.config.thoughts_per_step * min(stage, self.config.max_latent_stage)

    def stage_at(self, step: int, steps_per_epoch: int) -> int:
        if self.config.no_curriculum:
            return self.final_stage
        per = self.config.steps_per_stage or max(1, round(self.config.epochs_per_stage * steps_per_epoch))
        return min(self.config.start_stage + step // per, self.final_stage)

    def stage_label_at(self, step: int, steps_per_epoch: int) -> str:
        return str(self.stage_at(step, steps_per_epoch))

    def on_train_step(self, step: int, epoch: float, steps_per_epoch: int) -> bool:
        new = self.stage_at(step, steps_per_epoch)
        changed = new != self.stage
        self.stage = new
        self._batch_stage = self._draw_stage()
        epoch_start = steps_per_epoch > 0 and step % steps_per_epoch == 0
        reset = (changed and self.config.reset_optimizer) or (epoch_start and self.config.reset_optimizer_every_epoch)
        return reset and step > 0

    def stage_label(self) -> str:
        return str(self.stage)

    def is_final_stage(self) -> bool:
        return self.stage >= self.final_stage

    def trainer_state(self) -> dict[str, Any]:
        return {"stage": self.stage, "rng": self._rng.get_state().tolist()}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        if "stage" in state:
            self.stage = int(state["stage"])
        if "rng" in state:
            self._rng.set_state(torch.tensor(state["rng"], dtype=torch.uint8))

    # ------------------------------------------------------------------ thoughts
    def thought(self, hidden: Tensor, step: Tensor, rows: Tensor | None = None) -> Tensor:
        if self.config.pause_as_thought:
            e = self.model.get_input_embeddings()(torch.tensor([self.ids.pause], device=hidden.device))
            return e.expand(hidden.shape[0], -1).to(hidden.dtype)
        out = self.projection(hidden) if self.config.projection else identity_thought(hidden, step)
        if self.config.soft_token_thought:
            out = out + soft_token_embedding(self.model, hidden)
        return out

    # ------------------------------------------------------------------ data
    def sequence_length(self, t: TokExample) -> int:
        return len(t.prompt) + 2 + self.n_latent(self.final_stage) + len(t.cot) + len(t.answer)

    def _draw_stage(self) -> int:
        if self.config.uniform_prob > 0 and float(torch.rand((), generator=self._rng)) < self.config.uniform_prob:
            return int(torch.randint(0, self.stage + 1, (), generator=self._rng))
        return self.stage

    def features(self, t: TokExample) -> dict[str, Any]:
        stage = getattr(self, "_batch_stage", self.stage)
        k = len(t.steps) if stage > self.config.max_latent_stage else min(stage, len(t.steps))
        n = self.n_latent(stage)
        rest = t.steps[k:]
        cot = [x for s in rest for x in s] + (t.cot_close if rest else [])
        suffix = [self.ids.eot] + cot + t.answer
        feat = {"prompt": t.prompt + [self.ids.bot], "suffix": suffix, "n_latent": n}
        if self.config.align_steps or self.config.answer_align or self.config.teacher_weight > 0 or self.config.step_ce_weight > 0:
            # the same model reading the full CoT is the (detached) teacher; thought j·c + c (j < k)
            # is aligned with its state predicting step j's result
            anchors = self.anchors(len(t.prompt), t.steps)
            feat["teacher"] = (t.prompt + t.cot + t.answer, [-100] * len(t.prompt) + t.cot + t.answer)
            c = max(1, self.config.thoughts_per_step)
            feat["align"] = [(j * c + c, anchors[j]) for j in range(min(k, len(anchors))) if j * c + c <= n]
            feat["p_t"] = len(t.prompt) + len(t.cot) + len(t.answer_prefix) - 1
            feat["p_s"] = len(cot) + len(t.answer_prefix)  # <eot> is suffix position 0
        return feat

    def collate(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        n = feats[0]["n_latent"]  # a batch shares its stage, hence its number of thoughts
        p_ids, p_mask = left_pad([f["prompt"] for f in feats], self.ids.pad)
        s_ids, s_mask = right_pad([f["suffix"] for f in feats], self.ids.pad)
        labels = torch.full_like(s_ids, -100)
        for i, f in enumerate(feats):
            labels[i, : len(f["suffix"]) - 1] = torch.tensor(f["suffix"][1:])
        batch: dict[str, Any] = {"prompt_ids": p_ids, "prompt_mask": p_mask, "suffix_ids": s_ids, "suffix_mask": s_mask,
                                 "suffix_labels": labels, "n_latent": n, "attention_mask": torch.cat([p_mask, s_mask], 1)}
        if "teacher" in feats[0]:
            t = collate_lm([f["teacher"] for f in feats], self.ids.pad)
            batch["teacher_ids"], batch["teacher_mask"], batch["teacher_labels"] = t["input_ids"], t["attention_mask"], t["labels"]
            batch["align"] = [f["align"] for f in feats]
            batch["p_t"] = torch.tensor([f["p_t"] for f in feats])
            batch["p_s"] = torch.tensor([f["p_s"] for f in feats])
        return batch

    # ------------------------------------------------------------------ loss
    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The LM loss on the remaining language steps and the answer (+ the project's terms when on)."""
        cfg = self.config
        n = int(batch["n_latent"])
        s = latent_forward(self.model, batch["prompt_ids"], batch["prompt_mask"], n, self.thought,
                           batch["suffix_ids"], batch["suffix_mask"])
        loss_lm = shifted_ce(s.suffix_logits, batch["suffix_labels"])
        out = {"loss_lm": loss_lm.detach()}
        loss = loss_lm
        t_out = None
        if cfg.teacher_weight > 0:
            t_out, loss_teacher = teacher_pass(self.model, batch["teacher_ids"], batch["teacher_mask"], batch["teacher_labels"])
            loss = loss + cfg.teacher_weight * loss_teacher
            out["loss_teacher"] = loss_teacher.detach()
        groups = self.step_groups(batch, s.latent_hidden[0][0].device) if "align" in batch else []
        if cfg.step_ce_weight > 0:
            loss_step = step_ce(self.model, s.latent_hidden, batch["teacher_ids"], groups)
            if loss_step is not None:
                loss = loss + cfg.step_ce_weight * loss_step
                out["loss_step_ce"] = loss_step.detach()
        if cfg.align_steps or cfg.answer_align:
            if t_out is None:  # a detached teacher: its states are only targets
                with torch.no_grad():
                    t_out, _ = teacher_pass(self.model, batch["teacher_ids"], batch["teacher_mask"])
            if cfg.align_steps and groups:
                loss_align = step_alignment(s.latent_hidden, t_out.hidden_states, groups, cfg.align_from_layer, cfg)
                loss = loss + cfg.align_weight * loss_align
                out["loss_align"] = loss_align.detach()
            if cfg.answer_align:
                rows = torch.arange(len(batch["align"]), device=s.suffix_logits.device)
                loss_kd = answer_kd(s.suffix_hidden, t_out.hidden_states, rows, batch["p_s"], batch["p_t"], cfg)
                loss = loss + cfg.align_weight * loss_kd
                out["loss_kd"] = loss_kd.detach()
        out["loss"] = loss
        return out

    @staticmethod
    def step_groups(batch: dict[str, Any], device) -> list[tuple[int, Tensor, Tensor]]:
        """Thought j·c + c (j < the stage's replaced steps) ↔ the teacher position predicting step j's result, one
        group per (row, thought), rows first."""
        return [(m, torch.tensor([i], device=device), torch.tensor([a], device=device))
                for i, ps in enumerate(batch["align"]) for m, a in ps]

    # ------------------------------------------------------------------ inference
    def latent_prompts(self, examples: list[Example]) -> list[list[int]]:
        return [p + [self.ids.bot] for p in self.serializer.prompts(examples)]

    @torch.no_grad()
    def generate(self, examples: list[Example], record_hidden: bool = False, n_latent: int | None = None) -> list[Generation]:
        prompts = self.latent_prompts(examples)
        n = self.n_latent(self.stage) if n_latent is None else n_latent
        budget = self.generation_budget(prompts, reserved=n + 1)
        res = latent_generate(self.model, prompts, n_latent=n, thought_fn=self.thought, eot_id=self.ids.eot,
                              eos_id=self.ids.eos, pad_id=self.ids.pad, max_new_tokens=budget,
                              stop_after_eos=self.serializer.stop_after_eos, record_hidden=record_hidden,
                              compiled=self.config.compile_decode)
        out = []
        for i, seq in enumerate(res.tokens):
            body = trim_at_stop(seq, self.ids.eos, self.serializer.stop_after_eos)
            extra: dict[str, Any] = {"positions": res.n_thoughts[i] + 2 + len(seq)}
            if record_hidden:
                extra["hidden"] = res.hidden[i]
            out.append(Generation(self.tokenizer.decode(body, skip_special_tokens=True), len(seq),
                                  self.count_reasoning_tokens(body), res.n_thoughts[i], res.forward_passes[i], extra,
                                  truncated=hit_limit(seq, body, budget)))
        return out
