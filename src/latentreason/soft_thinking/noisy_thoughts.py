"""Stochastic continuous thoughts: Dirichlet / Gumbel-Softmax randomisation for a latent reasoner.

Soft Thinking randomises the *token mixture* fed back as input. A CODI-style thought is not a
token mixture but a projected hidden state, so we randomise the thought's distribution *through
the LM head* and map the change back into the hidden state (the documented choice, see
``docs/soft_thinking.md``):

1. p = the thought's LM-head distribution (softmax(z/T), top-k / top-p / min-p, top-K), as a
   vanilla soft token would see it; y = the same distribution after Dirichlet resampling or
   Gumbel-Softmax (:func:`~latentreason.soft_thinking.samplers.soft_token`);
2. the state is shifted along the output embeddings U by the difference of the two mixtures,
   h' = h + s · (Σ_i y_i U_i − Σ_i p_i U_i), which raises the logits of the tokens the noise
   favoured and lowers the others while keeping everything in h that the LM head does not read;
3. the thought fed back is the method's usual map of h' (CODI: its projection).

With ``s = 0`` (or a one-hot p) the thought is unchanged; noise is drawn from one generator per
question, so batched runs equal one-by-one runs for a seed. This gives Pass@k for a latent
reasoner (:func:`latent_sampling_study`: each question decoded ``samples`` times with noisy thoughts,
one generator per question and sample; the mean accuracy and the unbiased Pass@k per noise mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from latentreason.analysis.passk import mean_pass_at_k
from latentreason.errors import ConfigError
from latentreason.soft_thinking.samplers import derive_seed, soft_embedding, soft_token

LATENT_NOISE_MODES = ("dirichlet", "gumbel")


@dataclass
class LatentNoiseConfig:
    mode: str = "gumbel"
    temperature: float = 1.0
    top_k: int = 30
    top_p: float = 0.95
    min_p: float = 0.0
    max_topk: int = 10
    dirichlet_gamma: float = 4.0
    gumbel_tau: float = 0.5
    #: scale s of the shift along the output embeddings
    strength: float = 1.0

    def validate(self) -> None:
        if self.mode not in LATENT_NOISE_MODES:
            raise ConfigError(f"latent noise option mode: {self.mode!r} is not one of {', '.join(LATENT_NOISE_MODES)}")
        if not self.temperature > 0:
            raise ConfigError(f"latent noise option temperature: must be > 0, got {self.temperature}")
        if self.strength < 0:
            raise ConfigError(f"latent noise option strength: must be >= 0, got {self.strength}")


class StochasticThought:
    """A thought function that randomises ``base`` thoughts (see the module docstring)."""

    def __init__(self, base, head_weight: Tensor, config: LatentNoiseConfig, generators: Sequence[torch.Generator]):
        config.validate()
        self.base, self.U, self.cfg, self.generators = base, head_weight, config, list(generators)

    def __call__(self, hidden: Tensor, step: Tensor, rows: Tensor | None = None) -> Tensor:
        c = self.cfg
        rows_list = rows.tolist() if rows is not None else list(range(hidden.shape[0]))
        gens = [self.generators[r] for r in rows_list]
        logits = hidden @ self.U.T
        kw = dict(temperature=c.temperature, top_k=c.top_k, top_p=c.top_p, min_p=c.min_p, max_topk=c.max_topk,
                  dirichlet_gamma=c.dirichlet_gamma, gumbel_tau=c.gumbel_tau)
        clean = soft_token(logits, "vanilla", **kw)
        noisy = soft_token(logits, c.mode, generator=gens, **kw)
        delta = soft_embedding(noisy.weights, noisy.indices, self.U) - soft_embedding(clean.weights, clean.indices, self.U)
        return self.base(hidden + c.strength * delta.to(hidden.dtype), step, rows)


def row_generators(seed: int, sample: int, row_ids: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    gens = []
    for r in row_ids:
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(seed, "latent-sample", sample, int(r)))
        gens.append(g)
    return gens


@torch.no_grad()
def latent_sampling_study(method, examples, modes=("dirichlet", "gumbel"), samples: int = 8, ks=(1, 2, 4, 8), seed: int = 0,
                          batch_size: int = 100, config: LatentNoiseConfig | None = None) -> dict:
    """Accuracy (mean over samples) and unbiased Pass@k of a latent reasoner with noisy thoughts."""
    head = method.model.get_output_embeddings().weight
    results = {}
    for mode in modes:
        cfg = LatentNoiseConfig(**{**(config.__dict__ if config else {}), "mode": mode})
        correct = [0] * len(examples)
        for s in range(samples):
            for i in range(0, len(examples), batch_size):
                chunk = examples[i : i + batch_size]
                fn = StochasticThought(method.thought, head, cfg, row_generators(seed, s, range(i, i + len(chunk)), head.device))
                for j, (ex, g) in enumerate(zip(chunk, method.generate(chunk, thought_fn=fn))):
                    correct[i + j] += int(method.judge(ex, g).correct)
        results[mode] = {
            "accuracy": sum(correct) / (samples * len(examples)),
            "pass_at_k": {str(k): mean_pass_at_k(correct, samples, k) for k in ks if k <= samples},
            "samples": samples,
            "strength": cfg.strength,
        }
    return results
