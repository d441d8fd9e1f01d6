import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_backbone
from helpers import train_examples
from latentreason.methods.coconut import Coconut, CoconutConfig
from latentreason.methods.icot import ICoT, ICoTConfig, remove_left, smoothing_offsets
from latentreason.methods.objective import shifted_ce



def _coconut(dtype=torch.float64, **cfg):
    bb = tiny_backbone("tiny-gpt2", seed=5, dtype=dtype, n_embd=48, n_head=4)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(2.0)
    m = Coconut(bb, CoconutConfig(**cfg))
    return m.to(dtype)


def test_stage_k_input_has_k_times_c_thoughts():
    m = _coconut(thoughts_per_step=2, max_latent_stage=3, steps_per_stage=10)
    (t,) = m.prepare(train_examples(1))
    for step, stage in [(0, 1), (10, 2), (20, 3), (30, 4), (55, 4)]:
        m.on_train_step(step, 0.0, 100)
        assert m.stage == stage
        f = m.features(t)
        removed = min(stage, len(t.steps)) if stage <= 3 else len(t.steps)
        assert f["n_latent"] == 2 * min(stage, 3)
        rest = [x for s in t.steps[removed:] for x in s]
        assert f["suffix"][1 : 1 + len(rest)] == rest and f["suffix"][0] == m.ids.eot


def test_cached_training_forward_equals_naive_recomputation():
    m = _coconut(thoughts_per_step=1, max_latent_stage=4, steps_per_stage=1)
    m.on_train_step(2, 0.0, 100)  # stage 3: three thoughts
    toks = m.prepare(train_examples(3))
    batch = m.collate([m.features(t) for t in toks])
    loss = m(batch)["loss"]
    # naive: per example, recompute the whole prefix for every thought (Coconut's reference), no cache
    emb = m.model.get_input_embeddings()
    naive_losses, naive_token_forwards, cached_token_forwards = [], 0, 0
    n = batch["n_latent"]
    for t in toks:
        f = m.features(t)
        seq = emb(torch.tensor(f["prompt"]))
        for _ in range(n):
            h = m.model(inputs_embeds=seq[None], output_hidden_states=True).hidden_states[-1][0, -1]
            naive_token_forwards += seq.shape[0]
            seq = torch.cat([seq, m.thought(h[None], None)])
        full = torch.cat([seq, emb(torch.tensor(f["suffix"]))])
        logits = m.model(inputs_embeds=full[None]).logits[0, seq.shape[0]:]
        naive_token_forwards += full.shape[0]
        cached_token_forwards += len(f["prompt"]) + n + len(f["suffix"])
        labels = torch.tensor(f["suffix"][1:] + [-100])
        naive_losses.append((shifted_ce(logits[None], labels[None]) * (labels != -100).sum(), (labels != -100).sum()))
    naive = sum(a for a, _ in naive_losses) / sum(b for _, b in naive_losses)
    assert abs(float(loss.detach()) - float(naive.detach())) < 1e-5
    assert cached_token_forwards < naive_token_forwards


def test_batched_generation_equals_one_by_one():
    m = _coconut(thoughts_per_step=2, max_latent_stage=2, max_new_tokens=6).eval()
    exs = train_examples(5)
    b = m.generate(exs)
    one = [m.generate([e])[0] for e in exs]
    assert [(g.text, g.latent_steps) for g in b] == [(g.text, g.latent_steps) for g in one]
    assert all(g.latent_steps == 4 for g in b)
    p = _coconut(thoughts_per_step=1, max_latent_stage=2, pause_as_thought=True, max_new_tokens=4).eval()
    assert [g.text for g in p.generate(exs)] == [p.generate([e])[0].text for e in exs]


