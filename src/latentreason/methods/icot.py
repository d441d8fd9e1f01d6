"""iCoT-SI: internalise the chain of thought step by step (Deng, Choi, Shieber 2024; SPEC §3.2).

Start from a CoT-SFT model and keep training while CoT tokens are deleted from the *left* on a
schedule: after ``start_step``, one more token is removed every ``steps_per_token`` optimiser
steps (``remove_per_epoch`` tokens per epoch, spread evenly). Each example additionally loses a
random offset o ~ P(o) ∝ e^{-λo} (Removal Smoothing, λ = 4: P(0) ≈ 0.98). Once the scheduled
amount reaches ``remove_all_beyond`` every CoT token is removed. AdamW is re-created whenever the
amount grows (unless the previous batch had no CoT left). At the end the model answers directly,
with no reasoning tokens; the remaining sequence is re-packed with contiguous positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from latentreason.errors import ConfigError
from latentreason.methods.base import MethodConfig, TokExample, register
from latentreason.methods.cot import CoT

INF = math.inf


@dataclass
class ICoTConfig(MethodConfig):
    #: CoT tokens removed per epoch (Δ); the interval is round(steps_per_epoch / Δ) steps
    remove_per_epoch: float = 8.0
    #: alternatively an explicit interval in optimiser steps between removals (wins when set)
    steps_per_token: int | None = None
    #: optimiser steps before removal starts (the paper's pretrain_epochs)
    start_step: int = 0
    #: once this many tokens are scheduled, remove the whole CoT (None = never: ∞)
    remove_all_beyond: int | None = None
    #: Removal Smoothing λ (None disables it)
    smoothing_lambda: float | None = 4.0
    reset_optimizer: bool = True
    max_new_tokens: int = 64

    def validate(self) -> None:
        super().validate()
        if self.remove_per_epoch <= 0:
            raise ConfigError(f"method_args.remove_per_epoch must be > 0, got {self.remove_per_epoch}")
        if self.steps_per_token is not None and self.steps_per_token < 1:
            raise ConfigError(f"method_args.steps_per_token must be >= 1, got {self.steps_per_token}")
        if self.start_step < 0:
            raise ConfigError(f"method_args.start_step must be >= 0, got {self.start_step}")
        if self.smoothing_lambda is not None and self.smoothing_lambda <= 0:
            raise ConfigError(f"method_args.smoothing_lambda must be > 0 (or null to disable), got {self.smoothing_lambda}")


def smoothing_offsets(lam: float, n_bins: int = 100) -> torch.Tensor:
    """P(o) = (1 - e^{-λ}) e^{-λ o} for o = 0..n_bins-1, the leftover mass on the last bin."""
    o = torch.arange(n_bins, dtype=torch.float64)
    p = (1 - math.exp(-lam)) * torch.exp(-lam * o)
    p[-1] += 1.0 - float(p.sum())
    return p


def remove_left(cot_tokens: list[int], amount: float, close: list[int], empty: list[int]) -> list[int]:
    """The CoT after deleting ``amount`` tokens from its left.

    Removal is clipped so the part closing the CoT survives (iCoT keeps the EOS after the CoT);
    ``amount = ∞`` ("remove everything") leaves what stands between question and answer when
    there is no CoT at all (``empty``), as for an example without steps.
    """
    if amount == INF or not cot_tokens:
        return list(empty)
    return cot_tokens[int(amount):] + close


@register
class ICoT(CoT):
    name = "icot"
    Config = ICoTConfig
    summary = "iCoT-SI: from CoT-SFT, delete CoT tokens from the left on a schedule until the model answers directly"
    presets = {
        # GPT-2 small on k x k multiplication (README): Δ 8 per epoch, λ 4, remove-all ∞; lr 5e-5, batch 32, 200 epochs
        "icot_paper_mult": dict(serialization="icot", answer_mode="icot", remove_per_epoch=8.0, smoothing_lambda=4.0,
                                remove_all_beyond=None, max_new_tokens=150),
        # Mistral-7B on GSM8K: remove-all beyond 39
        "icot_paper_gsm8k": dict(serialization="icot", answer_mode="icot", remove_per_epoch=8.0, smoothing_lambda=4.0,
                                 remove_all_beyond=39, max_new_tokens=150),
        # the default task (24 CoT tokens): one token every 12 steps, everything removed past 24 (step 288 of the
        # demo's 500, so the model spends the rest answering directly; docs/coconut.md)
        "default_task": dict(steps_per_token=12, smoothing_lambda=4.0, remove_all_beyond=24),
    }

    def __init__(self, backbone, config: ICoTConfig | None = None):
        super().__init__(backbone, config)
        # a loaded model answers with its CoT fully internalised; training sets the amount per step
        self.removed: float = INF
        self._last_batch_empty = False
        self._offsets = smoothing_offsets(self.config.smoothing_lambda) if self.config.smoothing_lambda else None
        self._rng = torch.Generator().manual_seed(0)

    # ------------------------------------------------------------------ schedule
    def interval(self, steps_per_epoch: int) -> int:
        return self.config.steps_per_token or max(1, round(steps_per_epoch / self.config.remove_per_epoch))

    def removed_at(self, step: int, steps_per_epoch: int) -> float:
        if step < self.config.start_step:
            return 0
        s = (step - self.config.start_step) // self.interval(steps_per_epoch)
        if self.config.remove_all_beyond is not None and s >= self.config.remove_all_beyond:
            return INF
        return s

    def stage_label(self) -> str:
        return "all" if self.removed == INF else str(int(self.removed))

    def stage_label_at(self, step: int, steps_per_epoch: int) -> str:
        r = self.removed_at(step, steps_per_epoch)
        return "all" if r == INF else str(int(r))

    def on_train_step(self, step: int, epoch: float, steps_per_epoch: int) -> bool:
        new = self.removed_at(step, steps_per_epoch)
        grew = step > 0 and new > self.removed
        self.removed = new
        return grew and self.config.reset_optimizer and not self._last_batch_empty

    def trainer_state(self) -> dict[str, Any]:
        return {"removed": None if self.removed == INF else self.removed, "last_batch_empty": self._last_batch_empty,
                "rng": self._rng.get_state().tolist()}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        if "removed" in state:
            self.removed = INF if state["removed"] is None else state["removed"]
        self._last_batch_empty = bool(state.get("last_batch_empty", False))
        if "rng" in state:
            self._rng.set_state(torch.tensor(state["rng"], dtype=torch.uint8))

    # ------------------------------------------------------------------ data
    def _offset(self) -> int:
        if self._offsets is None or self.removed == 0:
            return 0
        return int(torch.multinomial(self._offsets, 1, generator=self._rng))

    def target(self, t: TokExample) -> list[int]:
        cot_tokens = [x for s in t.steps for x in s]
        amount = self.removed if self.removed == INF else self.removed + self._offset()
        return remove_left(cot_tokens, amount, t.cot_close, self.serializer.empty_cot) + t.answer

    def sequence_length(self, t: TokExample) -> int:
        return len(t.prompt) + len(t.cot) + len(t.answer)

    def collate(self, feats: list[Any]) -> dict[str, torch.Tensor]:
        batch = super().collate(feats)
        self._last_batch_empty = self.removed == INF
        return batch
