"""``latentreason analyze probe | system15-grid | soft-thinking``: the analyses of trained checkpoints.

``analyze_app`` is registered by :mod:`latentreason.cli` as ``latentreason analyze``:

* ``probe`` decodes every continuous thought of a latent checkpoint through the LM head;
* ``system15-grid`` sweeps System-1.5's λ_depth × λ_step at test time;
* ``soft-thinking`` runs the soft-thinking study (Pass@k, ROUGE-L vs greedy, JS divergences,
  logit lens) with JSON and plots.

Bad input raises a :class:`~latentreason.errors.LatentReasonError` subclass, which the main entry
point prints on one line (exit status 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from latentreason.cli_soft import build_config, fmt_value, load_inputs, parse_ints, parse_modes, wide_err, wide_out
from latentreason.data.registry import load_dataset
from latentreason.errors import LatentReasonError
from latentreason.reporting.display import err, fmt, out

analyze_app = typer.Typer(help="Analyses: thought probing, soft-thinking study, System-1.5 grid.", no_args_is_help=True)


@analyze_app.command("probe")
def analyze_probe(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A latent-method checkpoint (CODI, Coconut, ...)."),
    dataset: str = typer.Option("modchain", "--dataset", "-d", help="Named data set or file path."),
    split: str = typer.Option("test", "--split"),
    limit: int = typer.Option(100, "--limit", "-n", help="Questions to probe."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Tokens kept per thought."),
    show: int = typer.Option(3, "--show", help="Examples printed in full."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
    output: Optional[Path] = typer.Option(None, "--output", help="JSON file (default: probe-DATASET.json beside the checkpoint)."),
) -> None:
    """Decode every continuous thought through the LM head: top-k tokens, probing scores, norms.

    Examples:

    * `latentreason analyze probe --checkpoint runs/demo/codi --limit 200 --top-k 5`
    * `latentreason analyze probe --checkpoint runs/codi --dataset gsm8k_aug --data-dir ../shared/data`
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.analysis.probe import probe_thoughts
    from latentreason.training.checkpoint import checkpoint_task, load_method, resolve_checkpoint
    from latentreason.utils import atomic_write_json

    ckpt = resolve_checkpoint(checkpoint)
    method = load_method(ckpt)
    if not hasattr(method, "latent_prompts"):
        raise LatentReasonError(f"{ckpt}: method {method.name!r} has no continuous thoughts to probe")
    examples = load_dataset(dataset, split, data_dir=data_dir, task=checkpoint_task(ckpt, dataset), limit=limit)
    res = probe_thoughts(method, examples, top_k=top_k)
    for r in res["examples"][:show]:
        out.print(f"[bold]{r['question']}[/bold]  results {r['results']}  -> {r['output']}", highlight=False)
        for th in r["thoughts"]:
            tops = "  ".join(f"{t!r}:{p:.2f}" for t, p in th["top"])
            out.print(f"   {th['position']:>10}  |h|={th['norm']:.1f}  {tops}", highlight=False)
    t = Table(title="thought probing")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in res["summary"].items():
        t.add_row(k, json.dumps(v) if isinstance(v, dict) else fmt(v))
    out.print(t)
    name = Path(dataset).stem if os.sep in dataset or Path(dataset).suffix else dataset
    target = output or (ckpt.parent if ckpt.name == "model" else ckpt) / f"probe-{name}.json"
    atomic_write_json(target, res)
    err.print(f"written to {target}")


