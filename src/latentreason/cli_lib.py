"""The library behind the command line, in one namespace: what the CLI's commands call.

The CLI modules (``cli.py``, ``cli_soft.py``, ``cli_analyze.py``) import this module inside a
command, on first use, never at their own import: importing the library pulls in torch,
transformers and accelerate (seconds), which ``latentreason --help``, a mistyped option or
``latentreason data list`` should not wait for. Everything a command needs is imported here at
module level, so each CLI module has a single deferred import.
"""

from __future__ import annotations

from pathlib import Path

import torch  # noqa: F401  (cli_soft sets the CPU thread count)

from latentreason.analysis.probe import probe_thoughts
from latentreason.analysis.soft_study import run_mode, soft_thinking_study
from latentreason.analysis.system15_grid import plot_grid, system15_grid
from latentreason.config import from_dict, load_yaml, parse_override
from latentreason.data.procedural import TaskConfig
from latentreason.data.registry import load_dataset
from latentreason.decoding.soft_config import soft_config
from latentreason.decoding.soft_thinking import MODES
from latentreason.experiments.bench import BenchConfig, parse_eval_sets, run_bench
from latentreason.experiments.demo import run_demo
from latentreason.experiments.ood import TOO_LONG_POLICIES, evaluate_ood
from latentreason.reporting.report import write_report
from latentreason.experiments.seeds import parse_seeds, seed_note
from latentreason.training.run import run_training
from latentreason.methods.registry import METHODS, get_method_class
from latentreason.methods.soft_thinking import soft_think
from latentreason.training.checkpoint import load_method, read_method_meta, resolve_checkpoint
from latentreason.training.run_config import load_run_config
from latentreason.utils import atomic_write_json, check_output_file, env_info, pick_device

#: data sets whose procedural task a checkpoint's own run config decides (``--dataset modchain``)
PROCEDURAL_NAMES = ("modchain", "default", "modchain_mixed")


def task_of(ckpt: Path, dataset: str) -> TaskConfig | None:
    """The procedural task a checkpoint was trained on (so `--dataset modchain` means the same task)."""
    if dataset not in PROCEDURAL_NAMES:
        return None
    rc = read_method_meta(ckpt).get("run_config") or {}
    task = rc.get("data", {}).get("task")
    return from_dict(TaskConfig, task, "task") if task else None


__all__ = [
    "BenchConfig", "METHODS", "MODES", "TOO_LONG_POLICIES", "atomic_write_json", "check_output_file", "env_info",
    "evaluate_ood", "from_dict", "get_method_class", "load_dataset", "load_method", "load_run_config", "load_yaml",
    "parse_eval_sets", "parse_override", "parse_seeds", "pick_device", "plot_grid", "probe_thoughts", "read_method_meta",
    "resolve_checkpoint", "run_bench", "run_demo", "run_mode", "run_training", "seed_note", "soft_config", "soft_think",
    "soft_thinking_study", "system15_grid", "task_of", "torch", "write_report",
]
