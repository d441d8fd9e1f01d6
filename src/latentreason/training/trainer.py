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
* The optimiser and schedule are in :mod:`~latentreason.training.optim`, the accelerator and signal
  handling in :mod:`~latentreason.training.runtime`, the run directory and resume checks in
  :mod:`~latentreason.training.resume`.
* Validation (on the main process) is :func:`latentreason.evaluation.evaluate.validation_metrics`:
  accuracy and lengths on the validation examples, without records. Without validation examples
  nothing is validated.
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
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.utils import DistributedType

from latentreason.data.example import Example
from latentreason.errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from latentreason.evaluation.evaluate import validation_metrics
from latentreason.methods.base import Method, TokExample
from latentreason.progress import progress_bar
from latentreason.training.checkpoint import (
    latest_checkpoint,
    load_method,
    load_training_checkpoint,
    save_method,
    save_training_checkpoint,
    set_rng_state,
)
from latentreason.training.optim import (
    build_optimizer,
    decay_parameter_ids,
    first_line,
    load_optimizer_state,
    lr_factor,
    optimizer_state,
)
from latentreason.training.resume import check_resumable, prepare_run_dir, truncate_metrics
from latentreason.training.run_config import RunConfig, run_config_dict
from latentreason.training.runtime import StopSignals, make_accelerator
from latentreason.utils import seed_everything

