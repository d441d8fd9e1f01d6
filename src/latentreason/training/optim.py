"""The optimiser of a training run: AdamW over the method's parameters and the learning-rate schedule.

:func:`decay_parameter_ids` chooses which parameters AdamW decays (the method's
``weight_decay_on`` rule), :func:`build_optimizer` builds AdamW, :func:`lr_factor` is the schedule
(warm-up, then cosine / linear / constant / ``wsd``). :func:`optimizer_state` and
:func:`load_optimizer_state` read and restore its state keyed by parameter names (a checkpoint's
``optimizer.pt``), gathered in full under FSDP.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from latentreason.errors import CheckpointError
from latentreason.methods.base import Method


def lr_factor(step: int, warmup: int, total: int, schedule: str, decay_steps: int = 0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    ``wsd`` (warm-up, stable, decay): the full rate after warm-up, then a cosine to 0 over the last
    ``decay_steps`` steps before ``total`` (which an early-decay trigger may move forward)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        start = total - max(1, decay_steps)
        if step < start:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - start + 1) / (max(1, decay_steps) + 1))))
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_parameter_ids(method: Method, rule: str | None = None) -> set[int]:
    """Ids of the trainable parameters AdamW decays under ``rule`` (default: the method's
    ``config.weight_decay_on``): ``matrices`` — every parameter with >= 2 dims (the project's choice);
    ``all`` — every parameter (the official Coconut / iCoT code: torch AdamW over ``model.parameters()``);
    ``hf`` — the Hugging Face Trainer's rule the official CODI code gets: everything except biases and the
    weights of LayerNorm modules or of modules named like a layer/RMS norm."""
    rule = rule or getattr(method.config, "weight_decay_on", "matrices")
    if rule == "all":
        return {id(p) for p in method.parameters()}
    if rule == "matrices":
        return {id(p) for p in method.parameters() if p.dim() >= 2}
    out = set()
    for mname, mod in method.named_modules():
        is_norm = isinstance(mod, torch.nn.LayerNorm)
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            low = full.lower()
            if is_norm or "bias" in low or "layernorm" in low or "rmsnorm" in low:
                continue
            out.add(id(p))
    return out


def build_optimizer(method: Method, cfg, decay_ids: set[int] | None = None) -> torch.optim.Optimizer:
    """AdamW; ``decay_ids``: ids of the parameters to decay, taken before FSDP flattened them into 1-D
    shards (by default :func:`decay_parameter_ids` of the method)."""
    if decay_ids is None:
        decay_ids = decay_parameter_ids(method)
    decay, no_decay = [], []
    for p in method.parameters():
        if not p.requires_grad:
            continue
        (decay if id(p) in decay_ids else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if cfg.fused_optimizer else {}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **fused)


def _state_dict_api():
    # torch.distributed.checkpoint takes about a second to import; only checkpoint writes and resumes need it
    from torch.distributed.checkpoint import state_dict

    return state_dict


def optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser state keyed by parameter names, gathered in full (every process must call this)."""
    api = _state_dict_api()
    return api.get_optimizer_state_dict(
        model, optimizer, options=api.StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_optimizer_state(model: Any, optimizer: torch.optim.Optimizer, opt_state: dict[str, Any], where: Path) -> None:
    """Restore a state written by :func:`optimizer_state` (or, from older checkpoints, the optimiser's own)."""
    api = _state_dict_api()
    try:
        if opt_state.pop("keys", None) == "fqn":
            api.set_optimizer_state_dict(model, optimizer, opt_state, options=api.StateDictOptions(full_state_dict=True))
        else:  # checkpoints written before parameters were keyed by name
            optimizer.load_state_dict(opt_state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: optimizer state does not match this model ({first_line(e)})") from None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for one-line errors."""
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


__all__ = ["build_optimizer", "decay_parameter_ids", "first_line", "load_optimizer_state", "lr_factor", "optimizer_state"]
