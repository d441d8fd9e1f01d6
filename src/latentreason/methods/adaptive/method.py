"""``codi_adaptive``: CODI whose number of continuous thoughts is decided per question (issue 9).

CODI, Coconut and System-1.5 give every question the same number of thoughts. This subclass of
:class:`~latentreason.methods.codi.CODI` keeps CODI's objective (teacher CE, distillation before
the answer, the project's step alignment) and adds (``docs/adaptive.md``)

* a **halting head** (:class:`~latentreason.methods.adaptive.halting.HaltingHead`, linear + sigmoid on the
  last-layer state after each thought), trained with BCE alongside CODI on detached states (its
  loss never changes the backbone or the projection): the target after thought j of a problem
  whose teacher CoT has K steps is ``j >= K + halt_offset`` ("stop after thought K+1": with
  ``align_offset=1`` the state after thought K predicts step K's result, and thought K+1 =
  P(that state) carries it to ``<eot>``), on thoughts 1..K+1+``halt_window``.
  :meth:`CODIAdaptive.fit_halting_head` refits it alone on a trained model;
* an **end alignment** (``align_end``): the state after the stop thought is aligned with the
  teacher's state at the end of its CoT (the position whose next token closes the chain), so that
  the LM-head probe of that state says "the chain is over" — the signal the training-free stop
  rule reads;
* **variable-depth training** (``vary_n``): with that probability a training batch runs a random
  number n of thoughts (between the smallest stop target in the batch and ``n_latent``) instead of
  ``n_latent``; the student's answer loss and the distillation then use only the rows whose stop
  target is <= n (the others cannot have their answer yet; their thoughts still get the step
  alignment). The student thus learns to answer after any number of thoughts >= its stop target,
  which is what lets a row leave the loop early — and it also keeps every fixed n usable;
* a **step CE** (``step_ce_weight``): the LM-head probe of thought j is trained to predict step
  j's result token, a hard-label form of the step alignment that does not need a correct teacher;
* **inference options** ``halting: none | head | probe``, ``halt_threshold`` (head),
  ``probe_threshold`` (training-free logit-lens probe, see ``methods/adaptive/halting.py``), ``n_max`` (the
  cap on thoughts with halting; default ``n_latent``) and ``min_latent``.

With ``halting=none`` the method is CODI with ``n_latent`` thoughts (the engine's lock-step path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from latentreason.data.example import Example
from latentreason.decoding.generate import Generation
from latentreason.decoding.latent import HaltFn, latent_forward
from latentreason.errors import ConfigError
from latentreason.methods.adaptive.halting import HALTING_MODES, HaltingHead, head_halt_fn, probe_halt_fn, stop_token_ids
from latentreason.methods.base import TokExample
from latentreason.methods.codi import CODI, CODIConfig
from latentreason.methods.objective import answer_kd, shifted_ce, step_alignment, teacher_pass


@dataclass
class CODIAdaptiveConfig(CODIConfig):
    #: thoughts fed during training (the longest chain); also the fixed count with ``halting=none``
    n_latent: int = 7
    #: inference stop rule: none (always n_latent thoughts) | head (halting head) | probe (LM-head probe)
    halting: str = "head"
    #: the head stops a row when p(stop | state) > halt_threshold (0: after min_latent thoughts, 1: never)
    halt_threshold: float = 0.5
    #: cap on the number of thoughts when halting (default: n_latent)
    n_max: int | None = None
    #: thoughts every row feeds before halting is consulted
    min_latent: int = 1
    #: training target of the head: stop after (number of teacher CoT steps + halt_offset) thoughts
    halt_offset: int = 1
    #: the head is trained on thoughts 1 .. target + halt_window (later states are never consulted
    #: when the stop works, and nothing aligns them, so they drift)
    halt_window: int = 1
    #: weight of the head's BCE in the training loss
    halt_weight: float = 1.0
    #: the head trains on detached states (True: its loss never reaches the backbone / projection)
    halt_detach: bool = True
    #: probability that a training batch uses a random number of thoughts (variable-depth training)
    vary_n: float = 0.0
    #: train the answer also right after each row's stop thought (a second, parallel suffix pass
    #: that masks the later thoughts), besides after the n thoughts of the batch
    exit_loss: bool = True
    #: align the state after the stop thought (K + halt_offset) with the teacher's end-of-CoT state
    #: (the position whose next token closes the chain of thought), weighted like the step alignment
    align_end: bool = True
    #: align every thought after the stop thought with that end state too (a steady "done" state,
    #: so that a fixed n larger than needed reads the same answer as stopping)
    align_end_through: bool = False
    #: CODI's step supervision (``CODIConfig.step_ce_weight``), on by default here: the LM-head probe of each
    #: aligned thought must predict step j's result, which the training-free stop rule reads
    step_ce_weight: float = 1.0
    #: the probe stops when the LM-head probe puts more than this on the stop tokens
    probe_threshold: float = 0.5
    #: texts whose first token ends a chain of thought (default: the serialisation's CoT close and
    #: answer marker, e.g. "\n" and "#" for ``Q\n s1 s2\n#### A``); <eot> is always included
    probe_tokens: list[str] = field(default_factory=list)

    def validate(self) -> None:
        super().validate()
        if self.halting not in HALTING_MODES:
            raise ConfigError(f"method_args.halting must be one of {', '.join(HALTING_MODES)}, got {self.halting!r}")
        if self.step_ce_weight < 0:
            raise ConfigError(f"method_args.step_ce_weight must be >= 0, got {self.step_ce_weight}")
        for k in ("halt_threshold", "probe_threshold", "vary_n"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"method_args.{k} must be in [0, 1], got {v}")
        if self.n_max is not None and self.n_max < 1:
            raise ConfigError(f"method_args.n_max must be >= 1, got {self.n_max}")
        if self.min_latent < 1:
            raise ConfigError(f"method_args.min_latent must be >= 1, got {self.min_latent}")
        if self.n_max is not None and self.min_latent > self.n_max:
            raise ConfigError(f"method_args.min_latent ({self.min_latent}) must be <= n_max ({self.n_max})")
        if self.halt_weight < 0:
            raise ConfigError(f"method_args.halt_weight must be >= 0, got {self.halt_weight}")
        if self.halt_window < 0:
            raise ConfigError(f"method_args.halt_window must be >= 0, got {self.halt_window}")
        if self.halt_offset < 0:
            raise ConfigError(f"method_args.halt_offset must be >= 0, got {self.halt_offset}")
        if self.n_latent < 1:
            raise ConfigError(f"method_args.n_latent must be >= 1 for codi_adaptive, got {self.n_latent}")


#: CODI's project setting for the embedded task (step alignment, from a CoT/CODI checkpoint)
_DEFAULT_TASK = dict(CODI.presets["default_task"])
_DEFAULT_TASK.update(n_latent=7, halting="head", halt_offset=1, halt_detach=True, exit_loss=True, vary_n=0.0,
                     align_end=True, step_ce_weight=1.0)


class CODIAdaptive(CODI):
    name = "codi_adaptive"
    Config = CODIAdaptiveConfig
    summary = "CODI with a per-question number of thoughts: halting head or training-free LM-head probe"
    presets = {
        # mixed-difficulty modchain (1..6 steps), 7 thoughts at most (docs/adaptive.md)
        "default_task": _DEFAULT_TASK,
    }

    def __init__(self, backbone, config: CODIAdaptiveConfig | None = None):
        super().__init__(backbone, config)
        self.halting_head = HaltingHead(backbone.hidden_size)
        self.halting_head.to(dtype=self.model.get_input_embeddings().weight.dtype)
        self._probe_ids: list[int] | None = None

    @classmethod
    def from_codi(cls, codi: CODI, config: CODIAdaptiveConfig) -> "CODIAdaptive":
        """A ``codi_adaptive`` method on a CODI model's backbone and projection (fresh halting head)."""
        if config.projection != codi.config.projection:
            raise ConfigError("from_codi: the CODI model and the adaptive config disagree on method_args.projection")
        m = cls(codi.backbone, config)
        if config.projection:
            m.projection.load_state_dict(codi.projection.state_dict())
        return m

    # ------------------------------------------------------------------ stop targets
    @property
    def n_max(self) -> int:
        return self.config.n_max if self.config.n_max is not None else self.config.n_latent

    def stop_targets(self, n_steps: Tensor, cap: int) -> Tensor:
        """Number of thoughts after which each row should stop: n_steps + halt_offset, within [min_latent, cap]."""
        return (n_steps + self.config.halt_offset).clamp(min=min(self.config.min_latent, cap), max=cap)

    # ------------------------------------------------------------------ data
    def sequence_length(self, t: TokExample) -> int:
        latent = len(t.prompt) + max(self.config.n_latent, self.n_max) + 2 + len(t.answer)
        return max(len(t.prompt) + len(t.cot) + len(t.answer), latent)

    def features(self, t: TokExample) -> dict[str, Any]:
        f = super().features(t)
        f["n_steps"] = len(t.steps)
        # the teacher position whose next token closes the CoT (or, without CoT, opens the answer)
        f["p_end"] = len(t.prompt) + sum(len(s) for s in self._teacher_steps(t)) - 1
        return f

    def collate(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(feats)
        batch["n_steps"] = torch.tensor([f["n_steps"] for f in feats], dtype=torch.long)
        batch["p_end"] = torch.tensor([f["p_end"] for f in feats], dtype=torch.long)
        return batch

    def _train_n(self, targets: Tensor) -> int:
        """Thoughts for this batch: n_latent, or (with probability vary_n, in training) a random count."""
        n = self.config.n_latent
        if not self.training or self.config.vary_n <= 0.0:
            return n
        if float(torch.rand(())) >= self.config.vary_n:
            return n
        lo = int(targets.min())
        return int(torch.randint(lo, n + 1, ()))

    # ------------------------------------------------------------------ loss
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.config
        B = batch["input_ids"].shape[0]
        device = batch["input_ids"].device
        rows = torch.arange(B, device=device)
        targets = self.stop_targets(batch["n_steps"].to(device), cfg.n_latent)
        n = self._train_n(targets)
        t_out, loss_teacher = teacher_pass(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        s = latent_forward(self.model, batch["prompt_ids"], batch["prompt_mask"], n, self.thought,
                           batch["suffix_ids"], batch["suffix_mask"])
        ready = targets <= n  # rows whose answer is due after n thoughts
        exits = [(s.suffix_logits, s.suffix_hidden, ready)]
        if cfg.exit_loss and n > 0 and bool(ready.any()):
            # the same rows answering right after their stop thought, as adaptive inference does
            e_logits, e_hidden = self.stop_exit(batch, s.thoughts, targets.clamp(max=n))
            exits.append((e_logits, e_hidden, ready))
        zero = s.suffix_logits.sum() * 0.0
        student_terms, kd_terms = [], []
        for logits, hidden, use in exits:
            if not bool(use.any()):
                continue
            student_terms.append(shifted_ce(logits, batch["suffix_labels"].masked_fill(~use[:, None], -100)))
            idx = rows[use]
            kd_terms.append(answer_kd(hidden, t_out.hidden_states, idx, batch["p_s"][idx], batch["p_t"][idx], cfg))
        loss_student = torch.stack(student_terms).mean() if student_terms else zero
        loss_kd = torch.stack(kd_terms).mean() if kd_terms else zero
        loss = cfg.alpha * loss_student + cfg.beta * loss_kd + cfg.gamma * loss_teacher
        out = {"loss_student": loss_student.detach(), "loss_kd": loss_kd.detach(), "loss_teacher": loss_teacher.detach(),
               "n_thoughts": torch.tensor(float(n), device=device), "ready_fraction": ready.float().mean().detach()}
        loss = self.add_step_terms(loss, out, batch, t_out.hidden_states, s.latent_hidden)
        if cfg.align_end:
            loss_end = self._end_align_loss(batch, t_out.hidden_states, s.latent_hidden, targets, n)
            if loss_end is not None:
                loss = loss + cfg.align_weight * loss_end
                out["loss_align_end"] = loss_end.detach()
        if n > 0:
            loss_halt, acc = self._halt_loss(s.latent_hidden, targets, n)
            loss = loss + cfg.halt_weight * loss_halt
            out["loss_halt"] = loss_halt.detach()
            out["halt_accuracy"] = acc
        out["loss"] = loss
        return out

    def stop_exit(self, batch: dict[str, Tensor], thoughts: Tensor, stops: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Suffix logits and hidden states of every row answering right after ``stops[r]`` thoughts.

        One parallel pass over ``prompt + thoughts + suffix`` with the thoughts after each row's stop
        masked out and position ids counting only unmasked positions: the same computation as
        feeding ``<eot>`` after ``stops[r]`` thoughts in :func:`latent_generate` (the thoughts are the
        training pass's own, so gradients reach them).
        """
        emb = self.model.get_input_embeddings()
        B, n = thoughts.shape[:2]
        S = batch["suffix_ids"].shape[1]
        keep = torch.arange(1, n + 1, device=thoughts.device)[None, :] <= stops[:, None]
        mask = torch.cat([batch["prompt_mask"], keep.to(batch["prompt_mask"].dtype), batch["suffix_mask"]], dim=1)
        embeds = torch.cat([emb(batch["prompt_ids"]), thoughts.to(emb.weight.dtype), emb(batch["suffix_ids"])], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, output_hidden_states=True)
        return out.logits[:, -S:], tuple(hs[:, -S:] for hs in out.hidden_states)

    def _end_align_loss(self, batch, teacher_hidden, latent_hidden, targets: Tensor, n: int) -> Tensor | None:
        """State after the stop thought (and, with ``align_end_through``, after every later thought) ↔
        teacher state at the end of its CoT (every layer but the embeddings)."""
        last = (lambda t: n) if self.config.align_end_through else (lambda t: t)
        device = teacher_hidden[0].device
        groups = [(m, torch.tensor([r], device=device), batch["p_end"][r : r + 1].to(device)) for r in range(targets.shape[0])
                  for m in range(int(targets[r]), min(last(int(targets[r])), n) + 1)]
        first = 1 if self.config.align_skip_embedding else 0
        return step_alignment(latent_hidden, teacher_hidden, groups, first, self.config)

    def halt_labels(self, targets: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Head targets for thoughts j = 1..n: ``y = j >= target``, used where ``j <= target + halt_window``."""
        j = torch.arange(1, n + 1, device=targets.device)[None, :]
        y = (j >= targets[:, None]).to(torch.float32)
        used = j <= targets[:, None] + self.config.halt_window
        return y, used

    def _halt_loss(self, latent_hidden, targets: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """BCE of the head on the state after each thought j = 1..n (see :meth:`halt_labels`)."""
        states = torch.stack([latent_hidden[j][-1] for j in range(1, n + 1)], dim=1)  # (B, n, d)
        if self.config.halt_detach:
            states = states.detach()
        y, used = self.halt_labels(targets, n)
        logits = self.halting_head.logits(states).float()
        loss = F.binary_cross_entropy_with_logits(logits[used], y[used])
        acc = ((logits[used] > 0).float() == y[used]).float().mean().detach()
        return loss, acc

    @torch.enable_grad()
    def fit_halting_head(self, examples: list[Example], steps: int = 300, lr: float = 1e-2,
                         batch_size: int = 256) -> dict[str, float]:
        """Fit the halting head alone on the current model's thought states (logistic regression).

        Runs the model once (no gradients) over ``examples`` with ``n_latent`` thoughts, labels the
        states as in training, then takes ``steps`` full-batch Adam steps on the head only. Used
        after CODI training, when the backbone no longer moves. Returns the final loss and accuracy.
        """
        was_training = self.training
        self.eval()
        n = self.config.n_latent
        xs, ys = [], []
        try:
            with torch.no_grad():
                toks = self.prepare(examples, "halting-head data")
                for i in range(0, len(toks), batch_size):
                    b = self.collate([self.features(t) for t in toks[i : i + batch_size]])
                    b = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in b.items()}
                    s = latent_forward(self.model, b["prompt_ids"], b["prompt_mask"], n, self.thought, b["suffix_ids"],
                                       b["suffix_mask"])
                    y, used = self.halt_labels(self.stop_targets(b["n_steps"], n), n)
                    states = torch.stack([s.latent_hidden[j][-1] for j in range(1, n + 1)], dim=1)
                    xs.append(states[used])
                    ys.append(y[used])
            x, y = torch.cat(xs), torch.cat(ys)
            opt = torch.optim.Adam(self.halting_head.parameters(), lr=lr)
            for _ in range(steps):
                loss = F.binary_cross_entropy_with_logits(self.halting_head.logits(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                logits = self.halting_head.logits(x).float()
                final = float(F.binary_cross_entropy_with_logits(logits, y))
                acc = float(((logits > 0).float() == y).float().mean())
        finally:
            self.train(was_training)
        return {"loss": final, "accuracy": acc, "states": int(y.numel())}

    # ------------------------------------------------------------------ inference
    def probe_token_ids(self) -> list[int]:
        if self._probe_ids is None:
            texts = list(self.config.probe_tokens)
            if not texts:
                ex = Example("1", ["1"], "1")
                t = self.serializer.tokenize([ex])[0]
                texts = [self.tokenizer.decode(p) for p in (t.cot_close, t.answer_prefix) if p]
            self._probe_ids = stop_token_ids(self.tokenizer, texts, extra_ids=[self.ids.eot])
        return self._probe_ids

    def halt_fn(self, mode: str | None = None) -> HaltFn | None:
        """The stop rule of ``mode`` (default: the configured ``halting``); None for ``none``."""
        mode = self.config.halting if mode is None else mode
        if mode not in HALTING_MODES:
            raise ConfigError(f"halting must be one of {', '.join(HALTING_MODES)}, got {mode!r}")
        if mode == "none":
            return None
        if mode == "head":
            return head_halt_fn(self.halting_head, self.config.halt_threshold)
        lm_head = self.model.get_output_embeddings()
        return probe_halt_fn(lm_head, self.probe_token_ids(), self.config.probe_threshold)

    @torch.no_grad()
    def generate(self, examples: list[Example], record_hidden: bool = False, thought_fn=None, halt_fn=None,
                 n_latent: int | None = None, halting: str | None = None) -> list[Generation]:
        """Answers with the configured stop rule (``halting`` overrides it for this call).

        With a stop rule, ``n_latent`` (default ``n_max``) caps the thoughts; an explicit
        ``halt_fn`` replaces the rule.
        """
        if halt_fn is None:
            halt_fn = self.halt_fn(halting)
        if halt_fn is not None and n_latent is None:
            n_latent = self.n_max
        return super().generate(examples, record_hidden=record_hidden, thought_fn=thought_fn, halt_fn=halt_fn,
                                n_latent=n_latent, min_latent=self.config.min_latent)
