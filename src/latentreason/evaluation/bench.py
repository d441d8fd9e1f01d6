"""The benchmark runner: every method on the same data, seed and test questions, in one run.

A benchmark is a list of entries (row name, method, method options, training budget, the entry
whose model it starts from). The runner trains each entry in order — or reuses it when its run
directory already holds a finished model trained with the same settings — then evaluates all of
them on the same test questions with the same batch size, so that latency ratios
(``speedup_vs_cot``) are measured in one run on one machine. ``latentreason demo`` is this
runner on the embedded default task.

Extra (out-of-distribution) evaluation sets, ``BenchConfig.eval_sets`` (``demo --eval-set
NAME=PATH``), are evaluated for every entry by :func:`~latentreason.evaluation.ood.evaluate_ood` into
``results["ood"][SET][ENTRY]``; a question longer than the model's context is counted as ``too_long``
(and wrong), not an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Callable

import torch

from latentreason.config import to_dict, to_dict_nondefault
from latentreason.data.example import Example
from latentreason.data.procedural import TaskConfig, task_description
from latentreason.errors import ConfigError
from latentreason.evaluation.ood import evaluate_ood, fitting_mask  # noqa: F401  (fitting_mask: re-exported)
from latentreason.models.backbone import ModelConfig
from latentreason.training.run_config import DataConfig, RunConfig, TrainConfig
from latentreason.evaluation.seeds import aggregate
from latentreason.utils import atomic_write_json, check_writable_dir, code_identity, env_info


@dataclass
class BenchEntry:
    #: row name in the results (also the sub-directory of the run)
    name: str
    method: str
    method_args: dict[str, Any] = field(default_factory=dict)
    #: overrides of TrainConfig fields for this entry
    train: dict[str, Any] = field(default_factory=dict)
    #: overrides of TaskConfig fields (e.g. a mixed-difficulty task)
    task: dict[str, Any] = field(default_factory=dict)
    #: name of an earlier entry whose trained model initialises this one (nothing is trained twice)
    init_from: str | None = None
    #: inference-time overrides of the method options for the evaluation
    eval_args: dict[str, Any] = field(default_factory=dict)
    #: no training: evaluate the model trained by this earlier entry through this entry's method
    #: (e.g. System-1.5's stage 1 is the CODI run's objective, so it is not trained twice)
    model_from: str | None = None


def entry_method(out: Path, e: BenchEntry, device):
    """The model an entry evaluates (its own, or another entry's viewed through its method)."""
    from latentreason.training.api import convert_method
    from latentreason.training.checkpoint import load_method

    if e.model_from is None:
        return load_method(out / e.name / "model", device=device, config_overrides=e.eval_args)
    src = load_method(out / e.model_from / "model", device=device)
    return convert_method(src, e.method, {**e.method_args, **e.eval_args})


@dataclass
class SoftStudyConfig:
    """The soft-thinking study run on a benchmark's CoT model (and noisy thoughts of a latent one)."""

    #: entry whose model is studied (a CoT-SFT model)
    entry: str = "cot"
    #: study the entry's training snapshot at this optimiser step instead of its final model (None: the
    #: final model). The entry must write it (``train.save_every`` dividing it, e.g. equal to it): a
    #: model that is still unsure (docs/soft_thinking.md, "Which model the study runs on")
    checkpoint_step: int | None = None
    #: entry whose continuous thoughts get Dirichlet / Gumbel noise (None: skip) — this project's
    #: extension, not a paper's method (docs/soft_thinking.md, "Noisy continuous thoughts")
    latent_entry: str | None = "codi"
    limit: int = 200
    samples: int = 8
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    seed: int = 0
    threads: int | None = 1
    #: JS-probe / path-share horizons; the first is the one reported as ``js_top1`` / ``js_top2``
    #: (1 = the next token, SPEC §4.1; see docs/soft_thinking.md for why 2 on the default task)
    horizons: list[int] = field(default_factory=lambda: [1])
    #: questions (branching points) of the logit-lens path-share experiment
    lens_limit: int = 50
    #: SoftThinkingConfig overrides for the study (e.g. ``{"temperature": 1.0}``); {} = the defaults
    sampler: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSet:
    """An extra evaluation set: a file in any supported format, or a named set (``svamp``, ``gsm_hard``...)."""

    name: str
    path: str
    fmt: str | None = None
    limit: int | None = None
    data_dir: str | None = None


@dataclass
class BenchConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    entries: list[BenchEntry] = field(default_factory=list)
    eval_batch_size: int = 64
    #: full evaluation passes whose median gives the latency
    latency_repeats: int = 5
    #: "round_robin": after all entries are evaluated, every entry's model is loaded and timed in turn,
    #: ``latency_repeats`` rounds, so slow drifts and bursts of a shared machine hit every method alike
    #: (all models in memory at once); "per_entry": each entry timed right after its evaluation, alone
    latency_protocol: str = "round_robin"
    test_limit: int | None = None
    valid_limit: int = 200
    seed: int = 0
    #: several training seeds (each runs the whole pipeline; results report mean, std, min); None: [seed]
    seeds: list[int] | None = None
    soft_thinking: SoftStudyConfig | None = None
    #: run System-1.5's test-time grid on its stage-2 entry (questions per cell; 0 = skip)
    system15_grid: int = 200
    #: adaptive latent thinking section (``results["adaptive"]``): the entry whose model it starts from
    #: (e.g. "codi"); None skips it. ``adaptive_quick`` uses the section's small test settings.
    adaptive_from: str | None = None
    adaptive_quick: bool = False
    #: extra (out-of-distribution) evaluation sets every entry is also evaluated on (``results["ood"]``)
    eval_sets: list[EvalSet] = field(default_factory=list)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def entry_run_config(cfg: BenchConfig, entry: BenchEntry, out_dir: Path) -> RunConfig:
    train = copy.deepcopy(cfg.train)
    for k, v in entry.train.items():
        if not hasattr(train, k):
            raise ConfigError(f"entries.{entry.name}.train.{k}: unknown key")
        setattr(train, k, v)
    train.seed = cfg.seed
    train.validate()
    task = copy.deepcopy(cfg.task)
    for k, v in entry.task.items():
        if not hasattr(task, k):
            raise ConfigError(f"entries.{entry.name}.task.{k}: unknown key")
        setattr(task, k, v)
    task.validate()
    data = DataConfig(dataset="modchain", task=task, valid_limit=cfg.valid_limit, test_limit=cfg.test_limit)
    return RunConfig(
        method=entry.method,
        method_args=dict(entry.method_args),
        model=copy.deepcopy(cfg.model),
        data=data,
        train=train,
        out_dir=str(out_dir / entry.name),
        init_from=str(out_dir / entry.init_from / "model") if entry.init_from else None,
    )


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
    every row, its per-seed values and their spread (:mod:`latentreason.evaluation.seeds`).
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
        if len(seed_list) > 1:
            atomic_write_json(where / "results.json", aggregate([(s, res)]))
    results = aggregate(runs)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    if len(seed_list) > 1:
        results["seed_dirs"] = {str(s): f"seed-{s}" for s in seed_list}
    atomic_write_json(out / "results.json", results)
    return results


def _task_key(e: BenchEntry | None) -> str:
    return json.dumps(e.task if e is not None else {}, sort_keys=True)


def baselines(entries: list[BenchEntry]) -> dict[str, dict[str, str]]:
    """Per task variant (an entry's ``task`` overrides), the CoT-SFT and No-CoT-SFT entries trained on it:
    every row's speed-up and gap closed are measured against the baselines of its own task."""
    refs: dict[str, dict[str, str]] = {}
    for e in entries:
        if e.method in ("cot", "nocot") and e.model_from is None:
            refs.setdefault(_task_key(e), {}).setdefault(e.method, e.name)
    return refs


def _entries_needed(cfg: BenchConfig, only: list[str] | None) -> list[BenchEntry]:
    names = [e.name for e in cfg.entries]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"unknown benchmark entries {unknown}; valid: {', '.join(names)}")
    wanted = set(only or names)
    # speed-ups are measured against CoT in the same run, the gap each row closes between No-CoT and CoT,
    # both on the row's own task variant
    refs = baselines(cfg.entries)
    for e in cfg.entries:
        if e.name in wanted:
            wanted.update(refs.get(_task_key(e), {}).values())
    # entries a wanted entry starts from are needed too
    for e in reversed(cfg.entries):
        if e.name in wanted and e.init_from:
            wanted.add(e.init_from)
        if e.name in wanted and e.model_from:
            wanted.add(e.model_from)
    return [e for e in cfg.entries if e.name in wanted]


