"""Pass@k of a latent reasoner: sample its continuous thoughts with Dirichlet / Gumbel noise (this project's extension).

:func:`latent_sampling_study` decodes every question ``samples`` times with noisy thoughts
(:class:`~latentreason.decoding.stochastic_latent.StochasticThought`, one generator per question
and sample) and reports the mean accuracy and the unbiased Pass@k per noise mode
(``docs/soft_thinking.md``, "Noisy continuous thoughts").
"""

from __future__ import annotations

import torch

from latentreason.analysis.passk import mean_pass_at_k
from latentreason.decoding.stochastic_latent import LatentNoiseConfig, StochasticThought, row_generators


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


__all__ = ["latent_sampling_study"]
