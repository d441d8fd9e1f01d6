"""Settings of a soft-thinking run (SPEC §3.6.1): :class:`SoftThinkingConfig`, named presets, :func:`soft_config`.

The decoding loop that reads them is :func:`latentreason.soft_thinking.loop.soft_generate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from latentreason.config import from_dict
from latentreason.errors import ConfigError
from latentreason.soft_thinking.samplers import SOFT_MODES

MODES = ("greedy", "sampling", "vanilla", "dirichlet", "gumbel")
ENTROPY_NORMALIZATIONS = ("nats", "log_vocab")
AFTER_THINKING = ("greedy", "sampling")


@dataclass
class SoftThinkingConfig:
    """Settings of one soft-thinking run; defaults follow SPEC §3.6.1 except where noted."""

    #: greedy | sampling (discrete tokens) | vanilla | dirichlet | gumbel (soft tokens)
    mode: str = "vanilla"
    #: thinking-phase temperature T (0 = greedy: the soft token is the one-hot argmax)
    temperature: float = 0.6
    #: top-k filter (0 = off)
    top_k: int = 30
    #: top-p (nucleus) filter, in (0, 1]; 1 = off
    top_p: float = 0.95
    #: min-p filter: drop p_i < min_p * max(p); 0 = off
    min_p: float = 0.001
    #: K: how many entries a soft token keeps (the reference's ``max_topk``)
    max_topk: int = 10
    #: Dirichlet concentration scale gamma (Dir(gamma * p)); the paper's best value
    dirichlet_gamma: float = 4.0
    #: Gumbel-Softmax temperature tau
    gumbel_tau: float = 0.5
    #: Cold Stop entropy threshold tau (0 = Cold Stop off), in the unit of ``entropy_normalization``
    cold_stop_entropy: float = 0.01
    #: Cold Stop: consecutive low-entropy soft steps that end thinking
    cold_stop_steps: int = 256
    #: nats (Soft Thinking's code) | log_vocab (H / ln V, Randomized-Soft-Thinking's code)
    entropy_normalization: str = "nats"
    #: text that ends the thinking phase when it appears in the visible stream (None: the method's answer marker)
    think_end: str | None = None
    #: text injected (one-hot) by Cold Stop / the budget (None: what the serialisation writes
    #: between the last step and the end of the answer marker, e.g. "\n####"; or ``think_end``)
    inject: str | None = None
    #: thinking budget in tokens (None = none); when used up the injection text is fed
    max_thinking_tokens: int | None = None
    #: decoding after thinking: greedy | sampling (with the after_thinking_* settings)
    after_thinking: str = "greedy"
    after_thinking_temperature: float = 0.6
    after_thinking_top_k: int = 30
    after_thinking_top_p: float = 0.95
    after_thinking_min_p: float = 0.0
    #: generation limit (None: the method's ``max_new_tokens``)
    max_new_tokens: int | None = None

    def validate(self) -> "SoftThinkingConfig":
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"soft thinking option {name}: {why}, got {getattr(self, name)!r}")

        if self.mode not in MODES:
            raise bad("mode", f"must be one of {', '.join(MODES)}")
        for pre in ("", "after_thinking_"):
            if not (isinstance(getattr(self, pre + "temperature"), (int, float)) and getattr(self, pre + "temperature") >= 0):
                raise bad(pre + "temperature", "must be a number >= 0")
            if not (isinstance(getattr(self, pre + "top_k"), int) and getattr(self, pre + "top_k") >= 0):
                raise bad(pre + "top_k", "must be an integer >= 0 (0 = off)")
            if not (0.0 < getattr(self, pre + "top_p") <= 1.0):
                raise bad(pre + "top_p", "must be in (0, 1]")
            if not (0.0 <= getattr(self, pre + "min_p") < 1.0):
                raise bad(pre + "min_p", "must be in [0, 1)")
        if not (isinstance(self.max_topk, int) and self.max_topk >= 1):
            raise bad("max_topk", "must be an integer >= 1")
        if not self.dirichlet_gamma > 0:
            raise bad("dirichlet_gamma", "must be > 0")
        if not self.gumbel_tau > 0:
            raise bad("gumbel_tau", "must be > 0")
        if not self.cold_stop_entropy >= 0:
            raise bad("cold_stop_entropy", "must be >= 0 (0 = off)")
        if not (isinstance(self.cold_stop_steps, int) and self.cold_stop_steps >= 1):
            raise bad("cold_stop_steps", "must be an integer >= 1")
        if self.entropy_normalization not in ENTROPY_NORMALIZATIONS:
            raise bad("entropy_normalization", f"must be one of {', '.join(ENTROPY_NORMALIZATIONS)}")
        if self.think_end is not None and not self.think_end:
            raise bad("think_end", "must be a non-empty string")
        if self.inject is not None and not self.inject:
            raise bad("inject", "must be a non-empty string")
        if self.max_thinking_tokens is not None and not (isinstance(self.max_thinking_tokens, int) and self.max_thinking_tokens >= 0):
            raise bad("max_thinking_tokens", "must be an integer >= 0 or None")
        if self.after_thinking not in AFTER_THINKING:
            raise bad("after_thinking", f"must be one of {', '.join(AFTER_THINKING)}")
        if self.max_new_tokens is not None and not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise bad("max_new_tokens", "must be an integer >= 1 or None")
        return self

    @property
    def is_soft(self) -> bool:
        return self.mode in SOFT_MODES

    @property
    def deterministic(self) -> bool:
        """True when a run draws no random numbers (so repeated samples are identical)."""
        thinking_random = self.mode in ("sampling", "dirichlet", "gumbel") and self.temperature > 0
        answer_random = self.after_thinking == "sampling" and self.after_thinking_temperature > 0
        return not (thinking_random or answer_random)

    def replace(self, **changes: Any) -> "SoftThinkingConfig":
        return dataclasses.replace(self, **changes).validate()


#: Named settings. ``default`` is this project's (SPEC §3.6.1 values, greedy answer phase);
#: ``soft_thinking`` the Soft Thinking paper's (answer sampled at T 0.6 / top-p 0.95 / top-k 30);
#: ``stochastic`` / ``stochastic_k15`` the Randomized-Soft-Thinking scripts (min-p 0 in both phases,
#: Cold Stop off, K 10 / 15, Gumbel tau 0.5, Dirichlet gamma 4).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "soft_thinking": {
        "temperature": 0.6, "top_p": 0.95, "top_k": 30, "min_p": 0.001, "max_topk": 10,
        "cold_stop_entropy": 0.01, "cold_stop_steps": 256, "entropy_normalization": "nats",
        "after_thinking": "sampling", "after_thinking_temperature": 0.6, "after_thinking_top_p": 0.95,
        "after_thinking_top_k": 30, "after_thinking_min_p": 0.0,
    },
    "stochastic": {
        "temperature": 0.6, "top_p": 0.95, "top_k": 30, "min_p": 0.0, "max_topk": 10,
        "dirichlet_gamma": 4.0, "gumbel_tau": 0.5, "cold_stop_entropy": 0.0, "entropy_normalization": "log_vocab",
        "after_thinking": "sampling", "after_thinking_temperature": 0.6, "after_thinking_top_p": 0.95,
        "after_thinking_top_k": 30, "after_thinking_min_p": 0.0,
    },
    "stochastic_k15": {
        "temperature": 0.6, "top_p": 0.95, "top_k": 30, "min_p": 0.0, "max_topk": 15,
        "dirichlet_gamma": 4.0, "gumbel_tau": 0.5, "cold_stop_entropy": 0.0, "entropy_normalization": "log_vocab",
        "after_thinking": "sampling", "after_thinking_temperature": 0.6, "after_thinking_top_p": 0.95,
        "after_thinking_top_k": 30, "after_thinking_min_p": 0.0,
    },
}


def soft_config(preset: str | None = None, **overrides: Any) -> SoftThinkingConfig:
    """A validated config from a preset name (see :data:`PRESETS`) plus field overrides."""
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"soft thinking option preset: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        base = dict(PRESETS[preset])
    base.update(overrides)
    return from_dict(SoftThinkingConfig, base, "soft")


__all__ = ["AFTER_THINKING", "ENTROPY_NORMALIZATIONS", "MODES", "PRESETS", "SoftThinkingConfig", "soft_config"]
