"""The trainer: one loop for every method, on Hugging Face ``accelerate``.

* AdamW (decay on matrices only, or the official code's parameter set: ``method_args.weight_decay_on``),
  warm-up + cosine/linear/constant learning rate, gradient clipping, gradient accumulation; bf16
  autocast on GPU.
* The global batch size is fixed by the config; with P processes and micro-batch m the
  accumulation is ``batch_size / (P * m)``, so a run on 1 or 2 processes sees the same batches.
  Batches are a deterministic function of (seed, step): global batch k of epoch e is slice k of
  a seeded permutation of the training set, which makes resume exact.
* Loss normalisation: every micro-batch's loss is weighted by its share of the *global* batch's
  target tokens (``labels != -100`` after the causal shift; a method may define
  ``loss_weight(batch)`` instead). For a loss that is a per-token mean (CoT, No-CoT) the
  gradient is then the per-token mean over the whole global batch, whatever the split into
  processes and micro-batches, so P processes x micro-batch b equal 1 process x batch P*b.
  ``method_args.micro_batch_weighting=equal`` weighs every micro-batch's mean loss the same
  instead, as gradient accumulation and DDP averaging do in the official code (paper presets).
  The global token count is summed over processes with ``accelerator.reduce`` (one scalar per
  step); gradients are averaged by DDP / FSDP as usual (the weights carry a factor P for that).
* Multi-process training (DDP, or FSDP with ``train.distributed=fsdp`` on GPUs) is accelerate's;
  only the main process writes checkpoints, metrics and logs.
* Validation goes through the ``validator`` the caller passes (``validator(method, examples,
  batch_size) -> metrics`` with ``accuracy``, ``n``, ``mean_latent_steps``, ``mean_reasoning_tokens``;
  :func:`latentreason.evaluation.evaluate.validation_metrics` for a training run): the trainer
  does not depend on the evaluation code. Without a validator nothing is validated.
* Metrics go to ``metrics.jsonl`` (one JSON object per line); periodic resumable checkpoints to
  ``checkpoints/step-NNNNNNNN/`` (model, optimiser, RNG, step, the method's curriculum state;
  written atomically); the final model to ``model/``. A non-finite loss or gradient norm stops
  training before the weights are updated and keeps the checkpoints written so far; SIGINT /
  SIGTERM finish the current step, save a checkpoint and stop (a second one stops at once).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from latentreason.data.example import Example
from latentreason.errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from latentreason.methods.base import Method, TokExample
from latentreason.progress import progress_bar
from latentreason.training.checkpoint import (
    clean_partial_writes,
    latest_checkpoint,
    load_method,
    load_training_checkpoint,
    read_method_meta,
    save_method,
    save_training_checkpoint,
    set_rng_state,
)
from latentreason.training.run_config import RunConfig, run_config_dict
from latentreason.utils import atomic_write_json, atomic_write_text, seed_everything

__all__ = ["Trainer", "TrainSummary", "TrainingInterrupted", "Validator", "make_accelerator", "read_metrics"]

#: ``validator(method, examples, batch_size) -> metrics``: the validation accuracy and lengths of a method
Validator = Callable[[Method, list[Example], int], dict[str, Any]]

#: run-config fields that must not change between a checkpoint and ``--resume`` (they decide
#: which examples make up each batch and what the model is)
RESUME_FIXED = ("method", "method_args", "model", "data.dataset", "data.format", "data.train_split", "data.train_limit",
                "data.task", "train.batch_size", "train.seed")


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
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


@dataclass
class TrainSummary:
    steps: int
    train_seconds: float
    final_loss: float | None
    global_batch_size: int
    micro_batch_size: int
    grad_accum: int
    num_processes: int
    valid_accuracy: float | None
    out_dir: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def make_accelerator(tcfg) -> Any:
    """The ``Accelerator`` for a training config (CPU / GPU, mixed precision, DDP or FSDP)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    mp = tcfg.mixed_precision
    cpu = tcfg.device == "cpu" or (tcfg.device == "auto" and not torch.cuda.is_available())
    if mp == "auto":
        mp = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    kwargs: dict[str, Any] = {"cpu": cpu, "mixed_precision": mp}
    if tcfg.distributed == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        # FSDP1 through prepare_model (FSDP2 needs model and optimizer prepared together, which a
        # curriculum that resets the optimiser cannot do); original parameters keep their names
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(fsdp_version=1, use_orig_params=True)
    kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
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


