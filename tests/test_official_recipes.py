"""The paper presets' recipe points that tests/test_parity.py does not reach: optimiser resets, Removal
Smoothing from the first step, stage-end evaluation before the switch, weight-decay sets, micro-batch
weighting, special-token layouts and the initialisation of new token rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_backbone
from helpers import train_examples
from latentreason.data.example import Example
from latentreason.methods.base import Serializer, method_config
from latentreason.methods.coconut import Coconut, CoconutConfig
from latentreason.methods.codi import CODI
from latentreason.methods.icot import INF, ICoT, ICoTConfig
from latentreason.models.backbone import ModelConfig, add_special_tokens, init_rows_with_mean, load_backbone
from latentreason.training.optim import build_optimizer, decay_parameter_ids
from latentreason.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
PARITY = Path(__file__).parent / "parity" / "data"



# ----------------------------------------------------------------------------------------- serialisation
def test_byte_tokenizer_answers_unchanged_by_joint_tokenisation():
    """Marker and value are tokenised together; with the embedded byte tokenizer that is the same ids as before."""
    bb = tiny_backbone()
    ex = Example("3+4*7", ["3+4=7", "7*7=9"], "9")
    for style, marker in (("default", "#### "), ("coconut", "### "), ("codi", "The answer is: ")):
        (t,) = Serializer(style, bb).tokenize([ex])
        assert t.answer_prefix == bb.tokenizer(marker, add_special_tokens=False).input_ids
        assert t.answer_value == bb.tokenizer("9", add_special_tokens=False).input_ids + [bb.ids.eos]


def test_icot_serialisation_keeps_the_plus_separators(fixtures):
    from latentreason.data.loaders import load_icot_mult

    bb = tiny_backbone()
    (ex,) = load_icot_mult(fixtures / "mult_4x4.txt")
    (t,) = Serializer("icot", bb).tokenize([ex])
    text = bb.tokenizer.decode(t.prompt + t.cot + t.answer, skip_special_tokens=False)
    line = (fixtures / "mult_4x4.txt").read_text().strip()
    q, rest = line.split("||")
    cot, ans = rest.split(" #### ")
    assert text == f" {q} <eos> {cot} <eos> #### {ans} <eos>"


# ----------------------------------------------------------------------------------------- iCoT
def test_icot_resets_stop_once_a_batch_has_no_cot_left():
    bb = tiny_backbone()
    m = ICoT(bb, ICoTConfig(steps_per_token=1, smoothing_lambda=None, serialization="icot"))
    toks = m.prepare(train_examples(4))
    longest = max(len(m.removable(t)[0]) for t in toks)
    resets = []
    for step in range(longest + 6):
        resets.append(m.on_train_step(step, 0.0, 100))
        m.collate([m.features(t) for t in toks])
    # the amount grows every step; AdamW is re-created while the previous batch still had CoT tokens
    assert [s for s, r in enumerate(resets) if r] == list(range(1, longest + 1))
    assert m.trainer_state()["last_batch_empty"] is True


def test_icot_space_before_the_closing_eos_is_removable():
    bb = tiny_backbone()
    m = ICoT(bb, ICoTConfig(serialization="icot", smoothing_lambda=None))
    (t,) = m.prepare(train_examples(1))
    steps = sum(len(s) for s in t.steps)
    space = bb.tokenizer(" ", add_special_tokens=False).input_ids
    assert m.slice_cot(t, steps) == space + [bb.ids.eos]
    assert m.slice_cot(t, steps + 1) == m.slice_cot(t, 10_000) == m.slice_cot(t, INF) == [bb.ids.eos]
    # the default serialisation keeps its closing newline (the project's default task is unchanged)
    d = ICoT(bb, ICoTConfig(smoothing_lambda=None))
    (u,) = d.prepare(train_examples(1))
    assert d.slice_cot(u, 10_000) == u.cot_close


@pytest.mark.parametrize("from_start", [True, False])
def test_icot_smoothing_offsets_from_the_first_step(from_start):
    bb = tiny_backbone()
    m = ICoT(bb, ICoTConfig(steps_per_token=1000, smoothing_lambda=0.3, smoothing_from_start=from_start))
    toks = m.prepare(train_examples(16))
    m.on_train_step(0, 0.0, 1000)
    assert m.removed == 0
    shortened = sum(len(m.target(t)) < len(t.cot) + len(t.answer) for t in toks)
    assert (shortened > 0) == from_start


def test_icot_schedule_with_fewer_steps_than_tokens_per_epoch():
    """round(steps_per_epoch / Δ) = 0: one more token every step, the first one at step 0 (the official counter)."""
    m = ICoT(tiny_backbone(), ICoTConfig(remove_per_epoch=8.0, smoothing_lambda=None))
    assert [m.removed_at(s, 3) for s in range(3)] == [1, 2, 3]
    assert [m.removed_at(s, 16) for s in (0, 1, 2, 3)] == [0, 0, 1, 1]


# ----------------------------------------------------------------------------------------- Coconut
def test_coconut_paper_preset_resets_adamw_every_epoch():
    m = Coconut(tiny_backbone(), method_config(Coconut, {"preset": "coconut_paper"}))
    assert m.config.reset_optimizer_every_epoch and m.config.weight_decay_on == "all"
    resets = [s for s in range(40) if m.on_train_step(s, s / 10, 10)]
    assert resets == [10, 20, 30]  # epochs 1, 2, 3 (stage changes fall on epoch starts: every 30 steps)
    d = Coconut(tiny_backbone(), CoconutConfig(thoughts_per_step=1, steps_per_stage=15))
    assert [s for s in range(40) if d.on_train_step(s, s / 10, 10)] == [15, 30]  # stage changes only


def test_stage_end_evaluation_decodes_with_the_finished_stage(tmp_path):
    from latentreason.training.run import run_training
    from latentreason.training.run_config import load_run_config

    over = ["method=coconut", f"out_dir={tmp_path / 'c'}", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
            "train.max_steps=7", "train.batch_size=8", "train.log_every=100", "data.task.n_train=64",
            "data.task.n_valid=4", "data.task.n_test=4", "data.valid_limit=4",
            "method_args.thoughts_per_step=1", "method_args.max_latent_stage=2", "method_args.steps_per_stage=3"]
    run_training(load_run_config(overrides=over), progress=False, evaluate_test=False)
    rows = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    ends = [(r["step"], r["stage"], r["valid_mean_latent_steps"]) for r in rows if r["type"] == "stage_end"]
    assert ends == [(3, "1", 1.0), (6, "2", 2.0)]


# ----------------------------------------------------------------------------------------- trainer
def test_weight_decay_sets():
    bb = tiny_backbone("tiny-llama")
    m = CODI(bb, method_config(CODI, {"preset": "default_task"}))
    names = {id(p): n for n, p in m.named_parameters()}

    def decayed(rule):
        return {names[i] for i in decay_parameter_ids(m, rule)}

    everything = set(names.values())
    assert decayed("all") == everything
    assert decayed("matrices") == {n for n, p in m.named_parameters() if p.dim() >= 2}
    hf = decayed("hf")  # the Hugging Face Trainer: no biases, no LayerNorm modules, no *layernorm* / *rmsnorm* names
    assert "model.model.norm.weight" in hf and "model.model.layers.0.input_layernorm.weight" not in hf
    assert "projection.norm.weight" not in hf and "projection.fc1.bias" not in hf and "projection.fc1.weight" in hf
    cfg = type("T", (), dict(weight_decay=0.1, lr=1e-3, beta1=0.9, beta2=0.999, fused_optimizer=False))()
    opt = build_optimizer(m, cfg, decay_parameter_ids(m, "all"))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1


def test_equal_micro_batch_weighting():
    bb = tiny_backbone()
    m = CODI(bb, method_config(CODI, {"preset": "codi_paper_default_task"}))
    toks = m.prepare(train_examples(4))
    batch = m.collate([m.features(t) for t in toks])
    assert Trainer.loss_units(m, batch, 4) == float((batch["labels"][:, 1:] != -100).sum())  # teacher tokens
    m.config.micro_batch_weighting = "equal"
    assert Trainer.loss_units(m, batch, 4) == 1.0


# ----------------------------------------------------------------------------------------- vocabularies
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A local GPT-2-style model with a byte-level BPE tokenizer and no pad token (the parity fixtures')."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("gpt2-like")
    GPT2LMHeadModel(GPT2Config.from_json_file(str(PARITY / "config.json"))).save_pretrained(d)
    for f in (PARITY / "tokenizer").iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    return d


def test_special_token_layouts(hf_dir):
    V = 480
    rows = {}
    for layout in ("project", "codi", "coconut", "none"):
        bb = load_backbone(ModelConfig(name=str(hf_dir)), layout=layout)
        ids = bb.ids
        rows[layout] = (bb.model.get_input_embeddings().weight.shape[0], ids.pad, ids.bot, ids.eot, ids.latent, ids.pause)
    assert rows["project"] == (V + 5, V, V + 1, V + 2, V + 3, V + 4)
    assert rows["codi"] == (V + 3, V, V + 1, V + 2, None, None)  # the official CODI vocabulary
    assert rows["coconut"] == (V + 3, V - 1, V, V + 1, V + 2, None)  # pad = EOS, then its three tokens
    assert rows["none"] == (V, V - 1, None, None, None, None)
    bb = load_backbone(ModelConfig(name=str(hf_dir)), layout="none")
    with pytest.raises(Exception, match="<bot>"):
        CODI(bb, method_config(CODI, {"preset": "codi_paper"}))
    # the official Coconut adds its tokens to a CoT-SFT model that has none, rows copied from "<<"
    assert add_special_tokens(bb, "coconut") == 3
    emb = bb.model.get_input_embeddings().weight
    src = bb.tokenizer("<<", add_special_tokens=False).input_ids[0]
    assert torch.equal(emb[V:], emb[src].expand(3, -1)) and bb.ids.latent == V + 2


def test_new_rows_start_from_the_mean_embedding(hf_dir):
    bb = load_backbone(ModelConfig(name=str(hf_dir)), layout="codi")
    emb = bb.model.get_input_embeddings().weight.detach()
    assert torch.allclose(emb[480:], emb[:480].mean(0).expand(3, -1))
    rnd = load_backbone(ModelConfig(name=str(hf_dir), new_token_init="random"), layout="codi")
    assert not torch.allclose(rnd.model.get_input_embeddings().weight[480:], emb[:480].mean(0).expand(3, -1))


def test_mean_initialised_tokens_do_not_dominate_a_gpt2_shaped_model():
    """GPT-2's shapes (d 768, 12 heads, 50,257 tokens; one layer), embeddings with a shared offset as GPT-2's
    have: a new row from the mean never gets more than the average old token's probability (Jensen)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.add_(0.1 * torch.randn(768))  # anisotropy: a common direction
    V = model.config.vocab_size
    model.resize_token_embeddings(V + 3, mean_resizing=False)
    init_rows_with_mean(model, V)
    with torch.no_grad():
        probs = model(input_ids=torch.randint(V, (2, 16))).logits.double().softmax(-1)
    new = probs[..., V:]
    assert float(new.max()) <= 1.0 / V * (1 + 1e-6)
    assert float(new.max() / probs[..., :V].max()) < 0.1
    del model


# ----------------------------------------------------------------------------------------- CODI
def test_codi_paper_drops_negative_answers_and_cleans_test_questions():
    bb = tiny_backbone()
    m = CODI(bb, method_config(CODI, {"preset": "codi_paper", "max_new_tokens": 4}))
    exs = [Example(" a  b ", ["<<1+1=2>>"], "2"), Example("c", ["<<0-3=-3>>"], "-3")]
    assert [t.example.answer for t in m.prepare(exs)] == ["2"]
    prompt = m.latent_prompts(exs[:1])[0]
    assert bb.tokenizer.decode(prompt[:-1]) == "a b" and prompt[-1] == bb.ids.bot
    assert m.config.special_tokens == "codi" and m.config.weight_decay_on == "hf"
    assert m.config.micro_batch_weighting == "equal" and m.config.max_new_tokens == 4
    assert not math.isnan(float(m(m.collate([m.features(t) for t in m.prepare(exs)]))["loss"].detach()))
