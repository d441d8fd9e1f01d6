"""A benchmark's configuration and what its entries resolve to.

A benchmark (:class:`BenchConfig`) is a list of entries (:class:`BenchEntry`: row name, method,
method options, training budget, the entry whose model it starts from) on one task, model and
training setup, plus the sections run after the comparison (the soft-thinking study,
:class:`SoftStudyConfig`; the System-1.5 grid; adaptive thinking; extra evaluation sets,
:class:`EvalSet`). :func:`entry_run_config` is the run config an entry trains with,
:func:`entry_method` the model it evaluates, :func:`baselines` the CoT / No-CoT rows every row is
compared with, :func:`entries_needed` the entries a subset of rows needs. The runner is
:mod:`latentreason.experiments.bench`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentreason.data.procedural import TaskConfig
from latentreason.errors import ConfigError
from latentreason.methods.base import method_config
from latentreason.methods.registry import get_method_class
from latentreason.models.backbone import ModelConfig
from latentreason.training.api import convert_method
from latentreason.training.checkpoint import load_method
from latentreason.training.run_config import DataConfig, RunConfig, TrainConfig


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

    def validate(self) -> None:
        """The method and its options (training and evaluation ones), checked when the benchmark is read."""
        cls = get_method_class(self.method)
        method_config(cls, self.method_args)
        method_config(cls, {**self.method_args, **self.eval_args})


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
    #: a data set (a named set such as ``mult_4x4``, or files: :class:`DataConfig`) instead of the procedural
    #: ``task``; its valid / test limits are the benchmark's ``valid_limit`` / ``test_limit``
    data: DataConfig | None = None
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
    #: batch size of the round-robin latency: None = ``eval_batch_size`` (the demo: 100, a throughput
    #: measure); 1 = SPEC §5's protocol (one user's question at a time; the entries then take turns
    #: per question). The accuracy pass's own time is kept as ``batched_ms_per_question``.
    latency_batch_size: int | None = None
    #: test questions timed per entry (the first N; None: all)
    latency_questions: int | None = None
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
    if cfg.data is not None:
        if entry.task:
            raise ConfigError(f"entries.{entry.name}.task: task overrides need the procedural task (the benchmark's "
                              f"data is {cfg.data.dataset!r})")
        data = copy.deepcopy(cfg.data)
        data.valid_limit, data.test_limit = cfg.valid_limit, cfg.test_limit
    else:
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


def entry_method(out: Path, e: BenchEntry, device):
    """The model an entry evaluates (its own, or another entry's viewed through its method)."""
    if e.model_from is None:
        return load_method(out / e.name / "model", device=device, config_overrides=e.eval_args)
    src = load_method(out / e.model_from / "model", device=device)
    return convert_method(src, e.method, {**e.method_args, **e.eval_args})


def task_key(e: BenchEntry | None) -> str:
    """The task variant of an entry (its ``task`` overrides; None: the benchmark's own task)."""
    return json.dumps(e.task if e is not None else {}, sort_keys=True)


def baselines(entries: list[BenchEntry]) -> dict[str, dict[str, str]]:
    """Per task variant (an entry's ``task`` overrides), the CoT-SFT and No-CoT-SFT entries trained on it:
    every row's speed-up and gap closed are measured against the baselines of its own task."""
    refs: dict[str, dict[str, str]] = {}
    for e in entries:
        if e.method in ("cot", "nocot") and e.model_from is None:
            refs.setdefault(task_key(e), {}).setdefault(e.method, e.name)
    return refs


#: the study sections a subset (``--methods``) may name besides entries: each runs with a subset only when named
#: (a subset of rows is asked for; training adaptive CODI for it is not), and with the whole benchmark always
SECTIONS = {"adaptive": "adaptive_from", "soft_thinking": "soft_thinking"}


def section_wanted(name: str, only: list[str] | None) -> bool:
    return not only or name in only


def entries_needed(cfg: BenchConfig, only: list[str] | None) -> list[BenchEntry]:
    """The entries to run for the rows ``only`` (None: all): with their baselines and the entries they start from."""
    names = [e.name for e in cfg.entries]
    if only:
        unknown = [n for n in only if n not in names and n not in SECTIONS]
        if unknown:
            raise ConfigError(f"unknown benchmark entries {unknown}; valid: {', '.join(names)}")
    wanted = {n for n in (only or names) if n in names}
    if only and section_wanted("adaptive", only) and cfg.adaptive_from:
        wanted.add(cfg.adaptive_from)  # the section starts from this entry's model
    if only and section_wanted("soft_thinking", only) and cfg.soft_thinking is not None:
        wanted.add(cfg.soft_thinking.entry)
    # speed-ups are measured against CoT in the same run, the gap each row closes between No-CoT and CoT,
    # both on the row's own task variant
    refs = baselines(cfg.entries)
    for e in cfg.entries:
        if e.name in wanted:
            wanted.update(refs.get(task_key(e), {}).values())
    # entries a wanted entry starts from are needed too
    for e in reversed(cfg.entries):
        if e.name in wanted and e.init_from:
            wanted.add(e.init_from)
        if e.name in wanted and e.model_from:
            wanted.add(e.model_from)
    return [e for e in cfg.entries if e.name in wanted]
