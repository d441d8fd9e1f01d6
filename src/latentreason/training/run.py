"""A whole training run: config -> data -> method -> trainer (validated) -> test evaluation -> results.json.

:func:`run_training` is what ``latentreason train`` and the benchmark runner call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from latentreason.evaluation.evaluate import evaluate
from latentreason.methods.base import Method
from latentreason.training.api import build_method, check_prompts_fit, has_split, load_split
from latentreason.training.checkpoint import load_method
from latentreason.training.run_config import RunConfig, run_config_dict
from latentreason.training.trainer import Trainer
from latentreason.utils import atomic_write_json, check_output_dir, env_info


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
    """Train, evaluate on the test split, write ``results.json`` beside the model; return the results.

    Every input is checked before anything is written: the method and its options (before any data is
    loaded), the output directory (without creating it), the data, the model. Under several processes only the main one writes
    and evaluates on the test split; ``results["_main_process"]`` says which one this is.
    """
    cfg.validate()  # the method and its options, before any data is loaded
    out = Path(cfg.out_dir)
    check_output_dir(out, "output directory (out_dir)")
    train = load_split(cfg, "train")
    valid = load_split(cfg, "valid") if has_split(cfg, "valid") else []
    test = load_split(cfg, "test") if evaluate_test else []
    method = method or build_method(cfg)
    for what, examples in (("validation data", valid), ("test data", test)):
        check_prompts_fit(method, examples, what)
    trainer = Trainer(cfg, method, train, valid, out, progress=progress, log=log)
    summary = trainer.fit(resume=resume)
    acc = trainer.accelerator
    results: dict[str, Any] = {"method": cfg.method, "train": summary.to_dict()}
    m = acc.unwrap_model(trainer.model)
    if evaluate_test and acc.is_main_process:
        if trainer.fsdp:  # the main process holds a shard only: evaluate the saved full model
            m = load_method(out / "model", device=acc.device)
        res = evaluate(m, test, batch_size=eval_batch_size or cfg.train.eval_batch_size, progress=progress, description=f"test {cfg.method}")
        results["test"] = res.metrics
        atomic_write_json(out / "predictions.json", res.records)
    results["config"] = run_config_dict(cfg)
    results["env"] = env_info(acc.device)
    if acc.is_main_process:
        atomic_write_json(out / "results.json", results)
    results["_method"] = m
    results["_main_process"] = acc.is_main_process
    return results
