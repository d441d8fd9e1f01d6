"""The demo's adaptive-thinking section (issue 9, ``docs/adaptive.md``).

:func:`run_adaptive` trains ``codi_adaptive`` on the mixed-difficulty task (1..6 modular steps per
question), starting from a finished model of the demo (its CODI model by default: initialisation
from another latent model), then compares on the same test questions

* ``codi_fixed`` — the trained model with a fixed number of thoughts n, n chosen as the best
  validation accuracy over n = 1..n_max;
* ``codi_adaptive`` — the same weights, each question stopping when the halting head says so;
* ``codi_adaptive_probe`` — the same weights, stopping on the training-free LM-head probe.

Latency is measured by :func:`~latentreason.evaluation.evaluate.evaluate` with the demo's batch
size and repeats, as for every other row of the demo. The section writes ``OUT/results.json``,
``OUT/predictions-*.json`` and ``OUT/thoughts_vs_steps.png`` and returns the results.

Adaptive thinking lives in ``methods/adaptive/``: the halting head and the stop rules the latent loop
consults (``halting.py``) and the method ``codi_adaptive`` (``method.py``); this section is the
experiment that runs it; Spearman's correlation is in ``analysis/spearman.py`` and the plot in
``reporting/plots.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable

import torch

from latentreason.analysis.spearman import spearman
from latentreason.config import to_dict, to_dict_nondefault
from latentreason.data.example import Example
from latentreason.data.procedural import TaskConfig, task_description
from latentreason.errors import ConfigError
from latentreason.evaluation.evaluate import evaluate
from latentreason.methods.adaptive.method import CODIAdaptive
from latentreason.methods.base import method_config
from latentreason.methods.codi import CODI
from latentreason.models.backbone import ModelConfig
from latentreason.reporting.plots import thoughts_plot
from latentreason.training.api import build_method, load_split
from latentreason.training.checkpoint import load_method, save_method
from latentreason.training.run import run_training
from latentreason.training.run_config import DataConfig, RunConfig, TrainConfig, run_config_dict
from latentreason.utils import atomic_write_json, check_writable_dir, code_identity


# --------------------------------------------------------------------------- statistics


# --------------------------------------------------------------------------- configuration
def mixed_task(**kw: Any) -> TaskConfig:
    """The mixed-difficulty task of this section: 1..6 steps per question, uniformly."""
    base = dict(n_steps=6, min_steps=1)
    base.update(kw)
    return TaskConfig(**base)


#: the section's training mix: 1..4-step problems once each, 5- and 6-step ones four times as often
#: (valid and test stay uniform). With the uniform mix the 4-step CODI parent never learns the fifth
#: and sixth step (its fifth thought keeps the carry habit the short problems train); measured in
#: docs/adaptive.md ("Training mix").
TRAIN_STEP_WEIGHTS = [1.0, 1.0, 1.0, 1.0, 4.0, 4.0]


@dataclass
class AdaptiveConfig:
    task: TaskConfig = field(default_factory=lambda: mixed_task(train_step_weights=list(TRAIN_STEP_WEIGHTS)))
    #: options of ``codi_adaptive`` (``preset: default_task`` = CODI's project setting, 7 thoughts at most)
    method_args: dict[str, Any] = field(default_factory=lambda: {"preset": "default_task"})
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=32, lr=1e-3, warmup_steps=20, max_steps=800, log_every=25, eval_every=0, eval_batch_size=200))
    #: fixed-n candidates are 1..n_max; also the cap of the adaptive loop
    n_max: int = 7
    valid_limit: int | None = 300
    test_limit: int | None = None
    eval_batch_size: int = 100
    latency_repeats: int = 3
    seed: int = 0
    #: curriculum: the first ``first_phase_steps`` of the ``train.max_steps`` training steps draw the training
    #: questions with ``first_phase_step_weights`` (one weight per difficulty, as ``task.train_step_weights``;
    #: e.g. only the longest problems) and the rest with the task's own mix; 0 = one phase
    first_phase_steps: int = 0
    first_phase_step_weights: list[float] | None = None
    #: after training, refit the halting head alone on this many training questions (0: keep the
    #: head trained alongside CODI) with this many full-batch Adam steps
    head_refit_examples: int = 1024
    head_refit_steps: int = 300


def adaptive_config(quick: bool = False) -> AdaptiveConfig:
    """The demo's settings; ``quick`` is a much smaller version used by the tests."""
    if quick:
        return AdaptiveConfig(
            task=mixed_task(n_steps=3, n_train=200, n_valid=12, n_test=12),
            method_args={"preset": "default_task", "n_latent": 4, "max_new_tokens": 8},
            train=TrainConfig(batch_size=8, lr=1e-3, warmup_steps=1, max_steps=2, log_every=1, eval_every=0,
                              eval_batch_size=12),
            n_max=4, valid_limit=12, test_limit=12, eval_batch_size=6, latency_repeats=1,
            head_refit_examples=16, head_refit_steps=5)
    return AdaptiveConfig()


