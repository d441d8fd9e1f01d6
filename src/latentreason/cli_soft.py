"""``latentreason soft-think``: Soft Thinking decoding (SPEC §3.6) of a checkpoint's questions, per mode.

``soft_app`` holds ``soft-think`` (registered by ``latentreason.cli``): decode a checkpoint's
questions with one or more thinking modes and report accuracy, tokens, soft steps and latency per
mode. The helpers here (modes, sampler settings, checkpoint and questions) also serve
``latentreason analyze soft-thinking`` (:mod:`latentreason.cli_analyze`).

The commands raise :class:`~latentreason.errors.LatentReasonError` subclasses for bad input; the
main entry point prints them on one line and exits with status 2.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from statistics import mean
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from latentreason.config import parse_override
from latentreason.data.registry import load_dataset
from latentreason.errors import ConfigError

soft_app = typer.Typer(help="Soft Thinking decoding (training-free) on any trained CoT checkpoint.", add_completion=False,
                       rich_markup_mode="markdown")

#: consoles of the soft-thinking commands (160 columns: the study's table is wide)
wide_out = Console(width=160)
wide_err = Console(stderr=True, width=160)


# --------------------------------------------------------------------------- helpers
def parse_modes(text: str) -> list[str]:
    """``"greedy,vanilla"`` -> ``["greedy", "vanilla"]``; ``"all"`` -> every mode."""
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.soft_thinking.config import MODES

    if text.strip() == "all":
        return list(MODES)
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise ConfigError("--mode: give at least one mode")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"--mode: unknown mode {m!r}; valid: {', '.join(MODES)} (or all)")
    if len(set(modes)) != len(modes):
        raise ConfigError(f"--mode: repeated mode in {text!r}")
    return modes


def parse_ints(text: str, option: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise ConfigError(f"{option}: expected comma-separated integers, got {text!r}")
    return vals


def build_config(preset: Optional[str], set_: list[str], **options: Any):
    """A validated :class:`SoftThinkingConfig` from a preset, explicit options (None = unset) and ``--set``."""
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.soft_thinking.config import soft_config

    overrides = {k: v for k, v in options.items() if v is not None}
    for item in set_:
        keys, value = parse_override(item)
        key = ".".join(keys).removeprefix("soft.")
        overrides[key] = value
    return soft_config(preset, **overrides)


def load_inputs(checkpoint: str, dataset: str, split: str, limit: Optional[int], data_dir: Optional[str], device: str,
                threads: Optional[int]):
    """Load the method (on ``device``) and the examples; the procedural task follows the checkpoint's config."""
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    import torch

    from latentreason.training.checkpoint import checkpoint_task, load_method, read_method_meta, resolve_checkpoint
    from latentreason.utils import pick_device

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    ckpt = resolve_checkpoint(checkpoint)
    meta = read_method_meta(ckpt)
    examples = load_dataset(dataset, split, data_dir=data_dir, task=checkpoint_task(ckpt, dataset), limit=limit)
    if not examples:
        raise ConfigError(f"--dataset {dataset} [{split}]: no examples")
    method = load_method(ckpt, device=pick_device(device))
    return ckpt, meta, method, examples


