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
from rich.markup import escape
from rich.table import Table

from latentreason.errors import LatentReasonError
from latentreason.evaluation.display import err, out
from latentreason.evaluation.display import fmt as _fmt
from latentreason.evaluation.display import print_soft_table as _print_soft_table
from latentreason.evaluation.display import print_table as _print_table

app = typer.Typer(
    name="latentreason",
    help="Efficient reasoning in language models: train, evaluate and compare CoT and latent-reasoning methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
data_app = typer.Typer(help="Data sets: list the named ones, download them, show parsed examples.", no_args_is_help=True)
app.add_typer(data_app, name="data")
analyze_app = typer.Typer(help="Analyses: thought probing, soft-thinking study, System-1.5 grid.", no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")

from latentreason.cli_soft import analyze_soft_app, soft_app  # noqa: E402

app.add_typer(soft_app)  # latentreason soft-think
analyze_app.add_typer(analyze_soft_app)  # latentreason analyze soft-thinking

from latentreason.cli_report import report_app  # noqa: E402

app.add_typer(report_app)  # latentreason report RUN_DIR [--output FILE]

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
def data_list(
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Look only in this data directory."),
) -> None:
    """List the named data sets, which splits are present and where.

    A set marked missing is fetched from its public source by `latentreason data download NAME`.

    Example: `latentreason data list`
    """
    from latentreason.data.registry import NAMED, PROCEDURAL, data_dirs

    dirs = data_dirs(data_dir)
    t = Table(title=f"named data sets (searched: {', '.join(str(d) for d in dirs)})")
    t.add_column("name")
    t.add_column("splits")
    t.add_column("where")
    t.add_column("description")
    for name in sorted(PROCEDURAL):
        t.add_row(name, "train, valid, test", "generated", "procedural modular-arithmetic chains")
    for name, spec in sorted(NAMED.items()):
        found = {s: next((d for d in dirs if (d / f).is_file()), None) for s, f in spec.files.items()}
        where = sorted({str(d) for d in found.values() if d is not None})
        if not where:
            where_txt = f"latentreason data download {name}"
        else:
            where_txt = ", ".join(where)
        t.add_row(name, ", ".join(f"{s}{'' if found[s] else ' (missing)'}" for s in spec.files), where_txt, spec.note)
    out.print(t)


@data_app.command("download")
def data_download(
    names: list[str] = typer.Argument(..., help="Named data sets (see `data list`), or `all`."),
    to: Optional[str] = typer.Option(
        None, "--to", help="Data directory to put them in (default: $LATENTREASON_DATA_DIR, else ~/.cache/latentreason/data)."),
    mirror: Optional[str] = typer.Option(
        None, "--mirror",
        help="Read the files from this local directory instead of the internet, laid out like their URLs: "
             "DIR/raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH and DIR/huggingface.co/datasets/OWNER/NAME/...",
    ),
    force: bool = typer.Option(False, "--force", help="Fetch files again even when present."),
) -> None:
    """Fetch named data sets from their public sources into the user data directory.

    GitHub files come at the pinned commits documented in shared/data/README.md and are checked
    against their SHA-256; the papers' full GSM8k-Aug train sets (`gsm8k_aug_full`,
    `gsm8k_aug_nl_full`) are read from the Hugging Face Hub with `datasets`. Named sets then
    resolve there from any directory.

    Examples:

    * `latentreason data download gsm8k_aug`
    * `latentreason data download svamp gsm_hard multiarith asdiv`
    * `latentreason data download all --to /data/latentreason` (then `--data-dir /data/latentreason`
      or `export LATENTREASON_DATA_DIR=/data/latentreason`)
    * `latentreason data download prosqa --mirror /media/usb/mirror` (a machine without internet)
    """
    from latentreason.data.download import download
    from latentreason.data.registry import NAMED

    wanted = sorted(NAMED) if "all" in names else list(dict.fromkeys(names))
    for name in wanted:
        root = download(name, to=to, mirror=mirror, force=force,
                        log=lambda msg, n=name: err.print(f"[{n}] {msg}", markup=False, highlight=False, soft_wrap=True))
        err.print(f"{name}: ready in {root}", markup=False, highlight=False, soft_wrap=True)


@data_app.command("show")
def data_show(
    source: str = typer.Argument(..., help="A named data set (see `data list`) or a file path."),
    split: str = typer.Option("test", "--split", help="train | valid | test (named sets)."),
    limit: Optional[int] = typer.Option(5, "--limit", "-n", help="Show the first N examples (all with --limit 0)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per example."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force a file format (default: detected from content)."),
    data_dir: Optional[str] = typer.Option(
        None, "--data-dir",
        help="Where named data sets live (default: $LATENTREASON_DATA_DIR, else ./data, ../shared/data or "
             "~/.cache/latentreason/data, where `latentreason data download` puts them)."),
) -> None:
    """Parse a data set and print its examples and count.

    Examples:

    * `latentreason data show ../shared/data/gsm8k_aug/test.txt --limit 2`
    * `latentreason data show gsm8k --split test --json --limit 3`
    * `latentreason data show modchain --split train`
    """
    from latentreason.data.registry import load_dataset

    examples = load_dataset(source, split, data_dir=data_dir, fmt=fmt)
    shown = examples if not limit else examples[:limit]
    if as_json:
        for ex in shown:
            sys.stdout.write(json.dumps({"question": ex.question, "steps": ex.steps, "answer": ex.answer}, ensure_ascii=False) + "\n")
        return
    for i, ex in enumerate(shown):
        out.print(f"[bold]#{i}[/bold] [cyan]question:[/cyan] {escape(ex.question)}", markup=True, highlight=False)
        out.print(f"   [cyan]steps ({len(ex.steps)}):[/cyan] {escape(' | '.join(ex.steps))}", markup=True, highlight=False)
        out.print(f"   [cyan]answer:[/cyan] {escape(ex.answer)}", markup=True, highlight=False)
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
    from latentreason.errors import ConfigError
    from latentreason.evaluation.training_run import run_training
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
        _print_table({cfg.method: {**res["test"], "train_seconds": res["train"]["train_seconds"]}}, "test results")
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
    set_: list[str] = typer.Option([], "--set", "-s", help="Inference-time method options, e.g. --set n_latent=4."),
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
    """
    import re

    from latentreason.config import parse_override
    from latentreason.data.registry import load_dataset
    from latentreason.errors import CheckpointError, ConfigError
    from latentreason.evaluation.ood import TOO_LONG_POLICIES, evaluate_ood
    from latentreason.training.checkpoint import load_method, read_method_meta, resolve_checkpoint
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
    overrides = {".".join(k).removeprefix("method_args."): v for k, v in (parse_override(s) for s in set_)}
    if answer_mode:
        overrides["answer_mode"] = answer_mode
    if max_new_tokens:
        overrides["max_new_tokens"] = max_new_tokens
    ckpt = resolve_checkpoint(checkpoint)
    meta = read_method_meta(ckpt)
    if expect_method is not None and meta["method"] != expect_method:
        raise CheckpointError(f"{ckpt}: checkpoint is of method {meta['method']!r}, expected {expect_method!r} (--method)")
    name = Path(dataset).stem if os.sep in dataset or Path(dataset).suffix else dataset
    target = output or (ckpt.parent if ckpt.name == "model" else ckpt) / f"eval-{name}-{split}.json"
    check_output_file(target, "results file (--output)")
    examples = load_dataset(dataset, split, data_dir=data_dir, fmt=fmt, task=_task_of(ckpt, dataset), limit=limit)
    dev = pick_device(device)
    method = load_method(ckpt, device=dev, trust_remote_code=trust_remote_code, config_overrides=overrides)
    metrics, records = evaluate_ood(method, examples, batch_size=batch_size, progress=not no_progress,
                                    description=f"eval {meta['method']}", too_long=too_long)
    atomic_write_json(target, {"checkpoint": str(ckpt), "method": meta["method"], "dataset": dataset, "split": split,
                               "metrics": metrics, "env": env_info(dev), "records": records})
    _print_table({meta["method"]: metrics}, f"{dataset} [{split}]")
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
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated subset of the demo's methods."),
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
    from latentreason.evaluation.demo import run_demo
    from latentreason.evaluation.seeds import parse_seeds

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
    from latentreason.config import from_dict, load_yaml
    from latentreason.evaluation.bench import BenchConfig, parse_eval_sets, run_bench
    from latentreason.evaluation.report import write_report
    from latentreason.evaluation.seeds import parse_seeds, seed_note

    cfg = from_dict(BenchConfig, load_yaml(config))
    if eval_set:
        cfg.eval_sets = list(cfg.eval_sets) + parse_eval_sets(eval_set, data_dir)
    results = run_bench(cfg, out_dir, only=methods.split(",") if methods else None, fresh=fresh, progress=not no_progress,
                        log=lambda s: err.print(s, highlight=False, markup=False),
                        seeds=parse_seeds(seeds) if seeds is not None else None, reuse_stale=reuse_stale)
    _print_table(results["methods"], f"benchmark {config}, {seed_note(results)}")
    if "soft_thinking" in results:
        _print_soft_table(results["soft_thinking"])
    err.print(f"results: {Path(out_dir) / 'results.json'}; report: {write_report(out_dir)}", markup=False)


@app.command("methods")
def methods_() -> None:
    """List the methods, their options and presets.

    Example: `latentreason methods`
    """
    import dataclasses

    from latentreason.methods.registry import METHODS, get_method_class

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


# --------------------------------------------------------------------------- analyze
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
    from latentreason.analysis.probe import probe_thoughts
    from latentreason.data.registry import load_dataset
    from latentreason.training.checkpoint import load_method, resolve_checkpoint
    from latentreason.utils import atomic_write_json

    ckpt = resolve_checkpoint(checkpoint)
    method = load_method(ckpt)
    if not hasattr(method, "latent_prompts"):
        raise LatentReasonError(f"{ckpt}: method {method.name!r} has no continuous thoughts to probe")
    examples = load_dataset(dataset, split, data_dir=data_dir, task=_task_of(ckpt, dataset), limit=limit)
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
        t.add_row(k, json.dumps(v) if isinstance(v, dict) else _fmt(v))
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
    from latentreason.analysis.system15_grid import plot_grid, system15_grid
    from latentreason.data.registry import load_dataset
    from latentreason.training.checkpoint import load_method, resolve_checkpoint
    from latentreason.utils import atomic_write_json

    try:
        depths = [float(x) for x in lambda_depth.split(",") if x.strip()]
        steps = [int(x) for x in lambda_step.split(",") if x.strip()]
    except ValueError:
        raise LatentReasonError("--lambda-depth takes numbers and --lambda-step integers, comma-separated") from None
    if not depths or not steps or any(not 0 <= d <= 1 for d in depths) or any(s < 0 for s in steps):
        raise LatentReasonError("--lambda-depth values must lie in [0, 1] and --lambda-step values be >= 0")
    ckpt = resolve_checkpoint(checkpoint)
    method = load_method(ckpt)
    if method.name != "system15":
        raise LatentReasonError(f"{ckpt}: a {method.name!r} checkpoint; the grid needs a system15 one")
    examples = load_dataset(dataset, split, data_dir=data_dir, task=_task_of(ckpt, dataset), limit=limit)
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


def _task_of(ckpt: Path, dataset: str):
    """The procedural task a checkpoint was trained on (so `--dataset modchain` means the same task)."""
    from latentreason.config import from_dict
    from latentreason.data.procedural import TaskConfig
    from latentreason.training.checkpoint import read_method_meta

    if dataset not in ("modchain", "default", "modchain_mixed"):
        return None
    rc = read_method_meta(ckpt).get("run_config") or {}
    task = rc.get("data", {}).get("task")
    return from_dict(TaskConfig, task, "task") if task else None


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a user error prints one ``error: ...`` line and exits 2 (128 + signal when interrupted)."""

    def _error_line(msg: str, prefix: str = "error:") -> None:
        """Print one line on stderr (never wrapped; markup in the message is not interpreted)."""
        from rich.text import Text

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
        try:
            import click

            usage.append(click.ClickException)
            exits.append(click.exceptions.Exit)
            aborts.append(click.exceptions.Abort)
        except ImportError:  # typer >= 0.26 does not need click
            pass
        return tuple(usage), tuple(exits), tuple(aborts)

    from latentreason.errors import TrainingInterrupted

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
