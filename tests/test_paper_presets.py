"""The paper presets and recipe files hold the official values (SPEC §3.2-3.4; the official repositories' scripts).

Each value below is read from the official code or script (named beside it); a preset that drifts from it is no
longer the paper's method, so every one of them is pinned here, the schedules first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from latentreason.config import load_yaml
from latentreason.methods.base import method_config
from latentreason.methods.coconut import Coconut
from latentreason.methods.codi import CODI
from latentreason.methods.icot import ICoT

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# preset -> {field: official value}
OFFICIAL_PRESETS = {
    # Internalize_CoT_Step_by_Step, README multiplication command + src/train.py defaults
    (ICoT, "icot_paper_mult"): dict(remove_per_epoch=8.0, smoothing_lambda=4.0, smoothing_from_start=True,
                                    remove_all_beyond=None, reset_optimizer=True, start_step=0, keep_position=False,
                                    serialization="icot", answer_mode="icot", max_new_tokens=800, weight_decay_on="all"),
    # same code, GSM8K command: --remove_all_when_remove_beyond 39
    (ICoT, "icot_paper_gsm8k"): dict(remove_per_epoch=8.0, smoothing_lambda=4.0, remove_all_beyond=39,
                                     reset_optimizer=True, keep_position=False),
    # coconut args/gsm_coconut.yaml: c_thought 2, max_latent_stage 3, epochs_per_stage 3, reset_optimizer True
    (Coconut, "coconut_paper"): dict(thoughts_per_step=2, max_latent_stage=3, epochs_per_stage=3.0, start_stage=1,
                                     reset_optimizer=True, reset_optimizer_every_epoch=True, serialization="coconut",
                                     answer_mode="coconut", max_new_tokens=64, weight_decay_on="all"),
    # coconut args/prosqa_coconut.yaml: c_thought 1, max_latent_stage 6, epochs_per_stage 5, from GPT-2 (stage 0)
    (Coconut, "coconut_paper_prosqa"): dict(thoughts_per_step=1, max_latent_stage=6, epochs_per_stage=5.0, start_stage=0,
                                            reset_optimizer=True, max_new_tokens=128),
    # codi scripts/train_gpt2_gsm8k-aug.sh + src/model.py: 6 latent tokens, projection, alpha = beta = gamma = 1,
    # smooth-L1 distillation normalised by the teacher's std, the teacher's last step dropped, 256-token limit
    (CODI, "codi_paper"): dict(n_latent=6, projection=True, alpha=1.0, beta=1.0, gamma=1.0, distill_loss="smooth_l1",
                               distill_normalize=True, teacher_drop_last_step=True, align_steps=False,
                               serialization="codi", answer_mode="codi", max_new_tokens=256, weight_decay_on="hf"),
    # codi scripts/train_llama1b_gsm8k-aug.sh: distill factor 20
    (CODI, "codi_paper_llama"): dict(beta=20.0, n_latent=6),
}

# recipe file -> {section.field: official value}
OFFICIAL_RECIPES = {
    # Internalize_CoT_Step_by_Step README (4x4 mult, GPT-2): lr 5e-5, batch 32, 200 epochs, max_grad_norm 1.0
    "icot_gpt2_4x4.yaml": {"train.lr": 5e-5, "train.batch_size": 32, "train.epochs": 200, "train.grad_clip": 1.0,
                           "train.schedule": "constant", "train.warmup_steps": 0, "method_args.preset": "icot_paper_mult"},
    # coconut args/gsm_coconut.yaml: lr 1e-4, 4 GPUs x 32, 25 epochs from the CoT checkpoint (3 already spent
    # in stage 0), weight decay 0.01, no clipping
    "coconut_gpt2_gsm8k_aug.yaml": {"train.lr": 1e-4, "train.batch_size": 128, "train.micro_batch_size": 32,
                                    "train.epochs": 22, "train.weight_decay": 0.01, "train.grad_clip": 0.0,
                                    "train.schedule": "constant", "method_args.preset": "coconut_paper"},
    # coconut args/prosqa_coconut.yaml: lr 1e-4, 4 x 32, 50 epochs
    "coconut_gpt2_prosqa.yaml": {"train.lr": 1e-4, "train.batch_size": 128, "train.epochs": 50,
                                 "train.grad_clip": 0.0, "method_args.preset": "coconut_paper_prosqa"},
    # codi scripts/train_gpt2_gsm8k-aug.sh: lr 3e-3, 128 = 64 x 2, 40 epochs, wd 0.1, warm-up 3 %, cosine, clip 2,
    # LoRA r 128 alpha 32, seed 11, bf16
    "codi_gpt2_gsm8k_aug.yaml": {"train.lr": 3e-3, "train.batch_size": 128, "train.micro_batch_size": 64,
                                 "train.epochs": 40, "train.weight_decay": 0.1, "train.warmup_ratio": 0.03,
                                 "train.schedule": "cosine", "train.grad_clip": 2.0, "train.seed": 11,
                                 "model.lora_r": 128, "model.lora_alpha": 32, "train.mixed_precision": "bf16",
                                 "model.dtype": "bfloat16",  # src/model.py: torch_dtype=bfloat16 under --bf16
                                 "method_args.preset": "codi_paper"},
}


@pytest.mark.parametrize("cls,preset", list(OFFICIAL_PRESETS), ids=lambda x: getattr(x, "name", x))
def test_paper_preset_holds_the_official_values(cls, preset):
    cfg = method_config(cls, {"preset": preset})
    got = {k: getattr(cfg, k) for k in OFFICIAL_PRESETS[(cls, preset)]}
    assert got == OFFICIAL_PRESETS[(cls, preset)]


@pytest.mark.parametrize("name", list(OFFICIAL_RECIPES))
def test_recipe_file_holds_the_official_values(name):
    data = load_yaml(CONFIGS / name)
    for key, want in OFFICIAL_RECIPES[name].items():
        node = data
        for k in key.split("."):
            node = node[k]
        assert node == want, f"{name}: {key} is {node!r}, the official recipe has {want!r}"


def test_icot_paper_schedule_removes_eight_tokens_per_epoch_from_the_first_step():
    m = ICoT.__new__(ICoT)
    m.config = method_config(ICoT, {"preset": "icot_paper_mult"})
    # 320 steps per epoch: one token every 40 steps, the first one after 40 steps, 8 by the end of the epoch
    assert [m.removed_at(s, 320) for s in (0, 39, 40, 319, 320, 640)] == [0, 0, 1, 7, 8, 16]


def test_coconut_paper_stage_lasts_three_epochs_and_latents_grow_by_two():
    m = Coconut.__new__(Coconut)
    m.config = method_config(Coconut, {"preset": "coconut_paper"})
    # 100 steps per epoch: stage 1 for epochs 0-2, stage 2 for 3-5, stage 3 for 6-8, then the final stage (every
    # step latent, max_latent_stage x c thoughts) for good
    assert [m.stage_at(s, 100) for s in (0, 299, 300, 599, 600, 899, 900, 2000)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert [m.n_latent(k) for k in (1, 2, 3, 4)] == [2, 4, 6, 6]
