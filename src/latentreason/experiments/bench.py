"""The benchmark runner: every method on the same data, seed and test questions, in one run.

A benchmark is a list of entries (row name, method, method options, training budget, the entry
whose model it starts from). The runner trains each entry in order — or reuses it when its run
directory already holds a finished model trained with the same settings — then evaluates all of
them on the same test questions with the same batch size, so that latency ratios
(``speedup_vs_cot``) are measured in one run on one machine. ``latentreason demo`` is this
runner on the embedded default task.

Extra (out-of-distribution) evaluation sets, ``BenchConfig.eval_sets`` (``demo --eval-set
NAME=PATH``), are evaluated for every entry by :func:`~latentreason.experiments.ood.evaluate_ood` into
``results["ood"][SET][ENTRY]``; a question longer than the model's context is counted as ``too_long``
(and wrong), not an error.

The pieces: configuration and entries (:mod:`~latentreason.experiments.bench_config`), training runs
(:mod:`~latentreason.training.run`), FLOPs per step (:mod:`~latentreason.experiments.flops`),
round-robin latency (:mod:`~latentreason.experiments.latency`), extra evaluation sets
(:mod:`~latentreason.experiments.ood`), the sections (:mod:`~latentreason.experiments.system15_section`,
:mod:`~latentreason.experiments.adaptive_section`, :mod:`~latentreason.experiments.soft_section`) and the
spread over seeds (:mod:`~latentreason.experiments.seeds`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from latentreason.config import to_dict, to_dict_nondefault
from latentreason.data.example import Example
from latentreason.data.procedural import task_description
from latentreason.errors import ConfigError
from latentreason.evaluation.evaluate import evaluate
from latentreason.experiments.adaptive_section import run_adaptive
from latentreason.experiments.bench_config import (
    BenchConfig,
    BenchEntry,
    baselines,
    entries_needed,
    entry_method,
    entry_run_config,
    section_wanted,
    task_key,
)
from latentreason.experiments.flops import cot_cost, latent_cost
from latentreason.experiments.latency import apply_round_robin
from latentreason.experiments.ood import load_eval_sets, run_ood
from latentreason.experiments.seeds import aggregate
from latentreason.experiments.soft_section import run_soft_study
from latentreason.experiments.system15_section import run_system15_grid
from latentreason.training.api import load_split
from latentreason.training.run import run_training
from latentreason.utils import atomic_write_json, check_writable_dir, code_identity, env_info


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_bench(
    cfg: BenchConfig,
    out_dir: str | Path,
    *,
    only: list[str] | None = None,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    seeds: list[int] | None = None,
    reuse_stale: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) and evaluate every entry, once per seed; write ``OUT/results.json``; return it.

    ``seeds`` (default: ``cfg.seeds``, else ``[cfg.seed]``): with one seed the entries' run
    directories are ``OUT/ENTRY``; with several, each seed runs the whole pipeline in
    ``OUT/seed-S/`` (its own ``results.json`` there) and ``OUT/results.json`` holds the mean of
    every row, its per-seed values and their spread (:mod:`latentreason.experiments.seeds`).
    ``reuse_stale``: reuse finished entries even when they were trained by other code.
    """
    seed_list = list(seeds) if seeds is not None else (list(cfg.seeds) if cfg.seeds else [cfg.seed])
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds: expected distinct seeds, got {seed_list}")
    out = check_writable_dir(out_dir)
    t0 = time.perf_counter()
    runs = []
    for s in seed_list:
        sub = copy.copy(cfg)
        sub.seed, sub.seeds = s, None
        where = out if len(seed_list) == 1 else out / f"seed-{s}"
        if len(seed_list) > 1:
            log(f"[seed {s}] the whole pipeline with seed {s} in {where}")
        res = run_bench_seed(sub, where, only=only, fresh=fresh, progress=progress, log=log, reuse_stale=reuse_stale)
        runs.append((s, res))
        # the seed's own rows as measured (OUT/results.json of several seeds aggregates them; so does a reproduction
        # whose seeds ran in parallel processes)
        atomic_write_json(where / "seed_results.json", res)
        if len(seed_list) > 1:
            atomic_write_json(where / "results.json", aggregate([(s, res)]))
    results = aggregate(runs)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    if len(seed_list) > 1:
        results["seed_dirs"] = {str(s): f"seed-{s}" for s in seed_list}
    atomic_write_json(out / "results.json", results)
    return results


