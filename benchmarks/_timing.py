"""Shared timing helpers of the benchmark scripts (median of repeated wall-clock runs)."""

from __future__ import annotations

import time
from typing import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call of ``fn``: the median of ``repeats`` timed calls after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def train_step_fn(opt: torch.optim.Optimizer) -> Callable[[torch.nn.Module, dict], None]:
    """One training step (zero_grad, forward, backward, optimiser step) of a method on a batch."""

    def step(method: torch.nn.Module, batch: dict) -> None:
        opt.zero_grad()
        method(batch)["loss"].backward()
        opt.step()

    return step


def cot_baseline(batch_size: int):
    """The shared set-up of the training-cost benchmarks: ``batch_size`` training questions of the default
    task, a fresh default tiny-gpt2 backbone, CoT-SFT on it and its collated batch."""
    import transformers

    transformers.logging.set_verbosity_error()
    from latentreason.data.registry import load_dataset
    from latentreason.methods.cot import CoT
    from latentreason.models.backbone import ModelConfig, load_backbone

    exs = load_dataset("modchain", "train", limit=batch_size)
    bb = load_backbone(ModelConfig(), seed=0)
    cot = CoT(bb)
    return exs, bb, cot, cot.collate([cot.features(t) for t in cot.prepare(exs)])
