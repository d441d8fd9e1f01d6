"""Checkpoints: a method's weights and config, plus trainer state for exact resume.

Layout of a checkpoint directory (written to a temporary directory, then renamed)::

    method.json            method name, method config, run config, library versions
    config.json, model.safetensors, tokenizer.json, ...   the backbone (save_pretrained)
    extra.safetensors      the method's extra modules (projection, routers, ...), if any
    trainer_state.json     step, epoch, scheduler, RNG (python/numpy), method stage   [training only]
    optimizer.safetensors  optimiser tensors, RNG tensors                              [training only]

A run directory holds the final model in ``model/`` and periodic ones in
``checkpoints/step-NNNNNNNN/``; :func:`resolve_checkpoint` accepts any of these paths. Nothing is
ever unpickled: tensors come from safetensors, the rest from JSON.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latentreason.errors import CheckpointError
from latentreason.methods.base import Method, config_dict, get_method_class, method_config
from latentreason.models.backbone import load_backbone_dir, save_backbone
from latentreason.utils import atomic_write_json, env_info, replace_dir

FORMAT_VERSION = 1


# ---------------------------------------------------------------------- paths
def resolve_checkpoint(path: str | Path) -> Path:
    """The directory holding ``method.json``: the path itself, ``path/model``, or its newest checkpoint."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if (p / "method.json").is_file():
        return p
    if (p / "model" / "method.json").is_file():
        return p / "model"
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest
    raise CheckpointError(f"{p}: not a checkpoint (no method.json in it, in {p / 'model'} or in {p / 'checkpoints'})")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = sorted(Path(run_dir).glob("checkpoints/step-*/trainer_state.json"))
    return ckpts[-1].parent if ckpts else None


# ---------------------------------------------------------------------- method
def _write_method(method: Method, directory: Path, run_config: dict[str, Any] | None) -> None:
    save_backbone(method.backbone, directory)
    extras = {f"{name}.{k}": v.detach().cpu().contiguous() for name, mod in method.extra_modules().items() for k, v in mod.state_dict().items()}
    if extras:
        save_file(extras, str(directory / "extra.safetensors"))
    meta = {
        "format_version": FORMAT_VERSION,
        "method": method.name,
        "method_config": config_dict(method.config),
        "run_config": run_config,
        "env": env_info(),
    }
    (directory / "method.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


def save_method(method: Method, directory: str | Path, run_config: dict[str, Any] | None = None, extra_files: dict[str, Any] | None = None) -> Path:
    """Write a loadable checkpoint atomically (temporary directory + rename)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        _write_method(method, tmp, run_config)
        for name, obj in (extra_files or {}).items():
            if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
                save_file(obj, str(tmp / name))
            else:
                (tmp / name).write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_method_meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / "method.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory / 'method.json'}: unreadable ({e})") from None
    if not isinstance(meta, dict) or "method" not in meta:
        raise CheckpointError(f"{directory / 'method.json'}: not a latentreason checkpoint description")
    return meta


def load_method(
    path: str | Path,
    expected_method: str | None = None,
    device: torch.device | str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    config_overrides: dict[str, Any] | None = None,
) -> Method:
    """Load a checkpoint strictly (every tensor must match; nothing is silently dropped)."""
    directory = resolve_checkpoint(path)
    meta = read_method_meta(directory)
    name = meta["method"]
    if expected_method is not None and name != expected_method:
        raise CheckpointError(f"{directory}: checkpoint is of method {name!r}, expected {expected_method!r}")
    cls = get_method_class(name)
    args = dict(meta.get("method_config") or {})
    args.update(config_overrides or {})
    cfg = method_config(cls, args)
    backbone = load_backbone_dir(directory, dtype=dtype, trust_remote_code=trust_remote_code)
    method = cls(backbone, cfg)
    load_extra(method, directory)
    if device is not None:
        method.to(device)
    method.eval()
    return method


def load_extra(method: Method, directory: Path) -> None:
    mods = method.extra_modules()
    f = directory / "extra.safetensors"
    if not mods:
        if f.exists():
            raise CheckpointError(f"{f}: checkpoint has extra weights that method {method.name!r} does not use")
        return
    if not f.exists():
        raise CheckpointError(f"{directory}: missing extra.safetensors with weights of {', '.join(mods)}")
    try:
        tensors = load_file(str(f))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{f}: unreadable or truncated safetensors file ({e})") from None
    for name, mod in mods.items():
        sub = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
        own = mod.state_dict()
        missing = sorted(set(own) - set(sub))
        unexpected = sorted(set(sub) - set(own))
        bad = [k for k in own if k in sub and own[k].shape != sub[k].shape]
        if missing or unexpected or bad:
            raise CheckpointError(
                f"{f}: module {name!r} does not match (missing: {missing[:3]}, unexpected: {unexpected[:3]}, "
                f"shape mismatch: {[(k, tuple(sub[k].shape), tuple(own[k].shape)) for k in bad[:3]]})"
            )
        mod.load_state_dict(sub, strict=True)
    leftover = [k for k in tensors if k.split(".", 1)[0] not in mods]
    if leftover:
        raise CheckpointError(f"{f}: unexpected tensors {leftover[:3]}")


# ---------------------------------------------------------------------- trainer state
def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        state_json[str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
                state_json[str(pid)][k] = "__tensor__"
            else:
                state_json[str(pid)][k] = v
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for pid, st in js["state"].items():
        state[int(pid)] = {k: tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v for k, v in st.items()}
    return {"state": state, "param_groups": js["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    js = {"python": random.getstate(), "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, js


def set_rng_state(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
    py = js["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def save_training_checkpoint(
    method: Method,
    directory: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    run_config: dict[str, Any] | None,
) -> Path:
    opt_tensors, opt_json = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_json = rng_state()
    payload = {
        **state,
        "optimizer": opt_json,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_json,
        "method_state": method.trainer_state(),
    }
    return save_method(
        method,
        directory,
        run_config,
        extra_files={"optimizer.safetensors": {**opt_tensors, **rng_tensors}, "trainer_state.json": payload},
    )


def load_training_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """(trainer state, optimizer state dict, rng tensors) of a training checkpoint."""
    try:
        state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
        tensors = load_file(str(directory / "optimizer.safetensors"))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise CheckpointError(f"{directory}: unreadable training state ({e})") from None
    return state, _unflatten_optimizer(tensors, state["optimizer"]), {k: v for k, v in tensors.items() if k.startswith("rng.")}
