"""System-1.5's shortcuts off, alone and together on a trained model: accuracy, layers run and reused, wall-clock.

    python benchmarks/system15_shortcuts.py --run runs/demo3/seed-0
    python benchmarks/system15_shortcuts.py --run runs/demo3/seed-0 --threads 1 --questions 100

Loads ``RUN/system15/model`` at the test-time cell its demo chose on validation (``system15-grid.json``:
λ_depth, λ_step) and runs the demo's shortcut ablation
(:func:`~latentreason.methods.system15.grid.shortcut_ablation`) on the test questions: the stage-1 model it
starts from (shortcuts off), the depth shortcut alone, the step shortcut alone, both — accuracy, decoder layers
run and bottom layers reused per latent step, ms per question at the demo's batch size and at batch 1 (the
four configurations taking turns per question, median of 3 rounds). Re-times a finished run with the current
code without retraining. One markdown table; quote ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    import torch

    from latentreason.methods.system15.grid import shortcut_ablation
    from latentreason.training.api import load_split
    from latentreason.training.checkpoint import load_method
    from latentreason.training.run_config import load_run_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a demo run directory (one seed) with system15")
    ap.add_argument("--questions", type=int, default=100, help="test questions timed at batch 1")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = args.run / "system15"
    method = load_method(run / "model")
    grid = run / "system15-grid.json"
    if grid.exists():
        best = json.loads(grid.read_text())["best"]
        method.config.lambda_depth, method.config.lambda_step = best["lambda_depth"], best["lambda_step"]
    rc = load_run_config(run / "run_config.json")
    test = load_split(rc, "test")
    res = shortcut_ablation(method, test, batch_size=args.batch_size, batch1_questions=args.questions)
    cfg = method.config
    print(f"{args.run}: λ_depth {cfg.lambda_depth}, λ_step {cfg.lambda_step}, {res['n']} test questions, "
          f"batch 1 on {res['batch1_questions']}, {torch.get_num_threads()} thread(s)")
    print("| shortcuts | accuracy | layers run per latent step | layers reused per latent step "
          f"| ms / question (batch {args.batch_size}) | ms / question (batch 1) |")
    print("|---|---|---|---|---|---|")
    for name in ("none", "depth", "step", "both"):
        r = res[name]
        print(f"| {name} | {r['accuracy']:.3f} | {r['layers_per_latent_step']:.2f} | "
              f"{r['reused_layers_per_latent_step']:.2f} | {r['latency_ms_per_question']:.3f} | "
              f"{r['batch1_ms_per_question']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
