"""Command-line interface: ``latentreason demo | train | eval | data | ...``.

Every user error prints one line (``error: ...``) and exits with status 2; ``--debug`` shows the
Python traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from latentreason.errors import LatentReasonError

app = typer.Typer(
    name="latentreason",
    help="Efficient reasoning in language models: train, evaluate and compare CoT and latent-reasoning methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
data_app = typer.Typer(help="Inspect data sets: list the named ones, show parsed examples.", no_args_is_help=True)
app.add_typer(data_app, name="data")

def _console(stderr: bool) -> Console:
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=160)


out = _console(False)
err = _console(True)
_STATE = {"debug": False}


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full Python tracebacks on errors."),
) -> None:
    _STATE["debug"] = debug
    _quiet_libraries()


# --------------------------------------------------------------------------- data
@data_app.command("list")
def data_list() -> None:
    """List the named data sets and the files they resolve to.

    Example: `latentreason data list`
    """
    from latentreason.data.registry import NAMED, PROCEDURAL, data_dir

    root = data_dir()
    t = Table(title=f"named data sets (data directory: {root or 'not found; pass --data-dir'})")
    t.add_column("name")
    t.add_column("splits")
    t.add_column("description")
    for name in sorted(PROCEDURAL):
        t.add_row(name, "train, valid, test", "procedural modular-arithmetic chains (generated)")
    for name, spec in sorted(NAMED.items()):
        present = [s for s, f in spec.files.items() if root is not None and (root / f).exists()]
        t.add_row(name, ", ".join(f"{s}{'' if s in present else ' (missing)'}" for s in spec.files), spec.note)
    out.print(t)


@data_app.command("show")
def data_show(
    source: str = typer.Argument(..., help="A named data set (see `data list`) or a file path."),
    split: str = typer.Option("test", "--split", help="train | valid | test (named sets)."),
    limit: Optional[int] = typer.Option(5, "--limit", "-n", help="Show the first N examples (all with --limit 0)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per example."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force a file format (default: detected from content)."),
    data_dir_: Optional[str] = typer.Option(None, "--data-dir", help="Where named data sets live (default: $LATENTREASON_DATA_DIR, ./data or ../shared/data)."),
) -> None:
    """Parse a data set and print its examples and count.

    Examples:

    * `latentreason data show ../shared/data/gsm8k_aug/test.txt --limit 2`
    * `latentreason data show gsm8k --split test --json --limit 3`
    * `latentreason data show modchain --split train`
    """
    from latentreason.data.registry import load_dataset

    examples = load_dataset(source, split, data_dir_=data_dir_, fmt=fmt)
    shown = examples if not limit else examples[:limit]
    if as_json:
        for ex in shown:
            sys.stdout.write(json.dumps({"question": ex.question, "steps": ex.steps, "answer": ex.answer}, ensure_ascii=False) + "\n")
        return
    for i, ex in enumerate(shown):
        out.print(f"[bold]#{i}[/bold] [cyan]question:[/cyan] {ex.question}", markup=True, highlight=False)
        out.print(f"   [cyan]steps ({len(ex.steps)}):[/cyan] {' | '.join(ex.steps)}", markup=True, highlight=False)
        out.print(f"   [cyan]answer:[/cyan] {ex.answer}", markup=True, highlight=False)
    out.print(f"{len(examples)} examples ({len(shown)} shown)")


# --------------------------------------------------------------------------- train
@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (see configs/)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="cot | nocot | ... (`latentreason methods` lists all)."),
    model: Optional[str] = typer.Option(None, "--model", help="tiny-gpt2 | tiny-llama | a Hugging Face id or local path."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Named data set or file (default: modchain)."),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (model/, checkpoints/, metrics.jsonl, results.json)."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start from this checkpoint's weights (e.g. a CoT-SFT run)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimiser steps (overrides epochs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs over the training split."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    data_dir_: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named data sets."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow a Hub model's own code to run (off unless you pass it)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in the run directory."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override any config field: --set train.lr=3e-4 --set method_args.n_latent=4."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Train a method; the model, metrics.jsonl and results.json land in the run directory.

    Examples:

    * `latentreason train --method cot --out runs/cot --max-steps 300`
    * `latentreason train --method nocot --dataset gsm8k_aug --model gpt2 --epochs 3 --batch-size 32`
    * `latentreason train --config configs/cot_default.yaml --set train.lr=2e-3`
    * `latentreason train --out runs/cot --resume` (continue an interrupted run)
    * multi-GPU: `accelerate launch --num_processes 4 -m latentreason train --config ...`
    """
    from latentreason.training.api import run_training
    from latentreason.training.run_config import load_run_config

    overrides = list(set_)
    for key, val in (
        ("method", method), ("model.name", model), ("data.dataset", dataset), ("out_dir", out_dir),
        ("init_from", init_from), ("train.max_steps", max_steps), ("train.epochs", epochs),
        ("train.batch_size", batch_size), ("train.lr", lr), ("data.data_dir", data_dir_),
    ):
        if val is not None:
            overrides.insert(0, f"{key}={val}")
    if trust_remote_code:
        overrides.append("model.trust_remote_code=true")
    base = {}
    if resume and config is None and out_dir and (Path(out_dir) / "run_config.json").exists():
        base = json.loads((Path(out_dir) / "run_config.json").read_text())
    cfg = load_run_config(config, overrides, base=base)
    if cfg.out_dir == "runs/train":
        cfg.out_dir = f"runs/{cfg.method}"
    res = run_training(cfg, resume=resume, progress=not no_progress, log=lambda s: err.print(s, highlight=False))
    if "test" in res:
        _print_table({cfg.method: {**res["test"], "train_seconds": res["train"]["train_seconds"]}}, "test results")
    err.print(f"run directory: {cfg.out_dir} (model in {cfg.out_dir}/model, results.json beside it)")


