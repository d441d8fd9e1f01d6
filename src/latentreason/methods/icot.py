"""iCoT-SI: internalise the chain of thought step by step (Deng, Choi, Shieber 2024; SPEC §3.2).

Train on the explicit CoT while its tokens are deleted from the *left* on a schedule: after
``start_step``, one more token is removed every ``steps_per_token`` optimiser steps
(``remove_per_epoch`` tokens per epoch, spread evenly). Each example additionally loses a random
offset o ~ P(o) ∝ e^{-λo} (Removal Smoothing, λ = 4: P(0) ≈ 0.98), drawn from the first step on.
Once the scheduled amount reaches ``remove_all_beyond`` every CoT token is removed. AdamW is
re-created whenever the amount grows, unless the previous batch had no CoT left in any example
(so the resets stop once the schedule has outgrown every CoT). At the end the model answers
directly, with no reasoning tokens; the remaining sequence is re-packed with contiguous positions, or, with
the official ``keep_position`` flag (off in the presets), keeps the positions it had in the full sequence.

With the iCoT serialisation (`` Q <eos> C <eos> #### A <eos>``) the removable part is everything
between the two EOS tokens, the space before the second one included (as in the official code);
with the others the piece closing the CoT (``\n``) survives.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from latentreason.errors import ConfigError
from latentreason.methods.base import MethodConfig, TokExample
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
    #: the official ``--remove_start_from``: CoT tokens already removed at the first step, the schedule (fixed or
    #: gated) counting on from there; for continuing a curriculum from a model that internalised them (init_from)
    remove_start_from: int = 0
    #: once this many tokens are scheduled, remove the whole CoT (None = never: ∞)
    remove_all_beyond: int | None = None
    #: Removal Smoothing λ (None disables it)
    smoothing_lambda: float | None = 4.0
    #: draw the smoothing offsets before the first token is scheduled too (s = 0), as the official code does;
    #: off in the project's default_task preset (its setting since before this option existed)
    smoothing_from_start: bool = True
    reset_optimizer: bool = True
    #: the official ``--keep_position``: removed CoT tokens keep their positions (the first EOS and everything
    #: after it move right by the number removed), so the answer stays where it sat behind the full CoT; off in
    #: the paper preset (the official default). At inference the shift is ``position_shift``.
    keep_position: bool = False
    #: keep_position: the shift once the whole CoT is removed (None: the training data's removable CoT length,
    #: fixed when training starts: the most common one, which is every example's on fixed-layout data such as
    #: k x k multiplication; the official evaluation uses each example's own)
    position_shift: int | None = None
    #: the project's gated schedule (off in every preset): the next token is removed only at a validation
    #: (train.eval_every) whose accuracy at the current amount reaches this, so the hard tokens (on 4x4
    #: multiplication the second, whose removal hides a carry) get the steps they need and the easy ones no more;
    #: remove_per_epoch / steps_per_token are then unused; start_step still holds removal back
    removal_gate: float | None = None
    #: gated schedule: the most optimiser steps one token may take (None: no limit); then it is removed anyway
    gate_max_steps: int | None = None
    #: gated schedule: the optimiser step by which every CoT token is gone (None: no deadline). Each token's cap is
    #: its fair share of the steps left, (gate_deadline - the step its amount began) // the tokens still to remove
    #: (and at most gate_max_steps; at least 1), so the steps the easy tokens leave go to the hard ones and the
    #: curriculum is sure to end, leaving the steps after the deadline to the model answering with no CoT
    gate_deadline: int | None = None
    max_new_tokens: int | None = None  # None: follow the training data (MethodConfig)

    def validate(self) -> None:
        super().validate()
        if self.remove_per_epoch <= 0:
            raise ConfigError(f"method_args.remove_per_epoch must be > 0, got {self.remove_per_epoch}")
        if self.steps_per_token is not None and self.steps_per_token < 1:
            raise ConfigError(f"method_args.steps_per_token must be >= 1, got {self.steps_per_token}")
        if self.start_step < 0:
            raise ConfigError(f"method_args.start_step must be >= 0, got {self.start_step}")
        if self.remove_start_from < 0:
            raise ConfigError(f"method_args.remove_start_from must be >= 0, got {self.remove_start_from}")
        if self.position_shift is not None and self.position_shift < 0:
            raise ConfigError(f"method_args.position_shift must be >= 0, got {self.position_shift}")
        if self.removal_gate is not None and not 0.0 < self.removal_gate <= 1.0:
            raise ConfigError(f"method_args.removal_gate must be in (0, 1] (a validation accuracy), got {self.removal_gate}")
        if self.gate_max_steps is not None and self.gate_max_steps < 1:
            raise ConfigError(f"method_args.gate_max_steps must be >= 1, got {self.gate_max_steps}")
        if self.gate_deadline is not None and (self.removal_gate is None or self.gate_deadline < 1):
            raise ConfigError("method_args.gate_deadline must be >= 1 and needs method_args.removal_gate (the gated "
                              f"schedule), got gate_deadline={self.gate_deadline}, removal_gate={self.removal_gate}")
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

    Removal is clipped so the part closing the CoT (``close``) survives; ``amount = ∞`` ("remove
    everything") leaves what stands between question and answer when there is no CoT at all
    (``empty``), as for an example without steps.
    """
    if amount == INF or not cot_tokens:
        return list(empty)
    return cot_tokens[int(amount):] + close


