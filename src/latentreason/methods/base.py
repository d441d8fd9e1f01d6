"""The method interface, sequence serialisation and the method registry.

A method is an ``nn.Module`` that owns a backbone (and any extra modules it adds, e.g. a latent
projection). It turns examples into training batches (``features`` / ``collate``), computes its
loss in ``forward(batch)`` and answers questions in ``generate(examples)``. The trainer and the
evaluator only ever talk to this interface.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from latentreason.config import from_dict
from latentreason.data.answers import judge
from latentreason.data.example import Example
from latentreason.decoding.generate import Generation
from latentreason.errors import ConfigError, ContextOverflowError, DataError
from latentreason.models.backbone import Backbone
from latentreason.models.tokenizer import LAYOUTS, check_known

SERIALIZATIONS = ("default", "coconut", "codi", "icot")


@dataclass
class MethodConfig:
    """Fields every method has."""

    #: sequence layout: default ``Q\\n s1 s2\\n#### A``, coconut ``Q\\n s1\\n s2\\n### A``,
    #: codi ``Q s1 s2 The answer is: A``, icot `` Q <eos> C <eos> #### A <eos>``
    serialization: str = "default"
    #: generation limit for answers (and CoT); None: follow the training data (its longest CoT + answer plus a
    #: quarter, at least 8 more; set when training starts and saved with the model; 64 for an untrained model)
    max_new_tokens: int | None = None
    #: answer comparison (see data.answers): tolerant | round:K | icot | coconut | codi | math_verify
    answer_mode: str = "tolerant"
    #: examples longer than the model's context: "error" (default) or "drop"
    too_long: str = "error"
    #: special tokens a Hugging Face model gets when ``model.special_tokens`` is auto (models/tokenizer.py
    #: LAYOUTS): project | codi | coconut | none; paper presets ask for their official code's vocabulary
    special_tokens: str = "project"
    #: which parameters AdamW decays: matrices (project: every parameter with >= 2 dims) | all (official
    #: Coconut and iCoT: torch AdamW over every parameter) | hf (official CODI: the Hugging Face Trainer's rule,
    #: every parameter except biases and LayerNorm / RMSNorm weights)
    weight_decay_on: str = "matrices"
    #: how the micro-batches of one optimiser step (accumulation, processes) are weighted: tokens (project:
    #: by target tokens, so the gradient is the per-token mean over the global batch) | equal (official code:
    #: each micro-batch's mean loss counts the same, as gradient accumulation / DDP averaging do there)
    micro_batch_weighting: str = "tokens"
    #: generation through ``torch.compile``d fixed-shape steps on a static cache (decoding/compiled.py): the same
    #: tokens, faster per step where per-operation overhead dominates (small models, batch 1), after a one-off
    #: compile per batch shape; plain token decoding and fixed thoughts only (``latentreason eval --compile``)
    compile_decode: bool = False

    def validate(self) -> None:
        if self.serialization not in SERIALIZATIONS:
            raise ConfigError(f"method_args.serialization: {self.serialization!r} is not one of {', '.join(SERIALIZATIONS)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"method_args.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.too_long not in ("error", "drop"):
            raise ConfigError(f"method_args.too_long must be 'error' or 'drop', got {self.too_long!r}")
        if self.special_tokens not in LAYOUTS:
            raise ConfigError(f"method_args.special_tokens must be one of {', '.join(LAYOUTS)}, got {self.special_tokens!r}")
        if self.weight_decay_on not in ("matrices", "all", "hf"):
            raise ConfigError(f"method_args.weight_decay_on must be matrices, all or hf, got {self.weight_decay_on!r}")
        if self.micro_batch_weighting not in ("tokens", "equal"):
            raise ConfigError(f"method_args.micro_batch_weighting must be tokens or equal, got {self.micro_batch_weighting!r}")


@dataclass
class TokExample:
    """An example split into separately tokenised pieces (so methods can rearrange them)."""

    prompt: list[int]
    steps: list[list[int]]
    cot_close: list[int]
    answer_prefix: list[int]
    answer_value: list[int]
    example: Example
    index: int = -1
    #: the CoT closes with ``cot_close`` even when it has no steps (iCoT: `` <eos>`` between the two EOS)
    close_always: bool = False

    @property
    def cot(self) -> list[int]:
        return [t for s in self.steps for t in s] + (self.cot_close if self.steps or self.close_always else [])

    @property
    def answer(self) -> list[int]:
        return self.answer_prefix + self.answer_value


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Serializer:
    """Turns examples into token pieces for one serialisation style (SPEC §3.1).

    Every piece is tokenised on its own, each starting where the official preprocessing of the
    style's paper starts a piece (question, each step with its leading separator, answer), so that
    a GPT-2-style BPE gives the official token ids. The answer marker and the value are one piece,
    tokenised together (``"### 18"`` is ``###``, ``Ġ18`` with GPT-2, not ``###``, ``Ġ``, ``18``); the
    marker part (``answer_prefix``) is the longest run of leading tokens that the marker alone also
    starts with, so its last token is the one that predicts the value (CODI's distillation token:
    ``:`` of ``The answer is:`` for GPT-2; the space for LLaMA-3 and for the byte tokenizer).

    Steps of one CoT line are joined by ``example.meta["step_sep"]`` (``" + "`` for iCoT's
    multiplication data, a space otherwise) in the styles that write the CoT on one line.
    """

    def __init__(self, style: str, backbone: Backbone, answer_prefix: str | None = None):
        self.style = style
        self.tok = backbone.tokenizer
        self.eos = backbone.ids.eos
        self._prefix_text = answer_prefix
        self._prefix_ids: dict[str, list[int]] = {}

    @property
    def answer_marker(self) -> str:
        return {"default": "####", "coconut": "###", "codi": "The answer is:", "icot": "####"}[self.style]

    @property
    def stop_after_eos(self) -> int:
        return 2 if self.style == "icot" else 1

    @property
    def empty_cot(self) -> list[int]:
        """What stands between prompt and answer when there is no CoT (iCoT keeps its EOS)."""
        return [self.eos] if self.style == "icot" else []

    def _texts(self, ex: Example) -> tuple[str, list[str], str, str, str]:
        q, a, steps = ex.question, ex.answer, ex.steps
        sep = ex.meta.get("step_sep", " ")
        joined = [s if i == 0 else f"{sep}{s}" for i, s in enumerate(steps)]
        if self.style == "default":
            out = f"{q}\n", joined, "\n", "#### ", a
        elif self.style == "coconut":
            # Coconut dataset.py: "Q\n", each "step\n", "### A" + <eos>; its preprocessing turns an empty CoT
            # into one empty step (a lone "\n")
            out = f"{q}\n", [f"{s}\n" for s in (steps or [""])], "", "### ", a
        elif self.style == "codi":
            # CODI train.py (GSM8k-Aug): Q, the CoT steps joined by spaces, "The answer is: A", each tokenised alone
            out = q, joined, "", "The answer is: ", a
        else:
            # iCoT data.py: " Q <eos> " + C + " <eos> " + "#### A" + " <eos>"; the space before the second EOS
            # belongs to the removable CoT (two spaces when the CoT is empty)
            # (its answer extraction also drops the commas of the answer)
            out = (f" {q} ", [f" {s}" if i == 0 else s for i, s in enumerate(joined)], " " if steps else "  ", " #### ",
                   f"{a.replace(',', '')} ")
        if self._prefix_text is not None:
            out = (*out[:3], self._prefix_text, out[4])
        return out

    def prompts(self, examples: list[Example]) -> list[list[int]]:
        """Only the prompts' token ids (what decoding needs): the same as ``tokenize(...)[i].prompt``,
        without tokenising reasoning steps and answers."""
        if not examples:
            return []
        texts = [self._texts(ex)[0] for ex in examples]
        ids = self.tok(texts, add_special_tokens=False).input_ids
        check_known(self.tok, texts, ids, lambda i: f"question {i} ({examples[i].question[:40]!r})")
        extra = [self.eos] if self.style == "icot" else []
        return [list(p) + extra for p in ids]

    def _prefix_len(self, prefix: str, answer_ids: list[int]) -> int:
        if prefix not in self._prefix_ids:
            self._prefix_ids[prefix] = list(self.tok(prefix, add_special_tokens=False).input_ids)
        return common_prefix_length(self._prefix_ids[prefix], answer_ids)

    def tokenize(self, examples: list[Example]) -> list[TokExample]:
        """Tokenise many examples with one batched tokenizer call."""
        texts, shapes = [], []
        for ex in examples:
            p, steps, close, ap, av = self._texts(ex)
            shapes.append((len(steps), ap))
            texts.extend([p, *steps, close, ap + av])
        ids = self.tok(texts, add_special_tokens=False).input_ids if texts else []
        owner = [i for i, (n, _) in enumerate(shapes) for _ in range(n + 3)]
        check_known(self.tok, texts, ids, lambda j: f"example {owner[j]} ({examples[owner[j]].question[:40]!r})")
        out, k = [], 0
        icot = self.style == "icot"
        for i, (ex, (n, ap)) in enumerate(zip(examples, shapes)):
            p, steps, close, answer = ids[k], ids[k + 1 : k + 1 + n], ids[k + 1 + n], list(ids[k + 2 + n])
            k += 3 + n
            if icot:
                p, close = p + [self.eos], close + [self.eos]
            cut = self._prefix_len(ap, answer)
            out.append(TokExample(list(p), [list(s) for s in steps], list(close), answer[:cut], answer[cut:] + [self.eos],
                                  ex, i, close_always=icot))
        return out


#: the generation limit of a method whose ``max_new_tokens`` was never fixed by training data
UNTRAINED_GENERATION_LIMIT = 64


def generation_limit_for(train: list[TokExample]) -> int:
    """The generation limit that follows the data: the longest CoT + answer of the training examples plus a
    quarter of it (at least 8 tokens), so a model that writes what it was trained on is never cut short."""
    longest = max(len(t.cot) + len(t.answer) for t in train)
    return longest + max(8, longest // 4)


def collate_lm(seqs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad (input_ids, labels) pairs into a causal-LM batch."""
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lab) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Method(nn.Module):
    """Base class: subclasses set ``name``, ``Config`` and implement the abstract parts."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: one-line description shown by ``latentreason train --help``
    summary: ClassVar[str] = ""

    def __init__(self, backbone: Backbone, config: MethodConfig | None = None):
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.config.validate()
        self.model = backbone.model
        self.tokenizer = backbone.tokenizer
        self.ids = backbone.ids
        self.serializer = Serializer(self.config.serialization, backbone, getattr(self.config, "answer_prefix", None))

    # ------------------------------------------------------------------ conveniences
    @property
    def backbone(self) -> Backbone:
        return Backbone(self.model, self.tokenizer, self.ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_positions(self) -> int | None:
        return self.backbone.max_positions

    # ------------------------------------------------------------------ data
    def prepare(self, examples: list[Example], what: str = "data") -> list[TokExample]:
        """Tokenise examples and check they fit the context (error or drop, per ``too_long``)."""
        toks = self.serializer.tokenize(examples)
        limit = self.max_positions
        if limit is None:
            return toks
        kept = []
        for t in toks:
            n = self.sequence_length(t)
            if n > limit:
                if self.config.too_long == "error":
                    raise DataError(
                        f"{what}: example {t.index} is {n} tokens long, longer than the model's context of "
                        f"{limit} positions (question starts {t.example.question[:40]!r}); set "
                        "method_args.too_long=drop to skip such examples or use a model with a longer context"
                    )
                continue
            kept.append(t)
        if not kept:
            raise DataError(f"{what}: every example is longer than the model's context of {limit} positions")
        return kept

    def fit_to_data(self, train: list[TokExample]) -> None:
        """Settings the training data decides, fixed before the first step (and saved with the model): the
        generation limit when ``max_new_tokens`` is None (see :func:`generation_limit_for`)."""
        if self.config.max_new_tokens is None and train:
            self.config.max_new_tokens = generation_limit_for(train)

    def generation_budget(self, prompts: list[list[int]], reserved: int = 0) -> int:
        """``max_new_tokens`` capped by the model's context; a prompt that does not fit raises
        :class:`~latentreason.errors.ContextOverflowError` (``evaluation.ood`` counts or skips such questions)."""
        limit = self.max_positions
        budget = self.config.max_new_tokens if self.config.max_new_tokens is not None else UNTRAINED_GENERATION_LIMIT
        if limit is None:
            return budget
        longest = max(len(p) for p in prompts) + reserved
        if longest + 1 > limit:
            k = max(range(len(prompts)), key=lambda i: len(prompts[i]))
            raise ContextOverflowError(
                f"question {k} of this batch needs {longest} positions before the answer, more than the model's "
                f"context of {limit} positions; use a model with a longer context",
                index=k, needed=longest, limit=limit,
            )
        return min(budget, limit - longest)

    def sequence_length(self, t: TokExample) -> int:
        """Longest sequence this method builds for the example (training or generation)."""
        return len(t.prompt) + len(t.cot) + len(t.answer)

    def features(self, t: TokExample) -> Any:
        """The method's training features of one tokenised example (every method defines its own)."""
        raise NotImplementedError(f"{type(self).__name__} does not define features()")

    def collate(self, feats: list[Any]) -> dict[str, Tensor]:
        return collate_lm(feats, self.ids.pad)

    # ------------------------------------------------------------------ training hooks
    def on_train_step(self, step: int, epoch: float, steps_per_epoch: int) -> bool:
        """Called before every optimiser step; return True to reset the optimiser (stage change)."""
        return False

    def on_validation(self, step: int, accuracy: float | None) -> None:
        """Called after each periodic validation (``train.eval_every``) with its accuracy, on every process."""

    def requires_validation(self) -> bool:
        """Whether training needs periodic validation (a schedule that advances on it)."""
        return False

    def trainer_state(self) -> dict[str, Any]:
        """Method state to store in checkpoints (curriculum stage, removal amount, ...)."""
        return {}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        pass

    def stage_label(self) -> str | None:
        """Current curriculum stage, for stage-wise logs (None: no stages)."""
        return None

    def is_final_stage(self) -> bool:
        """Whether training has reached the method's final configuration (a curriculum's last stage)."""
        return True

    def stage_label_at(self, step: int, steps_per_epoch: int) -> str | None:
        """The stage ``on_train_step(step, ...)`` will switch to (lets the trainer evaluate the old one first)."""
        return None

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, examples: list[Example]) -> list[Generation]:
        """Decode ``examples`` (every method defines its own)."""
        raise NotImplementedError(f"{type(self).__name__} does not define generate()")

    def judge(self, ex: Example, gen: Generation):
        markers = (self.serializer.answer_marker,)
        return judge(gen.text, ex.answer, ex.answer_type, self.config.answer_mode, markers=markers)

    def count_reasoning_tokens(self, tokens: list[int]) -> int:
        """Number of generated tokens before the answer marker (all of them when it is absent), special tokens
        not counted (the EOS that closes iCoT's CoT is structure: an iCoT model with no CoT left writes 0)."""
        special = set(self.tokenizer.all_special_ids)
        return sum(t not in special for t in tokens[: self._answer_start(tokens)])

    def _answer_start(self, tokens: list[int]) -> int:
        """Index of the first token of the answer marker (``len(tokens)`` when it is absent)."""
        marker = self.serializer.answer_marker
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        pos = text.rfind(marker)
        if pos < 0:
            return len(tokens)
        lo, hi = 0, len(tokens)  # smallest k with len(decode(tokens[:k])) > pos
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.tokenizer.decode(tokens[:mid], skip_special_tokens=False)) > pos:
                hi = mid
            else:
                lo = mid + 1
        return max(lo - 1, 0)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules beyond the backbone whose weights go into ``extra.safetensors``."""
        return {n: m for n, m in self.named_children() if n != "model"}


def method_config(cls: type[Method], args: dict[str, Any] | MethodConfig | None) -> MethodConfig:
    if isinstance(args, MethodConfig):
        return args
    presets = getattr(cls, "presets", {})
    args = dict(args or {})
    preset = args.pop("preset", None)
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"method_args.preset: unknown preset {preset!r} for {cls.name}; valid: {', '.join(presets) or 'none'}")
        base = dict(presets[preset])
    base.update(args)
    return from_dict(cls.Config, base, "method_args")


def config_dict(cfg: MethodConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