# --------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A run directory, its model/ or a checkpoints/step-N directory."),
    dataset: str = typer.Option("modchain", "--dataset", "-d", help="Named data set or file path (any supported format)."),
    split: str = typer.Option("test", "--split", help="train | valid | test."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Evaluate the first N examples."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Questions decoded together."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force the file format."),
    data_dir_: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named data sets."),
    answer_mode: Optional[str] = typer.Option(None, "--answer-mode", help="tolerant | round:K | icot | coconut | codi | math_verify."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Generation limit."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Inference-time method options, e.g. --set n_latent=4."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    output: Optional[Path] = typer.Option(None, "--output", help="Where to write the JSON results (default: beside the checkpoint)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow a Hub model's own code to run."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Evaluate a checkpoint: accuracy, tokens, latent steps, latency; JSON results beside it.

    Examples:

    * `latentreason eval --checkpoint runs/demo/cot --dataset modchain --limit 200`
    * `latentreason eval --checkpoint runs/cot --dataset ../shared/data/gsm8k/test.jsonl --batch-size 32`
    """
    from latentreason.config import parse_override
    from latentreason.data.registry import load_dataset
    from latentreason.evaluation.evaluate import evaluate
    from latentreason.training.checkpoint import load_method, read_method_meta, resolve_checkpoint
    from latentreason.utils import atomic_write_json, env_info, pick_device

    if batch_size < 1:
        raise LatentReasonError(f"--batch-size must be >= 1, got {batch_size}")
    overrides = {".".join(k).removeprefix("method_args."): v for k, v in (parse_override(s) for s in set_)}
    if answer_mode:
        overrides["answer_mode"] = answer_mode
    if max_new_tokens:
        overrides["max_new_tokens"] = max_new_tokens
    ckpt = resolve_checkpoint(checkpoint)
    meta = read_method_meta(ckpt)
    task = None
    rc = meta.get("run_config") or {}
    if dataset in ("modchain", "default", "modchain_mixed") and rc.get("data", {}).get("task"):
        from latentreason.config import from_dict
        from latentreason.data.procedural import TaskConfig

        task = from_dict(TaskConfig, rc["data"]["task"], "task")
    examples = load_dataset(dataset, split, data_dir_=data_dir_, fmt=fmt, task=task, limit=limit)
    dev = pick_device(device)
    method = load_method(ckpt, device=dev, trust_remote_code=trust_remote_code, config_overrides=overrides)
    res = evaluate(method, examples, batch_size=batch_size, progress=not no_progress, description=f"eval {meta['method']}")
    name = Path(dataset).stem if os.sep in dataset or Path(dataset).suffix else dataset
    target = output or (ckpt.parent if ckpt.name == "model" else ckpt) / f"eval-{name}-{split}.json"
    atomic_write_json(target, {"checkpoint": str(ckpt), "method": meta["method"], "dataset": dataset, "split": split,
                               "metrics": res.metrics, "env": env_info(dev), "records": res.records})
    _print_table({meta["method"]: res.metrics}, f"{dataset} [{split}]")
    err.print(f"results written to {target}")


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out_dir: str = typer.Option("runs/demo", "--out", "-o", help="Run directory: one sub-directory per method, results.json."),
    quick: bool = typer.Option(False, "--quick", help="A much smaller run (for tests and smoke checks)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated subset of the demo's methods."),
    fresh: bool = typer.Option(False, "--fresh", help="Retrain everything instead of reusing finished methods."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """The end-to-end demo on the embedded default task: train, evaluate, compare.

    Trains every method on the procedural modular-arithmetic task with a tiny GPT-2-style model
    on CPU (GPU when present), evaluates all of them on the same test questions, prints a table
    and writes `OUT/results.json`. Methods that already finished are reused.

    Example: `latentreason demo --out runs/demo`
    """
    from latentreason.evaluation.demo import run_demo

    run_demo(out_dir, quick=quick, only=methods.split(",") if methods else None, fresh=fresh, progress=not no_progress)


@app.command("methods")
def methods_() -> None:
    """List the methods, their options and presets.

    Example: `latentreason methods`
    """
    import dataclasses

    from latentreason.methods.base import METHODS, get_method_class

    get_method_class("cot")
    t = Table(title="methods")
    t.add_column("name")
    t.add_column("summary")
    t.add_column("options (method_args)")
    t.add_column("presets")
    for name, cls in sorted(METHODS.items()):
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Config) if f.default is not dataclasses.MISSING)
        t.add_row(name, cls.summary, opts, ", ".join(getattr(cls, "presets", {})))
    out.print(t)


# --------------------------------------------------------------------------- helpers
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _print_table(rows: dict[str, dict], title: str) -> None:
    heads = {"accuracy": "accuracy", "n": "n", "mean_reasoning_tokens": "reasoning tok", "mean_latent_steps": "latent steps",
             "mean_generated_tokens": "generated tok", "latency_ms_per_question": "ms/question", "batch_size": "batch",
             "train_seconds": "train s", "speedup_vs_cot": "speedup vs CoT"}
    cols = [c for c in heads if any(c in r for r in rows.values())]
    t = Table(title=title)
    t.add_column("method")
    for c in cols:
        t.add_column(heads[c], justify="right")
    for name, r in rows.items():
        t.add_row(name, *[_fmt(r.get(c, "")) for c in cols])
    out.print(t)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except LatentReasonError as e:
        if debug:
            raise
        err.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        err.print(f"[red]error:[/red] {type(e).__name__}: {e} (run with --debug for the traceback)", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
