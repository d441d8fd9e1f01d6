"""CoT-SFT: supervised fine-tuning on question -> reasoning text -> answer (SPEC §3.1).

Loss: mean token cross-entropy over the CoT, the answer and EOS; question tokens are masked.
Inference: greedy decoding until EOS (two EOS for the iCoT serialisation), then the answer is
read after the answer marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentreason.data.example import Example
from latentreason.decoding.compiled import compiled_greedy_generate
from latentreason.decoding.generate import Generation, greedy_generate, hit_limit, trim_at_stop
from latentreason.methods.base import Method, MethodConfig, TokExample
from latentreason.methods.objective import causal_lm_loss


@dataclass
class CoTConfig(MethodConfig):
    pass


class CoT(Method):
    name = "cot"
    Config = CoTConfig
    summary = "CoT-SFT: train on question -> reasoning steps -> answer; decode the CoT greedily"
    #: whether the training target contains the reasoning steps
    with_cot = True
    presets = {
        # Coconut args/gsm_cot.yaml (GPT-2; run.py with cot: True): Coconut's serialisation, no token added (pad =
        # EOS), torch AdamW decaying every parameter, the 4 GPUs' micro-batches weighted equally; lr 1e-4, wd 0.01,
        # global batch 128, 25 epochs, no clipping: configs/cot_gpt2_gsm8k_aug.yaml
        "coconut_gsm": {"serialization": "coconut", "max_new_tokens": 64, "answer_mode": "coconut", "special_tokens": "none",
                        "weight_decay_on": "all", "micro_batch_weighting": "equal"},
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
        # position ids only when the features bring their own (iCoT's keep_position); else the model's 0..n-1
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=batch.get("position_ids"))
        return {"loss": causal_lm_loss(out.logits, batch["labels"])}

    def generation_position_shift(self) -> int:
        """Added to the positions from the prompt's last token on (iCoT's ``keep_position``)."""
        return 0

    @torch.no_grad()
    def generate(self, examples: list[Example]) -> list[Generation]:
        prompts = self.serializer.prompts(examples)
        stop = self.serializer.stop_after_eos
        shift = self.generation_position_shift()
        budget = self.generation_budget(prompts, reserved=shift)  # shifted positions must stay inside the context
        decode = compiled_greedy_generate if self.config.compile_decode else greedy_generate
        tokens, passes = decode(self.model, prompts, self.ids.pad, self.ids.eos, budget, stop_after_eos=stop,
                                position_shift=shift)
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
                    truncated=hit_limit(seq, body, budget),
                )
            )
        return out
