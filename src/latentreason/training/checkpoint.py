"""Checkpoints: a method's weights and config, plus trainer state for exact resume.

Layout of a checkpoint directory (written to a temporary directory, then renamed)::

    method.json            method name, method config, run config, library versions
    config.json, model.safetensors, tokenizer.json, ...   the backbone (save_pretrained)
    extra.safetensors      the method's extra modules (projection, routers, ...), if any
    trainer_state.json     step, scheduler, RNG (python/numpy), method curriculum state,
                           optimiser hyper-parameters (keyed by parameter name)        [training only]
    optimizer.safetensors  optimiser tensors, RNG tensors (torch, numpy, CUDA)        [training only]

The data position is not stored separately: batches are a function of (seed, step).

A run directory holds the final model in ``model/`` and periodic ones in
``checkpoints/step-NNNNNNNN/``; :func:`resolve_checkpoint` accepts any of these paths. Nothing is
ever unpickled: tensors come from safetensors, the rest from JSON.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latentreason.config import from_dict
from latentreason.data.procedural import TaskConfig
from latentreason.errors import CheckpointError
from latentreason.methods.base import Method, config_dict, method_config
from latentreason.methods.registry import get_method_class
from latentreason.models.backbone import load_backbone_dir, save_backbone
from latentreason.utils import default_mode, env_info, replace_dir

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
    """The newest complete training checkpoint of a run directory (``checkpoints/step-N``), if any."""
    ckpts = sorted(
        d.parent
        for d in Path(run_dir).glob("checkpoints/step-*/trainer_state.json")
        if (d.parent / "optimizer.safetensors").is_file() and (d.parent / "method.json").is_file()
    )
    return ckpts[-1] if ckpts else None


def clean_partial_writes(run_dir: str | Path) -> list[Path]:
    """Remove what a killed process may have left half-written in a run directory.

    Checkpoints are written to ``.NAME.tmp-*`` and renamed into place (JSON files to
    ``.NAME.*.tmp``), and a replaced directory is first moved to ``.NAME.old-PID``; a process
    killed in between leaves those behind. If the
    directory being replaced is missing, its ``.old`` copy is moved back. Returns what was removed.
    """
    removed: list[Path] = []
    for parent in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not parent.is_dir():
            continue
        for d in sorted(parent.iterdir()):
            name = d.name
            if not name.startswith("."):
                continue
            if ".tmp-" in name or (name.endswith(".tmp") and d.is_file()):  # save_method / atomic_write_text
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
                removed.append(d)
            elif ".old-" in name:
                final = parent / name[1:].split(".old-", 1)[0]
                if not final.exists() and d.is_dir():
                    d.rename(final)
                else:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d)
    return removed


# ---------------------------------------------------------------------- method
def _write_method(
    method: Method, directory: Path, run_config: dict[str, Any] | None, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    if state_dict is None:
        save_backbone(method.backbone, directory)
        extras = {
            f"{name}.{k}": v.detach().cpu().contiguous()
            for name, mod in method.extra_modules().items()
            for k, v in mod.state_dict().items()
        }
    else:
        # a full state dict of the method gathered from a sharded (FSDP) model: "model.*" is the
        # backbone, "<name>.*" the extra module <name>; anything else does not belong here
        names = tuple(f"{n}." for n in method.extra_modules())
        stray = sorted(k for k in state_dict if not k.startswith(("model.", *names)))
        if stray:
            raise CheckpointError(f"{directory}: gathered state dict has keys outside method {method.name!r}: {stray[:3]}")
        backbone_sd = {k[len("model."):]: v.detach().cpu().contiguous() for k, v in state_dict.items() if k.startswith("model.")}
        save_backbone(method.backbone, directory, state_dict=backbone_sd)
        extras = {k: v.detach().cpu().contiguous() for k, v in state_dict.items() if k.startswith(names)}
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


def save_method(
    method: Method,
    directory: str | Path,
    run_config: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a loadable checkpoint atomically (temporary directory + rename).

    ``state_dict``: the method's full state dict when the module itself holds only a shard of
    the weights (FSDP); by default the weights are read from ``method``.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        _write_method(method, tmp, run_config, state_dict)
        for name, obj in (extra_files or {}).items():
            if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
                save_file(obj, str(tmp / name))
            else:
                (tmp / name).write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
        os.chmod(tmp, default_mode(directory=True))
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


#: data set names whose procedural task a checkpoint's own run config decides (``--dataset modchain``)
PROCEDURAL_NAMES = ("modchain", "default", "modchain_mixed")


def checkpoint_task(ckpt: Path, dataset: str) -> TaskConfig | None:
    """The procedural task a checkpoint was trained on, so that ``--dataset modchain`` means the same task;
    None for any other data set."""
    if dataset not in PROCEDURAL_NAMES:
        return None
    rc = read_method_meta(ckpt).get("run_config") or {}
    task = rc.get("data", {}).get("task")
    return from_dict(TaskConfig, task, "task") if task else None


def load_method(
    path: str | Path,
    expected_method: str | None = None,
    device: torch.device | str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    config_overrides: dict[str, Any] | None = None,
    attn_implementation: str | None = None,
) -> Method:
    """Load a checkpoint strictly (every tensor must match; nothing is silently dropped); ``dtype`` and
    ``attn_implementation`` as the fields of ``ModelConfig``."""
    directory = resolve_checkpoint(path)
    meta = read_method_meta(directory)
    name = meta["method"]
    if expected_method is not None and name != expected_method:
        raise CheckpointError(f"{directory}: checkpoint is of method {name!r}, expected {expected_method!r}")
    cls = get_method_class(name)
    args = dict(meta.get("method_config") or {})
    args.update(config_overrides or {})
    cfg = method_config(cls, args)
    backbone = load_backbone_dir(
        directory, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation
    )
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
    """Inverse of :func:`_flatten_optimizer`; parameters are keyed by name (``keys: "fqn"``) or by index."""
    by_name = js.get("keys") == "fqn"
    state = {}
    for pid, st in js["state"].items():
        key = pid if by_name else int(pid)
        try:
            state[key] = {k: tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v for k, v in st.items()}
        except KeyError as e:
            raise CheckpointError(f"optimizer.safetensors: missing tensor {e.args[0]!r}") from None
    return {"state": state, "param_groups": js["param_groups"], **({"keys": "fqn"} if by_name else {})}


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
    optimizer: torch.optim.Optimizer | dict[str, Any],
    scheduler: Any,
    state: dict[str, Any],
    run_config: dict[str, Any] | None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a resumable checkpoint atomically.

    ``optimizer`` is an optimiser or its state dict; a state dict keyed by parameter *names*
    (``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict``, which is what the
    trainer stores: independent of the number of processes and of FSDP sharding) is recorded
    as such. ``state_dict``: see :func:`save_method`.
    """
    osd = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    opt_tensors, opt_json = _flatten_optimizer(osd)
    if any(isinstance(k, str) for k in osd["state"]) or any(
        isinstance(p, str) for g in osd["param_groups"] for p in g.get("params", [])
    ):
        opt_json["keys"] = "fqn"
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
        state_dict=state_dict,
    )


def load_training_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """(trainer state, optimizer state dict, rng tensors) of a training checkpoint.

    The optimizer state dict has ``"keys": "fqn"`` when its parameters are keyed by name.
    """
    try:
        state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
        tensors = load_file(str(directory / "optimizer.safetensors"))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise CheckpointError(f"{directory}: unreadable training state ({_first_line(e)})") from None
    for key in ("step", "optimizer", "rng"):
        if key not in state:
            raise CheckpointError(f"{directory / 'trainer_state.json'}: missing field {key!r}")
    if "rng.torch" not in tensors:
        raise CheckpointError(f"{directory / 'optimizer.safetensors'}: missing the RNG state")
    opt = _unflatten_optimizer(tensors, state["optimizer"])
    return state, opt, {k: v for k, v in tensors.items() if k.startswith("rng.")}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__
