"""The benchmark runner: every method on the same data, seed and test questions, in one run.

A benchmark is a list of entries (row name, method, method options, training budget, the entry
whose model it starts from). The runner trains each entry in order — or reuses it when its run
directory already holds a finished model trained with the same settings — then evaluates all of
them on the same test questions with the same batch size, so that latency ratios
(``speedup_vs_cot``) are measured in one run on one machine. ``latentreason demo`` is this
runner on the embedded default task.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from latentreason.config import to_dict
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


@dataclass
class BenchConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    entries: list[BenchEntry] = field(default_factory=list)
    eval_batch_size: int = 64
    test_limit: int | None = None
    valid_limit: int = 200
    seed: int = 0


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
    wanted = set(only or names)
    if "cot" in names:
        wanted.add("cot")  # speed-ups are measured against CoT in the same run
    # entries a wanted entry starts from are needed too
    for e in reversed(cfg.entries):
        if e.name in wanted and e.init_from:
            wanted.add(e.init_from)
    entries = [e for e in cfg.entries if e.name in wanted]
    t0 = time.perf_counter()
    trained: dict[str, dict[str, Any]] = {}
    for e in entries:
        rc = entry_run_config(cfg, e, out)
        fp = _fingerprint({"run": to_dict(rc), "parent": trained.get(e.init_from, {}).get("fingerprint")})
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
    for e in entries:
        rc = entry_run_config(cfg, e, out)
        test = load_split(rc, "test")
        method = load_method(out / e.name / "model", device=device, config_overrides=e.eval_args)
        ev = evaluate(method, test, batch_size=cfg.eval_batch_size, progress=progress, description=f"test {e.name}")
        atomic_write_json(out / e.name / "predictions.json", ev.records)
        row = dict(ev.metrics)
        row["train_seconds"] = trained[e.name]["train"]["train_seconds"]
        row["train_steps"] = trained[e.name]["train"]["steps"]
        row["method"] = e.method
        results["methods"][e.name] = row
        log(f"[{e.name}] accuracy {row['accuracy']:.3f}, {row['latency_ms_per_question']:.2f} ms/question")
        del method
    cot = results["methods"].get("cot")
    for row in results["methods"].values():
        if cot and row["latency_ms_per_question"] > 0:
            row["speedup_vs_cot"] = cot["latency_ms_per_question"] / row["latency_ms_per_question"]
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "results.json", results)
    return results
