"""Multi-seed ablations of the project's latent recipes, on the models of a multi-seed demo run.

    python benchmarks/seed_ablation.py --run runs/demo5 --variants codi_v1,codi_cosine   # CODI's ablation
    python benchmarks/seed_ablation.py --run runs/demo5 --variants coconut_v1              # Coconut's
    python benchmarks/seed_ablation.py --run runs/demo5 --variants system15_hand,system15_tol005

For every seed directory of the run (``RUN/seed-S``, or RUN itself for a one-seed run), each variant
is added to the demo's benchmark as an extra entry and trained from the same parent model the
demo's row starts from (the CoT-SFT model of that seed, or its CODI model for System-1.5), so a
variant differs from the demo's row in the one thing it names. Finished entries are reused. Prints a
markdown table: accuracy and the share of the No-CoT→CoT gap closed, per seed, with mean ± std and
min, beside the demo's own row. Each variant costs one training per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, stdev

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: name -> (row of the demo it varies, method, method_args, train overrides, parent entry)
WSD = {"max_steps": 1500, "lr": 1e-3, "warmup_steps": 20, "schedule": "wsd", "decay_steps": 150, "eval_every": 100,
       "decay_at_valid_accuracy": 0.9}
COSINE = {"lr": 1e-3, "warmup_steps": 20}
VARIANTS: dict[str, tuple[str, str, dict, dict, str]] = {
    # CODI: the recipe before this round (no step supervision, layers 1..L aligned, 600 cosine steps)
    "codi_v1": ("codi", "codi", {"preset": "default_task_v1"}, {**COSINE, "max_steps": 600}, "cot"),
    # + step supervision and alignment from layer 2, still a fixed cosine schedule of 900 steps
    "codi_cosine": ("codi", "codi", {"preset": "default_task"}, {**COSINE, "max_steps": 900}, "cot"),
    # the demo's recipe without step supervision
    "codi_no_step_ce": ("codi", "codi", {"preset": "default_task", "step_ce_weight": 0.0}, WSD, "cot"),
    # Coconut: the preset before this round (no step supervision), 700 cosine steps
    "coconut_v1": ("coconut", "coconut", {"preset": "default_task", "step_ce_weight": 0.0},
                   {**COSINE, "max_steps": 700}, "cot"),
    # System-1.5: the first version's hand schedule; learned targets with a tighter tolerance
    "system15_hand": ("system15", "system15", {"preset": "hand_schedule"},
                      {"max_steps": 300, "lr": 3e-3, "warmup_steps": 20}, "codi"),
    "system15_tol005": ("system15", "system15", {"preset": "default_task", "exit_tolerance": 0.05},
                        {"max_steps": 300, "lr": 3e-3, "warmup_steps": 20}, "codi"),
}


def seed_dirs(run: Path) -> list[tuple[int, Path]]:
    res = json.loads((run / "results.json").read_text(encoding="utf-8"))
    dirs = res.get("seed_dirs") or {}
    if dirs:
        return [(int(s), run / d) for s, d in dirs.items()]
    return [(int((res.get("seeds") or [0])[0]), run)]


def stats(vals: list[float]) -> str:
    if not vals:
        return "–"
    sd = stdev(vals) if len(vals) > 1 else 0.0
    return f"{mean(vals):.3f} ± {sd:.3f} (min {min(vals):.3f})"


def main(argv: list[str] | None = None) -> int:
    from latentreason.experiments.bench import run_bench_seed
    from latentreason.experiments.bench_config import BenchEntry
    from latentreason.experiments.demo import demo_config
    from latentreason.experiments.seeds import add_gap_closed

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished (multi-seed) demo run directory")
    ap.add_argument("--variants", required=True, help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--reuse-stale", action="store_true", help="reuse the run's models even if trained by other code")
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    per: dict[str, list[tuple[int, float, float | None]]] = {}
    for seed, where in seed_dirs(args.run):
        cfg = demo_config()
        cfg.seed, cfg.soft_thinking, cfg.system15_grid, cfg.adaptive_from, cfg.latency_repeats = seed, None, 0, None, 1
        for v in names:
            base, method, margs, train, parent = VARIANTS[v]
            cfg.entries.append(BenchEntry(v, method, dict(margs), train=dict(train), init_from=parent))
        rows = {base for v in names for base in (VARIANTS[v][0],)}
        res = run_bench_seed(cfg, where, only=names + sorted(rows), progress=False, reuse_stale=args.reuse_stale,
                             log=lambda s: print(s, file=sys.stderr, flush=True))
        add_gap_closed(res["methods"])
        for name in names + sorted(rows):
            r = res["methods"][name]
            per.setdefault(name, []).append((seed, r["accuracy"], r.get("gap_closed")))
    seeds = [s for s, _, _ in next(iter(per.values()))]
    print("| row | " + " | ".join(f"seed {s}" for s in seeds) + " | accuracy mean ± std (min) | gap closed mean ± std (min) |")
    print("|" + "---|" * (len(seeds) + 3))
    for name, vals in per.items():
        cells = [f"{a:.3f}" + (f" ({100 * g:.0f} %)" if g is not None else "") for _, a, g in vals]
        gaps = [g for _, _, g in vals if g is not None]
        print(f"| {name} | " + " | ".join(cells) + f" | {stats([a for _, a, _ in vals])} | {stats(gaps)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