class _StopSignals:
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

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._prev[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        return False


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        method: Method,
        train_examples: list[Example],
        valid_examples: list[Example] | None = None,
        out_dir: str | Path | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        validator: Validator | None = None,
    ):
        from accelerate.utils import DistributedType

        self.cfg = cfg
        self.tcfg = cfg.train
        self.out_dir = Path(out_dir or cfg.out_dir)
        self.accelerator = make_accelerator(self.tcfg)
        self.fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        if self.fsdp and hasattr(method.model, "merge_and_unload"):
            raise ConfigError("LoRA (model.lora_r > 0) is not supported with FSDP; use train.distributed=ddp")
        if self.tcfg.device.startswith("cuda:") and self.accelerator.num_processes == 1:
            torch.cuda.set_device(torch.device(self.tcfg.device))
        self.method = method
        self.progress = progress and self.accelerator.is_main_process
        self._log = log or (lambda s: None)
        world = self.accelerator.num_processes
        B = self.tcfg.batch_size
        micro = self.tcfg.micro_batch_size or max(1, B // world)
        if B % (micro * world):
            raise ConfigError(
                f"train.batch_size ({B}) must be a multiple of train.micro_batch_size ({micro}) x processes ({world})"
            )
        self.world, self.micro, self.accum = world, micro, B // (micro * world)
        self.train_toks: list[TokExample] = method.prepare(train_examples, "training data")
        self.valid_examples = valid_examples or []
        self.validator = validator
        n = len(self.train_toks)
        # a training set smaller than the batch: every step is the whole set (split the same way)
        self.batch = min(B, n)
        self.steps_per_epoch = max(1, n // self.batch)
        self.total_steps = self.tcfg.max_steps or max(1, math.ceil(self.tcfg.epochs * self.steps_per_epoch))
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.warmup = (
            int(round(self.tcfg.warmup_ratio * self.total_steps)) if self.tcfg.warmup_ratio is not None else self.tcfg.warmup_steps
        )
        self._signals: _StopSignals | None = None
        #: step at which an early decay started (``train.decay_at_valid_accuracy``), None before
        self.decay_started: int | None = None
        self._decay_ids: set[int] | None = None

    # ------------------------------------------------------------------ helpers
    def log(self, msg: str) -> None:
        if self.accelerator.is_main_process:
            self._log(msg)

    def _write_metrics(self, row: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.tcfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_toks), generator=g)

    def global_batch(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        return perm[k * self.batch : (k + 1) * self.batch].tolist()

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches of the global batch at ``step``."""
        idx = self.global_batch(step)
        chunks = [c.tolist() for c in torch.tensor_split(torch.tensor(idx), self.accum * self.world)]
        rank = self.accelerator.process_index
        return [chunks[a * self.world + rank] for a in range(self.accum)]

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.accelerator.device
        return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    @staticmethod
    def loss_units(method: Method, batch: dict[str, Any], n_examples: int) -> float:
        """How many loss terms a micro-batch's mean loss averages over (its weight in the global mean).

        ``method.loss_weight(batch)`` when the method defines it, else the number of target
        tokens of a causal-LM batch (``labels[:, 1:] != -100``), else the number of examples.
        """
        if getattr(method.config, "micro_batch_weighting", "tokens") == "equal":
            return 1.0
        fn = getattr(method, "loss_weight", None)
        if callable(fn):
            return float(fn(batch))
        labels = batch.get("labels") if isinstance(batch, dict) else None
        if isinstance(labels, torch.Tensor) and labels.dim() == 2:
            return float((labels[:, 1:] != -100).sum())
        return float(n_examples)

    def _sum_over_processes(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def _validate(self, step: int, stage: str | None, kind: str = "eval") -> float | None:
        if not self.valid_examples or self.validator is None:
            return None
        if self.fsdp:  # the main process alone cannot run a sharded model; test evaluation uses model/
            return None
        acc = None
        if self.accelerator.is_main_process:
            m = self.accelerator.unwrap_model(self.model)
            was_training = m.training
            m.eval()
            try:
                metrics = self.validator(m, self.valid_examples, self.tcfg.eval_batch_size)
            finally:
                m.train(was_training)
            acc = metrics["accuracy"]
            row = {"step": step, "type": kind, "valid_accuracy": acc, "valid_n": metrics["n"],
                   "valid_mean_latent_steps": metrics["mean_latent_steps"],
                   "valid_mean_reasoning_tokens": metrics["mean_reasoning_tokens"]}
            if stage is not None:
                row["stage"] = stage
            self._write_metrics(row)
            self.log(f"step {step}: valid accuracy {acc:.3f}" + (f" (stage {stage})" if stage is not None else ""))
        self.accelerator.wait_for_everyone()
        return acc

    def _checkpoint_dir(self, step: int) -> Path:
        return self.out_dir / "checkpoints" / f"step-{step:08d}"

    def _check_finite_weights(self, step: int) -> None:
        for name, p in self.accelerator.unwrap_model(self.model).named_parameters():
            if not torch.isfinite(p.detach()).all():
                newest = latest_checkpoint(self.out_dir)
                raise NonFiniteLossError(
                    f"weights became non-finite ({name}) by step {step}; nothing saved for it; "
                    f"last good checkpoint: {newest if newest else 'none'}"
                )

    def _full_model_state(self) -> dict[str, torch.Tensor] | None:
        """Under FSDP the full weights gathered on the main process (every process must call this)."""
        if not self.fsdp:
            return None
        return self.accelerator.get_state_dict(self.model)

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimiser state keyed by parameter names, gathered in full (every process must call this)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(
            self.model, self.optimizer.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def _save_checkpoint(self, step: int, train_seconds: float, last_loss: float | None) -> Path:
        """Write ``checkpoints/step-N`` (main process; every process must call this)."""
        path = self._checkpoint_dir(step)
        if not self.fsdp:  # every process holds the same weights: they all reach the same verdict
            self._check_finite_weights(step)
        model_sd = self._full_model_state()
        optim_sd = self._optimizer_state()
        if self.accelerator.is_main_process:
            state = {"step": step, "train_seconds": train_seconds, "last_loss": last_loss, "total_steps": self.total_steps,
                     "decay_started": self.decay_started,
                     "num_processes": self.world}
            save_training_checkpoint(
                self.accelerator.unwrap_model(self.model), path, optim_sd, None, state, run_config_dict(self.cfg),
                state_dict=model_sd,
            )
            ckpts = sorted((self.out_dir / "checkpoints").glob("step-*"))
            for old in ckpts[: -self.tcfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return path

    def _new_optimizer(self) -> None:
        opt = build_optimizer(self.accelerator.unwrap_model(self.model), self.tcfg, self._decay_ids)
        self.optimizer = self.accelerator.prepare_optimizer(opt)

    def _load_optimizer_state(self, opt_state: dict[str, Any], where: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        try:
            if opt_state.pop("keys", None) == "fqn":
                set_optimizer_state_dict(
                    self.model, self.optimizer.optimizer, opt_state, options=StateDictOptions(full_state_dict=True)
                )
            else:  # checkpoints written before parameters were keyed by name
                self.optimizer.optimizer.load_state_dict(opt_state)
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{where}: optimizer state does not match this model ({_first_line(e)})") from None

    def _check_resumable(self, resume_dir: Path) -> None:
        saved = read_method_meta(resume_dir).get("run_config") or {}
        now = run_config_dict(self.cfg)
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

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric rows a killed run wrote after the checkpoint at ``step`` (and broken lines)."""
        if not self.accelerator.is_main_process or not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text(encoding="utf-8").split("\n"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            s = row.get("step", 0)
            # rows of step N written before its checkpoint: the train row and a periodic eval;
            # a stage_end row at N is written after it (by the next step) and will be again
            if s < step or (s == step and row.get("type") in ("train", "eval")):
                keep.append(line)
        atomic_write_text(self.metrics_path, "".join(k + "\n" for k in keep))

    def _prepare_run_dir(self, resume: bool) -> Path | None:
        """Create the run directory (main process), clean what a killed run left; the checkpoint to resume from."""
        acc = self.accelerator
        resume_dir = None
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            removed = clean_partial_writes(self.out_dir)
            if removed:
                self.log(f"removed {len(removed)} partial write(s) of an interrupted run: {', '.join(p.name for p in removed[:3])}")
        acc.wait_for_everyone()
        if resume:
            resume_dir = latest_checkpoint(self.out_dir)
            if resume_dir is None:
                self.log(f"--resume: no checkpoint in {self.out_dir / 'checkpoints'}; starting from step 0")
        if resume_dir is None and acc.is_main_process:
            # a new run in this directory: outputs of an earlier run must not mix with this one's
            stale = [self.out_dir / n for n in ("model", "checkpoints", "results.json", "predictions.json", "metrics.jsonl")]
            stale = [p for p in stale if p.exists()]
            for p in stale:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            if stale:
                self.log(f"new run in {self.out_dir}: removed the previous run's {', '.join(p.name for p in stale)}")
            atomic_write_json(self.out_dir / "run_config.json", run_config_dict(self.cfg))
        acc.wait_for_everyone()
        return resume_dir

    def _stop_requested(self) -> bool:
        hit = self._signals is not None and self._signals.hit is not None
        if self.world > 1:  # stop on every process at the same step
            hit = self._sum_over_processes([1.0 if hit else 0.0])[0] > 0
        return hit

    def _maybe_start_decay(self, step: int, valid_acc: float | None, method: Method) -> None:
        """``train.decay_at_valid_accuracy``: once a periodic validation reaches it (and the method is in
        its final configuration: a curriculum's last stage), the ``wsd`` decay starts now and the run ends
        ``decay_steps`` later instead of at ``max_steps``."""
        target = self.tcfg.decay_at_valid_accuracy
        if target is None or self.decay_started is not None:
            return
        hit = valid_acc is not None and valid_acc >= target and method.is_final_stage()
        if self.world > 1:  # only the main process validates: every process follows its verdict
            hit = self._sum_over_processes([1.0 if hit else 0.0])[0] > 0
        if not hit:
            return
        end = step + max(1, self.tcfg.decay_steps)
        if end < self.total_steps:
            self.decay_started = step
            self.total_steps = end
            self.log(f"step {step}: valid accuracy {valid_acc if valid_acc is not None else '?'} >= {target}: "
                     f"learning rate decays over {self.tcfg.decay_steps} steps, the run ends at step {end}")
            self._write_metrics({"step": step, "type": "decay_start", "total_steps": end})

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool = False) -> TrainSummary:
        acc = self.accelerator
        seed_everything(self.tcfg.seed)
        step, train_seconds, last_loss = 0, 0.0, None
        resume_dir = self._prepare_run_dir(resume)
        if resume_dir is not None:
            self._check_resumable(resume_dir)
            loaded = load_method(resume_dir, expected_method=self.method.name,
                                 trust_remote_code=self.cfg.model.trust_remote_code)
            try:
                self.method.load_state_dict(loaded.state_dict(), strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"{resume_dir}: weights do not match this model ({_first_line(e)})") from None
            del loaded
        self.method.train()
        self._decay_ids = decay_parameter_ids(self.method)
        self.model = acc.prepare_model(self.method)
        self._new_optimizer()
        if resume_dir is not None:
            state, opt_state, rng = load_training_checkpoint(resume_dir)
            self._load_optimizer_state(opt_state, resume_dir)
            step, train_seconds, last_loss = state["step"], state["train_seconds"], state.get("last_loss")
            if state.get("decay_started") is not None:  # an early decay had started: the run ends where it said
                self.decay_started, self.total_steps = state["decay_started"], state["total_steps"]
            acc.unwrap_model(self.model).load_trainer_state(state.get("method_state") or {})
            set_rng_state(rng, state["rng"])
            self._truncate_metrics(step)
            self.log(f"resumed from {resume_dir} at step {step}")
        acc.wait_for_everyone()
        self.log(
            f"training {self.method.name}: {len(self.train_toks)} examples, {self.total_steps} steps, global batch "
            f"{self.batch} = {self.world} process(es) x {self.micro} x {self.accum} accumulation, device {acc.device}"
        )
        unwrapped = acc.unwrap_model(self.model)
        valid_acc = None
        t_start = time.perf_counter() - train_seconds
        with _StopSignals() as self._signals:
            try:
                with progress_bar(self.total_steps, f"train {self.method.name}", enabled=self.progress) as bar:
                    bar.update(step)
                    while step < self.total_steps:
                        # a finished stage is evaluated before the switch, so it decodes with its own
                        # configuration (number of thoughts, tokens removed)
                        old_stage = unwrapped.stage_label()
                        upcoming = unwrapped.stage_label_at(step, self.steps_per_epoch)
                        if step > 0 and upcoming is not None and upcoming != old_stage:
                            self._validate(step, old_stage, kind="stage_end")
                        reset = unwrapped.on_train_step(step, step / self.steps_per_epoch, self.steps_per_epoch)
                        new_stage = unwrapped.stage_label()
                        if self.world > 1:  # every process resets together (a method may decide from its shard)
                            reset = self._sum_over_processes([1.0 if reset else 0.0])[0] > 0
                        if reset:
                            self._new_optimizer()
                        last_loss, parts, n_tokens, dt = self._train_step(step)
                        step += 1
                        train_seconds = time.perf_counter() - t_start
                        if step % max(1, self.tcfg.log_every) == 0 or step == self.total_steps:
                            row = {"step": step, "type": "train", "epoch": round(step / self.steps_per_epoch, 4),
                                   "loss": last_loss, **parts, "lr": self.optimizer.param_groups[0]["lr"],
                                   "tokens_per_s": n_tokens / dt if dt > 0 else None, "elapsed_s": round(train_seconds, 3),
                                   "global_batch_size": self.batch}
                            if new_stage is not None:
                                row["stage"] = new_stage
                            self._write_metrics(row)
                        bar.update(1, info=f"loss {last_loss:.4f} lr {self.optimizer.param_groups[0]['lr']:.2e} "
                                   f"{n_tokens / max(dt, 1e-9):,.0f} tok/s" + (f" stage {new_stage}" if new_stage is not None else ""))
                        if self.tcfg.eval_every and step % self.tcfg.eval_every == 0 and step < self.total_steps:
                            v = self._validate(step, new_stage)
                            self._maybe_start_decay(step, v, unwrapped)
                        saved = None
                        if self.tcfg.save_every and step % self.tcfg.save_every == 0 and step < self.total_steps:
                            saved = self._save_checkpoint(step, train_seconds, last_loss)
                        if self._stop_requested():
                            path = saved or self._save_checkpoint(step, train_seconds, last_loss)
                            name = signal.Signals(self._signals.hit).name if self._signals.hit else "a signal"
                            raise TrainingInterrupted(
                                f"{name} at step {step}: checkpoint saved to {path}; continue with --resume",
                                signum=int(self._signals.hit or signal.SIGINT),
                            )
            except KeyboardInterrupt:  # a second signal: stop now, the step in flight is lost
                newest = latest_checkpoint(self.out_dir)
                raise TrainingInterrupted(
                    f"interrupted again during step {step + 1}: stopped without saving it; "
                    f"newest checkpoint: {newest if newest else 'none'}"
                ) from None
        self._signals = None
        valid_acc = self._validate(step, unwrapped.stage_label(), kind="final")
        if not self.fsdp:
            self._check_finite_weights(step)
        model_sd = self._full_model_state()
        if acc.is_main_process:
            save_method(unwrapped, self.out_dir / "model", run_config_dict(self.cfg), state_dict=model_sd)
        # the final model supersedes the resumable checkpoints; keep the newest one for --resume
        self._save_checkpoint(step, train_seconds, last_loss)
        return TrainSummary(
            steps=step,
            train_seconds=round(train_seconds, 3),
            final_loss=last_loss,
            global_batch_size=self.batch,
            micro_batch_size=self.micro,
            grad_accum=self.accum,
            num_processes=self.world,
            valid_accuracy=valid_acc,
            out_dir=str(self.out_dir),
        )

    def _train_step(self, step: int) -> tuple[float, dict[str, float], int, float]:
        acc = self.accelerator
        unwrapped = acc.unwrap_model(self.model)
        t0 = time.perf_counter()
        factor = lr_factor(step, self.warmup, self.total_steps, self.tcfg.schedule, self.tcfg.decay_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = self.tcfg.lr * factor
        self.optimizer.zero_grad(set_to_none=True)
        micro = self.micro_batches(step)
        batches = [unwrapped.collate([unwrapped.features(self.train_toks[i]) for i in idx]) for idx in micro]
        # each micro-batch's share of the global batch (see the module docstring)
        units = [self.loss_units(unwrapped, b, len(idx)) for b, idx in zip(batches, micro)]
        total = self._sum_over_processes([sum(units)])[0]
        if total <= 0:  # no target token anywhere: weigh by examples
            units, total = [float(len(idx)) for idx in micro], float(self.batch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        parts_sum: dict[str, torch.Tensor] = {}
        n_tokens = 0
        for a, batch in enumerate(batches):
            batch = self._to_device(batch)
            n_tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
            w = units[a] / total
            sync = a == len(batches) - 1
            with nullcontext() if sync else acc.no_sync(self.model):
                with acc.autocast():
                    out = self.model(batch)
                    loss = out["loss"]
                # DDP / FSDP average gradients over processes: the factor `world` undoes that mean
                acc.backward(loss * (w * self.world))
            loss_sum += loss.detach().double() * w
            for k, v in out.items():
                if k != "loss" and isinstance(v, torch.Tensor) and v.numel() == 1:
                    parts_sum[k] = parts_sum.get(k, torch.zeros((), dtype=torch.float64, device=acc.device)) + v.detach().double() * w
        keys = sorted(parts_sum)
        summed = self._sum_over_processes([float(loss_sum)] + [float(parts_sum[k]) for k in keys])
        mean_loss, parts = summed[0], dict(zip(keys, summed[1:]))
        # the loss is summed over processes, so every process takes the same decision here
        if not math.isfinite(mean_loss):
            newest = latest_checkpoint(self.out_dir)
            raise NonFiniteLossError(
                f"non-finite loss ({mean_loss}) at step {step + 1}: training stopped before updating the weights; "
                f"last good checkpoint: {newest if newest else 'none (set train.save_every to keep some)'}"
            )
        if self.tcfg.grad_clip and self.tcfg.grad_clip > 0:
            norm = acc.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
            if norm is not None and not math.isfinite(float(norm)):
                newest = latest_checkpoint(self.out_dir)
                raise NonFiniteLossError(
                    f"non-finite gradient norm ({float(norm)}) at step {step + 1} (loss {mean_loss:.4g}): training "
                    f"stopped before updating the weights; last good checkpoint: {newest if newest else 'none'}"
                )
        self.optimizer.step()
        return mean_loss, parts, n_tokens * self.world, time.perf_counter() - t0


_MISSING = object()


def _get_path(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