def train_entries(cfg: BenchConfig, entries: list[BenchEntry], out: Path, *, fresh: bool, progress: bool,
                  log: Callable[[str], None], reuse_stale: bool = False) -> dict[str, dict[str, Any]]:
    """Train every entry in order, or reuse its finished run when config, parent run and code are unchanged.

    The reuse key (``done.json``) is the entry's full run config, the identity of the run it starts
    from (its ``run_id``: a retrained parent invalidates its children) and the hash of the package's
    source (:func:`latentreason.utils.code_identity`); a run trained by other code is retrained unless
    ``reuse_stale``, and is then marked ``code_stale`` in the results.
    """
    from latentreason.training.api import run_training

    code = code_identity()
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
    from latentreason.evaluation.evaluate import evaluate
    from latentreason.training.api import load_split

    out = check_writable_dir(out_dir)
    if cfg.latency_protocol not in ("round_robin", "per_entry"):
        raise ConfigError(f"latency_protocol must be 'round_robin' or 'per_entry', got {cfg.latency_protocol!r}")
    entries = _entries_needed(cfg, only)
    ood_sets = load_eval_sets(cfg.eval_sets)  # before training: a bad path fails fast
    t0 = time.perf_counter()
    trained = train_entries(cfg, entries, out, fresh=fresh, progress=progress, log=log, reuse_stale=reuse_stale)
    # ------------------------------------------------------------ one evaluation for all
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {
        "task": task_description(cfg.task),
        "model": to_dict(cfg.model),
        "methods": {},
        "env": env_info(device),
        "code": code_identity(),
        "seed": cfg.seed,
    }
    round_robin = cfg.latency_protocol == "round_robin" and len(entries) > 1
    for e in entries:
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
            row["exit_histogram"] = method.exit_histogram(test, [r["exit_layers"] for r in ev.records])
        elif e.method == "cot":
            row.update(cot_cost(method, test, row))
        row["train_seconds"] = trained[e.name]["train"]["train_seconds"]
        row["train_steps"] = trained[e.name]["train"]["steps"]
        row["method"] = e.method
        if e.init_from or e.model_from:
            row["init_from"] = e.init_from or e.model_from
        if trained[e.name].get("code_stale"):
            row["code_stale"] = True
        results["methods"][e.name] = row
        log(f"[{e.name}] accuracy {row['accuracy']:.3f}" +
            ("" if round_robin else f", {row['latency_ms_per_question']:.2f} ms/question"))
        del method
    if round_robin:
        log(f"[latency] every model in turn, {cfg.latency_repeats} rounds over the test questions")
        for name, rounds in round_robin_latency(cfg, entries, out, device).items():
            row, ms = results["methods"][name], median(rounds)
            row["tokens_per_s"] *= row["latency_ms_per_question"] / ms if ms > 0 else 1.0
            row.update(latency_ms_per_question=ms, latency_repeats=len(rounds), latency_protocol="round_robin",
                       latency_rounds_ms=list(rounds), eval_seconds=ms * row["n"] / 1000.0)
            log(f"[latency] {name}: {ms:.2f} ms/question")
    refs = baselines(entries)
    for e in entries:
        row = results["methods"][e.name]
        ref = refs.get(_task_key(e), {})
        if e.task:
            row["task_variant"] = dict(e.task)
        if ref:
            row["baseline"] = dict(ref)
        cot = results["methods"].get(ref.get("cot", ""))
        if cot and row["latency_ms_per_question"] > 0:
            row["speedup_vs_cot"] = cot["latency_ms_per_question"] / row["latency_ms_per_question"]
        if cot and "flops_per_latent_step" in row and cot.get("flops_per_step"):
            row["flops_per_step_vs_cot"] = row["flops_per_latent_step"] / cot["flops_per_step"]
    cot = results["methods"].get(refs.get(_task_key(None), {}).get("cot", ""))
    if ood_sets:
        results["ood"] = run_ood(cfg, ood_sets, out, entries, device, progress, log)
    s15 = next((e for e in entries if e.method == "system15" and e.model_from is None), None)
    if s15 is not None and cfg.system15_grid:
        results["system15_grid"] = run_system15_grid(cfg, s15, out, device, log)
    if cfg.adaptive_from and cfg.adaptive_from in {e.name for e in entries}:
        from latentreason.evaluation.adaptive import run_adaptive

        log("[adaptive] CODI with a per-question number of thoughts on the mixed-difficulty task")
        ad = run_adaptive(out / "adaptive", out / cfg.adaptive_from / "model", cfg.model, quick=cfg.adaptive_quick,
                          progress=progress, log=log, eval_batch_size=cfg.eval_batch_size,
                          latency_repeats=cfg.latency_repeats, seed=cfg.seed, fresh=fresh, reuse_stale=reuse_stale)
        for row in ad.values():
            if isinstance(row, dict) and cot and row.get("latency_ms_per_question"):
                row["speedup_vs_cot"] = cot["latency_ms_per_question"] / row["latency_ms_per_question"]
        results["adaptive"] = ad
    st = cfg.soft_thinking
    if st is not None and st.entry in {e.name for e in entries}:
        results["soft_thinking"] = run_soft_study(cfg, st, out, {e.name for e in entries}, device, log)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    return results