def section_run_config(cfg: AdaptiveConfig, model: ModelConfig, out_dir: Path, init_from: str | Path | None) -> RunConfig:
    args = dict(cfg.method_args)
    args.setdefault("n_latent", cfg.n_max)
    train = copy.deepcopy(cfg.train)
    train.seed = cfg.seed
    train.validate()
    task = copy.deepcopy(cfg.task)
    task.validate()
    if task.min_steps is None:
        raise ConfigError("adaptive section: the task must have mixed difficulty (task.min_steps set)")
    data = DataConfig(dataset="modchain_mixed", task=task, valid_limit=cfg.valid_limit, test_limit=cfg.test_limit)
    return RunConfig(method="codi_adaptive", method_args=args, model=copy.deepcopy(model), data=data, train=train,
                     out_dir=str(out_dir / "train"), init_from=str(init_from) if init_from else None)


def first_phase_run_config(cfg: AdaptiveConfig, rc: RunConfig) -> RunConfig:
    """The curriculum's first phase: ``first_phase_steps`` steps on ``first_phase_step_weights``, in
    ``OUT/train/first_phase`` (the second phase continues the same model in ``OUT/train``)."""
    if not 0 < cfg.first_phase_steps < rc.train.max_steps:
        raise ConfigError(f"adaptive section: first_phase_steps must be between 1 and train.max_steps - 1 "
                          f"({rc.train.max_steps - 1}), got {cfg.first_phase_steps}")
    if cfg.first_phase_step_weights is None:
        raise ConfigError("adaptive section: first_phase_steps needs first_phase_step_weights")
    rc1 = copy.deepcopy(rc)
    rc1.data.task.train_step_weights = list(cfg.first_phase_step_weights)
    rc1.data.task.validate()
    rc1.train.max_steps = cfg.first_phase_steps
    rc1.out_dir = str(Path(rc.out_dir) / "first_phase")
    return rc1


def _file_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for name in ("method.json", "model.safetensors", "extra.safetensors"):
        p = directory / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_adaptive_method(rc: RunConfig):
    """``codi_adaptive`` from ``rc.init_from``: a CODI checkpoint gives backbone + projection, any
    other checkpoint (e.g. CoT-SFT) its backbone; without ``init_from`` a fresh backbone."""
    mcfg = method_config(CODIAdaptive, rc.method_args)
    if rc.init_from:
        src = load_method(rc.init_from)
        if isinstance(src, CODI) and src.config.projection == mcfg.projection:
            return CODIAdaptive.from_codi(src, mcfg)
        return CODIAdaptive(src.backbone, mcfg)
    return build_method(rc)


# --------------------------------------------------------------------------- the section
def _set_mode(method, halting: str, n: int | None = None) -> None:
    method.config.halting = halting
    if n is not None:
        method.config.n_latent = n


