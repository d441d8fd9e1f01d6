"""High-level training entry point: config -> data -> method -> trainer -> results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from latentreason.data.example import Example
from latentreason.data.registry import load_dataset
from latentreason.methods.base import Method, get_method_class, method_config
from latentreason.models.backbone import load_backbone, maybe_apply_lora
from latentreason.training.checkpoint import load_method
from latentreason.training.run_config import RunConfig, run_config_dict
from latentreason.training.trainer import Trainer
from latentreason.utils import atomic_write_json, check_writable_dir, env_info


def build_method(cfg: RunConfig) -> Method:
    """The configured method on a fresh backbone, or on the weights of ``cfg.init_from``."""
    cls = get_method_class(cfg.method)
    mcfg = method_config(cls, cfg.method_args)
    if cfg.init_from:
        backbone = load_method(cfg.init_from, trust_remote_code=cfg.model.trust_remote_code).backbone
    else:
        backbone = load_backbone(cfg.model, seed=cfg.train.seed)
    backbone = maybe_apply_lora(backbone, cfg.model)
    return cls(backbone, mcfg)


def load_split(cfg: RunConfig, which: str) -> list[Example]:
    d = cfg.data
    path = {"valid": d.valid_path, "test": d.test_path}.get(which)
    split = {"train": d.train_split, "valid": d.valid_split, "test": d.test_split}[which]
    limit = {"train": d.train_limit, "valid": d.valid_limit, "test": d.test_limit}[which]
    if path:
        return load_dataset(path, "test", fmt=d.format, limit=limit)
    return load_dataset(d.dataset, split, data_dir_=d.data_dir, fmt=d.format, task=d.task, limit=limit)


def run_training(
    cfg: RunConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    evaluate_test: bool = True,
    eval_batch_size: int | None = None,
    log: Callable[[str], None] | None = None,
    method: Method | None = None,
) -> dict[str, Any]:
    """Train, evaluate on the test split, write ``results.json`` beside the model; return the results."""
    from latentreason.evaluation.evaluate import evaluate

    out = check_writable_dir(cfg.out_dir)
    train = load_split(cfg, "train")
    try:
        valid = load_split(cfg, "valid")
    except Exception:  # noqa: BLE001 - a set without a valid split trains without validation
        valid = []
    test = load_split(cfg, "test") if evaluate_test else []
    method = method or build_method(cfg)
    trainer = Trainer(cfg, method, train, valid, out, progress=progress, log=log)
    summary = trainer.fit(resume=resume)
    results: dict[str, Any] = {"method": cfg.method, "train": summary.to_dict()}
    if evaluate_test and trainer.accelerator.is_main_process:
        m = trainer.accelerator.unwrap_model(trainer.model)
        res = evaluate(m, test, batch_size=eval_batch_size or cfg.train.eval_batch_size, progress=progress, description=f"test {cfg.method}")
        results["test"] = res.metrics
        atomic_write_json(Path(out) / "predictions.json", res.records)
    results["config"] = run_config_dict(cfg)
    results["env"] = env_info(trainer.accelerator.device)
    if trainer.accelerator.is_main_process:
        atomic_write_json(Path(out) / "results.json", results)
    results["_method"] = trainer.accelerator.unwrap_model(trainer.model)
    return results