#: run-config fields that must not change between a checkpoint and ``--resume`` (they decide
#: which examples make up each batch and what the model is)


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
    ):
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
        method.fit_to_data(self.train_toks)
        self.valid_examples = valid_examples or []
        n = len(self.train_toks)
        # a training set smaller than the batch: every step is the whole set (split the same way)
        self.batch = min(B, n)
        self.steps_per_epoch = max(1, n // self.batch)
        self.total_steps = self.tcfg.max_steps or max(1, math.ceil(self.tcfg.epochs * self.steps_per_epoch))
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.warmup = (
            int(round(self.tcfg.warmup_ratio * self.total_steps)) if self.tcfg.warmup_ratio is not None else self.tcfg.warmup_steps
        )
        self._signals: StopSignals | None = None
        #: ((step, stage), metrics) of the newest validation
        self._validated: tuple[tuple[int, str | None], dict[str, Any]] | None = None
        if method.requires_validation() and (self.fsdp or not (self.tcfg.eval_every and self.valid_examples)):
            raise ConfigError(f"{method.name}: its schedule advances on validation accuracy (method_args.removal_gate): "
                              "set train.eval_every > 0 and give a validation split (FSDP runs do not validate)")
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
        if not self.valid_examples:
            return None
        if self.fsdp:  # the main process alone cannot run a sharded model; test evaluation uses model/
            return None
        acc = None
        if self.accelerator.is_main_process:
            m = self.accelerator.unwrap_model(self.model)
            reused = self._validated is not None and self._validated[0] == (step, stage)
            if reused:
                metrics = self._validated[1]  # the same weights at the same stage (a stage ending at a validation)
            else:
                was_training = m.training
                m.eval()
                try:
                    metrics = validation_metrics(m, self.valid_examples, self.tcfg.eval_batch_size)
                finally:
                    m.train(was_training)
                self._validated = ((step, stage), metrics)
            acc = metrics["accuracy"]
            row = {"step": step, "type": kind, "valid_accuracy": acc, "valid_n": metrics["n"],
                   "valid_mean_latent_steps": metrics["mean_latent_steps"],
                   "valid_mean_reasoning_tokens": metrics["mean_reasoning_tokens"]}
            if stage is not None:
                row["stage"] = stage
            self._write_metrics(row)
            if not reused:  # the row above is written again under its kind; the line was printed once already
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

    def _save_checkpoint(self, step: int, train_seconds: float, last_loss: float | None) -> Path:
        """Write ``checkpoints/step-N`` (main process; every process must call this)."""
        path = self._checkpoint_dir(step)
        if not self.fsdp:  # every process holds the same weights: they all reach the same verdict
            self._check_finite_weights(step)
        model_sd = self._full_model_state()
        optim_sd = optimizer_state(self.model, self.optimizer.optimizer)
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
        resume_dir = prepare_run_dir(self.out_dir, self.cfg, resume, self.accelerator, self.log)
        if resume_dir is not None:
            self._load_weights(resume_dir)
        self.method.train()
        self._decay_ids = decay_parameter_ids(self.method)
        self.model = acc.prepare_model(self.method)
        # the training step's forward (and so its backward): compiled on request; validation reads the eager module
        self._train_forward = torch.compile(self.model) if self.tcfg.compile else self.model
        self._new_optimizer()
        if resume_dir is not None:
            step, train_seconds, last_loss = self._load_training_state(resume_dir)
        acc.wait_for_everyone()
        self.log(
            f"training {self.method.name}: {len(self.train_toks)} examples, {self.total_steps} steps, global batch "
            f"{self.batch} = {self.world} process(es) x {self.micro} x {self.accum} accumulation, device {acc.device}"
        )
        if acc.mixed_precision in ("bf16", "fp16") and any(
                not p.requires_grad and p.dtype == torch.float32 and p.dim() == 2 for p in self.method.model.parameters()):
            self.log(f"note: {acc.mixed_precision} autocast over frozen float32 weights (LoRA) casts each one again at "
                     "every use and keeps every copy for the backward, one copy of the base model per pass through it "
                     "(CODI: the teacher's, the question's, each thought's, the answer's); model.dtype=bfloat16 loads "
                     "the base in bf16 instead, as the official CODI")
        unwrapped = acc.unwrap_model(self.model)
        step, train_seconds, last_loss = self._run(step, train_seconds, last_loss, unwrapped)
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

    def _load_weights(self, resume_dir: Path) -> None:
        """The checkpoint's weights into the method (before accelerate prepares it)."""
        check_resumable(resume_dir, self.cfg)
        loaded = load_method(resume_dir, expected_method=self.method.name,
                             trust_remote_code=self.cfg.model.trust_remote_code)
        try:
            self.method.load_state_dict(loaded.state_dict(), strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{resume_dir}: weights do not match this model ({first_line(e)})") from None
        del loaded

    def _load_training_state(self, resume_dir: Path) -> tuple[int, float, float | None]:
        """Optimiser, schedule, curriculum and RNG state of the checkpoint; returns (step, train seconds, last loss)."""
        state, opt_state, rng = load_training_checkpoint(resume_dir)
        load_optimizer_state(self.model, self.optimizer.optimizer, opt_state, resume_dir)
        step, train_seconds, last_loss = state["step"], state["train_seconds"], state.get("last_loss")
        if state.get("decay_started") is not None:  # an early decay had started: the run ends where it said
            self.decay_started, self.total_steps = state["decay_started"], state["total_steps"]
        self.accelerator.unwrap_model(self.model).load_trainer_state(state.get("method_state") or {})
        set_rng_state(rng, state["rng"])
        if self.accelerator.is_main_process:
            truncate_metrics(self.metrics_path, step)
        self.log(f"resumed from {resume_dir} at step {step}")
        return step, train_seconds, last_loss

    def _run(self, step: int, train_seconds: float, last_loss: float | None,
             unwrapped: Method) -> tuple[int, float, float | None]:
        """Optimiser steps from ``step`` to ``total_steps``; SIGINT / SIGTERM save a checkpoint and stop."""
        t_start = time.perf_counter() - train_seconds
        with StopSignals() as self._signals:
            try:
                with progress_bar(self.total_steps, f"train {self.method.name}", enabled=self.progress) as bar:
                    bar.update(step)
                    while step < self.total_steps:
                        new_stage = self._begin_step(step, unwrapped)
                        last_loss, parts, n_tokens, dt = self._train_step(step)
                        step += 1
                        train_seconds = time.perf_counter() - t_start
                        self._end_step(step, new_stage, last_loss, parts, n_tokens, dt, train_seconds, unwrapped, bar)
            except KeyboardInterrupt:  # a second signal: stop now, the step in flight is lost
                newest = latest_checkpoint(self.out_dir)
                raise TrainingInterrupted(
                    f"interrupted again during step {step + 1}: stopped without saving it; "
                    f"newest checkpoint: {newest if newest else 'none'}"
                ) from None
        self._signals = None
        return step, train_seconds, last_loss

    def _begin_step(self, step: int, unwrapped: Method) -> str | None:
        """Stage bookkeeping before optimiser step ``step``; returns the stage it trains in."""
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
        return new_stage

    def _end_step(self, step: int, new_stage: str | None, last_loss: float, parts: dict[str, float], n_tokens: int,
                  dt: float, train_seconds: float, unwrapped: Method, bar: Any) -> None:
        """After optimiser step ``step``: metrics row, progress, periodic validation and checkpoint, stop request."""
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
            if self.world > 1 and self.valid_examples and not self.fsdp:  # the main process validated: share it
                v = self._sum_over_processes([v or 0.0])[0]
            unwrapped.on_validation(step, v)
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
                    out = self._train_forward(batch)
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