def fmt_value(v: Any) -> str:
    """A table cell: floats with 3 decimals, None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


# --------------------------------------------------------------------------- soft-think
@soft_app.command("soft-think")
def soft_think_cmd(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A CoT run directory, its model/ or a checkpoints/step-N directory."),
    mode: str = typer.Option("vanilla", "--mode", "-m", help="greedy | sampling | vanilla | dirichlet | gumbel; comma-separated for several, or all."),
    dataset: str = typer.Option("modchain", "--dataset", "-d", help="Named data set or file path."),
    split: str = typer.Option("test", "--split", help="train | valid | test."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Use the first N questions."),
    batch_size: int = typer.Option(100, "--batch-size", "-b", help="Questions decoded together."),
    seed: int = typer.Option(0, "--seed", help="Noise seed (row i draws from a generator seeded by (seed, i))."),
    preset: Optional[str] = typer.Option(None, "--preset", help="default | soft_thinking | stochastic | stochastic_k15."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Thinking temperature T (default 0.6; 0 = greedy)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Top-p in (0, 1] (default 0.95)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Top-k, 0 = off (default 30)."),
    min_p: Optional[float] = typer.Option(None, "--min-p", help="Min-p (default 0.001)."),
    max_topk: Optional[int] = typer.Option(None, "--max-topk", help="K: entries kept in a soft token (default 10)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Dirichlet concentration scale (default 4)."),
    tau: Optional[float] = typer.Option(None, "--tau", help="Gumbel-Softmax temperature (default 0.5)."),
    cold_stop_entropy: Optional[float] = typer.Option(None, "--cold-stop-entropy", help="Cold Stop threshold (default 0.01; 0 = off)."),
    cold_stop_steps: Optional[int] = typer.Option(None, "--cold-stop-steps", help="Cold Stop: consecutive low-entropy steps (default 256)."),
    entropy_normalization: Optional[str] = typer.Option(None, "--entropy-normalization", help="nats (default) | log_vocab (H / ln V)."),
    think_end: Optional[str] = typer.Option(None, "--think-end", help="String that ends thinking (default: the answer marker, e.g. ####)."),
    max_thinking_tokens: Optional[int] = typer.Option(None, "--max-thinking-tokens", help="Thinking budget in tokens (default: none)."),
    after_thinking: Optional[str] = typer.Option(None, "--after-thinking", help="greedy (default) | sampling."),
    after_thinking_temperature: Optional[float] = typer.Option(None, "--after-thinking-temperature", help="Answer-phase temperature when sampling (default 0.6)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Generation limit (default: the checkpoint's)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Any other option: --set after_thinking_top_p=0.9 --set max_thinking_tokens=16."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named data sets."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write metrics and every output to this JSON file."),
) -> None:
    """Decode with Soft Thinking / Stochastic Soft Thinking and report accuracy, tokens and latency per mode.

    During thinking (until the visible top-1 stream writes the answer marker) each input is the
    probability-weighted mix of the top-K token embeddings; the answer is decoded discretely.

    Examples:

    * `latentreason soft-think --checkpoint runs/demo/cot --mode vanilla --limit 200`
    * `latentreason soft-think --checkpoint runs/demo/cot --mode greedy,sampling,vanilla,dirichlet,gumbel --limit 200`
    * `latentreason soft-think --checkpoint runs/cot --mode gumbel --tau 0.5 --max-topk 15 --seed 1`
    * `latentreason soft-think --checkpoint runs/cot --mode vanilla --preset soft_thinking --cold-stop-steps 8`
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.soft_thinking.method import soft_think
    from latentreason.utils import atomic_write_json, env_info

    modes = parse_modes(mode)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    base = build_config(preset, set_, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, max_topk=max_topk,
                        dirichlet_gamma=gamma, gumbel_tau=tau, cold_stop_entropy=cold_stop_entropy,
                        cold_stop_steps=cold_stop_steps, entropy_normalization=entropy_normalization, think_end=think_end,
                        max_thinking_tokens=max_thinking_tokens, after_thinking=after_thinking,
                        after_thinking_temperature=after_thinking_temperature, max_new_tokens=max_new_tokens)
    ckpt, meta, method, examples = load_inputs(checkpoint, dataset, split, limit, data_dir, device, threads)
    soft_think(method, examples[: min(8, len(examples))], base.replace(mode=modes[0]))  # warm-up
    rows, records = _decode_modes(method, examples, base, modes, seed, batch_size)
    t = Table(title=escape(f"soft thinking — {dataset} [{split}], {len(examples)} questions, seed {seed}"))
    heads = {"accuracy": "accuracy", "mean_reasoning_tokens": "reasoning tok", "mean_generated_tokens": "generated tok",
             "mean_soft_steps": "soft steps", "cold_stops": "cold stops", "latency_ms_per_question": "ms/question"}
    t.add_column("mode")
    for h in heads.values():
        t.add_column(h, justify="right")
    for m, r in rows.items():
        t.add_row(m, *[fmt_value(r[k]) for k in heads])
    wide_out.print(t)
    if output is not None:
        atomic_write_json(output, {"checkpoint": str(ckpt), "method": meta["method"], "dataset": dataset, "split": split,
                                       "seed": seed, "config": dataclasses.asdict(base), "metrics": rows, "records": records,
                                       "env": env_info(method.device)})
        wide_err.print(f"results written to {output}")


def _decode_modes(method, examples, base, modes: list[str], seed: int,
                  batch_size: int) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Each mode's metrics row and per-question records (one pass over the questions per mode)."""
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.soft_thinking.study import run_mode

    rows: dict[str, dict[str, Any]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for m in modes:
        cfg = base.replace(mode=m)
        outs, secs = run_mode(method, examples, cfg, seed, batch_size)
        verdicts = [method.judge(ex, o.generation()) for ex, o in zip(examples, outs)]
        rows[m] = {
            "accuracy": float(mean(float(v.correct) for v in verdicts)),
            "n": len(examples),
            "unparseable": sum(not v.parsed for v in verdicts),
            "mean_reasoning_tokens": float(mean(o.reasoning_tokens for o in outs)),
            "mean_generated_tokens": float(mean(len(o.tokens) for o in outs)),
            "mean_soft_steps": float(mean(o.soft_steps for o in outs)),
            "cold_stops": sum(o.ended_by == "cold_stop" for o in outs),
            "latency_ms_per_question": 1000.0 * secs / len(examples),
            "batch_size": batch_size,
        }
        records[m] = [
            {"question": ex.question, "gold": ex.answer, "output": o.text, "prediction": v.prediction, "correct": v.correct,
             "reasoning_tokens": o.reasoning_tokens, "soft_steps": o.soft_steps, "ended_by": o.ended_by}
            for ex, o, v in zip(examples, outs, verdicts)
        ]
    return rows, records


__all__ = ["build_config", "fmt_value", "load_inputs", "parse_ints", "parse_modes", "soft_app", "soft_think_cmd", "wide_err",
           "wide_out"]
