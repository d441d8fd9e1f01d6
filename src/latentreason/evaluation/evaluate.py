"""Evaluation of any method on any examples: accuracy, lengths, latency.

``evaluate(method, examples)`` runs the method's batched generation, judges every answer
(SPEC §2.8) and measures wall-clock latency per question (device synchronised), recording the
batch size. Lengths follow SPEC §5: generated tokens, reasoning tokens before the answer
marker, latent steps and forward passes per question.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from statistics import mean, median
from typing import Any

import torch

from latentreason.data.example import Example
from latentreason.decoding.generate import Generation
from latentreason.methods.base import Method
from latentreason.progress import progress_bar


log = logging.getLogger("latentreason")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)


def run_generation(
    method: Method, examples: list[Example], batch_size: int, progress: bool = False, description: str = "eval"
) -> tuple[list[Generation], list[float]]:
    """Generations plus the wall-clock seconds of each batch."""
    was_training = method.training
    method.eval()
    gens: list[Generation] = []
    times: list[float] = []
    device = method.device
    try:
        with progress_bar(len(examples), description, enabled=progress) as bar:
            for i in range(0, len(examples), batch_size):
                chunk = examples[i : i + batch_size]
                _sync(device)
                t0 = time.perf_counter()
                gens.extend(method.generate(chunk))
                _sync(device)
                times.append(time.perf_counter() - t0)
                bar.update(len(chunk))
    finally:
        method.train(was_training)
    return gens, times


def evaluate(
    method: Method,
    examples: list[Example],
    batch_size: int = 64,
    progress: bool = False,
    keep_records: bool = True,
    warmup: bool = True,
    description: str = "eval",
    repeats: int = 1,
) -> EvalResult:
    """Accuracy, unparseable count, lengths and latency of ``method`` on ``examples``.

    Latency is the median over ``repeats`` full passes (after one warm-up batch when ``warmup``).
    """
    if warmup and examples:
        run_generation(method, examples[: min(len(examples), batch_size, 8)], batch_size)
    gens, times = run_generation(method, examples, batch_size, progress, description)
    totals = [sum(times)]
    for _ in range(max(0, repeats - 1)):
        totals.append(sum(run_generation(method, examples, batch_size)[1]))
    total_s = median(totals)
    records = []
    correct = parsed = 0
    for ex, g in zip(examples, gens):
        j = method.judge(ex, g)
        correct += j.correct
        parsed += j.parsed
        if keep_records:
            records.append(
                {
                    "question": ex.question,
                    "gold": ex.answer,
                    "output": g.text,
                    "prediction": j.prediction,
                    "correct": j.correct,
                    "generated_tokens": g.generated_tokens,
                    "reasoning_tokens": g.reasoning_tokens,
                    "latent_steps": g.latent_steps,
                    "forward_passes": g.forward_passes,
                    **({"meta": ex.meta} if ex.meta else {}),
                    **g.extra,
                }
            )
    n = len(examples)
    truncated = sum(g.truncated for g in gens)
    if truncated:
        log.warning("%s: %d of %d generations hit the generation limit (method_args.max_new_tokens=%s) before their "
                    "answer was complete; raise it (eval --max-new-tokens) if the data needs longer outputs",
                    description, truncated, n, method.config.max_new_tokens)
    gen_tokens = sum(g.generated_tokens for g in gens)
    metrics = {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "correct": correct,
        "unparseable": n - parsed,
        "truncated": truncated,
        "mean_generated_tokens": mean(g.generated_tokens for g in gens) if gens else 0.0,
        "mean_reasoning_tokens": mean(g.reasoning_tokens for g in gens) if gens else 0.0,
        "mean_latent_steps": mean(g.latent_steps for g in gens) if gens else 0.0,
        "mean_forward_passes": mean(g.forward_passes for g in gens) if gens else 0.0,
        "latency_ms_per_question": 1000.0 * total_s / n if n else 0.0,
        "median_batch_ms": 1000.0 * median(times) if times else 0.0,
        "batch_size": batch_size,
        "tokens_per_s": gen_tokens / total_s if total_s > 0 else 0.0,
        "eval_seconds": total_s,
        "latency_repeats": len(totals),
        "device": str(method.device),
        "dtype": str(next(method.model.parameters()).dtype).replace("torch.", ""),
    }
    return EvalResult(metrics, records)


def validation_metrics(method: Method, examples: list[Example], batch_size: int) -> dict[str, Any]:
    """What the trainer validates with (:class:`~latentreason.training.trainer.Trainer`): accuracy and lengths of
    ``method`` on ``examples``, without records or warm-up."""
    return evaluate(method, examples, batch_size=batch_size, keep_records=False, warmup=False).metrics


def summarize_records(records: list[dict[str, Any]], limit: int = 5) -> list[dict[str, Any]]:
    return [asdict(r) if hasattr(r, "__dataclass_fields__") else r for r in records[:limit]]
