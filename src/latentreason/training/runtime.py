"""What a training process runs under: accelerate's ``Accelerator`` and the handling of SIGINT / SIGTERM.

:func:`make_accelerator` sets up the device, mixed precision and DDP / FSDP from a training
config; :class:`StopSignals` turns SIGINT / SIGTERM into a flag the training loop checks between
steps (a second signal stops at once).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType

from latentreason.errors import ConfigError


def make_accelerator(tcfg) -> Any:
    """The ``Accelerator`` for a training config (CPU / GPU, mixed precision, DDP or FSDP)."""
    mp = tcfg.mixed_precision
    cpu = tcfg.device == "cpu" or (tcfg.device == "auto" and not torch.cuda.is_available())
    if mp == "auto":
        mp = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    kwargs: dict[str, Any] = {"cpu": cpu, "mixed_precision": mp}
    if tcfg.distributed == "fsdp":
        # FSDP1 through prepare_model (FSDP2 needs model and optimizer prepared together, which a
        # curriculum that resets the optimiser cannot do); original parameters keep their names
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(fsdp_version=1, use_orig_params=True)
    kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    done = AcceleratorState._shared_state
    if done and done.get("_mixed_precision", mp) != mp and PartialState().num_processes == 1:
        # one process training runs of different precisions in turn (a notebook, a script): accelerate keeps the
        # first run's state for the process and refuses another precision; a single process may start afresh
        AcceleratorState._reset_state()
    acc = Accelerator(**kwargs)
    is_fsdp = acc.distributed_type == DistributedType.FSDP
    if tcfg.distributed == "fsdp" and acc.num_processes > 1 and not is_fsdp:
        raise ConfigError(
            f"train.distributed=fsdp: accelerate shards models with FSDP on GPUs only; this run is "
            f"{acc.distributed_type.value} on {acc.device}; use train.distributed=ddp (or auto)"
        )
    if tcfg.distributed == "ddp" and is_fsdp:
        raise ConfigError("train.distributed=ddp, but the launcher asked for FSDP (accelerate launch --use_fsdp)")
    return acc


class StopSignals:
    """SIGINT / SIGTERM set a flag the training loop checks between steps (the step in flight
    finishes, a checkpoint is saved); a second signal raises ``KeyboardInterrupt`` at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.hit: int | None = None
        self._prev: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.hit is not None:
            raise KeyboardInterrupt
        self.hit = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._prev[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        return False


__all__ = ["StopSignals", "make_accelerator"]