def run_soft_study(cfg: BenchConfig, st: SoftStudyConfig, out: Path, names: set[str], device, log) -> dict[str, Any]:
    """Soft / stochastic soft thinking on the CoT model, plus noisy thoughts of the latent model."""
    from latentreason.analysis.soft_study import soft_thinking_study
    from latentreason.decoding.stochastic_latent import latent_sampling_study
    from latentreason.training.api import load_split
    from latentreason.training.checkpoint import load_method

    from latentreason.decoding.soft_thinking import soft_config
    from latentreason.errors import CheckpointError

    entry = next(e for e in cfg.entries if e.name == st.entry)
    test = load_split(entry_run_config(cfg, entry, out), "test")[: st.limit]
    if st.checkpoint_step is None:
        ckpt, what = out / st.entry / "model", f"{st.entry} (final model)"
    else:
        ckpt, what = out / st.entry / "checkpoints" / f"step-{st.checkpoint_step:08d}", f"{st.entry} at step {st.checkpoint_step}"
        if not (ckpt / "method.json").exists():
            raise CheckpointError(f"soft_thinking.checkpoint_step={st.checkpoint_step}: {ckpt} does not exist; the entry "
                                  f"{st.entry!r} must save it (set its train.save_every to {st.checkpoint_step})")
    log(f"[soft thinking] {len(test)} questions x {st.samples} samples on {what}")
    cot = load_method(ckpt, device=device)
    res = soft_thinking_study(cot, test, samples=st.samples, ks=st.ks, seed=st.seed, out_dir=out / "soft_thinking",
                              config=soft_config(**st.sampler), threads=st.threads, horizons=st.horizons,
                              lens_limit=st.lens_limit, log=log,
                              model_info={"entry": st.entry, "checkpoint": str(ckpt.relative_to(out)),
                                          "step": st.checkpoint_step})
    del cot
    for row in res.values():
        row["model"] = what
    if st.latent_entry and st.latent_entry in names:
        lat = load_method(out / st.latent_entry / "model", device=device)
        saved = torch.get_num_threads()
        if st.threads:
            torch.set_num_threads(st.threads)
        try:
            noisy = latent_sampling_study(lat, test, samples=st.samples, ks=st.ks, seed=st.seed)
        finally:
            torch.set_num_threads(saved)
        for mode, row in noisy.items():
            res[f"{st.latent_entry}_{mode}"] = {
                "accuracy": row["accuracy"], "pass_at_k": row["pass_at_k"], "rouge_l_vs_greedy": None, "js_top1": None,
                "js_top2": None, "js_horizon": None, "mean_thinking_entropy": None, "softness": None, "randomness": None,
                # noise on a latent model's continuous thoughts: this project's extension, not a paper's method
                "extension": f"project extension: {mode} noise on {st.latent_entry}'s continuous thoughts "
                             f"(strength {row['strength']}), decoding/stochastic_latent.py",
                "model": f"{st.latent_entry} (final model)"}
    return res


