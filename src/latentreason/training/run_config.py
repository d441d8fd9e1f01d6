"""The run config: method, model, data and training settings of one training run."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from latentreason.config import apply_overrides, from_dict, load_yaml, to_dict
from latentreason.data.procedural import TaskConfig
from latentreason.errors import ConfigError
from latentreason.methods.base import method_config
from latentreason.methods.registry import get_method_class
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
    #: if set, warm-up = this fraction of the total steps (overrides warmup_steps)
    warmup_ratio: float | None = None
    #: cosine | linear | constant | wsd (after warm-up; wsd: the full rate, then a cosine to 0 over the last
    #: ``decay_steps`` steps)
    schedule: str = "cosine"
    #: wsd: length of the final decay
    decay_steps: int = 100
    #: wsd: start the final decay as soon as a periodic validation (``eval_every``) reaches this accuracy in
    #: the method's final configuration, ending the run ``decay_steps`` later (``max_steps`` stays the cap)
    decay_at_valid_accuracy: float | None = None
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
    #: AdamW's fused kernel (``torch.optim.AdamW(fused=True)``: one pass over all parameters, on CPU and GPU)
    #: instead of PyTorch's default implementation; the same update up to float rounding (the official iCoT code
    #: asks for the fused kernel; off by default, PyTorch's default)
    fused_optimizer: bool = False
    #: ``torch.compile`` (inductor) the training forward and backward of the method (validation and generation
    #: stay eager); the first step pays the compilation, the first change of sequence length one recompilation
    #: (from then on the length is dynamic); the loss equals the eager one up to float rounding
    compile: bool = False

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
        if self.schedule not in ("cosine", "linear", "constant", "wsd"):
            raise ConfigError(f"train.schedule must be cosine, linear, constant or wsd, got {self.schedule!r}")
        if self.decay_steps < 1:
            raise ConfigError(f"train.decay_steps must be >= 1, got {self.decay_steps}")
        if self.decay_at_valid_accuracy is not None:
            if self.schedule != "wsd" or not self.eval_every:
                raise ConfigError("train.decay_at_valid_accuracy needs train.schedule=wsd and train.eval_every > 0")
            if not 0.0 < self.decay_at_valid_accuracy <= 1.0:
                raise ConfigError(f"train.decay_at_valid_accuracy must be in (0, 1], got {self.decay_at_valid_accuracy}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.distributed not in ("auto", "ddp", "fsdp"):
            raise ConfigError(f"train.distributed must be auto, ddp or fsdp, got {self.distributed!r}")
        for k in ("warmup_steps", "eval_every", "save_every", "log_every"):
            if getattr(self, k) < 0:
                raise ConfigError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"train.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        for k in ("lr", "weight_decay", "grad_clip", "epochs"):
            if not math.isfinite(getattr(self, k)):
                raise ConfigError(f"train.{k} must be a finite number, got {getattr(self, k)}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 = no clipping), got {self.grad_clip}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ConfigError(f"train.beta1 and train.beta2 must be in [0, 1), got {self.beta1} and {self.beta2}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"train.warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


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

    def validate(self) -> None:
        """The method and its options (``method_args``, preset included), checked before any data is loaded."""
        method_config(get_method_class(self.method), self.method_args)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> RunConfig:
    """A run config from ``base``, then the YAML file ``path``, then ``key=value`` overrides.

    An invalid value is reported where it came from: ``--set train.lr=x: ...`` for an override,
    ``FILE:LINE: ...`` for the YAML file.
    """
    data: dict[str, Any] = dict(base or {})
    yaml_data: dict[str, Any] = {}
    if path is not None:
        yaml_data = load_yaml(path)
        data.update(yaml_data)
    overrides = list(overrides or [])
    apply_overrides(data, overrides)
    try:
        return from_dict(RunConfig, data)
    except ConfigError as e:
        raise ConfigError(_locate(str(e), path, yaml_data, overrides)) from None


_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


def _locate(msg: str, path: str | Path | None, yaml_data: dict[str, Any], overrides: list[str]) -> str:
    """Prefix a config error with the override or the YAML line that set the offending field."""
    m = _FIELD.match(msg)
    if not m:
        return msg
    field_keys = m.group(1).split(".")
    for item in reversed(overrides):
        key = item.split("=", 1)[0].strip().split(".")
        n = min(len(key), len(field_keys))
        if key[:n] == field_keys[:n]:
            return f"--set {item}: {msg}"
    if path is not None:
        line = _yaml_line(Path(path), field_keys)
        if line is not None:
            return f"{path}:{line}: {msg}"
    return msg


def _yaml_line(path: Path, keys: list[str]) -> int | None:
    """1-based line of the deepest of ``keys`` (a nested mapping path) present in a YAML file."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line = None
    for k in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        for kn, vn in node.value:
            if isinstance(kn, yaml.ScalarNode) and kn.value == k:
                line, node = kn.start_mark.line + 1, vn
                break
        else:
            break
    return line


def run_config_dict(cfg: RunConfig) -> dict[str, Any]:
    return to_dict(cfg)
