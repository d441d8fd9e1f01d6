import torch
import torch.nn.functional as F
import pytest

from conftest import tiny_backbone
from helpers import train_examples
from latentreason.decoding.latent import latent_forward, latent_generate
from latentreason.methods.codi import CODI, CODIConfig
from latentreason.methods.objective import normalized_distance, step_anchor
from latentreason.training.checkpoint import load_method, save_method



def _codi(kind="tiny-gpt2", dtype=torch.float64, **cfg):
    bb = tiny_backbone(kind, seed=3, dtype=dtype, n_embd=48, n_head=4, n_layer=2)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(3.0)
    m = CODI(bb, CODIConfig(**cfg))
    m.to(dtype)
    return m


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama", "tiny-qwen3"])
def test_batched_latent_decode_equals_one_by_one(kind):
    m = _codi(kind, n_latent=3, max_new_tokens=6).eval()
    exs = train_examples(5)
    batched = m.generate(exs)
    single = [m.generate([e])[0] for e in exs]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.latent_steps == 3 for g in batched)
    assert [g.forward_passes for g in batched] == [g.forward_passes for g in single]


@pytest.mark.parametrize("compiled", [False, True])
def test_latent_loop_runs_in_inference_mode_and_returns_states_autograd_can_use(compiled, monkeypatch):
    """The decode loop runs under torch.inference_mode (no autograd bookkeeping per op); the states it records
    come back as ordinary tensors, which a probe can be trained on (inference tensors cannot be saved for backward)."""
    import latentreason.decoding.compiled as dc

    monkeypatch.setattr(dc.torch, "compile", lambda fn, **kw: fn)  # the compiled path's own steps, not inductor
    m = _codi(n_latent=2, max_new_tokens=3).eval()
    seen = []

    def thought(h, k, rows=None):
        seen.append(torch.is_inference_mode_enabled())
        return m.thought(h, k, rows=rows)

    res = latent_generate(m.model, m.latent_prompts(train_examples(2)), n_latent=2, thought_fn=thought,
                          eot_id=m.ids.eot, eos_id=m.ids.eos, pad_id=m.ids.pad, max_new_tokens=3, record_hidden=True,
                          compiled=compiled)
    assert seen and all(seen)
    states = torch.stack([h for row in res.hidden for h in row])
    assert not states.is_inference()
    probe = torch.nn.Linear(states.shape[-1], 1, dtype=states.dtype)
    F.mse_loss(probe(states).squeeze(-1), torch.zeros(len(states), dtype=states.dtype)).backward()
    assert probe.weight.grad is not None


def test_cached_latent_loop_equals_uncached_recomputation():
    m = _codi(n_latent=3, max_new_tokens=5).eval()
    model, emb = m.model, m.model.get_input_embeddings()
    (ex,) = train_examples(1)
    prompt = m.latent_prompts([ex])[0]
    res = latent_generate(model, [prompt], n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=m.ids.eos,
                          pad_id=m.ids.pad, max_new_tokens=5, record_hidden=True)
    # uncached: recompute the whole sequence of input embeddings at every step
    with torch.no_grad():
        seq = emb(torch.tensor([prompt]))[0]
        hs = []
        for _ in range(3):
            h = model(inputs_embeds=seq[None], output_hidden_states=True).hidden_states[-1][0, -1]
            hs.append(h)
            seq = torch.cat([seq, m.thought(h[None], torch.zeros(1, dtype=torch.long))])
        hs.append(model(inputs_embeds=seq[None], output_hidden_states=True).hidden_states[-1][0, -1])
        seq = torch.cat([seq, emb(torch.tensor([m.ids.eot]))])
        toks = []
        for _ in range(5):
            t = int(model(inputs_embeds=seq[None]).logits[0, -1].argmax())
            toks.append(t)
            if t == m.ids.eos:
                break
            seq = torch.cat([seq, emb(torch.tensor([t]))])
    assert res.tokens[0] == toks
    for a, b in zip(res.hidden[0], hs):
        assert torch.allclose(a, b, atol=1e-10)