# --------------------------------------------------------------------------- out-of-distribution sets
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_eval_sets(specs: list[str] | None, data_dir: str | None = None) -> list[EvalSet]:
    """``["svamp=data/SVAMP.json", "gsm_hard"]`` -> :class:`EvalSet` list.

    Each spec is ``NAME=PATH`` (PATH: a file, format detected from its content, or a named set)
    or just the name of a named set (``svamp``, ``gsm_hard``, ``multiarith``, ``asdiv``; resolved in
    the data directory).
    """
    out: list[EvalSet] = []
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep:
            path = name
        if not name or not path:
            raise ConfigError(f"--eval-set {spec!r}: expected NAME=PATH (e.g. svamp=data/svamp/SVAMP.json) or a named set")
        if not _SET_NAME.match(name):
            raise ConfigError(f"--eval-set {spec!r}: the name {name!r} may only contain letters, digits, '_', '.' and '-'")
        if any(e.name == name for e in out):
            raise ConfigError(f"--eval-set: the name {name!r} is given twice")
        out.append(EvalSet(name, path, data_dir=data_dir))
    return out


def load_eval_sets(sets: list[EvalSet]) -> dict[str, list[Example]]:
    """Load every extra evaluation set (its test split for named sets); errors name the set."""
    from latentreason.data.registry import load_dataset
    from latentreason.errors import DataError

    loaded: dict[str, list[Example]] = {}
    for es in sets:
        try:
            examples = load_dataset(es.path, "test", data_dir_=es.data_dir, fmt=es.fmt, limit=es.limit)
        except DataError as e:
            raise DataError(f"evaluation set {es.name!r}: {e}") from e
        if not examples:
            raise DataError(f"evaluation set {es.name!r} ({es.path}): no examples")
        loaded[es.name] = examples
    return loaded