def train_entries(cfg: BenchConfig, entries: list[BenchEntry], out: Path, *, fresh: bool, progress: bool,
                  log: Callable[[str], None], code: dict[str, Any], reuse_stale: bool = False) -> dict[str, dict[str, Any]]:
    """Train every entry in order, or reuse its finished run when config, parent run and code are unchanged.

    The reuse key (``done.json``) is the entry's full run config, the identity of the run it starts
    from (its ``run_id``: a retrained parent invalidates its children) and the hash of the package's
    source (:func:`latentreason.utils.code_identity`); a run trained by other code is retrained unless
    ``reuse_stale``, and is then marked ``code_stale`` in the results. ``code``: the identity read when the
    benchmark started.
    """
    trained: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.model_from is not None:
            trained[e.name] = {**trained[e.model_from], "model_from": e.model_from}
            continue
        rc = entry_run_config(cfg, e, out)
        parent = trained.get(e.init_from, {}) if e.init_from else {}
        run = {k: v for k, v in to_dict_nondefault(rc).items() if k not in ("out_dir", "init_from")}  # paths: a moved run is reused
        fp = _fingerprint({"run": run, "parent": parent.get("run_id") or parent.get("fingerprint")})
        done_file = out / e.name / "done.json"
        if not fresh and done_file.exists() and (out / e.name / "model" / "method.json").exists():
            done = json.loads(done_file.read_text())
            if done.get("fingerprint") == fp:
                theirs = (done.get("code") or {}).get("source_hash")
                if theirs == code["source_hash"]:
                    log(f"[{e.name}] reusing the finished run in {out / e.name}")
                    trained[e.name] = done
                    continue
                if reuse_stale:
                    log(f"[{e.name}] reusing the finished run in {out / e.name}, trained by other code "
                        f"(source {theirs or 'unknown'}, now {code['source_hash']}; --reuse-stale)")
                    trained[e.name] = {**done, "code_stale": True}
                    continue
                log(f"[{e.name}] the finished run in {out / e.name} was trained by other code "
                    f"(source {theirs or 'unknown'}, now {code['source_hash']}): retraining (--reuse-stale reuses it)")
        log(f"[{e.name}] training {e.method}" + (f" from {e.init_from}" if e.init_from else ""))
        res = run_training(rc, progress=progress, evaluate_test=False, log=log)
        done = {"fingerprint": fp, "run_id": uuid.uuid4().hex, "code": code, "train": res["train"]}
        atomic_write_json(done_file, done)
        trained[e.name] = done
    return trained


def run_bench_seed(
    cfg: BenchConfig,
    out_dir: str | Path,
    *,
    only: list[str] | None = None,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    reuse_stale: bool = False,
) -> dict[str, Any]:
    """One seed (``cfg.seed``) of the benchmark in ``out_dir``: train or reuse, then evaluate every entry."""
    out = check_writable_dir(out_dir)
    if cfg.latency_protocol not in ("round_robin", "per_entry"):
        raise ConfigError(f"latency_protocol must be 'round_robin' or 'per_entry', got {cfg.latency_protocol!r}")
    if (cfg.latency_batch_size is not None and cfg.latency_batch_size < 1) or \
            (cfg.latency_questions is not None and cfg.latency_questions < 1):
        raise ConfigError(f"latency_batch_size and latency_questions must be >= 1, got {cfg.latency_batch_size} "
                          f"and {cfg.latency_questions}")
    entries = entries_needed(cfg, only)
    ood_sets = load_eval_sets(cfg.eval_sets)  # before training: a bad path fails fast
    t0 = time.perf_counter()
    # the code and environment that run: read before training (a commit made while it trains is not its revision)
    code = code_identity()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = env_info(device)
    trained = train_entries(cfg, entries, out, fresh=fresh, progress=progress, log=log, reuse_stale=reuse_stale, code=code)
    # ------------------------------------------------------------ one evaluation for all
    results: dict[str, Any] = {
        "task": task_description(cfg.task) if cfg.data is None else {"dataset": cfg.data.dataset,
                                                                       "train_limit": cfg.data.train_limit},
        "model": to_dict(cfg.model),
        "methods": {},
        "env": env,
        "code": code,
        "seed": cfg.seed,
    }
    round_robin = cfg.latency_protocol == "round_robin" and len(entries) > 1
    for e in entries:
        results["methods"][e.name] = evaluate_entry(cfg, e, out, device, trained[e.name], progress=progress, log=log,
                                                    round_robin=round_robin)
    if round_robin:
        apply_round_robin(results["methods"], cfg, entries, out, device, log)
    add_baseline_ratios(results["methods"], entries)
    run_sections(results, cfg, entries, out, device, ood_sets, progress=progress, log=log, fresh=fresh,
                 reuse_stale=reuse_stale, only=only)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    return results


