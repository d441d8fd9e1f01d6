"""CoT-SFT: supervised fine-tuning on question -> reasoning text -> answer (SPEC §3.1).

Loss: mean token cross-entropy over the CoT, the answer and EOS; question tokens are masked.
Inference: greedy decoding until EOS (two EOS for the iCoT serialisation), then the answer is
read after the answer marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentreason.data.example import Example
from latentreason.decoding.generate import greedy_generate, trim_at_stop
from latentreason.methods.base import Generation, Method, MethodConfig, TokExample, register


@dataclass
class CoTConfig(MethodConfig):
    pass


@register
class CoT(Method):
    name = "cot"
    Config = CoTConfig
    summary = "CoT-SFT: train on question -> reasoning steps -> answer; decode the CoT greedily"
    #: whether the training target contains the reasoning steps
    with_cot = True
    presets = {
        # Coconut args/gsm_cot.yaml (GPT-2): AdamW 1e-4, wd 0.01, global batch 128, 25 epochs
        "coconut_gsm": {"serialization": "coconut", "max_new_tokens": 64, "answer_mode": "coconut"},
        "icot": {"serialization": "icot", "max_new_tokens": 150, "answer_mode": "icot"},
        "codi": {"serialization": "codi", "max_new_tokens": 256, "answer_mode": "codi"},
    }

    def target(self, t: TokExample) -> list[int]:
        cot = t.cot if self.with_cot else self.serializer.empty_cot
        return cot + t.answer

    def features(self, t: TokExample) -> tuple[list[int], list[int]]:
        tgt = self.target(t)
        return t.prompt + tgt, [-100] * len(t.prompt) + tgt

    def sequence_length(self, t: TokExample) -> int:
        return len(t.prompt) + len(self.target(t))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return {"loss": out.loss}

    @torch.no_grad()
    def generate(self, examples: list[Example]) -> list[Generation]:
        prompts = self.serializer.prompts(examples)
        stop = self.serializer.stop_after_eos
        budget = self.generation_budget(prompts)
        tokens, passes = greedy_generate(self.model, prompts, self.ids.pad, self.ids.eos, budget, stop_after_eos=stop)
        out = []
        for seq, n_pass in zip(tokens, passes):
            body = trim_at_stop(seq, self.ids.eos, stop)
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            out.append(
                Generation(
                    text=text,
                    generated_tokens=len(seq),
                    reasoning_tokens=self.count_reasoning_tokens(body),
                    forward_passes=n_pass,
                )
            )
        return out