def run_ood(cfg: BenchConfig, sets: dict[str, list[Example]], out: Path, entries: list[BenchEntry], device,
            progress: bool, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Every entry on every extra set: ``{SET: {ENTRY: metrics}}``; predictions in ``OUT/ENTRY/ood-SET.json``."""
    from latentreason.training.checkpoint import load_method

    res: dict[str, dict[str, Any]] = {name: {} for name in sets}
    sources = {es.name: es.path for es in cfg.eval_sets}
    for e in entries:
        method = entry_method(out, e, device)
        for name, examples in sets.items():
            metrics, records = evaluate_ood(method, examples, batch_size=cfg.eval_batch_size, progress=progress,
                                            description=f"{name} {e.name}")
            atomic_write_json(out / e.name / f"ood-{name}.json", records)
            metrics["source"] = sources.get(name)
            res[name][e.name] = metrics
            log(f"[{e.name}] {name}: accuracy {metrics['accuracy']:.3f} on {metrics['n']} questions"
                + (f" ({metrics['too_long']} too long for the context, counted wrong)" if metrics["too_long"] else ""))
        del method
    return res


def _mean_prompt_tokens(method, examples) -> float:
    prompts = method.serializer.prompts(examples)
    return sum(len(p) for p in prompts) / max(1, len(prompts))


def cot_cost(method, examples, row) -> dict[str, float]:
    """Transformer FLOPs of one CoT decoding step (full depth, at the mean context of the generation)."""
    from latentreason.evaluation.flops import step_flops
    from latentreason.models.shortcuts import find_decoder_layers

    L = len(find_decoder_layers(method.model))
    n_ctx = _mean_prompt_tokens(method, examples) + row["mean_generated_tokens"] / 2
    return {"num_layers": L, "flops_per_step": step_flops(method.model, n_ctx, L)}


def latent_cost(method, examples, records, row) -> dict[str, float]:
    """Layers run per latent step and Transformer (+ router/adapter/KV-projection) FLOPs per latent step."""
    from latentreason.evaluation.flops import kv_flops, matrix_params, step_flops
    from latentreason.models.shortcuts import find_decoder_layers

    L = len(find_decoder_layers(method.model))

    def mean_of(key: str, default: float) -> float:
        vals = [r[key] for r in records if key in r]
        return sum(vals) / len(vals) if vals else default

    m = mean_of("layers_per_latent_step", float(L))
    n_ctx = _mean_prompt_tokens(method, examples) + 1 + row["mean_latent_steps"] / 2
    flops = step_flops(method.model, n_ctx, m)
    out = {"num_layers": L, "mean_layers_per_latent_step": m}
    routers = getattr(method, "routers", None)
    if routers is not None and any("routers_per_latent_step" in r for r in records):
        per = {k: mean_of(f"{k}_per_latent_step", 0.0) for k in ("routers", "adapters", "kv_projections")}
        flops += (per["routers"] * 2.0 * matrix_params(routers[0]) + per["adapters"] * 2.0 * matrix_params(method.adapters[0])
                  + per["kv_projections"] * kv_flops(method.model))
        out.update({f"mean_{k}_per_latent_step": v for k, v in per.items()})
    out["flops_per_latent_step"] = flops
    return out


def round_robin_latency(cfg: BenchConfig, entries: list[BenchEntry], out: Path, device) -> dict[str, list[float]]:
    """ms/question of every entry in each of ``cfg.latency_repeats`` rounds; in each round every entry
    decodes its whole test set once, in turn, the order reversed every other round (one warm-up batch
    each first)."""
    from latentreason.evaluation.evaluate import run_generation
    from latentreason.training.api import load_split

    methods, tests = {}, {}
    for e in entries:
        tests[e.name] = load_split(entry_run_config(cfg, e, out), "test")
        methods[e.name] = entry_method(out, e, device)
        run_generation(methods[e.name], tests[e.name][: min(8, len(tests[e.name]))], cfg.eval_batch_size)
    totals: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for r in range(max(1, cfg.latency_repeats)):
        for name in order if r % 2 == 0 else order[::-1]:  # alternate the order: a drift within a round cancels
            totals[name].append(sum(run_generation(methods[name], tests[name], cfg.eval_batch_size)[1]))
    return {name: [1000.0 * x / max(1, len(tests[name])) for x in t] for name, t in totals.items()}


def run_system15_grid(cfg: BenchConfig, e: BenchEntry, out: Path, device, log) -> dict[str, Any]:
    """λ_depth × λ_step grid of the System-1.5 entry on **validation** questions (JSON + heatmap PNG in its
    run directory); the best cell is chosen there and then evaluated on the test questions (``best.test_*``)."""
    from latentreason.analysis.system15_grid import plot_grid, shortcut_ablation, system15_grid
    from latentreason.evaluation.evaluate import evaluate
    from latentreason.training.api import load_split

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
    grid["shortcut_ablation"] = shortcut_ablation(method, load_split(rc, "test"), batch_size=cfg.eval_batch_size)
    atomic_write_json(out / e.name / "system15-grid.json", grid)
    plot_grid(grid, out / e.name / "system15-grid.png")
    return grid
