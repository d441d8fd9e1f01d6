"""Command-line interface: ``latentreason demo | train | eval | data | ...``.

Every user error prints one line (``error: ...``) and exits with status 2; ``--debug`` shows the
Python traceback instead.

This module holds the root app, ``train``, ``eval``, ``demo``, ``bench``, ``methods`` and
:func:`main`; ``latentreason data`` is in :mod:`~latentreason.cli_data`, ``latentreason analyze`` in
:mod:`~latentreason.cli_analyze`, ``soft-think`` in :mod:`~latentreason.cli_soft`, ``report`` in
:mod:`~latentreason.cli_report`, ``repro`` in :mod:`~latentreason.cli_repro`. A command imports the
library it calls (torch, transformers: seconds) inside its body, on first use, so that ``--help``, a
mistyped option or ``latentreason data list`` start without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from latentreason.cli_analyze import analyze_app
from latentreason.cli_data import data_app
from latentreason.cli_report import report_app
from latentreason.cli_repro import repro_app
from latentreason.cli_soft import soft_app
from latentreason.config import from_dict, load_yaml, parse_override
from latentreason.data.registry import load_dataset
from latentreason.errors import CheckpointError, ConfigError, LatentReasonError, TrainingInterrupted
from latentreason.experiments.seeds import parse_seeds, seed_note
from latentreason.reporting.display import err, out, print_soft_table, print_table

app = typer.Typer(
    name="latentreason",
    help="Efficient reasoning in language models: train, evaluate and compare CoT and latent-reasoning methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
app.add_typer(data_app, name="data")  # latentreason data list | download | show
app.add_typer(analyze_app, name="analyze")  # latentreason analyze probe | system15-grid | soft-thinking
app.add_typer(soft_app)  # latentreason soft-think
app.add_typer(report_app)  # latentreason report RUN_DIR [--output FILE]
app.add_typer(repro_app)  # latentreason repro [NAME --seeds N]

_STATE = {"debug": False}


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers  # startup cost (about a second): not at module level, so `--help` stays instant

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full Python tracebacks on errors."),
) -> None:
    _STATE["debug"] = debug
    _quiet_libraries()


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
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named data sets."),
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
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.training.run import run_training
    from latentreason.training.run_config import load_run_config

    overrides = list(set_)
    for key, val in (
        ("method", method), ("model.name", model), ("data.dataset", dataset), ("out_dir", out_dir),
        ("init_from", init_from), ("train.max_steps", max_steps), ("train.epochs", epochs),
        ("train.batch_size", batch_size), ("train.lr", lr), ("data.data_dir", data_dir),
    ):
        if val is not None:
            overrides.insert(0, f"{key}={val}")
    if trust_remote_code:
        overrides.append("model.trust_remote_code=true")
    base = {}
    saved_cfg = Path(out_dir) / "run_config.json" if out_dir else None
    if resume and config is None and saved_cfg is not None and saved_cfg.is_file():
        try:
            base = json.loads(saved_cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{saved_cfg}: unreadable run config ({e}); remove it or pass --config") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{saved_cfg}: expected a JSON object")
    cfg = load_run_config(config, overrides, base=base)
    if cfg.out_dir == "runs/train":
        cfg.out_dir = f"runs/{cfg.method}"
    res = run_training(cfg, resume=resume, progress=not no_progress, log=lambda s: err.print(s, highlight=False, markup=False))
    if not res.get("_main_process", True):
        return
    if "test" in res:
        print_table({cfg.method: {**res["test"], "train_seconds": res["train"]["train_seconds"]}}, "test results")
    err.print(f"run directory: {cfg.out_dir} (model in {cfg.out_dir}/model, results.json beside it)", markup=False, highlight=False)


# --------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A run directory, its model/ or a checkpoints/step-N directory."),
    dataset: str = typer.Option("modchain", "--dataset", "-d", help="Named data set or file path (any supported format)."),
    split: str = typer.Option("test", "--split", help="train | valid | test."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Evaluate the first N examples."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Questions decoded together."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force the file format."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named data sets."),
    answer_mode: Optional[str] = typer.Option(None, "--answer-mode", help="tolerant | round:K | icot | coconut | codi | math_verify."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Generation limit."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Inference-time method options, spelled as in train: --set method_args.n_latent=4."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    output: Optional[Path] = typer.Option(None, "--output", help="Where to write the JSON results (default: beside the checkpoint)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow a Hub model's own code to run."),
    expect_method: Optional[str] = typer.Option(None, "--method", "-m", help="Fail unless the checkpoint is of this method."),
    too_long: str = typer.Option(
        "count", "--too-long",
        help="Questions too long for the model's context: `count` them as wrong (reported as too_long; accuracy over "
             "all questions, as the demo's --eval-set) or `skip` them (accuracy over the questions that fit).",
    ),
    no_progress: bool = typer.Option(False, "--no-progress"),
    compile_: bool = typer.Option(
        False, "--compile",
        help="Decode with torch.compile'd fixed-shape steps on a static cache (method_args.compile_decode): the same "
             "tokens, faster per step for small models; compiling costs seconds to a minute per batch shape."),
) -> None:
    """Evaluate a checkpoint: accuracy, tokens, latent steps, latency; JSON results beside it.

    Questions that do not fit the model's context (prompt plus the method's thoughts) never stop
    the evaluation: they are counted as `too_long` and wrong (`--too-long skip` leaves them out).

    Examples:

    * `latentreason eval --checkpoint runs/demo/cot --dataset modchain --limit 200`
    * `latentreason eval --checkpoint runs/cot --dataset ../shared/data/gsm8k/test.jsonl --batch-size 32`
    * `latentreason eval --checkpoint runs/cot --dataset svamp` (after `latentreason data download svamp`)
    * `latentreason eval --checkpoint runs/cot --dataset SVAMP.json --too-long skip`
    * `latentreason eval --checkpoint runs/codi --method codi` (fails unless it is a CODI checkpoint)
    * `latentreason eval --checkpoint runs/codi --set method_args.n_latent=4` (a method option at inference)
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.experiments.ood import TOO_LONG_POLICIES, evaluate_ood
    from latentreason.training.checkpoint import checkpoint_task, load_method, read_method_meta, resolve_checkpoint
    from latentreason.utils import atomic_write_json, check_output_file, env_info, pick_device

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {limit}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if too_long not in TOO_LONG_POLICIES:
        raise ConfigError(f"--too-long must be one of {', '.join(TOO_LONG_POLICIES)}, got {too_long!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    overrides = {}
    for item in set_:
        keys, value = parse_override(item)
        if len(keys) != 2 or keys[0] != "method_args":
            raise ConfigError(f"--set {item}: eval changes the checkpoint's method options, spelled as in train: "
                              f"--set method_args.{keys[-1]}=...")
        overrides[keys[1]] = value
    if answer_mode:
        overrides["answer_mode"] = answer_mode
    if max_new_tokens:
        overrides["max_new_tokens"] = max_new_tokens
    if compile_:
        overrides["compile_decode"] = True
    ckpt = resolve_checkpoint(checkpoint)
    meta = read_method_meta(ckpt)
    if expect_method is not None and meta["method"] != expect_method:
        raise CheckpointError(f"{ckpt}: checkpoint is of method {meta['method']!r}, expected {expect_method!r} (--method)")
    name = Path(dataset).stem if os.sep in dataset or Path(dataset).suffix else dataset
    target = output or (ckpt.parent if ckpt.name == "model" else ckpt) / f"eval-{name}-{split}.json"
    check_output_file(target, "results file (--output)")
    examples = load_dataset(dataset, split, data_dir=data_dir, fmt=fmt, task=checkpoint_task(ckpt, dataset), limit=limit)
    dev = pick_device(device)
    method = load_method(ckpt, device=dev, trust_remote_code=trust_remote_code, config_overrides=overrides)
    metrics, records = evaluate_ood(method, examples, batch_size=batch_size, progress=not no_progress,
                                    description=f"eval {meta['method']}", too_long=too_long)
    atomic_write_json(target, {"checkpoint": str(ckpt), "method": meta["method"], "dataset": dataset, "split": split,
                                   "metrics": metrics, "env": env_info(dev), "records": records})
    print_table({meta["method"]: metrics}, f"{dataset} [{split}]")
    if metrics["too_long"]:
        what = "counted as wrong" if too_long == "count" else "skipped (not in n or accuracy)"
        err.print(f"{metrics['too_long']} of {len(examples)} questions are too long for the model's context of "
                  f"{metrics['context']} positions: {what}", markup=False, highlight=False)
    err.print(f"results written to {target}", markup=False, highlight=False)


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out_dir: str = typer.Option("runs/demo", "--out", "-o", help="Run directory: one sub-directory per method, results.json."),
    quick: bool = typer.Option(False, "--quick", help="A much smaller run (for tests and smoke checks)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated subset of the demo's methods; the study sections run with a subset only when named too (adaptive, soft_thinking); the System-1.5 grid runs with system15."),
    fresh: bool = typer.Option(False, "--fresh", help="Retrain everything instead of reusing finished methods."),
    eval_set: list[str] = typer.Option(
        [], "--eval-set",
        help="Also evaluate every method on this set, NAME=PATH (SVAMP json, GSM-Hard / MultiArith / ASDiv jsonl, "
             "any supported format) or a named set (svamp, gsm_hard, multiarith, asdiv); repeatable. "
             "Results go to results.json under \"ood\"; questions too long for the model's context are counted as too_long.",
    ),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named --eval-set sets."),
    seeds: Optional[str] = typer.Option(
        None, "--seeds",
        help="Training seeds: a number N (seeds 0..N-1) or a comma-separated list (`0,3,7`; `7,` is seed 7 alone). "
             "Each seed runs the whole pipeline in OUT/seed-S; results.json reports every row's mean, std, min and "
             "per-seed values. Default: one seed (0) in OUT.",
    ),
    reuse_stale: bool = typer.Option(False, "--reuse-stale", help="Reuse finished methods even when they were trained by other code (a different source hash); they are marked code_stale in results.json."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """The end-to-end demo on the embedded default task: train, evaluate, compare.

    Trains every method on the procedural modular-arithmetic task with a tiny GPT-2-style model
    on CPU (GPU when present), evaluates all of them on the same test questions, prints a table
    and writes `OUT/results.json`. Methods that already finished are reused.

    Examples:

    * `latentreason demo --out runs/demo`
    * `latentreason demo --out runs/demo --eval-set svamp=tests/fixtures/svamp.json --eval-set gsmhard=tests/fixtures/gsmhard.jsonl`
    * `latentreason demo --out runs/demo --eval-set svamp --eval-set gsm_hard --data-dir DATA` (named sets)
    * `latentreason demo --out runs/demo5 --seeds 5` (every method on seeds 0..4: mean ± std, min per row)
    * `latentreason demo --out runs/d3 --seeds 3 --methods cot,nocot,codi,coconut`
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.experiments.demo import run_demo

    run_demo(out_dir, quick=quick, only=methods.split(",") if methods else None, fresh=fresh, progress=not no_progress,
                 eval_sets=eval_set, data_dir=data_dir, seeds=parse_seeds(seeds) if seeds is not None else None,
                 reuse_stale=reuse_stale)


@app.command()
def bench(
    config: Path = typer.Option(..., "--config", "-c", help="Benchmark YAML (see configs/bench_default.yaml)."),
    out_dir: str = typer.Option("runs/bench", "--out", "-o", help="Run directory: one sub-directory per entry, results.json, report.html."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated subset of the entries."),
    eval_set: list[str] = typer.Option([], "--eval-set", help="Extra evaluation set NAME=PATH (or a named set); repeatable."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory for named evaluation sets."),
    fresh: bool = typer.Option(False, "--fresh", help="Retrain everything instead of reusing finished entries."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Training seeds: a number N (0..N-1) or a comma-separated list; overrides the config's seeds."),
    reuse_stale: bool = typer.Option(False, "--reuse-stale", help="Reuse finished entries even when trained by other code."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Run a benchmark: train (or reuse) every entry on the same data and seed, evaluate all on the same questions.

    Killing it midway and re-running it reuses every finished entry (a changed entry is retrained).

    Examples:

    * `latentreason bench --config configs/bench_default.yaml --out runs/bench`
    * `latentreason bench --config configs/bench_default.yaml --eval-set svamp=data/SVAMP.json --eval-set gsm_hard=data/gsmhardv2.jsonl`
    * `latentreason bench --config configs/bench_default.yaml --out runs/bench5 --seeds 5`
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.experiments.bench import run_bench
    from latentreason.experiments.bench_config import BenchConfig
    from latentreason.experiments.ood import parse_eval_sets
    from latentreason.reporting.report import write_report

    cfg = from_dict(BenchConfig, load_yaml(config))
    if eval_set:
        cfg.eval_sets = list(cfg.eval_sets) + parse_eval_sets(eval_set, data_dir)
    results = run_bench(cfg, out_dir, only=methods.split(",") if methods else None, fresh=fresh, progress=not no_progress,
                            log=lambda s: err.print(s, highlight=False, markup=False),
                            seeds=parse_seeds(seeds) if seeds is not None else None, reuse_stale=reuse_stale)
    print_table(results["methods"], f"benchmark {config}, {seed_note(results)}")
    if "soft_thinking" in results:
        print_soft_table(results["soft_thinking"])
    err.print(f"results: {Path(out_dir) / 'results.json'}; report: {write_report(out_dir)}", markup=False)


@app.command("methods")
def methods_() -> None:
    """List the methods, their options and presets.

    Example: `latentreason methods`
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    from latentreason.methods.registry import METHODS

    t = Table(title="methods")
    t.add_column("name")
    t.add_column("summary")
    t.add_column("options (method_args)")
    t.add_column("presets")
    for name, cls in sorted(METHODS.items()):
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Config) if f.default is not dataclasses.MISSING)
        t.add_row(name, cls.summary, opts, ", ".join(getattr(cls, "presets", {})))
    out.print(t)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a user error prints one ``error: ...`` line and exits 2 (128 + signal when interrupted)."""

    def _error_line(msg: str, prefix: str = "error:") -> None:
        """Print one line on stderr (never wrapped; markup in the message is not interpreted)."""
        text = " ".join(str(msg).split())  # newlines inside a message would break "one line"
        rank = os.environ.get("RANK")
        if rank not in (None, "", "0") and os.environ.get("WORLD_SIZE", "1") != "1":
            prefix = f"[rank {rank}] {prefix}"
        err.print(Text.assemble((prefix, "red"), " ", text), soft_wrap=True, highlight=False)

    def _cli_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
        """Usage-error, exit and abort exception types through public names only: typer's own
        (typer >= 0.26 vendors click, its usage errors derive from ``typer.TyperException``) and,
        when installed, click's (typer < 0.26 raises those)."""
        usage: list[type] = [t for t in (getattr(typer, "TyperException", None),) if t is not None]
        exits: list[type] = [typer.Exit]
        aborts: list[type] = [typer.Abort]
        try:  # click is optional: typer >= 0.26 vendors it, older typer raises click's own exceptions
            import click

            usage.append(click.ClickException)
            exits.append(click.exceptions.Exit)
            aborts.append(click.exceptions.Abort)
        except ImportError:  # typer >= 0.26 does not need click
            pass
        return tuple(usage), tuple(exits), tuple(aborts)

    args = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except TrainingInterrupted as e:
        if debug:
            raise
        _error_line(str(e), "interrupted:")
        sys.exit(128 + getattr(e, "signum", 2))
    except LatentReasonError as e:
        if debug:
            raise
        _error_line(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            raise
        _error_line("interrupted", "interrupted:")
        sys.exit(130)
    except SystemExit:
        raise
    except OSError as e:  # the environment (disk full, permissions, ...), not the input
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _error_line(f"{where}{e.strerror or e} (run with --debug for the traceback)")
        sys.exit(1)
    except Exception as e:  # usage errors (click's, or typer's own copy of click) and the like
        usage, exits, aborts = _cli_exception_types()
        if isinstance(e, exits):
            sys.exit(e.exit_code)
        if isinstance(e, usage):
            if hasattr(e, "show"):
                e.show()
            else:
                _error_line(e.format_message() if hasattr(e, "format_message") else str(e))
            sys.exit(getattr(e, "exit_code", 2))
        if isinstance(e, aborts):
            sys.exit(130)
        if debug:
            raise
        _error_line(f"{type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
