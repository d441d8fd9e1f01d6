"""A run directory: a new run or a resumed one, the settings that must not change, the metrics file.

:func:`prepare_run_dir` creates the run directory, removes what a killed run left half-written and
finds the checkpoint to resume from (a new run clears the previous run's outputs); :func:`check_resumable` refuses to resume with settings that decide which examples make up each
batch and what the model is (:data:`RESUME_FIXED`); :func:`truncate_metrics` drops the rows a
killed run wrote after the checkpoint it resumes from; :func:`read_metrics` reads ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from latentreason.errors import CheckpointError
from latentreason.training.checkpoint import clean_partial_writes, latest_checkpoint, read_method_meta
from latentreason.training.run_config import RunConfig, run_config_dict
from latentreason.utils import atomic_write_json, atomic_write_text

#: run-config fields that must not change between a checkpoint and ``--resume`` (they decide
#: which examples make up each batch and what the model is)
RESUME_FIXED = ("method", "method_args", "model", "data.dataset", "data.format", "data.train_split", "data.train_limit",
                "data.task", "train.batch_size", "train.seed")


_MISSING = object()


def _get_path(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def prepare_run_dir(out_dir: Path, cfg: RunConfig, resume: bool, accelerator: Any,
                    log: Callable[[str], None]) -> Path | None:
    """Create the run directory (main process), clean what a killed run left; the checkpoint to resume from."""
    acc = accelerator
    resume_dir = None
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        removed = clean_partial_writes(out_dir)
        if removed:
            log(f"removed {len(removed)} partial write(s) of an interrupted run: {', '.join(p.name for p in removed[:3])}")
    acc.wait_for_everyone()
    if resume:
        resume_dir = latest_checkpoint(out_dir)
        if resume_dir is None:
            log(f"--resume: no checkpoint in {out_dir / 'checkpoints'}; starting from step 0")
    if resume_dir is None and acc.is_main_process:
        # a new run in this directory: outputs of an earlier run must not mix with this one's
        stale = [out_dir / n for n in ("model", "checkpoints", "results.json", "predictions.json", "metrics.jsonl")]
        stale = [p for p in stale if p.exists()]
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if stale:
            log(f"new run in {out_dir}: removed the previous run's {', '.join(p.name for p in stale)}")
        atomic_write_json(out_dir / "run_config.json", run_config_dict(cfg))
    acc.wait_for_everyone()
    return resume_dir


def check_resumable(resume_dir: Path, cfg: RunConfig) -> None:
    """Fail unless ``cfg`` agrees with the checkpoint's run config on every field of :data:`RESUME_FIXED`."""
    saved = read_method_meta(resume_dir).get("run_config") or {}
    now = run_config_dict(cfg)
    diffs = []
    for key in RESUME_FIXED:
        a, b = _get_path(saved, key), _get_path(now, key)
        if a is not _MISSING and a != b:
            diffs.append(f"{key}: {a!r} in the checkpoint, {b!r} now")
    if diffs:
        raise CheckpointError(
            f"{resume_dir}: cannot resume with a different configuration ({'; '.join(diffs[:3])}); "
            "use a new run directory instead"
        )


def truncate_metrics(metrics_path: Path, step: int) -> None:
    """Drop metric rows a killed run wrote after the checkpoint at ``step`` (and broken lines)."""
    if not metrics_path.exists():
        return
    keep = []
    for line in metrics_path.read_text(encoding="utf-8").split("\n"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        s = row.get("step", 0)
        # rows of step N written before its checkpoint: the train row and a periodic eval;
        # a stage_end row at N is written after it (by the next step) and will be again
        if s < step or (s == step and row.get("type") in ("train", "eval")):
            keep.append(line)
    atomic_write_text(metrics_path, "".join(k + "\n" for k in keep))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


__all__ = ["RESUME_FIXED", "check_resumable", "prepare_run_dir", "read_metrics", "truncate_metrics"]
