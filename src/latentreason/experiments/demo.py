"""``latentreason demo``: the benchmark runner on the embedded default task.

The demo trains a tiny GPT-2-style model from scratch for every method on the procedural
modular-arithmetic task (``data/procedural.py``), evaluates all methods on the same 500 test
questions and writes ``OUT/results.json`` plus one run directory per method. Latent methods start
from the demo's CoT-SFT model where their papers do, so nothing is trained twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentreason.data.procedural import TaskConfig
from latentreason.experiments.bench import run_bench
from latentreason.experiments.bench_config import BenchConfig, BenchEntry, SoftStudyConfig
from latentreason.experiments.ood import parse_eval_sets
from latentreason.experiments.seeds import seed_note
from latentreason.models.backbone import ModelConfig
from latentreason.reporting.display import err, print_soft_table, print_table
from latentreason.reporting.report import write_report
from latentreason.training.run_config import TrainConfig


#: the demo's task: 4-step modular chains where a quarter of the operations are identities (x*1, x+0, x-0) —
#: steps that restate their input, which the answer does not depend on (System-1.5's non-critical steps)
DEMO_TASK = dict(identity_prob=0.25)
#: thinking temperature of the demo's soft-thinking study: the Soft Thinking paper's 0.6, with which every
#: acceptance point holds on seeds 0-4 at the step-400 snapshot (docs/soft_thinking.md: measured 0.3 ... 2.0)
SOFT_STUDY_TEMPERATURE = 0.6


def demo_config(quick: bool = False) -> BenchConfig:
    """The demo's settings; ``quick`` is a much smaller version used by the tests."""
    if quick:
        task = TaskConfig(n_train=2000, n_valid=50, n_test=50, **DEMO_TASK)
        model = ModelConfig(n_layer=2, n_embd=64, n_head=2)
        steps = {"cot": 40, "nocot": 40, "codi": 20, "codi_kd_only": 20, "coconut": 20, "coconut_plain": 20, "icot_fast": 20,
                 "system15": 10}
        test_limit, valid_limit = 50, 50
    else:
        task = TaskConfig(**DEMO_TASK)
        model = ModelConfig()
        steps = {"cot": 800, "nocot": 500, "codi": 1500, "codi_kd_only": 400, "coconut": 1500, "coconut_plain": 500,
                 "icot_fast": 500, "system15": 600}
        test_limit, valid_limit = None, 200
    # the project's latent rows train at a constant rate until validation reaches 0.9 in their final configuration,
    # then decay over 150 steps (at most max_steps): when the latent chain "clicks" varies from seed to seed
    # (docs/codi.md), a fixed cosine schedule decays the rate before it does on some seeds
    latent_train = {"max_steps": steps["codi"], "lr": 1e-3, "warmup_steps": 20, "schedule": "wsd", "decay_steps": 150,
                    "eval_every": 100, "decay_at_valid_accuracy": 0.9}
    coconut_train = {**latent_train, "max_steps": steps["coconut"]}
    # the papers' objectives with the demo's budget (not the paper presets and schedules, hence their row names:
    # codi_kd_only = CODI's published loss, one distillation point; coconut_plain = Coconut's curriculum with
    # identity thoughts; icot_fast = iCoT-SI removing one token every 12 steps) sit at the No-CoT floor on this task
    # whatever the budget (0.158 after 600 steps, 0.154 on average over five seeds after 700; README): a fixed
    # cosine budget, kept short (400 and 500 steps) so that the demo with every method stays within 20 minutes on
    # 2 cores. The paper presets with their own schedules run in the reproductions (latentreason repro)
    paper_train = {"lr": 1e-3, "warmup_steps": 20}
    train = TrainConfig(batch_size=32, lr=2e-3, warmup_steps=30, log_every=25, eval_every=0, eval_batch_size=200)
    # the soft-thinking study runs on the CoT run's half-way snapshot (step 400 of 800), a model that is still
    # unsure (docs/soft_thinking.md, "Which model the study runs on"): the CoT entry saves it (a snapshot
    # before a third of the run would also need train.keep_checkpoints raised, or later saves rotate it out)
    snapshot = steps["cot"] // 2
    entries = [
        BenchEntry("cot", "cot", train={"max_steps": steps["cot"], "save_every": snapshot}),
        BenchEntry("nocot", "nocot", train={"max_steps": steps["nocot"]}),
        # CODI from the CoT-SFT model: the project's setting, and the paper's objective
        BenchEntry("codi", "codi", {"preset": "default_task"}, train=latent_train, init_from="cot"),
        BenchEntry("codi_kd_only", "codi", {"preset": "codi_paper_default_task"},
                   train={**paper_train, "max_steps": steps["codi_kd_only"]}, init_from="cot"),
        # Coconut from the CoT-SFT model (its stage 0, as in the paper): the project's setting and the paper's
        # mechanics
        BenchEntry("coconut", "coconut", {"preset": "default_task"}, train=coconut_train, init_from="cot"),
        BenchEntry("coconut_plain", "coconut", {"preset": "coconut_paper_default_task"},
                   train={**paper_train, "max_steps": steps["coconut_plain"]}, init_from="cot"),
        # iCoT internalises the CoT of the CoT-SFT model
        BenchEntry("icot_fast", "icot", {"preset": "default_task"},
                   train={"max_steps": steps["icot_fast"], "lr": 1e-3, "warmup_steps": 20}, init_from="cot"),
        # System-1.5: stage 1 is the CODI run's objective (not trained twice); stage 2 learns the shortcuts (600 steps:
        # on five seeds the routers then exit earlier than after 300 at equal or better accuracy, docs/system15.md)
        BenchEntry("system15", "system15", {"preset": "default_task"},
                   train={"max_steps": steps["system15"], "lr": 3e-3, "warmup_steps": 20}, init_from="codi"),
    ]
    study = {"checkpoint_step": snapshot, "horizons": [2, 1], "sampler": {"temperature": SOFT_STUDY_TEMPERATURE}}
    soft = SoftStudyConfig(limit=20, samples=2, ks=[1, 2], lens_limit=10, **study) if quick else SoftStudyConfig(**study)
    # latency as SPEC §5 measures it: one question at a time (the entries take turns per question), on the
    # first 100 test questions, median of 3 rounds; the accuracy pass's own time at batch 100 is kept
    # beside it as ``batched_ms_per_question``
    return BenchConfig(task=task, model=model, train=train, entries=entries, eval_batch_size=100,
                       latency_batch_size=1, latency_questions=None if quick else 100, latency_repeats=3,
                       test_limit=test_limit, valid_limit=valid_limit, soft_thinking=soft,
                       adaptive_from="codi", adaptive_quick=quick)


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, only: list[str] | None = None,
             fresh: bool = False, progress: bool = True, eval_sets: list[str] | None = None,
             data_dir: str | None = None, seeds: list[int] | None = None, reuse_stale: bool = False) -> dict[str, Any]:
    """``eval_sets``: extra evaluation sets as ``NAME=PATH`` (or a named set), see ``bench.parse_eval_sets``;
    ``seeds``: training seeds, each running the whole pipeline (default: one seed, 0)."""
    cfg = demo_config(quick)
    cfg.eval_sets = parse_eval_sets(eval_sets, data_dir)
    results = run_bench(cfg, out_dir, only=only, fresh=fresh, progress=progress,
                        log=lambda s: err.print(s, highlight=False, markup=False), seeds=seeds, reuse_stale=reuse_stale)
    print_table(results["methods"], f"demo on the embedded default task ({results['task']['n_steps']}-step modular chains), "
                f"{seed_note(results)}")
    if "soft_thinking" in results:
        print_soft_table(results["soft_thinking"])

    err.print(f"results: {Path(out_dir) / 'results.json'} (total {results['total_seconds']:.0f} s)", markup=False)
    err.print(f"report: {write_report(out_dir)}", markup=False)
    return results