def _by_steps(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[int(r["meta"]["n_steps"])].append(r)
    return {str(k): {"n": len(v), "accuracy": mean(float(r["correct"]) for r in v),
                     "mean_latent_steps": mean(r["latent_steps"] for r in v)} for k, v in sorted(groups.items())}


def _row(metrics: dict[str, Any], records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    keys = ("accuracy", "correct", "mean_latent_steps", "mean_forward_passes", "mean_generated_tokens",
            "latency_ms_per_question", "batch_size", "latency_repeats")
    row = {k: metrics[k] for k in keys}
    row["n_questions"] = metrics["n"]
    row.update(extra)
    row["by_true_steps"] = _by_steps(records)
    true = [int(r["meta"]["n_steps"]) for r in records]
    used = [int(r["latent_steps"]) for r in records]
    row["spearman_steps_vs_true"] = spearman(used, true)
    return row


def run_adaptive(
    out_dir: str | Path,
    init_from: str | Path | None,
    model: ModelConfig | None = None,
    cfg: AdaptiveConfig | None = None,
    *,
    quick: bool = False,
    fresh: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    eval_batch_size: int | None = None,
    latency_repeats: int | None = None,
    seed: int | None = None,
    reuse_stale: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) ``codi_adaptive`` on the mixed task and compare fixed-n with adaptive thinking.

    ``init_from``: a finished checkpoint to start from (the demo's ``OUT/codi/model``; a CoT model
    works too, with a fresh projection); ``model``: the backbone to build when ``init_from`` is None.
    ``eval_batch_size`` / ``latency_repeats`` override the config's (pass the demo's own, so that
    latencies compare with the demo's other rows). Returns ``{"codi_fixed": {...}, "codi_adaptive":
    {...}, "codi_adaptive_probe": {...}, "spearman_steps_vs_true": x, "valid_sweep": {...}, ...}``.
    """
    t0 = time.perf_counter()
    cfg = copy.deepcopy(cfg) if cfg is not None else adaptive_config(quick)
    if eval_batch_size is not None:
        cfg.eval_batch_size = eval_batch_size
    if latency_repeats is not None:
        cfg.latency_repeats = latency_repeats
    if seed is not None:
        cfg.seed = seed
    out = check_writable_dir(out_dir)
    if init_from is not None and not (Path(init_from) / "method.json").is_file():
        raise ConfigError(f"adaptive section: init_from {str(init_from)!r} is not a finished checkpoint (no method.json)")
    rc = section_run_config(cfg, model or ModelConfig(), out, init_from)
    done = train_or_reuse(cfg, rc, init_from, fresh=fresh, reuse_stale=reuse_stale, progress=progress, log=log)
    t_train = time.perf_counter() - t0

    valid = load_split(rc, "valid")
    test = load_split(rc, "test")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method = load_method(Path(rc.out_dir) / "model", device=device)
    trained_n = method.config.n_latent
    sweep, best_n, valid_adaptive = valid_sweep(method, valid, cfg, trained_n, log)
    rows, points = evaluate_rows(method, test, cfg, best_n, trained_n, out, progress, log)
    _set_mode(method, "head", trained_n)
    acc_by = {name: row["by_true_steps"] for name, row in rows.items()}
    (out / "thoughts_vs_steps.png").write_bytes(thoughts_plot(points, best_n, cfg.n_max, acc_by))
    fixed, adaptive = rows["codi_fixed"], rows["codi_adaptive"]
    results: dict[str, Any] = {
        **rows,
        "spearman_steps_vs_true": adaptive["spearman_steps_vs_true"],
        "accuracy_gap_points": 100.0 * (fixed["accuracy"] - adaptive["accuracy"]),
        "thought_reduction": 1.0 - adaptive["mean_latent_steps"] / fixed["mean_latent_steps"]
        if fixed["mean_latent_steps"] else None,
        "valid_sweep": {"accuracy_by_n": sweep, "best_n": best_n, "adaptive": valid_adaptive, "n": len(valid)},
        "task": task_description(cfg.task),
        "train": done.get("train"),
        "init_from": str(init_from) if init_from else None,
        "plot": str(out / "thoughts_vs_steps.png"),
        "config": to_dict(rc),
        "train_seconds_this_run": round(t_train, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / "results.json", results)
    return results


def train_or_reuse(cfg: AdaptiveConfig, rc: RunConfig, init_from: str | Path | None, *, fresh: bool, reuse_stale: bool,
                   progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Train ``codi_adaptive`` (then refit its halting head), or reuse the finished run when its config, the
    checkpoint it starts from and the code are unchanged; returns the run's ``done.json``."""
    parent = _file_digest(Path(init_from)) if init_from else None
    # paths left out (the parent's files are hashed instead): a moved run directory is reused, as the benchmark's
    run = {k: v for k, v in to_dict_nondefault(rc).items() if k not in ("out_dir", "init_from")}
    key = {"run": run, "parent": parent, "head_refit": [cfg.head_refit_examples, cfg.head_refit_steps]}
    if cfg.first_phase_steps:
        key["first_phase"] = [cfg.first_phase_steps, cfg.first_phase_step_weights]
    fp = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    run_dir = Path(rc.out_dir)
    done_file = run_dir / "done.json"
    done = json.loads(done_file.read_text()) if done_file.is_file() else {}
    code = code_identity()
    reuse = not fresh and done.get("fingerprint") == fp and (run_dir / "model" / "method.json").is_file()
    theirs = (done.get("code") or {}).get("source_hash")
    if reuse and theirs != code["source_hash"]:
        if reuse_stale:
            log(f"[adaptive] the finished run in {run_dir} was trained by other code (--reuse-stale: reusing it)")
        else:
            log(f"[adaptive] the finished run in {run_dir} was trained by other code "
                f"(source {theirs or 'unknown'}, now {code['source_hash']}): retraining (--reuse-stale reuses it)")
            reuse = False
    if reuse:
        log(f"[adaptive] reusing the finished run in {run_dir}")
        return done
    log("[adaptive] training codi_adaptive on the mixed task" + (f" from {init_from}" if init_from else ""))
    method = build_adaptive_method(rc)
    first = None
    if cfg.first_phase_steps:
        rc1 = first_phase_run_config(cfg, rc)
        log(f"[adaptive] curriculum: the first {cfg.first_phase_steps} steps on step weights "
            f"{cfg.first_phase_step_weights}, then {rc.train.max_steps - cfg.first_phase_steps} on {rc.data.task.train_step_weights}")
        first = run_training(rc1, method=method, progress=progress, evaluate_test=False, log=log)
        method = first["_method"]
        rc = copy.deepcopy(rc)
        rc.train.max_steps -= cfg.first_phase_steps
    res = run_training(rc, method=method, progress=progress, evaluate_test=False, log=log)
    done = {"fingerprint": fp, "code": code, "train": res["train"]}
    if first is not None:
        done["first_phase_train"] = first["train"]
    if cfg.head_refit_examples > 0:
        trained = res["_method"]
        refit = trained.fit_halting_head(load_split(rc, "train")[: cfg.head_refit_examples],
                                         steps=cfg.head_refit_steps)
        save_method(trained, run_dir / "model", run_config_dict(rc))
        done["head_refit"] = refit
        log(f"[adaptive] halting head refit on {refit['states']} thought states: accuracy {refit['accuracy']:.3f}")
    atomic_write_json(done_file, done)
    return done


def valid_sweep(method, valid: list[Example], cfg: AdaptiveConfig, trained_n: int,
                log: Callable[[str], None]) -> tuple[dict[str, float], int, dict[str, dict[str, float]]]:
    """Validation accuracy with every fixed n (the best n: ties go to the cheaper one) and with each stop rule."""
    bs = cfg.eval_batch_size
    sweep: dict[str, float] = {}
    for n in range(1, cfg.n_max + 1):
        _set_mode(method, "none", n)
        sweep[str(n)] = evaluate(method, valid, batch_size=bs, keep_records=False, warmup=False).metrics["accuracy"]
    best_n = max(range(1, cfg.n_max + 1), key=lambda n: (sweep[str(n)], -n))  # ties: the cheaper n
    valid_adaptive = {}
    for mode in ("head", "probe"):
        _set_mode(method, mode, trained_n)
        m = evaluate(method, valid, batch_size=bs, keep_records=False, warmup=False).metrics
        valid_adaptive[mode] = {"accuracy": m["accuracy"], "mean_latent_steps": m["mean_latent_steps"]}
    log("[adaptive] valid accuracy by fixed n: " + ", ".join(f"{k}: {v:.3f}" for k, v in sweep.items())
        + f"; best n = {best_n}; head {valid_adaptive['head']['accuracy']:.3f} "
        f"({valid_adaptive['head']['mean_latent_steps']:.2f} thoughts)")
    return sweep, best_n, valid_adaptive


def evaluate_rows(method, test: list[Example], cfg: AdaptiveConfig, best_n: int, trained_n: int, out: Path, progress: bool,
              log: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[int, int]]]]:
    """The three rows on the same test questions and batch size (predictions in ``OUT/predictions-ROW.json``), and
    the (true steps, thoughts used) points of the adaptive rows."""
    rows: dict[str, dict[str, Any]] = {}
    points: dict[str, list[tuple[int, int]]] = {}
    for name, mode, n in (("codi_fixed", "none", best_n), ("codi_adaptive", "head", trained_n),
                          ("codi_adaptive_probe", "probe", trained_n)):
        _set_mode(method, mode, n)
        ev = evaluate(method, test, batch_size=cfg.eval_batch_size, repeats=cfg.latency_repeats, progress=progress,
                      description=f"test {name}")
        atomic_write_json(out / f"predictions-{name}.json", ev.records)
        # "n": the fixed number of thoughts (None: decided per question, at most n_max)
        extra = {"n": best_n} if mode == "none" else {"n": None, "halting": mode, "n_max": method.n_max}
        if mode == "head":
            extra["halt_threshold"] = method.config.halt_threshold
        if mode == "probe":
            extra["probe_threshold"] = method.config.probe_threshold
        rows[name] = _row(ev.metrics, ev.records, **extra)
        if mode != "none":
            points[name] = [(int(r["meta"]["n_steps"]), int(r["latent_steps"])) for r in ev.records]
        log(f"[adaptive] {name}: accuracy {rows[name]['accuracy']:.3f}, {rows[name]['mean_latent_steps']:.2f} thoughts, "
            f"{rows[name]['latency_ms_per_question']:.2f} ms/question")
    return rows, points
