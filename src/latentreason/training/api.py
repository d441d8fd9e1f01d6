"""Building blocks of a training run: the method a run config describes, its data splits, checks.

:func:`build_method` builds the configured method (fresh, or from ``init_from``'s weights),
:func:`convert_method` views trained weights through another method, :func:`load_split` loads a
split of the configured data. The whole run (train, validate, evaluate on the test split, write
``results.json``) is :func:`latentreason.training.run.run_training`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentreason.data.example import Example
from latentreason.data.registry import NAMED, load_dataset
from latentreason.errors import CheckpointError, DataError
from latentreason.methods.base import Method, method_config
from latentreason.methods.registry import get_method_class
from latentreason.models.backbone import add_special_tokens, load_backbone, maybe_apply_lora
from latentreason.training.checkpoint import load_method, resolve_checkpoint
from latentreason.training.run_config import RunConfig
from latentreason.utils import seed_everything


def build_method(cfg: RunConfig) -> Method:
    """The configured method on a fresh backbone, or on the weights of ``cfg.init_from``."""
    cls = get_method_class(cfg.method)
    mcfg = method_config(cls, cfg.method_args)
    layout = cfg.model.special_tokens if cfg.model.special_tokens != "auto" else mcfg.special_tokens
    # what a method adds to a loaded model (projection, routers, adapters, new token rows, LoRA) is drawn from the
    # run's seed, not from whatever the process's random state happens to be: the same run twice is the same run
    seed_everything(cfg.train.seed)
    if cfg.init_from:
        try:
            src = resolve_checkpoint(cfg.init_from)
        except CheckpointError as e:
            raise CheckpointError(f"init_from: {e}") from None
        # the run's weight dtype and attention kernel apply to loaded weights as to a fresh backbone
        source = load_method(
            src,
            dtype=cfg.model.dtype,
            attn_implementation=cfg.model.attn_implementation,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        backbone = source.backbone
        # what the layout needs and the checkpoint lacks (the official Coconut adds its tokens to a
        # CoT-SFT model that has none); a no-op for the embedded byte tokenizer
        add_special_tokens(backbone, layout, cfg.model)
    else:
        source = None
        backbone = load_backbone(cfg.model, seed=cfg.train.seed, layout=layout)
    backbone = maybe_apply_lora(backbone, cfg.model)
    method = cls(backbone, mcfg)
    if source is not None:  # extra modules both methods have (e.g. CODI's projection) carry over too
        copy_extra_modules(source, method, "init_from")
    return method


def copy_extra_modules(source: Method, target: Method, what: str) -> None:
    """Load ``target``'s extra modules from the same-named ones of ``source`` (strict shapes)."""
    theirs = source.extra_modules()
    for name, mod in target.extra_modules().items():
        if name in theirs:
            try:
                mod.load_state_dict(theirs[name].state_dict(), strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"{what}: module {name!r} does not match ({str(e).splitlines()[0]})") from None


def convert_method(source: Method, method: str, method_args: dict[str, Any] | None = None) -> Method:
    """``source``'s trained weights viewed through another method (e.g. a CODI run as System-1.5's stage 1)."""
    cls = get_method_class(method)
    target = cls(source.backbone, method_config(cls, method_args or {}))
    copy_extra_modules(source, target, f"{source.name} -> {method}")
    return target.to(source.device).eval()


def has_split(cfg: RunConfig, which: str) -> bool:
    """Whether the configured data has a ``which`` split (a named set may lack valid/test)."""
    d = cfg.data
    if which == "valid" and d.valid_path or which == "test" and d.test_path:
        return True
    spec = NAMED.get(str(d.dataset))
    split = {"train": d.train_split, "valid": d.valid_split, "test": d.test_split}[which]
    return spec is None or split in spec.files


def load_split(cfg: RunConfig, which: str) -> list[Example]:
    d = cfg.data
    path = {"valid": d.valid_path, "test": d.test_path}.get(which)
    split = {"train": d.train_split, "valid": d.valid_split, "test": d.test_split}[which]
    limit = {"train": d.train_limit, "valid": d.valid_limit, "test": d.test_limit}[which]
    if path:
        if not Path(path).expanduser().is_file():
            raise DataError(f"data.{which}_path {path!r}: file not found")
        return load_dataset(Path(path).expanduser(), "test", fmt=d.format, limit=limit)
    return load_dataset(d.dataset, split, data_dir=d.data_dir, fmt=d.format, task=d.task, limit=limit)


def check_prompts_fit(method: Method, examples: list[Example], what: str) -> None:
    """Fail before training, not after it, when a question cannot fit the model's context."""
    if not examples or method.max_positions is None:
        return
    toks = method.serializer.tokenize(examples)
    try:
        method.generation_budget([t.prompt for t in toks])
    except DataError as e:
        raise DataError(f"{what}: {e}") from None
