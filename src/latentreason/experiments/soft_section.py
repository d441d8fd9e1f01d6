"""The benchmark's soft-thinking section (``results["soft_thinking"]``, ``SoftStudyConfig``).

The soft-thinking study (:func:`~latentreason.soft_thinking.study.soft_thinking_study`: token vs
soft vs stochastic-soft thinking) on a CoT entry's model — its final model or a training snapshot
(``checkpoint_step``) — plus this project's extension, Dirichlet / Gumbel noise on a latent
entry's continuous thoughts (:func:`~latentreason.soft_thinking.noisy_thoughts.latent_sampling_study`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentreason.errors import CheckpointError
from latentreason.experiments.bench_config import BenchConfig, SoftStudyConfig, entry_run_config
from latentreason.soft_thinking.config import soft_config
from latentreason.soft_thinking.noisy_thoughts import latent_sampling_study
from latentreason.soft_thinking.study import soft_thinking_study
from latentreason.training.api import load_split
from latentreason.training.checkpoint import load_method


def run_soft_study(cfg: BenchConfig, st: SoftStudyConfig, out: Path, names: set[str], device, log) -> dict[str, Any]:
    """Soft / stochastic soft thinking on the CoT model, plus noisy thoughts of the latent model."""
    entry = next(e for e in cfg.entries if e.name == st.entry)
    test = load_split(entry_run_config(cfg, entry, out), "test")[: st.limit]
    if st.checkpoint_step is None:
        ckpt, what = out / st.entry / "model", f"{st.entry} (final model)"
    else:
        ckpt, what = out / st.entry / "checkpoints" / f"step-{st.checkpoint_step:08d}", f"{st.entry} at step {st.checkpoint_step}"
        if not (ckpt / "method.json").exists():
            raise CheckpointError(f"soft_thinking.checkpoint_step={st.checkpoint_step}: {ckpt} does not exist; the entry "
                                  f"{st.entry!r} must save it (set its train.save_every to {st.checkpoint_step})")
    log(f"[soft thinking] {len(test)} questions x {st.samples} samples on {what}")
    cot = load_method(ckpt, device=device)
    res = soft_thinking_study(cot, test, samples=st.samples, ks=st.ks, seed=st.seed, out_dir=out / "soft_thinking",
                              config=soft_config(**st.sampler), threads=st.threads, horizons=st.horizons,
                              lens_limit=st.lens_limit, log=log,
                              model_info={"entry": st.entry, "checkpoint": str(ckpt.relative_to(out)),
                                          "step": st.checkpoint_step})
    del cot
    for row in res.values():
        row["model"] = what
    if st.latent_entry and st.latent_entry in names:
        lat = load_method(out / st.latent_entry / "model", device=device)
        saved = torch.get_num_threads()
        if st.threads:
            torch.set_num_threads(st.threads)
        try:
            noisy = latent_sampling_study(lat, test, samples=st.samples, ks=st.ks, seed=st.seed)
        finally:
            torch.set_num_threads(saved)
        for mode, row in noisy.items():
            res[f"{st.latent_entry}_{mode}"] = {
                "accuracy": row["accuracy"], "pass_at_k": row["pass_at_k"], "rouge_l_vs_greedy": None, "js_top1": None,
                "js_top2": None, "js_horizon": None, "mean_thinking_entropy": None, "softness": None, "randomness": None,
                # noise on a latent model's continuous thoughts: this project's extension, not a paper's method
                "extension": f"project extension: {mode} noise on {st.latent_entry}'s continuous thoughts "
                             f"(strength {row['strength']}), soft_thinking/noisy_thoughts.py",
                "model": f"{st.latent_entry} (final model)"}
    return res