def _train(m, steps=30, lr=3e-3):
    data = m.prepare(train_examples(64, seed=2))
    opt = torch.optim.AdamW(m.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        if m.on_train_step(step, 0.0, 1000):
            opt = torch.optim.AdamW(m.parameters(), lr=lr)
        idx = [(step * 16 + i) % len(data) for i in range(16)]
        out = m(m.collate([m.features(data[i]) for i in idx]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_coconut_run_lowers_loss():
    torch.manual_seed(0)
    m = _coconut(dtype=torch.float32, thoughts_per_step=1, max_latent_stage=2, steps_per_stage=1000, projection=True,
                 align_steps=True, answer_align=True, teacher_weight=1.0)
    losses = _train(m)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_icot_run_removes_tokens_and_lowers_loss():
    torch.manual_seed(0)
    bb = tiny_backbone("tiny-gpt2", seed=5, n_embd=48, n_head=4)
    m = ICoT(bb, ICoTConfig(steps_per_token=10))
    losses = _train(m)
    assert m.removed == 2  # two tokens removed (steps 10 and 20), the optimiser re-created each time
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


_BB = []


def _shared_backbone():
    if not _BB:
        _BB.append(tiny_backbone("tiny-gpt2"))
    return _BB[0]


@settings(max_examples=60, deadline=None)
@given(n_tokens=st.integers(0, 40), steps_per_token=st.integers(1, 7), start=st.integers(0, 10), step=st.integers(0, 400),
       beyond=st.one_of(st.none(), st.integers(1, 30)))
def test_icot_schedule_removes_the_right_tokens(n_tokens, steps_per_token, start, step, beyond):
    bb = _shared_backbone()
    m = ICoT(bb, ICoTConfig(steps_per_token=steps_per_token, start_step=start, remove_all_beyond=beyond, smoothing_lambda=None))
    m.on_train_step(step, 0.0, 100)
    expected = 0 if step < start else (step - start) // steps_per_token
    if beyond is not None and expected >= beyond:
        expected = math.inf
    assert m.removed == expected
    cot = list(range(100, 100 + n_tokens))
    kept = remove_left(cot, m.removed, [7], [])
    if expected == math.inf or n_tokens == 0:
        assert kept == []
    else:
        assert kept == cot[min(int(expected), n_tokens):] + [7]  # removed from the left, the closing token survives


def test_icot_gated_schedule_removes_a_token_only_when_validation_reaches_the_gate():
    """removal_gate: the amount grows at a validation whose accuracy reaches the gate (not on a clock), or once
    gate_max_steps have passed at one amount; the optimiser resets as with the fixed schedule; state survives resume."""
    m = ICoT(_shared_backbone(), ICoTConfig(removal_gate=0.9, gate_max_steps=50, start_step=10, smoothing_lambda=None))
    assert m.requires_validation() and not ICoT(_shared_backbone(), ICoTConfig()).requires_validation()
    resets, accs = [], {5: 1.0, 20: 0.5, 30: 0.95, 60: 0.89, 70: 0.9, 150: 0.99}
    for step in range(200):  # the trainer's order: on_train_step(k), optimiser step, validation after k + 1 steps
        resets.append(m.on_train_step(step, 0.0, 100))
        if step + 1 in accs:
            m.on_validation(step + 1, accs[step + 1])
        if step + 1 == 120:
            saved = m.trainer_state()
    # 5: before start_step, ignored; 20: below the gate; 30: +1; 60: below; 70: +1; 120: 50 steps at one amount
    # (gate_max_steps) +1; 150: +1; the next forced one would be at 200
    assert [s for s, r in enumerate(resets) if r] == [30, 70, 120, 150]
    assert m.removed == 4
    other = ICoT(_shared_backbone(), ICoTConfig(removal_gate=0.9, gate_max_steps=50, start_step=10, smoothing_lambda=None))
    other.load_trainer_state(saved)  # resumed after 120 steps: no validations from here, forced every 50
    assert [s for s in range(120, 200) if other.on_train_step(s, 0.0, 100)] == [120, 170]
    with pytest.raises(Exception, match="removal_gate"):
        ICoTConfig(removal_gate=1.5).validate()


def test_icot_gate_deadline_gives_each_token_its_share_of_the_steps_left_and_ends_the_cot_by_the_deadline():
    """gate_deadline: a token's cap is (deadline - the step its amount began) // the tokens still to remove, also
    bounded by gate_max_steps; tokens the gate passes early leave their steps to the later ones; with no validation
    ever passing, the last token goes by the deadline."""
    m = ICoT(_shared_backbone(), ICoTConfig(removal_gate=0.9, gate_deadline=300, smoothing_lambda=None))
    toks = m.prepare(train_examples(8))
    m.fit_to_data(toks)
    n = max(len(m.removable(t)[0]) for t in toks)
    assert n >= 5 and m.gate_cap() == 300 // n
    grew = [s for s in range(400) if m.on_train_step(s, 0.0, 100)]  # no validation reaches the gate
    assert len(grew) == n and grew[-1] <= 300 and m.removed == n
    starts = [0] + grew
    assert [b - a for a, b in zip(starts, grew)] == [(300 - a) // (n - i) for i, a in enumerate(starts[:-1])]
    # the first three tokens pass the gate at once: the rest share what they left
    fast = ICoT(_shared_backbone(), ICoTConfig(removal_gate=0.9, gate_deadline=300, smoothing_lambda=None))
    fast.fit_to_data(toks)
    for s in range(3):
        fast.on_train_step(s, 0.0, 100)
        fast.on_validation(s + 1, 0.95)
    assert fast.on_train_step(3, 0.0, 100) and fast.removed == 3 and fast.gate_cap() == (300 - 3) // (n - 3) > 300 // n
    capped = ICoT(_shared_backbone(), ICoTConfig(removal_gate=0.9, gate_deadline=300, gate_max_steps=7, smoothing_lambda=None))
    capped.fit_to_data(toks)
    assert capped.gate_cap() == min(7, 300 // n)
    for b in (3, n + 1):  # remove_all_beyond ends it (n + 1: the step that takes the CoT's closing piece too)
        beyond = ICoT(_shared_backbone(), ICoTConfig(removal_gate=0.9, gate_deadline=300, remove_all_beyond=b, smoothing_lambda=None))
        beyond.fit_to_data(toks)
        assert beyond.gate_cap() == 300 // b
        grew = [s for s in range(400) if beyond.on_train_step(s, 0.0, 100)]
        assert len(grew) == b and grew[-1] <= 300 and beyond.removed == math.inf
    with pytest.raises(Exception, match="gate_deadline"):
        ICoTConfig(gate_deadline=100).validate()  # without removal_gate
    with pytest.raises(Exception, match="gate_deadline"):
        ICoTConfig(removal_gate=0.9, gate_deadline=0).validate()


def test_icot_remove_start_from_counts_the_schedule_on_from_tokens_already_removed():
    """remove_start_from (the official --remove_start_from): k tokens are gone from the first step, the fixed
    schedule adds its own on top, the gated one passes k + 1 at its first validation over the gate; no reset at
    step 0."""
    fixed = ICoT(_shared_backbone(), ICoTConfig(steps_per_token=10, start_step=5, remove_start_from=31, smoothing_lambda=None))
    resets = [fixed.on_train_step(s, 0.0, 100) for s in range(40)]
    assert fixed.removed == 31 + (39 - 5) // 10
    assert [s for s, r in enumerate(resets) if r] == [15, 25, 35]
    cot = list(range(100, 146))
    assert remove_left(cot, fixed.removed, [7], []) == cot[34:] + [7]
    gated = ICoT(_shared_backbone(), ICoTConfig(removal_gate=0.9, gate_max_steps=50, remove_start_from=31, smoothing_lambda=None))
    assert not gated.on_train_step(0, 0.0, 100) and gated.removed == 31
    gated.on_validation(1, 0.95)
    assert gated.on_train_step(1, 0.0, 100) and gated.removed == 32
    assert [s for s in range(2, 120) if gated.on_train_step(s, 0.0, 100)] == [51, 101]  # the cap, counted from step 1
    with pytest.raises(Exception, match="remove_start_from"):
        ICoTConfig(remove_start_from=-1).validate()


def test_icot_removal_smoothing_and_reset():
    p = smoothing_offsets(4.0)
    assert abs(float(p.sum()) - 1) < 1e-12 and abs(float(p[0]) - 0.98168) < 1e-4 and abs(float(p[1]) - 0.01798) < 1e-4
    bb = tiny_backbone("tiny-gpt2")
    m = ICoT(bb, ICoTConfig(steps_per_token=5, remove_all_beyond=3))
    resets = [m.on_train_step(s, 0.0, 100) for s in range(20)]
    assert [s for s, r in enumerate(resets) if r] == [5, 10, 15]  # the optimiser is reset when the amount grows
    assert m.stage_label() == "all"
    (t,) = m.prepare(train_examples(1))
    assert m.target(t) == t.answer  # everything removed: the model answers directly
    # generation with no CoT gives 0 reasoning tokens once trained that way; here just the interface
    assert m.generate(train_examples(2))[0].generated_tokens >= 1
