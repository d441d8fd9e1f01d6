"""The benchmark's System-1.5 section (``results["system15_grid"]``): the test-time grid of its stage-2 entry.

The λ_depth × λ_step grid (:func:`~latentreason.methods.system15.grid.system15_grid`) runs on
validation questions; the best cell is chosen there and then evaluated on the test questions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentreason.evaluation.evaluate import evaluate
from latentreason.experiments.bench_config import BenchConfig, BenchEntry, entry_method, entry_run_config
from latentreason.methods.system15.grid import plot_grid, shortcut_ablation, system15_grid
from latentreason.training.api import load_split
from latentreason.utils import atomic_write_json


def run_system15_grid(cfg: BenchConfig, e: BenchEntry, out: Path, device, log) -> dict[str, Any]:
    """λ_depth × λ_step grid of the System-1.5 entry on **validation** questions (JSON + heatmap PNG in its
    run directory); the best cell is chosen there and then evaluated on the test questions (``best.test_*``)."""
    rc = entry_run_config(cfg, e, out)
    valid = load_split(rc, "valid")[: cfg.system15_grid]
    method = entry_method(out, e, device)
    log(f"[{e.name}] test-time grid on {len(valid)} validation questions")
    grid = system15_grid(method, valid, (0.5, 0.7, 0.8, 0.9, 0.95), (3, 4, 5, 6), batch_size=cfg.eval_batch_size)
    best = grid["best"]
    method.config.lambda_depth, method.config.lambda_step = best["lambda_depth"], best["lambda_step"]
    ev = evaluate(method, load_split(rc, "test"), batch_size=cfg.eval_batch_size, keep_records=True)
    layers = [r.get("layers_per_latent_step") for r in ev.records if r.get("layers_per_latent_step") is not None]
    grid["split"] = "valid"
    best.update(chosen_on="valid", test_accuracy=ev.metrics["accuracy"], test_n=ev.metrics["n"],
                test_latency_ms_per_question=ev.metrics["latency_ms_per_question"],
                test_layers_per_latent_step=sum(layers) / len(layers) if layers else None)
    log(f"[{e.name}] grid: best cell on validation λ_depth {best['lambda_depth']}, λ_step {best['lambda_step']}; "
        f"test accuracy {best['test_accuracy']:.3f}")
    # batch-1 timings on the latency protocol's questions (the quick demo sets none: 20)
    grid["shortcut_ablation"] = shortcut_ablation(method, load_split(rc, "test"), batch_size=cfg.eval_batch_size,
                                                  batch1_questions=cfg.latency_questions or 20)
    atomic_write_json(out / e.name / "system15-grid.json", grid)
    plot_grid(grid, out / e.name / "system15-grid.png")
    return grid