def evaluate_entry(cfg: BenchConfig, e: BenchEntry, out: Path, device, trained: dict[str, Any], *, progress: bool,
                   log: Callable[[str], None], round_robin: bool) -> dict[str, Any]:
    """An entry's row: its model on the test questions (predictions in ``OUT/ENTRY/predictions.json``), its cost
    per step, its training time; latency here unless it is measured round-robin afterwards."""
    rc = entry_run_config(cfg, e, out)
    test = load_split(rc, "test")
    method = entry_method(out, e, device)
    ev = evaluate(method, test, batch_size=cfg.eval_batch_size, progress=progress, description=f"test {e.name}",
                  repeats=1 if round_robin else cfg.latency_repeats)
    (out / e.name).mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / e.name / "predictions.json", ev.records)
    row = dict(ev.metrics)
    if e.model_from:
        row["model_from"] = e.model_from
    if row.get("mean_latent_steps"):
        row.update(latent_cost(method, test, ev.records, row))
    if hasattr(method, "exit_histogram") and all("exit_layers" in r for r in ev.records):
        row["exit_histogram"] = method.exit_histogram(test, [r["exit_layers"] for r in ev.records],
                                                      [r.get("reused_layers", [0] * len(r["exit_layers"]))
                                                       for r in ev.records])
    elif e.method == "cot":
        row.update(cot_cost(method, test, row))
    row["train_seconds"] = trained["train"]["train_seconds"]
    row["train_steps"] = trained["train"]["steps"]
    row["method"] = e.method
    if e.init_from or e.model_from:
        row["init_from"] = e.init_from or e.model_from
    if trained.get("code_stale"):
        row["code_stale"] = True
    log(f"[{e.name}] accuracy {row['accuracy']:.3f}" +
        ("" if round_robin else f", {row['latency_ms_per_question']:.2f} ms/question"))
    return row


def add_baseline_ratios(rows: dict[str, dict[str, Any]], entries: list[BenchEntry]) -> None:
    """Every row's baselines (the CoT / No-CoT entries of its task variant), speed-up and FLOPs ratio vs that CoT."""
    refs = baselines(entries)
    for e in entries:
        row = rows[e.name]
        ref = refs.get(task_key(e), {})
        if e.task:
            row["task_variant"] = dict(e.task)
        if ref:
            row["baseline"] = dict(ref)
        cot = rows.get(ref.get("cot", ""))
        if cot and row["latency_ms_per_question"] > 0:
            row["speedup_vs_cot"] = cot["latency_ms_per_question"] / row["latency_ms_per_question"]
        if cot and "flops_per_latent_step" in row and cot.get("flops_per_step"):
            row["flops_per_step_vs_cot"] = row["flops_per_latent_step"] / cot["flops_per_step"]


def run_sections(results: dict[str, Any], cfg: BenchConfig, entries: list[BenchEntry], out: Path, device,
                 ood_sets: dict[str, list[Example]], *, progress: bool, log: Callable[[str], None], fresh: bool,
                 reuse_stale: bool, only: list[str] | None = None) -> None:
    """The sections after the comparison, each when configured and its entries ran: extra evaluation sets
    (``ood``), the System-1.5 grid, adaptive thinking, the soft-thinking study (with a subset of rows ``only``, the
    last two when named there: ``adaptive``, ``soft_thinking``)."""
    names = {e.name for e in entries}
    cot = results["methods"].get(baselines(entries).get(task_key(None), {}).get("cot", ""))
    if ood_sets:
        results["ood"] = run_ood(cfg, ood_sets, out, entries, device, progress, log)
    s15 = next((e for e in entries if e.method == "system15" and e.model_from is None), None)
    if s15 is not None and cfg.system15_grid:
        results["system15_grid"] = run_system15_grid(cfg, s15, out, device, log)
    if cfg.adaptive_from and cfg.adaptive_from in names and section_wanted("adaptive", only):
        log("[adaptive] CODI with a per-question number of thoughts on the mixed-difficulty task")
        ad = run_adaptive(out / "adaptive", out / cfg.adaptive_from / "model", cfg.model, quick=cfg.adaptive_quick,
                          progress=progress, log=log, eval_batch_size=cfg.eval_batch_size,
                          latency_repeats=cfg.latency_repeats, seed=cfg.seed, fresh=fresh, reuse_stale=reuse_stale)
        # the section times its rows at eval_batch_size: compare with CoT timed at that batch size (its
        # round-robin latency when that ran at eval_batch_size, else its accuracy pass)
        cot_ms = None
        if cot:
            same = cot.get("batch_size", cfg.eval_batch_size) == cfg.eval_batch_size
            cot_ms = cot.get("latency_ms_per_question") if same else cot.get("batched_ms_per_question")
        for row in ad.values():
            if isinstance(row, dict) and cot_ms and row.get("latency_ms_per_question"):
                row["speedup_vs_cot"] = cot_ms / row["latency_ms_per_question"]
        results["adaptive"] = ad
    st = cfg.soft_thinking
    if st is not None and st.entry in names and section_wanted("soft_thinking", only):
        results["soft_thinking"] = run_soft_study(cfg, st, out, names, device, log)


__all__ = ["add_baseline_ratios", "evaluate_entry", "run_bench", "run_bench_seed", "run_sections", "train_entries"]
