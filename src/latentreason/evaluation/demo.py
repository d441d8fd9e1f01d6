"""``latentreason demo``: the benchmark runner on the embedded default task.

The demo trains a tiny GPT-2-style model from scratch for every method on the procedural
modular-arithmetic task (``data/procedural.py``), evaluates all methods on the same 500 test
questions and writes ``OUT/results.json`` plus one run directory per method. Latent methods start
from the demo's CoT-SFT model where their papers do, so nothing is trained twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentreason.data.procedural import TaskConfig
from latentreason.evaluation.bench import BenchConfig, BenchEntry, run_bench
from latentreason.models.backbone import ModelConfig
from latentreason.training.run_config import TrainConfig


def demo_config(quick: bool = False) -> BenchConfig:
    """The demo's settings; ``quick`` is a much smaller version used by the tests."""
    if quick:
        task = TaskConfig(n_train=2000, n_valid=50, n_test=50)
        model = ModelConfig(n_layer=2, n_embd=64, n_head=2)
        steps = {"cot": 40, "nocot": 40}
        test_limit, valid_limit = 50, 50
    else:
        task = TaskConfig()
        model = ModelConfig()
        steps = {"cot": 500, "nocot": 500}
        test_limit, valid_limit = None, 200
    train = TrainConfig(batch_size=32, lr=2e-3, warmup_steps=30, log_every=25, eval_every=0, eval_batch_size=200)
    entries = [
        BenchEntry("cot", "cot", train={"max_steps": steps["cot"]}),
        BenchEntry("nocot", "nocot", train={"max_steps": steps["nocot"]}),
    ]
    return BenchConfig(task=task, model=model, train=train, entries=entries, eval_batch_size=100,
                       test_limit=test_limit, valid_limit=valid_limit)


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, only: list[str] | None = None,
             fresh: bool = False, progress: bool = True) -> dict[str, Any]:
    from latentreason.cli import _print_table, err

    cfg = demo_config(quick)
    results = run_bench(cfg, out_dir, only=only, fresh=fresh, progress=progress, log=lambda s: err.print(s, highlight=False))
    _print_table(results["methods"], f"demo on the embedded default task ({results['task']['n_steps']}-step modular chains)")
    err.print(f"results: {Path(out_dir) / 'results.json'} (total {results['total_seconds']:.0f} s)")
    return results