@analyze_app.command("system15-grid")
def analyze_system15_grid(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A System-1.5 stage-2 checkpoint."),
    dataset: str = typer.Option("modchain", "--dataset", "-d", help="Named data set or file path."),
    split: str = typer.Option("test", "--split"),
    limit: int = typer.Option(200, "--limit", "-n", help="Questions per cell."),
    lambda_depth: str = typer.Option("0.3,0.5,0.7,0.8,0.9,0.95", "--lambda-depth", help="Router thresholds (rows)."),
    lambda_step: str = typer.Option("1,2,3,4,5,6", "--lambda-step", help="Numbers of latent steps (columns)."),
    batch_size: int = typer.Option(100, "--batch-size", "-b"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
    output: Optional[Path] = typer.Option(None, "--output", help="JSON file (default: system15-grid.json beside the checkpoint)."),
) -> None:
    """Sweep λ_depth × λ_step at test time: accuracy, latency and layers per latent step (JSON + heatmap PNG).

    Examples:

    * `latentreason analyze system15-grid --checkpoint runs/demo/system15`
    * `latentreason analyze system15-grid --checkpoint runs/s15 --lambda-depth 0.5,0.9 --lambda-step 2,4 --limit 100`
    """
    try:
        depths = [float(x) for x in lambda_depth.split(",") if x.strip()]
        steps = [int(x) for x in lambda_step.split(",") if x.strip()]
    except ValueError:
        raise LatentReasonError("--lambda-depth takes numbers and --lambda-step integers, comma-separated") from None
    if not depths or not steps or any(not 0 <= d <= 1 for d in depths) or any(s < 0 for s in steps):
        raise LatentReasonError("--lambda-depth values must lie in [0, 1] and --lambda-step values be >= 0")
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.methods.system15.grid import plot_grid, system15_grid
    from latentreason.training.checkpoint import checkpoint_task, load_method, resolve_checkpoint
    from latentreason.utils import atomic_write_json

    ckpt = resolve_checkpoint(checkpoint)
    method = load_method(ckpt)
    if method.name != "system15":
        raise LatentReasonError(f"{ckpt}: a {method.name!r} checkpoint; the grid needs a system15 one")
    examples = load_dataset(dataset, split, data_dir=data_dir, task=checkpoint_task(ckpt, dataset), limit=limit)
    grid = system15_grid(method, examples, depths, steps, batch_size)
    base = output or (ckpt.parent if ckpt.name == "model" else ckpt) / "system15-grid.json"
    atomic_write_json(base, grid)
    png = plot_grid(grid, Path(base).with_suffix(".png"))
    t = Table(title=f"System-1.5 grid: accuracy (ms/question) on {len(examples)} questions")
    t.add_column("λ_depth \\ λ_step")
    for s_ in steps:
        t.add_column(str(s_), justify="right")
    for i, d in enumerate(depths):
        t.add_row(str(d), *[f"{grid['accuracy'][i][j]:.3f} ({grid['latency_ms_per_question'][i][j]:.2f})" for j in range(len(steps))])
    out.print(t)
    b = grid["best"]
    err.print(f"best cell: λ_depth {b['lambda_depth']}, λ_step {b['lambda_step']}: accuracy {b['accuracy']:.3f}, "
              f"{b['latency_ms_per_question']:.2f} ms/question, {b['layers_per_latent_step']:.2f} layers per latent step", markup=False)
    err.print(f"written to {base} and {png}", markup=False)


@analyze_app.command("soft-thinking")
def analyze_soft_thinking_cmd(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A CoT run directory, its model/ or a checkpoints/step-N directory."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for soft_thinking.json and the PNG plots."),
    samples: int = typer.Option(8, "--samples", help="Samples per question for the stochastic modes."),
    k: str = typer.Option("1,2,4,8", "--k", help="Comma-separated k of Pass@k (each <= --samples)."),
    modes: str = typer.Option("all", "--modes", help="Comma-separated modes, or all (greedy,sampling,vanilla,dirichlet,gumbel)."),
    dataset: str = typer.Option("modchain", "--dataset", "-d", help="Named data set or file path."),
    split: str = typer.Option("test", "--split", help="train | valid | test."),
    limit: Optional[int] = typer.Option(200, "--limit", "-n", help="Use the first N questions."),
    seed: int = typer.Option(0, "--seed", help="Base seed (sample s, row i: generator seeded by (seed, s, i))."),
    batch_size: int = typer.Option(100, "--batch-size", "-b", help="Questions decoded together."),
    rouge_tokens: str = typer.Option("whitespace", "--rouge-tokens", help="whitespace | char (both are written to the JSON)."),
    horizons: str = typer.Option("1", "--horizons", help="JS / logit-lens horizons, e.g. 1,2 (1 = next token, as in SPEC §4.1)."),
    js_limit: Optional[int] = typer.Option(None, "--js-limit", help="Questions in the JS probe run (default: all)."),
    lens_limit: int = typer.Option(50, "--lens-limit", help="Branching points (one per question) for the logit lens."),
    preset: Optional[str] = typer.Option(None, "--preset", help="default | soft_thinking | stochastic | stochastic_k15."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Sampler options: --set temperature=0.8 --set max_topk=15."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named data sets."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
) -> None:
    """Token vs soft vs stochastic-soft thinking: accuracy, Pass@k, ROUGE-L vs greedy, JS divergences, logit lens.

    Writes `OUT/soft_thinking.json` and plots (`pass_at_k.png`, `js_divergence.png`,
    `logit_lens.png`, `rouge_l.png`).

    Examples:

    * `latentreason analyze soft-thinking --checkpoint runs/demo/cot --samples 8 --k 1,2,4,8 --out runs/demo/soft`
    * `latentreason analyze soft-thinking --checkpoint runs/cot --limit 100 --modes vanilla,gumbel --horizons 1,2 --out runs/soft`
    * `latentreason analyze soft-thinking --checkpoint runs/cot --preset stochastic --set gumbel_tau=0.6 --out runs/soft-tau06`
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.soft_thinking.study import soft_thinking_study

    mode_list = parse_modes(modes)
    ks = parse_ints(k, "--k")
    hs = parse_ints(horizons, "--horizons")
    base = build_config(preset, set_)
    ckpt, meta, method, examples = load_inputs(checkpoint, dataset, split, limit, data_dir, device, threads)
    res = soft_thinking_study(method, examples, modes=mode_list, samples=samples, ks=ks, seed=seed, out_dir=out_dir,
                              config=base, batch_size=batch_size, rouge_tokens=rouge_tokens, js_limit=js_limit,
                              lens_limit=lens_limit, horizons=hs, log=lambda s: wide_err.print(s, highlight=False),
                              model_info={"checkpoint": str(ckpt), "method": meta.get("method")})
    t = Table(title=escape(f"soft-thinking study — {dataset} [{split}], {len(examples)} questions × {samples} samples"))
    t.add_column("mode")
    for col in ["accuracy", *[f"pass@{x}" for x in sorted(set(ks))], "ROUGE-L vs greedy", f"JS(soft‖top-1), h={hs[0]}",
                f"JS(soft‖top-2), h={hs[0]}", "thinking entropy", "softness", "randomness", "reasoning tok", "ms/question"]:
        t.add_column(col, justify="right")
    for m, r in res.items():
        t.add_row(m, fmt_value(r["accuracy"]), *[fmt_value(r["pass_at_k"][str(x)]) for x in sorted(set(ks))], fmt_value(r["rouge_l_vs_greedy"]),
                  fmt_value(r["js_top1"]), fmt_value(r["js_top2"]), fmt_value(r["mean_thinking_entropy"]), fmt_value(r["softness"]),
                  fmt_value(r["randomness"]), fmt_value(r["mean_reasoning_tokens"]), fmt_value(r["latency_ms_per_question"]))
    wide_out.print(t)
    wide_err.print("thinking entropy: mean entropy (nats) of the model's own next-token distribution over the thinking steps; "
               "softness / randomness (SPEC §4.2): entropy of the soft inputs' weights / JS to the un-noised soft token")
    wide_err.print(f"results and plots written to {out_dir} (soft_thinking.json)")