def test_gradients_reach_first_thought_and_teacher_is_detached():
    m = _codi(n_latent=3)
    batch = m.collate([m.features(t) for t in m.prepare(train_examples(4))])
    captured = []

    def thought(h, step, rows=None):
        e = m.thought(h, step)
        e.retain_grad()
        captured.append(e)
        return e

    s = latent_forward(m.model, batch["prompt_ids"], batch["prompt_mask"], 3, thought, batch["suffix_ids"], batch["suffix_mask"])
    from latentreason.methods.objective import shifted_ce

    shifted_ce(s.suffix_logits, batch["suffix_labels"]).backward()
    assert len(captured) == 3
    assert captured[0].grad is not None and captured[0].grad.abs().sum() > 0  # the answer loss reaches the first thought
    assert m.projection.fc1.weight.grad.abs().sum() > 0
    # distillation: gradient flows to the student state only, never into the teacher tensor
    student = torch.randn(4, 8, requires_grad=True)
    teacher = torch.randn(4, 8, requires_grad=True)
    normalized_distance(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_kd_loss_never_reaches_teacher_pass():
    """With only the distillation loss on, the teacher pass's activations receive no gradient."""
    m = _codi(n_latent=2, alpha=0.0, gamma=0.0, beta=1.0)
    batch = m.collate([m.features(t) for t in m.prepare(train_examples(3))])
    calls = []

    def hook(mod, inp, out):
        if len(calls) < 2:  # the first embedding call of forward() is the teacher pass, the second the student's prompt
            out.retain_grad()
        calls.append(out)

    h = m.model.get_input_embeddings().register_forward_hook(hook)
    out = m(batch)
    h.remove()
    out["loss"].backward()
    teacher_emb, student_emb = calls[0], calls[1]
    assert teacher_emb.shape[1] == batch["input_ids"].shape[1]
    assert student_emb.shape[1] == batch["prompt_ids"].shape[1]
    assert teacher_emb.grad is None or teacher_emb.grad.abs().sum() == 0
    # the student side does get the distillation gradient: its prompt activations and the projection
    assert student_emb.grad is not None and student_emb.grad.abs().sum() > 0
    assert m.projection.fc1.weight.grad is not None and m.projection.fc1.weight.grad.abs().sum() > 0


def test_normalized_smooth_l1_hand_computed():
    s = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    t = torch.tensor([[0.5, 0.0], [1.0, 1.0]])
    # smooth L1 (beta 1): |d|<1 -> 0.5 d^2, else |d| - 0.5 ; d = [-0.5, 2, 0, -2]
    per = [0.5 * 0.25, 1.5, 0.0, 1.5]
    std = torch.tensor([0.5, 0.0, 1.0, 1.0]).std()  # unbiased std of the teacher tensor
    expected = sum(per) / 4 / std
    assert torch.isclose(normalized_distance(s, t), expected)
    assert torch.isclose(normalized_distance(s, t, "l1", normalize=False), torch.tensor((0.5 + 2 + 0 + 2) / 4))
    assert torch.isclose(normalized_distance(s, t, "mse", normalize=False), F.mse_loss(s, t))


def test_step_anchor_points_at_the_result_predictor():
    bb = tiny_backbone()
    tok = bb.tokenizer
    ids = tok(" 1*8=8", add_special_tokens=False).input_ids
    assert tok.decode(ids[: step_anchor(tok, ids) + 1]).endswith("=")
    ids = tok("<<16-3-4=9>>", add_special_tokens=False).input_ids
    assert tok.decode(ids[: step_anchor(tok, ids) + 1]) == "<<16-3-4="
    ids = tok("No equation here.", add_special_tokens=False).input_ids
    assert step_anchor(tok, ids) == len(ids) - 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_codi_run_lowers_all_losses():
    torch.manual_seed(0)
    m = _codi(dtype=torch.float32, n_latent=3, align_steps=True, teacher_drop_last_step=False, distill_skip_embedding=True)
    data = m.prepare(train_examples(64, seed=1))
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    first = last = None
    for step in range(40):
        idx = [(step * 16 + i) % len(data) for i in range(16)]
        out = m(m.collate([m.features(data[i]) for i in idx]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        vals = {k: float(v.detach()) for k, v in out.items()}
        first = first or vals
        last = vals
    for k in ("loss_student", "loss_kd", "loss_teacher", "loss_align"):
        assert last[k] < first[k], (k, first[k], last[k])


def test_changing_n_at_inference_and_llama(tmp_path):
    for kind in ("tiny-gpt2", "tiny-llama"):
        m = _codi(kind, n_latent=4, max_new_tokens=4).eval()
        exs = train_examples(3)
        assert all(g.latent_steps == 4 for g in m.generate(exs))
        assert all(g.latent_steps == 2 for g in m.generate(exs, n_latent=2))
        m.config.n_latent = 0
        assert all(g.latent_steps == 0 for g in m.generate(exs))


def test_save_load_strict_same_outputs(tmp_path):
    m = _codi(dtype=torch.float32, n_latent=2, max_new_tokens=5).eval()
    save_method(m, tmp_path / "ck")
    assert (tmp_path / "ck" / "extra.safetensors").exists()
    loaded = load_method(tmp_path / "ck", expected_method="codi")
    assert torch.equal(loaded.projection.fc1.weight, m.projection.fc1.weight)
    exs = train_examples(3)
    assert [g.text for g in loaded.generate(exs)] == [g.text for g in m.generate(exs)]
    # a checkpoint without its projection is refused
    (tmp_path / "ck" / "extra.safetensors").unlink()
    with pytest.raises(Exception, match="extra.safetensors"):
        load_method(tmp_path / "ck")


def test_lora_on_hf_backbone(tmp_path):
    from latentreason.models.backbone import ModelConfig, load_backbone, maybe_apply_lora

    bb = tiny_backbone("tiny-gpt2")
    bb.model.save_pretrained(tmp_path / "hf")
    bb.tokenizer.save_pretrained(tmp_path / "hf")
    cfg = ModelConfig(name=str(tmp_path / "hf"), lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_targets=["c_attn", "c_proj", "c_fc"])
    bb2 = maybe_apply_lora(load_backbone(cfg), cfg)
    m = CODI(bb2, CODIConfig(n_latent=2))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("projection.") for n in trainable)
    out = m(m.collate([m.features(t) for t in m.prepare(train_examples(2))]))
    out["loss"].backward()
    save_method(m, tmp_path / "ck")
    loaded = load_method(tmp_path / "ck")
    assert loaded.generate(train_examples(1))[0].latent_steps == 2


def test_tiny_model_honours_dtype_and_lora_keeps_float32_adapters_and_projection_over_bf16_weights():
    """model.dtype applies to the tiny model too (it was built in float32 whatever the field said); CODI's LoRA
    recipe over bfloat16 weights (the official code loads the base in bf16) trains float32 adapters and a float32
    projection, no warning."""
    import warnings

    from latentreason.models.backbone import ModelConfig, load_backbone, maybe_apply_lora

    assert next(load_backbone(ModelConfig(name="tiny-gpt2", dtype="float16")).model.parameters()).dtype == torch.float16
    cfg = ModelConfig(name="tiny-gpt2", dtype="bfloat16", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                      lora_targets=["c_attn", "c_proj", "c_fc"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peft's read of a property transformers deprecated is silenced at the call
        bb = maybe_apply_lora(load_backbone(cfg), cfg)
    m = CODI(bb, CODIConfig(n_latent=2))
    frozen = {p.dtype for p in m.model.parameters() if not p.requires_grad}
    adapters = {p.dtype for n, p in m.model.named_parameters() if "lora_" in n}
    assert frozen == {torch.bfloat16} and adapters == {torch.float32}
    assert {p.dtype for p in m.projection.parameters()} == {torch.float32}  # trainable, like the official CODI's
    m(m.collate([m.features(t) for t in m.prepare(train_examples(2))]))["loss"].backward()
    assert all(p.grad is not None for n, p in m.model.named_parameters() if "lora_" in n)
    assert all(p.grad is not None for p in m.projection.parameters())
    assert m.eval().generate(train_examples(1))[0].latent_steps == 2


def test_general_phase_loop_equals_lockstep_fast_path():
    """The per-row-phase loop (used with halting) gives the lock-step loop's results when no row halts."""
    m = _codi(n_latent=3, max_new_tokens=6).eval()
    exs = train_examples(5)
    fast = m.generate(exs)
    never = m.generate(exs, halt_fn=lambda h, k: torch.zeros(h.shape[0], dtype=torch.bool))
    assert [g.text for g in fast] == [g.text for g in never]
    assert [g.forward_passes for g in fast] == [g.forward_passes for g in never]
    # rows halting at different thoughts: batched equals one-by-one
    def halt(h, k):  # a property of each row's own state, so it is the same in both runs
        return (h[:, 0] > 0) | (k >= 2)

    b = m.generate(exs, halt_fn=halt)
    one = [m.generate([e], halt_fn=halt)[0] for e in exs]
    assert [(g.text, g.latent_steps, g.forward_passes) for g in b] == [(g.text, g.latent_steps, g.forward_passes) for g in one]
    assert len({g.latent_steps for g in b}) >= 2, [g.latent_steps for g in b]  # rows stopped at different thoughts


def test_step_result_ce_reads_the_token_after_each_anchor():
    """step_ce_weight: the LM head on the state aligned with step j is trained to predict the token the
    teacher writes after step j's "=" — the step's result (`4+7=1` -> "1")."""
    m = _codi(n_latent=5, align_steps=True, teacher_drop_last_step=False, step_ce_weight=1.0)
    exs = train_examples(3)
    toks = m.prepare(exs)
    batch = m.collate([m.features(t) for t in toks])
    for i, ex in enumerate(exs):
        values = [s.split("=")[1] for s in ex.steps]
        got = [m.tokenizer.decode([int(batch["input_ids"][i, a + 1])]) for a in batch["anchors"][i].tolist()]
        assert got == values
    m.train()
    out = m(batch)
    assert "loss_step_ce" in out and float(out["loss_step_ce"]) > 0
    base = _codi(n_latent=5, align_steps=True, teacher_drop_last_step=False)
    base.load_state_dict(m.state_dict())
    base.train()
    ref = base(batch)
    assert float(out["loss"].detach()) == pytest.approx(float(ref["loss"].detach()) + float(out["loss_step_ce"]), rel=1e-9)


def test_soft_token_thought_starts_as_the_soft_token():
    from latentreason.models.projection import soft_token_embedding

    m = _codi(n_latent=2, soft_token_thought=True).eval()
    h = torch.randn(3, 48, dtype=torch.float64)
    probs = torch.softmax(m.model.get_output_embeddings()(h), -1)
    expected = probs @ m.model.get_input_embeddings().weight
    assert torch.allclose(m.thought(h, torch.zeros(3, dtype=torch.long)), expected, atol=1e-10)
    assert torch.allclose(soft_token_embedding(m.model, h), expected, atol=1e-10)
    with torch.no_grad():
        m.projection.norm.weight.fill_(1.0)  # once trained, the projection adds to it
    assert not torch.allclose(m.thought(h, torch.zeros(3, dtype=torch.long)), expected, atol=1e-3)


def test_forced_thoughts_mix_in_the_previous_result_then_fade():
    """forced_thoughts_steps: thought j's input is mixed with the embedding of step j-1's result token, the
    weight falling from 1 to 0 over the first N steps; thought 1 (nothing before it) is never forced."""
    m = _codi(n_latent=5, align_steps=True, teacher_drop_last_step=False, forced_thoughts_steps=10)
    (ex,) = [e for e in train_examples(20) if e.question == "4+7*8+2-5"] or train_examples(1)
    batch = m.collate([m.features(t) for t in m.prepare([ex])])
    toks = m.forced_tokens(batch)[0].tolist()
    values = [s.split("=")[1] for s in ex.steps]
    assert toks[0] == -1 and [m.tokenizer.decode([t]) for t in toks[1:]] == values  # carry thought: the last value
    m.train()

    m.on_train_step(0, 0.0, 100)
    out0 = m(batch)
    with torch.no_grad():  # at step 0 (α = 1) thought 2's input is exactly the embedding of step 1's result
        override = m._forced_thoughts(batch)
        h = torch.randn(1, 48, dtype=torch.float64)
        assert torch.allclose(override(1, h), m.model.get_input_embeddings()(torch.tensor([toks[1]])))
        assert torch.allclose(override(0, h), m.thought(h, torch.zeros(1, dtype=torch.long)))
    m.on_train_step(10, 0.0, 100)  # forcing over: the plain thoughts
    assert m._forcing == 0.0
    m.eval()
    m.on_train_step(5, 0.0, 100)
    assert m._forcing == 0.5
    assert float(out0["loss"].detach()) > 0