PAPER = dict(serialization="icot", answer_mode="icot", remove_per_epoch=8.0, smoothing_lambda=4.0, smoothing_from_start=True,
             remove_all_beyond=None, reset_optimizer=True, max_new_tokens=800, special_tokens="none",
             weight_decay_on="all", micro_batch_weighting="equal")


class ICoT(CoT):
    name = "icot"
    Config = ICoTConfig
    summary = "iCoT-SI: train on the CoT while its tokens are deleted from the left on a schedule until the model answers directly"
    presets = {
        # GPT-2 small on k x k multiplication (README, src/train.py, src/data.py): iCoT serialisation and answer check,
        # the tokenizer as it is (pad = EOS), Δ 8 per epoch from the first step, λ 4 (offsets from s = 0), remove-all
        # ∞, resets until a batch has no CoT left, torch AdamW decaying every parameter, max_new_tokens 800 (the
        # script's default); lr 5e-5, batch 32, 200 epochs, clip 1.0: configs/icot_gpt2_4x4.yaml
        "icot_paper_mult": dict(PAPER),
        # Mistral-7B on GSM8K: remove-all beyond 39 (batch 16 x 2 accumulation, lr 1e-5, 80 epochs, bf16)
        "icot_paper_gsm8k": {**PAPER, "remove_all_beyond": 39},
        # the default task (24 CoT tokens): one token every 12 steps, everything removed past 24 (step 288 of the
        # demo's 500, so the model spends the rest answering directly; docs/coconut.md)
        "default_task": dict(steps_per_token=12, smoothing_lambda=4.0, remove_all_beyond=24, smoothing_from_start=False),
    }

    def __init__(self, backbone, config: ICoTConfig | None = None):
        super().__init__(backbone, config)
        # a loaded model answers with its CoT fully internalised; training sets the amount per step
        self.removed: float = INF
        self._last_batch_empty = False
        self._batch_empty: bool | None = None  # filled while this step's examples are built
        self._offsets = smoothing_offsets(self.config.smoothing_lambda) if self.config.smoothing_lambda else None
        self._rng = torch.Generator().manual_seed(0)
        # the gated schedule: tokens removed so far, and the step the current amount began
        self._gated, self._gate_start = self.config.remove_start_from, self.config.start_step
        #: gate_deadline: how many removals end the curriculum (fixed from the training data by fit_to_data)
        self._to_remove: int | None = None

    # ------------------------------------------------------------------ schedule
    def interval(self, steps_per_epoch: int) -> int:
        """Optimiser steps per removed token; 0 (fewer steps per epoch than half of Δ): one more every step,
        starting with the first (as the official counter does)."""
        return self.config.steps_per_token or int(round(steps_per_epoch / self.config.remove_per_epoch))

    def removed_at(self, step: int, steps_per_epoch: int) -> float:
        first = self.config.remove_start_from
        if step < self.config.start_step:
            return first
        if self.config.removal_gate is not None:
            cap = self.gate_cap()
            s = self._gated + int(cap is not None and step - self._gate_start >= cap)
        else:
            every = self.interval(steps_per_epoch)
            s = first + ((step - self.config.start_step) // every if every else step - self.config.start_step + 1)
        if self.config.remove_all_beyond is not None and s >= self.config.remove_all_beyond:
            return INF
        return s

    def gate_cap(self) -> int | None:
        """The most steps the current amount may take under the gated schedule (None: no limit)."""
        caps = [self.config.gate_max_steps] if self.config.gate_max_steps is not None else []
        if self.config.gate_deadline is not None:
            if self._to_remove is None:
                raise ConfigError("method_args.gate_deadline needs the training data's CoT length (fit_to_data)")
            left = self._to_remove - self._gated
            if left > 0:  # none left: every example answers without CoT, nothing more to force
                caps.append(max((self.config.gate_deadline - self._gate_start) // left, 1))
        return min(caps) if caps else None

    def stage_label(self) -> str:
        return "all" if self.removed == INF else str(int(self.removed))

    def is_final_stage(self) -> bool:
        return self.removed == INF

    def stage_label_at(self, step: int, steps_per_epoch: int) -> str:
        r = self.removed_at(step, steps_per_epoch)
        return "all" if r == INF else str(int(r))

    def on_train_step(self, step: int, epoch: float, steps_per_epoch: int) -> bool:
        # whether every example of the previous step's batch had lost its whole CoT (this process's share)
        prev_empty = self._batch_empty if self._batch_empty is not None else self._last_batch_empty
        self._last_batch_empty = prev_empty
        self._batch_empty = None
        new = self.removed_at(step, steps_per_epoch)
        if self.config.removal_gate is not None and new != INF and new > self._gated:  # gate_max_steps ran out
            self._gated, self._gate_start = int(new), step
        grew = step > 0 and new > self.removed
        self.removed = new
        return grew and self.config.reset_optimizer and not prev_empty

    def requires_validation(self) -> bool:
        return self.config.removal_gate is not None

    def on_validation(self, step: int, accuracy: float | None) -> None:
        """The gated schedule: one more token goes once validation at the current amount reaches the gate."""
        gate = self.config.removal_gate
        if gate is None or accuracy is None or self.removed == INF or step < self.config.start_step:
            return
        if accuracy >= gate:
            self._gated, self._gate_start = self._gated + 1, step

    def trainer_state(self) -> dict[str, Any]:
        empty = self._batch_empty if self._batch_empty is not None else self._last_batch_empty
        return {"removed": None if self.removed == INF else self.removed, "last_batch_empty": empty,
                "rng": self._rng.get_state().tolist(), "gated": self._gated, "gate_start": self._gate_start}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        self._gated = int(state.get("gated", self.config.remove_start_from))
        self._gate_start = int(state.get("gate_start", self.config.start_step))
        if "removed" in state:
            self.removed = INF if state["removed"] is None else state["removed"]
        self._last_batch_empty = bool(state.get("last_batch_empty", False))
        if "rng" in state:
            self._rng.set_state(torch.tensor(state["rng"], dtype=torch.uint8))
        self._batch_empty = None

    # ------------------------------------------------------------------ data
    def _offset(self) -> int:
        """A Removal Smoothing offset, drawn for every example (at s = 0 too, as the official code does)."""
        if self._offsets is None or (self.removed == 0 and not self.config.smoothing_from_start):
            return 0
        return int(torch.multinomial(self._offsets, 1, generator=self._rng))

    def removable(self, t: TokExample) -> tuple[list[int], list[int]]:
        """(the tokens removal eats from the left, the tokens that always stay)."""
        cot_tokens = [x for s in t.steps for x in s]
        if self.serializer.style == "icot":  # " C <eos>": the space before the EOS goes too
            return cot_tokens + t.cot_close[:-1], t.cot_close[-1:]
        return cot_tokens, (t.cot_close if cot_tokens else [])

    def slice_cot(self, t: TokExample, amount: float) -> list[int]:
        """The CoT of ``t`` with ``amount`` tokens removed from its left (∞: all of it)."""
        cot, keep = self.removable(t)
        if amount == INF or not cot:
            return list(self.serializer.empty_cot) if amount == INF or not keep else list(keep)
        return cot[int(amount):] + keep

    def target(self, t: TokExample) -> list[int]:
        return self._cut(t)[0]

    def _cut(self, t: TokExample) -> tuple[list[int], int]:
        """(the training target at this step, how many CoT tokens it lost)."""
        amount = self.removed if self.removed == INF else self.removed + self._offset()
        cot, _ = self.removable(t)
        emptied = amount == INF or amount >= len(cot)
        self._batch_empty = emptied if self._batch_empty is None else self._batch_empty and emptied
        return self.slice_cot(t, amount) + t.answer, len(cot) if emptied else int(amount)

    def features(self, t: TokExample):
        tgt, n_removed = self._cut(t)
        ids, labels = t.prompt + tgt, [-100] * len(t.prompt) + tgt
        if not self.config.keep_position:
            return ids, labels
        # the official shift starts at the first EOS (the prompt's last token)
        start = len(t.prompt) - 1
        return ids, labels, list(range(start)) + [p + n_removed for p in range(start, len(ids))]

    def collate(self, feats):
        if not self.config.keep_position:
            return super().collate(feats)
        batch = super().collate([f[:2] for f in feats])
        pos = torch.zeros_like(batch["input_ids"])
        for i, (_, _, p) in enumerate(feats):
            # padding continues the row's positions (masked, but kept in range and increasing)
            pos[i] = torch.tensor(p + list(range(p[-1] + 1, p[-1] + 1 + pos.shape[1] - len(p))))
        batch["position_ids"] = pos
        return batch

    def fit_to_data(self, train: list[TokExample]) -> None:
        super().fit_to_data(train)
        if train:  # the removals that end the curriculum: remove_all_beyond, else the longest CoT's tokens
            beyond = self.config.remove_all_beyond
            self._to_remove = beyond if beyond is not None else max(len(self.removable(t)[0]) for t in train)
        if self.config.keep_position and self.config.position_shift is None and train:
            lengths = Counter(len(self.removable(t)[0]) for t in train)
            self.config.position_shift = lengths.most_common(1)[0][0]

    def generation_position_shift(self) -> int:
        if not self.config.keep_position:
            return 0
        if self.config.position_shift is None:
            raise ConfigError("method_args.keep_position needs method_args.position_shift (set from the training data when "
                              "training starts); this model was never trained")
        return int(min(self.removed, self.config.position_shift))

    def sequence_length(self, t: TokExample) -> int:
        return len(t.prompt) + len(t.cot) + len(t.answer)
