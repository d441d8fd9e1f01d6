"""Resume that loses nothing.

* A real ``python -m latentreason train`` process is killed with SIGKILL at four points (after
  the 1st checkpoint appears, after the 2nd appears in the resumed run, between two checkpoints
  in the next one, and while the 3rd is being written when the poll catches it), resumed with
  ``--resume`` each time, and the final ``metrics.jsonl`` equals an uninterrupted run's exactly
  (every field of every row but the wall-clock ones).
* SIGINT finishes the step in flight, saves a checkpoint at that step, exits 130 with one line;
  the run then resumes to the same trace.
* In-process, for CoT and for Coconut (a curriculum whose stage changes reset the optimiser): a run
  resumed from its first checkpoint writes the same ``metrics.jsonl`` and the same final weights, bit
  for bit, as the uninterrupted run.
* In-process: a method whose curriculum state is *not* derivable from the step (it counts its
  own calls) resumes exactly because the checkpoint holds ``trainer_state()``; without
  restoring it the trace differs (so the check can fail).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_same_weights, metrics_rows, reproducible_metrics
from latentreason.training.checkpoint import latest_checkpoint, load_method
from latentreason.training.run import run_training
from latentreason.training.run_config import load_run_config

STEPS = 24
ARGS = ["train", "--method", "cot", "--max-steps", str(STEPS), "--batch-size", "16", "--no-progress",
        "--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2",
        "--set", "data.task.n_train=300", "--set", "data.task.n_valid=4", "--set", "data.task.n_test=4",
        "--set", "data.valid_limit=4", "--set", "train.save_every=6", "--set", "train.eval_every=6",
        "--set", "train.log_every=1", "--set", "train.warmup_steps=2", "--set", "train.lr=3e-3",
        "--set", "train.keep_checkpoints=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")


def start(out: Path, *extra: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "latentreason", *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), env=_env())


def last_train_step(run: Path) -> int:
    return max((r["step"] for r in metrics_rows(run) if r["type"] == "train"), default=0)


def wait_for(cond, proc: subprocess.Popen, log: Path, what: str, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{log.read_text()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def assert_same_trace(run: Path, ref: Path) -> None:
    """Every step logged exactly once, and the same metrics.jsonl as ``ref`` but for the wall-clock fields."""
    assert [r["step"] for r in metrics_rows(run) if r["type"] == "train"] == list(range(1, STEPS + 1))
    assert reproducible_metrics(run) == reproducible_metrics(ref)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = subprocess.run([sys.executable, "-m", "latentreason", *ARGS, "--out", str(out)], capture_output=True, text=True,
                       timeout=300, env=_env())
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_four_points_then_resume_equals_uninterrupted(tmp_path, reference):
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    kill_points = [
        ("the 1st checkpoint (step 6) appears", [], lambda: (run / "checkpoints" / "step-00000006").is_dir()),
        ("the 2nd checkpoint (step 12) appears", ["--resume"], lambda: (run / "checkpoints" / "step-00000012").is_dir()),
        ("step 15 is logged (between checkpoints)", ["--resume"], lambda: last_train_step(run) >= 15),
        # best effort: while checkpoint 18 is being written (its temporary directory exists), else just after
        ("checkpoint 18 is being written (or just was)", ["--resume"],
         lambda: bool(list((run / "checkpoints").glob(".step-00000018.tmp-*"))) or (run / "checkpoints" / "step-00000018").is_dir()),
    ]
    landed = []
    for what, extra, cond in kill_points:
        p = start(run, *extra, log=log)
        wait_for(cond, p, log, what)
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=60) == -signal.SIGKILL
        partial = [q.name for q in (run / "checkpoints").glob(".*.tmp-*")]
        landed.append((what, last_train_step(run), latest_checkpoint(run).name, partial))
        assert not (run / "model").exists() and not (run / "results.json").exists()
    p = start(run, "--resume", log=log)
    assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    resumed_at = landed[-1][2]  # the newest complete checkpoint when the last kill landed
    assert f"resumed from {run / 'checkpoints' / resumed_at} at step {int(resumed_at[5:])}" in text, text[-2000:]
    assert_same_trace(run, reference)
    print("\nSIGKILL points (condition, last logged step when killed, newest checkpoint, half-written ones):")
    for x in landed:
        print("  ", x)
    # nothing half-written is left, and the result is complete
    assert not [p for p in run.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert json.loads((run / "results.json").read_text())["train"]["steps"] == STEPS
    assert load_method(run).name == "cot"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigint_saves_a_checkpoint_at_the_current_step(tmp_path, reference):
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    p = start(run, log=log)
    wait_for(lambda: last_train_step(run) >= 2, p, log, "step 2 is logged")
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130
    err = log.read_text()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    n = last_train_step(run)
    ckpt = run / "checkpoints" / f"step-{n:08d}"
    assert lines[-1] == f"interrupted: SIGINT at step {n}: checkpoint saved to {ckpt}; continue with --resume", lines[-3:]
    assert sum("interrupted" in ln for ln in lines) == 1
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == n
    assert latest_checkpoint(run) == ckpt
    assert not (run / "model").exists() and not (run / "results.json").exists()
    print(f"\nSIGINT landed after step {n}: {lines[-1]}")
    p = start(run, "--resume", log=log)
    assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert_same_trace(run, reference)


# ---------------------------------------------------------------------- exact resume, in-process
TINY_RUN = ["model.n_layer=1", "model.n_embd=32", "model.n_head=2", "train.max_steps=12", "train.batch_size=16",
            "train.lr=3e-3", "train.warmup_steps=2", "train.log_every=1", "train.save_every=4", "train.eval_every=4",
            "train.keep_checkpoints=5", "data.task.n_train=200", "data.task.n_valid=4", "data.task.n_test=4",
            "data.valid_limit=4"]
#: Coconut's curriculum: a stage every 3 steps (1 → 4, the last with every step latent), the optimiser reset at each
COCONUT = ["method_args.thoughts_per_step=1", "method_args.max_latent_stage=3", "method_args.steps_per_stage=3"]


def _resumed_from_first_checkpoint(full: Path, to: Path, cfg) -> Path:
    """A copy of ``full`` as it was at step 4 (later checkpoints and the model removed), resumed to the end."""
    shutil.copytree(full, to)
    shutil.rmtree(to / "model")
    for s in (8, 12):
        shutil.rmtree(to / "checkpoints" / f"step-{s:08d}")
    run_training(cfg(to), progress=False, evaluate_test=False, resume=True)
    return to


@pytest.mark.parametrize("method,extra", [("cot", []), ("coconut", COCONUT)], ids=["cot", "coconut-curriculum"])
def test_resume_writes_the_same_metrics_and_weights_bit_for_bit(tmp_path, method, extra):
    def cfg(out):
        return load_run_config(overrides=[f"method={method}", f"out_dir={out}", *TINY_RUN, *extra])

    full = tmp_path / "full"
    run_training(cfg(full), progress=False, evaluate_test=False)
    if method == "coconut":  # the curriculum really runs: four stages, the resume point inside stage 2
        assert [r["stage"] for r in metrics_rows(full) if r["type"] == "train"] == ["1"] * 3 + ["2"] * 3 + ["3"] * 3 + ["4"] * 3
    resumed = _resumed_from_first_checkpoint(full, tmp_path / "resumed", cfg)
    assert [r["step"] for r in metrics_rows(resumed) if r["type"] == "train"] == list(range(1, 13))
    assert any(r["type"] != "train" for r in metrics_rows(resumed))  # validation rows are compared too
    assert reproducible_metrics(resumed) == reproducible_metrics(full)
    assert_same_weights(resumed, full)


# ---------------------------------------------------------------------- curriculum state, in-process
def _staged_method_class():
    from latentreason.methods.cot import CoT

    class CountingCurriculum(CoT):
        """Drops one more leading CoT step every 3 calls of ``on_train_step`` (a call counter the
        step number cannot recover), resetting the optimiser at each stage change."""

        name = "counting_curriculum_test"

        def __init__(self, backbone, config=None):
            super().__init__(backbone, config)
            self.calls, self.stage = 0, 0

        def on_train_step(self, step, epoch, steps_per_epoch):
            self.calls += 1
            new = min(self.calls // 3, 3)
            changed, self.stage = new != self.stage, new
            return changed

        def stage_label(self):
            return f"drop{self.stage}"

        def target(self, t):
            steps = t.steps[self.stage:]
            cot = [x for s in steps for x in s] + (t.cot_close if steps else [])
            return cot + t.answer

        def trainer_state(self):
            return {"calls": self.calls, "stage": self.stage}

        def load_trainer_state(self, state):
            self.calls, self.stage = state["calls"], state["stage"]

    return CountingCurriculum


def test_curriculum_state_is_restored_on_resume(tmp_path, monkeypatch):
    from latentreason.methods.registry import METHODS

    cls = _staged_method_class()
    monkeypatch.setitem(METHODS, cls.name, cls)

    def cfg(out):
        return load_run_config(overrides=[
            f"method={cls.name}", f"out_dir={out}", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
            "train.max_steps=12", "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=0", "train.log_every=1",
            "train.save_every=4", "train.keep_checkpoints=5", "data.task.n_train=200", "data.task.n_valid=4",
            "data.task.n_test=4", "data.valid_limit=4"])

    def losses(out):
        return [r["loss"] for r in metrics_rows(out) if r["type"] == "train"]

    full = tmp_path / "full"
    run_training(cfg(full), progress=False, evaluate_test=False)
    stages = [r.get("stage") for r in metrics_rows(full) if r["type"] == "train"]
    assert stages[0] == "drop0" and stages[-1] == "drop3"
    assert json.loads((full / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())["method_state"] == {
        "calls": 4, "stage": 1}

    def resumed(name):
        d = tmp_path / name
        shutil.copytree(full, d)
        shutil.rmtree(d / "model")
        for s in (8, 12):
            shutil.rmtree(d / "checkpoints" / f"step-{s:08d}")
        run_training(cfg(d), progress=False, evaluate_test=False, resume=True)
        return d

    good = resumed("good")
    assert reproducible_metrics(good) == reproducible_metrics(full)
    assert [r.get("stage") for r in metrics_rows(good) if r["type"] == "train"] == stages
    # the same resume without restoring the curriculum state goes elsewhere: the check has teeth
    monkeypatch.setattr(cls, "load_trainer_state", lambda self, state: None)
    bad = resumed("bad")
    assert losses(bad)[:4] == losses(full)[:4]
    assert max(abs(a - b) for a, b in zip(losses(bad)[4:], losses(full)[4:])) > 1e-3
