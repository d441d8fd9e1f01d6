"""The run config: method, model, data and training settings of one training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentreason.config import apply_overrides, from_dict, load_yaml, to_dict
from latentreason.data.procedural import TaskConfig
from latentreason.errors import ConfigError
from latentreason.models.backbone import ModelConfig


@dataclass
class DataConfig:
    #: a named data set (``latentreason data list``) or a file path
    dataset: str = "modchain"
    data_dir: str | None = None
    #: file format when ``dataset`` is a path (auto-detected when unset)
    format: str | None = None
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str = "test"
    #: separate files for valid / test (override the splits of ``dataset``)
    valid_path: str | None = None
    test_path: str | None = None
    train_limit: int | None = None
    #: validation examples used for evaluation during training
    valid_limit: int | None = 200
    test_limit: int | None = None
    #: knobs of the procedural task (used when ``dataset`` is modchain / modchain_mixed)
    task: TaskConfig = field(default_factory=TaskConfig)


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    #: global batch size (all processes, all accumulation micro-batches)
    batch_size: int = 128
    #: per-process micro-batch; gradient accumulation makes up the rest (default: no accumulation)
    micro_batch_size: int | None = None
    #: training length: epochs over the train split, or max_steps optimiser steps (max_steps wins)
    epochs: float = 1.0
    max_steps: int | None = None
    warmup_steps: int = 50
    #: cosine | linear | constant (after warm-up)
    schedule: str = "cosine"
    grad_clip: float = 1.0
    #: evaluate on the valid split every N steps (0 = only at the end)
    eval_every: int = 0
    eval_batch_size: int = 256
    #: write a resumable checkpoint every N steps (0 = only at the end)
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"
    #: auto (bf16 on GPU, none on CPU) | no | bf16 | fp16
    mixed_precision: str = "auto"
    #: auto | ddp | fsdp (only used with several processes)
    distributed: str = "auto"

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(f"train.micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.epochs <= 0 and not self.max_steps:
            raise ConfigError(f"train.epochs must be > 0 (or set train.max_steps), got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1, got {self.max_steps}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"train.schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.distributed not in ("auto", "ddp", "fsdp"):
            raise ConfigError(f"train.distributed must be auto, ddp or fsdp, got {self.distributed!r}")
        for k in ("warmup_steps", "eval_every", "save_every", "log_every"):
            if getattr(self, k) < 0:
                raise ConfigError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


@dataclass
class RunConfig:
    method: str = "cot"
    #: method-specific options (``latentreason train --method M --help`` lists them); ``preset`` picks a paper setting
    method_args: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/train"
    #: start from the weights of this checkpoint (e.g. a CoT-SFT model for iCoT / Coconut / CODI)
    init_from: str | None = None


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> RunConfig:
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(load_yaml(path))
    apply_overrides(data, list(overrides or []))
    return from_dict(RunConfig, data)


def run_config_dict(cfg: RunConfig) -> dict[str, Any]:
    return to_dict(cfg)
