"""No-CoT-SFT: supervised fine-tuning on question -> answer (SPEC §3.1).

Same loss and decoding as CoT-SFT, with the reasoning steps left out of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentreason.methods.base import MethodConfig
from latentreason.methods.cot import CoT


@dataclass
class NoCoTConfig(MethodConfig):
    max_new_tokens: int | None = None  # None: follow the training data (MethodConfig)


class NoCoT(CoT):
    name = "nocot"
    Config = NoCoTConfig
    summary = "No-CoT-SFT: train on question -> answer only; decode the answer directly"
    with_cot = False
    presets = {
        "coconut_gsm": {"serialization": "coconut", "max_new_tokens": 64, "answer_mode": "coconut"},
        "icot": {"serialization": "icot", "max_new_tokens": 64, "answer_mode": "icot"},
        "codi": {"serialization": "codi", "max_new_tokens": 256, "answer_mode": "codi"},
    }
