"""The trainer: one loop for every method, on Hugging Face ``accelerate``.

* AdamW (decay on matrices only), warm-up + cosine/linear/constant learning rate, gradient
  clipping, gradient accumulation; bf16 autocast on GPU.
* The global batch size is fixed by the config; with P processes and micro-batch m the
  accumulation is ``batch_size / (P * m)``, so a run on 1 or 2 processes sees the same batches.
  Batches are a deterministic function of (seed, step): global batch k of epoch e is slice k of
  a seeded permutation of the training set, which makes resume exact.
* Multi-process training (DDP, or FSDP when asked) is accelerate's; only the main process writes
  checkpoints and logs.
* Metrics go to ``metrics.jsonl`` (one JSON object per line); periodic resumable checkpoints to
  ``checkpoints/step-NNNNNNNN/``; the final model to ``model/``. A non-finite loss stops training
  and keeps the last good weights; Ctrl-C saves a checkpoint before exiting.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from latentreason.data.example import Example
from latentreason.errors import ConfigError, TrainingError
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
from latentreason.training.run_config import RunConfig, run_config_dict
from latentreason.utils import atomic_write_json, seed_everything


class TrainingInterrupted(TrainingError):
    """Ctrl-C during training (a checkpoint was saved)."""


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(method: Method, cfg) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in method.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
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
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.cfg = cfg
        self.tcfg = cfg.train
        self.out_dir = Path(out_dir or cfg.out_dir)
        mp = self.tcfg.mixed_precision
        cpu = self.tcfg.device == "cpu" or (self.tcfg.device == "auto" and not torch.cuda.is_available())
        if mp == "auto":
            mp = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
        kwargs: dict[str, Any] = {"cpu": cpu, "mixed_precision": mp}
        if self.tcfg.distributed == "fsdp":
            from accelerate import FullyShardedDataParallelPlugin

            kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin()
        kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
        self.accelerator = Accelerator(**kwargs)
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
        n = len(self.train_toks)
        self.batch = min(B, n)
        self.steps_per_epoch = max(1, n // self.batch)
        self.total_steps = self.tcfg.max_steps or max(1, math.ceil(self.tcfg.epochs * self.steps_per_epoch))
        self.metrics_path = self.out_dir / "metrics.jsonl"

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

    def _validate(self, step: int, stage: str | None, kind: str = "eval") -> float | None:
        if not self.valid_examples:
            return None
        from latentreason.evaluation.evaluate import evaluate

        acc = None
        if self.accelerator.is_main_process:
            m = self.accelerator.unwrap_model(self.model)
            res = evaluate(m, self.valid_examples, batch_size=self.tcfg.eval_batch_size, keep_records=False, warmup=False)
            acc = res.metrics["accuracy"]
            row = {"step": step, "type": kind, "valid_accuracy": acc, "valid_n": res.metrics["n"],
                   "valid_mean_latent_steps": res.metrics["mean_latent_steps"],
                   "valid_mean_reasoning_tokens": res.metrics["mean_reasoning_tokens"]}
            if stage is not None:
                row["stage"] = stage
            self._write_metrics(row)
            self.log(f"step {step}: valid accuracy {acc:.3f}" + (f" (stage {stage})" if stage is not None else ""))
        self.accelerator.wait_for_everyone()
        return acc

    def _save_checkpoint(self, step: int, train_seconds: float, last_loss: float | None) -> Path | None:
        path = None
        if self.accelerator.is_main_process:
            path = self.out_dir / "checkpoints" / f"step-{step:08d}"
            state = {"step": step, "train_seconds": train_seconds, "last_loss": last_loss, "total_steps": self.total_steps}
            save_training_checkpoint(
                self.accelerator.unwrap_model(self.model), path, self.optimizer, None, state, run_config_dict(self.cfg)
            )
            ckpts = sorted((self.out_dir / "checkpoints").glob("step-*"))
            for old in ckpts[: -self.tcfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return path

    def _new_optimizer(self) -> None:
        opt = build_optimizer(self.accelerator.unwrap_model(self.model), self.tcfg)
        self.optimizer = self.accelerator.prepare_optimizer(opt)

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool = False) -> TrainSummary:
        acc = self.accelerator
        seed_everything(self.tcfg.seed)
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        step, train_seconds, last_loss = 0, 0.0, None
        resume_dir = latest_checkpoint(self.out_dir) if resume else None
        if resume_dir is not None:
            loaded = load_method(resume_dir, expected_method=self.method.name)
            self.method.load_state_dict(loaded.state_dict(), strict=True)
            del loaded
        self.method.train()
        self.model = acc.prepare_model(self.method)
        self._new_optimizer()
        if resume_dir is not None:
            state, opt_state, rng = load_training_checkpoint(resume_dir)
            self.optimizer.optimizer.load_state_dict(opt_state)
            step, train_seconds, last_loss = state["step"], state["train_seconds"], state.get("last_loss")
            acc.unwrap_model(self.model).load_trainer_state(state.get("method_state") or {})
            set_rng_state(rng, state["rng"])
            self._truncate_metrics(step)
            self.log(f"resumed from {resume_dir} at step {step}")
        elif acc.is_main_process:
            self.metrics_path.unlink(missing_ok=True)
            atomic_write_json(self.out_dir / "run_config.json", run_config_dict(self.cfg))
        acc.wait_for_everyone()
        self.log(
            f"training {self.method.name}: {len(self.train_toks)} examples, {self.total_steps} steps, global batch "
            f"{self.batch} = {self.world} process(es) x {self.micro} x {self.accum} accumulation, device {acc.device}"
        )
        unwrapped = acc.unwrap_model(self.model)
        valid_acc = None
        t_start = time.perf_counter() - train_seconds
        try:
            with progress_bar(self.total_steps, f"train {self.method.name}", enabled=self.progress) as bar:
                bar.update(step)
                while step < self.total_steps:
                    old_stage = unwrapped.stage_label()
                    reset = unwrapped.on_train_step(step, step / self.steps_per_epoch, self.steps_per_epoch)
                    new_stage = unwrapped.stage_label()
                    if new_stage != old_stage and step > 0:
                        self._validate(step, old_stage, kind="stage_end")
                    if reset:
                        self._new_optimizer()
                    last_loss, parts, n_tokens, dt = self._train_step(step)
                    step += 1
                    train_seconds = time.perf_counter() - t_start
                    if step % max(1, self.tcfg.log_every) == 0 or step == self.total_steps:
                        row = {"step": step, "type": "train", "epoch": round(step / self.steps_per_epoch, 4),
                               "loss": last_loss, **parts, "lr": self.optimizer.param_groups[0]["lr"],
                               "tokens_per_s": n_tokens / dt if dt > 0 else None, "elapsed_s": round(train_seconds, 3)}
                        if new_stage is not None:
                            row["stage"] = new_stage
                        self._write_metrics(row)
                    bar.update(1, info=f"loss {last_loss:.4f} lr {self.optimizer.param_groups[0]['lr']:.2e} "
                               f"{n_tokens / max(dt, 1e-9):,.0f} tok/s" + (f" stage {new_stage}" if new_stage is not None else ""))
                    if self.tcfg.eval_every and step % self.tcfg.eval_every == 0 and step < self.total_steps:
                        self._validate(step, new_stage)
                    if self.tcfg.save_every and step % self.tcfg.save_every == 0 and step < self.total_steps:
                        self._save_checkpoint(step, train_seconds, last_loss)
        except KeyboardInterrupt:
            path = self._save_checkpoint(step, time.perf_counter() - t_start, last_loss)
            raise TrainingInterrupted(f"interrupted at step {step}; checkpoint saved to {path}; continue with --resume") from None
        valid_acc = self._validate(step, unwrapped.stage_label(), kind="final")
        if acc.is_main_process:
            save_method(unwrapped, self.out_dir / "model", run_config_dict(self.cfg))
            # the final model supersedes the resumable checkpoints; keep the newest one for --resume
            self._save_checkpoint(step, train_seconds, last_loss)
        acc.wait_for_everyone()
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
        factor = lr_factor(step, self.tcfg.warmup_steps, self.total_steps, self.tcfg.schedule)
        for g in self.optimizer.param_groups:
            g["lr"] = self.tcfg.lr * factor
        losses: list[torch.Tensor] = []
        parts_sum: dict[str, float] = {}
        n_tokens = 0
        self.optimizer.zero_grad(set_to_none=True)
        micro = self.micro_batches(step)
        for a, idx in enumerate(micro):
            feats = [unwrapped.features(self.train_toks[i]) for i in idx]
            batch = self._to_device(unwrapped.collate(feats))
            n_tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
            ctx = acc.no_sync(self.model) if a < len(micro) - 1 else _null()
            with ctx, acc.autocast():
                out = self.model(batch)
                loss = out["loss"]
            if not torch.isfinite(loss.detach()).all():
                path = self._save_checkpoint(step, 0.0, None)
                raise TrainingError(
                    f"non-finite loss ({float(loss.detach())}) at step {step}; training stopped, the last good "
                    f"weights are in {path}"
                )
            acc.backward(loss / len(micro))
            losses.append(loss.detach())
            for k, v in out.items():
                if k != "loss" and isinstance(v, torch.Tensor) and v.numel() == 1:
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach()) / len(micro)
        if self.tcfg.grad_clip and self.tcfg.grad_clip > 0:
            acc.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.optimizer.step()
        mean_loss = torch.stack(losses).mean()
        if self.world > 1:
            mean_loss = acc.reduce(mean_loss, reduction="mean")
        return float(mean_loss), parts_sum, n_tokens * self.world, time.perf_counter() - t0

    def _truncate_metrics(self, step: int) -> None:
        if not self.accelerator.is_main_process or not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step and row.get("type") != "final":
                keep.append(line)
        self.metrics_path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
