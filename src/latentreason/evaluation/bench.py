"""The benchmark runner: every method on the same data, seed and test questions, in one run.

A benchmark is a list of entries (row name, method, method options, training budget, the entry
whose model it starts from). The runner trains each entry in order — or reuses it when its run
directory already holds a finished model trained with the same settings — then evaluates all of
them on the same test questions with the same batch size, so that latency ratios
(``speedup_vs_cot``) are measured in one run on one machine. ``latentreason demo`` is this
runner on the embedded default task.

Extra (out-of-distribution) evaluation sets, ``BenchConfig.eval_sets`` (``demo --eval-set
NAME=PATH``), are evaluated for every entry by :func:`evaluate_ood` into ``results["ood"][SET][ENTRY]``;
a question longer than the model's context is counted as ``too_long`` (and wrong), not an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Callable

import torch

from latentreason.config import to_dict, to_dict_nondefault
from latentreason.data.example import Example
from latentreason.data.procedural import TaskConfig, task_description
from latentreason.errors import ConfigError
from latentreason.models.backbone import ModelConfig
from latentreason.training.run_config import DataConfig, RunConfig, TrainConfig
from latentreason.utils import atomic_write_json, check_writable_dir, env_info


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
) -> dict[str, Any]:
    """Train (or reuse) and evaluate every entry; write ``OUT/results.json``; return the results."""
    from latentreason.evaluation.evaluate import evaluate
    from latentreason.training.api import load_split, run_training
    from latentreason.training.checkpoint import load_method

    out = check_writable_dir(out_dir)
    names = [e.name for e in cfg.entries]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"unknown benchmark entries {unknown}; valid: {', '.join(names)}")
    if cfg.latency_protocol not in ("round_robin", "per_entry"):
        raise ConfigError(f"latency_protocol must be 'round_robin' or 'per_entry', got {cfg.latency_protocol!r}")
    wanted = set(only or names)
    if "cot" in names:
        wanted.add("cot")  # speed-ups are measured against CoT in the same run
    # entries a wanted entry starts from are needed too
    for e in reversed(cfg.entries):
        if e.name in wanted and e.init_from:
            wanted.add(e.init_from)
        if e.name in wanted and e.model_from:
            wanted.add(e.model_from)
    entries = [e for e in cfg.entries if e.name in wanted]
    ood_sets = load_eval_sets(cfg.eval_sets)  # before training: a bad path fails fast
    t0 = time.perf_counter()
    trained: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.model_from is not None:
            trained[e.name] = {**trained[e.model_from], "model_from": e.model_from}
            continue
        rc = entry_run_config(cfg, e, out)
        fp = _fingerprint({"run": to_dict_nondefault(rc), "parent": trained.get(e.init_from, {}).get("fingerprint")})
        done_file = out / e.name / "done.json"
        if not fresh and done_file.exists() and (out / e.name / "model" / "method.json").exists():
            done = json.loads(done_file.read_text())
            if done.get("fingerprint") == fp:
                log(f"[{e.name}] reusing the finished run in {out / e.name}")
                trained[e.name] = done
                continue
        log(f"[{e.name}] training {e.method}" + (f" from {e.init_from}" if e.init_from else ""))
        res = run_training(rc, progress=progress, evaluate_test=False, log=log)
        done = {"fingerprint": fp, "train": res["train"]}
        atomic_write_json(done_file, done)
        trained[e.name] = done
    # ------------------------------------------------------------ one evaluation for all
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {
        "task": task_description(cfg.task),
        "model": to_dict(cfg.model),
        "methods": {},
        "env": env_info(device),
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
        elif e.method == "cot":
            row.update(cot_cost(method, test, row))
        row["train_seconds"] = trained[e.name]["train"]["train_seconds"]
        row["train_steps"] = trained[e.name]["train"]["steps"]
        row["method"] = e.method
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
    cot = results["methods"].get("cot")
    for row in results["methods"].values():
        if cot and row["latency_ms_per_question"] > 0:
            row["speedup_vs_cot"] = cot["latency_ms_per_question"] / row["latency_ms_per_question"]
        if cot and "flops_per_latent_step" in row and cot.get("flops_per_step"):
            row["flops_per_step_vs_cot"] = row["flops_per_latent_step"] / cot["flops_per_step"]
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
                          latency_repeats=cfg.latency_repeats)
        for row in ad.values():
            if isinstance(row, dict) and cot and row.get("latency_ms_per_question"):
                row["speedup_vs_cot"] = cot["latency_ms_per_question"] / row["latency_ms_per_question"]
        results["adaptive"] = ad
    st = cfg.soft_thinking
    if st is not None and st.entry in {e.name for e in entries}:
        results["soft_thinking"] = run_soft_study(cfg, st, out, {e.name for e in entries}, device, log)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "results.json", results)
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


def _too_long_error(e: Exception) -> bool:
    return "context" in str(e)


def fitting_mask(method, examples: list[Example], batch_size: int) -> list[bool]:
    """Which questions the method can answer within its model's context.

    A prompt longer than the context is certainly too long; the rest are checked with the method's
    own generation (limited to one new token, so a check costs a prefill and the method's latent
    steps): a batch that raises the context error is split in halves until each question is
    classified. This asks the method itself, so positions it reserves (``<bot>``, thoughts) count.
    """
    from latentreason.errors import DataError

    limit = method.max_positions
    if limit is None:
        return [True] * len(examples)
    mask = [len(p) + 1 <= limit for p in method.serializer.prompts(examples)]
    cand = [i for i, ok in enumerate(mask) if ok]

    def probe(idx: list[int]) -> bool:
        try:
            method.generate([examples[i] for i in idx])
            return True
        except DataError as e:
            if not _too_long_error(e):
                raise
            return False

    def classify(idx: list[int]) -> None:
        if probe(idx):
            return
        if len(idx) == 1:
            mask[idx[0]] = False
            return
        classify(idx[: len(idx) // 2])
        classify(idx[len(idx) // 2 :])

    saved = method.config.max_new_tokens
    was_training = method.training
    method.eval()
    method.config.max_new_tokens = 1
    try:
        for i in range(0, len(cand), batch_size):
            classify(cand[i : i + batch_size])
    finally:
        method.config.max_new_tokens = saved
        method.train(was_training)
    return mask


def evaluate_ood(method, examples: list[Example], batch_size: int = 64, progress: bool = False,
                 description: str = "ood") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy of ``method`` on an extra evaluation set, with too-long questions counted, not fatal.

    Questions that do not fit the model's context (prompt plus whatever the method must place
    before its answer) are skipped and counted as ``too_long``; they count as wrong in
    ``accuracy`` (= correct / n, n = all questions of the set, so numbers stay comparable with
    the papers' full-set accuracies) and are left out of ``accuracy_answerable`` (= correct /
    answerable). The answerable questions are decoded in batches of similar prompt length: the
    generation budget of a batch is capped by its longest prompt, so this keeps one long question
    from shortening the others' answers. Latency is the wall-clock time of that pass per answered
    question (after one warm-up batch). Returns the metrics and one record per question (input
    order; too-long ones marked ``"too_long": true``).
    """
    from latentreason.evaluation.evaluate import evaluate

    n = len(examples)
    mask = fitting_mask(method, examples, batch_size)
    lengths = [len(p) for p in method.serializer.prompts(examples)]
    order = sorted((i for i in range(n) if mask[i]), key=lambda i: lengths[i])
    fit = [examples[i] for i in order]
    records: list[dict[str, Any] | None] = [None] * n
    if fit:
        ev = evaluate(method, fit, batch_size=batch_size, progress=progress, description=description)
        m = ev.metrics
        for i, rec in zip(order, ev.records):
            records[i] = rec
    else:
        m = {"correct": 0, "unparseable": 0, "latency_ms_per_question": 0.0, "mean_generated_tokens": 0.0,
             "mean_reasoning_tokens": 0.0, "mean_latent_steps": 0.0, "mean_forward_passes": 0.0}
    for i in range(n):
        if records[i] is None:
            ex = examples[i]
            records[i] = {"question": ex.question, "gold": ex.answer, "output": None, "prediction": None,
                          "correct": False, "too_long": True}
    too_long = n - len(fit)
    metrics = {
        "accuracy": m["correct"] / n if n else 0.0,
        "n": n,
        "correct": m["correct"],
        "unparseable": m["unparseable"],
        "too_long": too_long,
        "answerable": len(fit),
        "accuracy_answerable": m["correct"] / len(fit) if fit else None,
        "latency_ms_per_question": m["latency_ms_per_question"],
        "mean_generated_tokens": m["mean_generated_tokens"],
        "mean_reasoning_tokens": m["mean_reasoning_tokens"],
        "mean_latent_steps": m["mean_latent_steps"],
        "mean_forward_passes": m["mean_forward_passes"],
        "batch_size": batch_size,
        "context": method.max_positions,
    }
    return metrics, records  # type: ignore[return-value]


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
    from latentreason.evaluation.flops import matrix_params, qkv_flops, step_flops
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
                  + per["kv_projections"] * qkv_flops(method.model))
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
    """λ_depth × λ_step grid of the System-1.5 entry (JSON + heatmap PNG in its run directory)."""
    from latentreason.analysis.system15_grid import plot_grid, system15_grid
    from latentreason.training.api import load_split

    test = load_split(entry_run_config(cfg, e, out), "test")[: cfg.system15_grid]
    method = entry_method(out, e, device)
    log(f"[{e.name}] test-time grid on {len(test)} questions")
    grid = system15_grid(method, test, (0.5, 0.7, 0.8, 0.9, 0.95), (3, 4, 5, 6), batch_size=cfg.eval_batch_size)
    atomic_write_json(out / e.name / "system15-grid.json", grid)
    plot_grid(grid, out / e.name / "system15-grid.png")
    return grid
