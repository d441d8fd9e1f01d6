"""Soft Thinking / Stochastic Soft Thinking decoding and the analysis toolkit (SPEC §3.6, §4)."""

import itertools
import json
import math

import pytest
import torch
import typer
from typer.testing import CliRunner

from conftest import tiny_backbone
from latentreason.analysis.js import LN2, JSProbe, js_divergence, randomness, soft_input_measures, softness
from latentreason.analysis.logit_lens import lens_logits, logit_lens
from latentreason.analysis.passk import mean_pass_at_k, pass_at_k
from latentreason.analysis.rouge import mean_rouge_l, rouge_l
from latentreason.decoding.generate import greedy_generate, greedy_reference
from latentreason.errors import ConfigError
from latentreason.models.backbone import find_final_norm
from latentreason.soft_thinking.config import SoftThinkingConfig, soft_config
from latentreason.soft_thinking.loop import soft_generate
from latentreason.soft_thinking.method import soft_think
from latentreason.soft_thinking.path_share import path_share
from latentreason.soft_thinking.samplers import (
    derive_seed,
    dirichlet_weights,
    filter_probs,
    gumbel_softmax_weights,
    model_entropy,
    sample_token,
    soft_embedding,
    soft_token,
)

TEXTS = ["1+2*3\n", "9-8+7*6-5\n", "4\n", "2*2*2*2*2*2\n"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _backbone(kind="tiny-gpt2", scale=3.0, seed=1):
    bb = tiny_backbone(kind, seed=seed, dtype=torch.float64, n_embd=48, n_head=4)
    if scale != 1.0:  # scaled weights: decisive greedy choices (random init logits are near-uniform)
        with torch.no_grad():
            for p in bb.model.parameters():
                p.mul_(scale)
    bb.model.eval()
    return bb


def _prompts(tok):
    return [tok(t).input_ids for t in TEXTS]


def _gen(bb, prompts, cfg, **kw):
    kw.setdefault("think_end", "####")
    kw.setdefault("max_new_tokens", 12)
    return soft_generate(bb.model, prompts, bb.tokenizer, config=cfg, eos_id=bb.ids.eos, pad_id=bb.ids.pad, **kw)


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama", "tiny-qwen3"])
def test_vanilla_top1_equals_greedy(kind):
    bb = _backbone(kind)
    prompts = _prompts(bb.tokenizer)
    ref, _ = greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, max_new_tokens=12)
    cfg = soft_config(mode="vanilla", max_topk=1)
    outs = _gen(bb, prompts, cfg)
    assert [o.tokens for o in outs] == ref
    for p, o in zip(prompts, outs):
        assert o.tokens == greedy_reference(bb.model, p, bb.ids.eos, max_new_tokens=12)
        assert o.soft_steps == len(o.tokens) - 1  # every input after the prompt went through the soft path
    greedy = _gen(bb, prompts, soft_config(mode="greedy"))
    assert [o.tokens for o in greedy] == ref and all(o.soft_steps == 0 for o in greedy)


def test_soft_inputs_change_the_trajectory():
    """With K > 1 on a near-uniform model the soft path is not the greedy path (the K=1 test is not vacuous)."""
    bb = _backbone(scale=1.0)
    prompts = _prompts(bb.tokenizer)
    ref, _ = greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, max_new_tokens=12)
    outs = _gen(bb, prompts, soft_config(mode="vanilla", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_topk=10))
    assert [o.tokens for o in outs] != ref


@pytest.mark.parametrize("mode", ["vanilla", "gumbel", "dirichlet", "sampling"])
def test_batched_equals_one_by_one(mode):
    bb = _backbone(scale=1.0)
    prompts = _prompts(bb.tokenizer)
    cfg = soft_config(mode=mode, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_topk=10)
    batched = _gen(bb, prompts, cfg, seed=7, record_distributions=True)
    for i, p in enumerate(prompts):
        one = _gen(bb, [p], cfg, seed=7, row_ids=[i], record_distributions=True)[0]
        assert one.tokens == batched[i].tokens
        assert len(one.distributions) == len(batched[i].distributions)
        for (ia, wa), (ib, wb) in zip(one.distributions, batched[i].distributions):
            assert ia == ib and wa == pytest.approx(wb, abs=1e-9)
    if mode != "vanilla":  # the seed matters for stochastic modes
        other = _gen(bb, prompts, cfg, seed=8)
        assert [o.tokens for o in other] != [o.tokens for o in batched]
        again = _gen(bb, prompts, cfg, seed=7)
        assert [o.tokens for o in again] == [o.tokens for o in batched]


def test_cold_stop_after_k_low_entropy_steps():
    bb = _backbone(scale=1.0)
    prompts = _prompts(bb.tokenizer)
    inject = bb.tokenizer("\n####", add_special_tokens=False).input_ids
    # near-uniform model: H ≈ ln V nats, H / ln V ≈ 1
    cfg = soft_config(mode="vanilla", max_topk=1, cold_stop_entropy=100.0, cold_stop_steps=3)
    # steps 1 and 2 are low-entropy soft steps; the 3rd low-entropy step emits the injection instead of its token
    for o in _gen(bb, prompts, cfg, inject_ids=inject, max_new_tokens=10):
        assert o.ended_by == "cold_stop" and o.soft_steps == 2 and o.thinking_tokens == 2
        assert o.tokens[2 : 2 + len(inject)] == inject
        assert o.reasoning_tokens == 3  # 2 thinking tokens + the injected "\n" before the marker
    # K=1: the trajectory is token-based, so the answer phase must be greedy from the injected prefix
    o = _gen(bb, prompts[:1], cfg, inject_ids=inject, max_new_tokens=12)[0]
    prefix = prompts[0] + o.tokens[: 2 + len(inject)]
    assert o.tokens[2 + len(inject) :] == greedy_reference(bb.model, prefix, bb.ids.eos, max_new_tokens=12 - 2 - len(inject))
    longer = _gen(bb, prompts, cfg.replace(cold_stop_steps=5), inject_ids=inject, max_new_tokens=12)
    assert all(o.ended_by == "cold_stop" and o.soft_steps == 4 for o in longer)
    # threshold in normalised units: H / ln V < 1.0 holds, H < 1.0 nats does not
    norm = soft_config(mode="vanilla", cold_stop_entropy=1.0, cold_stop_steps=2, entropy_normalization="log_vocab")
    nats = soft_config(mode="vanilla", cold_stop_entropy=1.0, cold_stop_steps=2, entropy_normalization="nats")
    assert all(o.ended_by == "cold_stop" and o.entropy_normalization == "log_vocab" for o in _gen(bb, prompts, norm, inject_ids=inject))
    assert all(o.ended_by == "length" for o in _gen(bb, prompts, nats, inject_ids=inject))
    off = soft_config(mode="vanilla", cold_stop_entropy=0.0, cold_stop_steps=1)
    assert all(o.ended_by == "length" and o.soft_steps == 11 for o in _gen(bb, prompts, off, inject_ids=inject))


def test_thinking_budget_and_marker_detection():
    bb = _backbone()
    prompts = _prompts(bb.tokenizer)
    inject = bb.tokenizer("\n####", add_special_tokens=False).input_ids
    outs = _gen(bb, prompts, soft_config(mode="vanilla", max_topk=1, max_thinking_tokens=2), inject_ids=inject)
    for o in outs:
        assert o.ended_by == "budget" and o.thinking_tokens == 2 and o.soft_steps == 2
        assert o.tokens[2 : 2 + len(inject)] == inject
    # a think-end string taken from the greedy trace itself ends thinking where it is completed
    ref = _gen(bb, prompts[:1], soft_config(mode="greedy"))[0].tokens
    tok = bb.tokenizer
    for end in range(2, len(ref)):
        marker = tok.decode(ref[end - 1 : end + 1])
        if marker.strip() and tok.decode(ref[: end + 1]).find(marker) == len(tok.decode(ref[: end - 1])):
            break
    else:
        pytest.fail("no unique two-token marker in the greedy trace of this seeded model")
    o = _gen(bb, prompts[:1], soft_config(mode="vanilla", max_topk=1), think_end=marker)[0]
    assert o.tokens == ref
    assert o.ended_by == "marker" and o.thinking_tokens == end + 1
    assert o.soft_steps == end  # the token completing the marker is fed one-hot
    assert o.reasoning_tokens == end - 1


def test_method_level_soft_think_and_inject():
    from latentreason.data.registry import load_dataset
    from latentreason.methods.cot import CoT
    from latentreason.soft_thinking.method import method_inject_ids

    bb = _backbone()
    method = CoT(bb)
    exs = load_dataset("modchain", "test", limit=3)
    assert bb.tokenizer.decode(method_inject_ids(method, SoftThinkingConfig())) == "\n####"
    outs = soft_think(method, exs, soft_config(mode="vanilla", max_topk=1, max_new_tokens=10))
    gens = method.generate(exs)
    assert all(g.text.startswith(o.text) and o.text for o, g in zip(outs, gens))
    assert all(len(o.tokens) == 10 for o in outs)
    g = outs[0].generation()
    assert g.latent_steps == outs[0].soft_steps and g.generated_tokens == 10


# ----------------------------------------------------------------------------- primitives
def test_soft_embedding_is_weighted_sum():
    torch.manual_seed(0)
    E = torch.randn(20, 8)
    w = torch.softmax(torch.randn(3, 4), -1)
    idx = torch.randint(0, 20, (3, 4))
    got = soft_embedding(w, idx, E)
    manual = torch.stack([sum(w[b, j].double() * E[idx[b, j]].double() for j in range(4)) for b in range(3)])
    assert got.dtype == torch.float32 and torch.allclose(got.double(), manual, atol=1e-6)
    emb = torch.nn.Embedding.from_pretrained(E)
    assert torch.equal(soft_embedding(w, idx, emb), got)
    one = soft_embedding(torch.tensor([1.0, 0.0]), torch.tensor([5, 7]), E)
    assert torch.equal(one, E[5])
    bf = soft_embedding(w, idx, E.to(torch.bfloat16))  # accumulated in fp32, then cast
    ref = (w.unsqueeze(-1) * E.to(torch.bfloat16)[idx].float()).sum(-2).to(torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and torch.equal(bf, ref)


def _kept(p):
    return (p > 0).nonzero(as_tuple=True)[-1].tolist()


def test_filter_probs_documented_sets():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    assert torch.equal(filter_probs(p), p)
    assert _kept(filter_probs(p, top_p=0.75)) == [0, 1]  # mass above token 2 is exactly 0.75: dropped
    assert _kept(filter_probs(p, top_p=0.76)) == [0, 1, 2]
    assert _kept(filter_probs(p, top_p=0.5)) == [0]
    assert torch.allclose(filter_probs(p, top_p=0.75), torch.tensor([2 / 3, 1 / 3, 0, 0], dtype=torch.float64))
    assert _kept(filter_probs(p, min_p=0.3)) == [0, 1]  # threshold 0.15
    assert _kept(filter_probs(p, min_p=0.25)) == [0, 1, 2, 3]  # 0.125 is not < 0.125
    assert _kept(filter_probs(p, top_k=3)) == [0, 1, 2]
    # ties: the lower token id wins, at top-k and at the top-p boundary
    u = torch.full((6,), 1 / 6, dtype=torch.float64)
    assert _kept(filter_probs(u, top_k=2)) == [0, 1]
    t = torch.tensor([0.1, 0.3, 0.3, 0.3], dtype=torch.float64)
    assert _kept(filter_probs(t, top_p=0.5)) == [1, 2]
    # all mass on one token
    one = torch.tensor([0.0, 1.0, 0.0])
    for kw in ({"top_k": 1}, {"top_p": 0.01}, {"min_p": 0.99}, {"top_k": 2, "top_p": 0.5, "min_p": 0.5}):
        assert torch.equal(filter_probs(one, **kw), one)
    # interplay: top-p sees the distribution renormalised after top-k
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    assert _kept(filter_probs(q, top_p=0.5)) == [0, 1]  # mass above token 1 is 0.4 < 0.5
    assert _kept(filter_probs(q, top_k=2, top_p=0.5)) == [0]  # after top-k: 4/7 ≥ 0.5
    # min-p relative to the max after the previous filters (ratio unchanged by renormalisation)
    assert _kept(filter_probs(q, top_k=3, min_p=0.6)) == [0, 1]
    assert torch.allclose(filter_probs(q, top_k=3, min_p=0.6).sum(), torch.tensor(1.0, dtype=torch.float64))


def _ref_filter(p, top_k, top_p, min_p):
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    vals = {i: p[i] for i in order}
    if top_k:
        vals = {i: vals[i] for i in order[:top_k]}
    s = sum(vals.values())
    vals = {i: v / s for i, v in vals.items()}
    if top_p < 1:
        kept, mass = {}, 0.0
        for i in order:
            if i in vals and vals[i] > 0:
                if mass < top_p or not kept:
                    kept[i] = vals[i]
                mass += vals[i]
        vals = kept
    s = sum(vals.values())
    vals = {i: v / s for i, v in vals.items()}
    mx = max(vals.values())
    return sorted(i for i, v in vals.items() if v >= min_p * mx)


def test_filter_probs_matches_reference():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        p = torch.softmax(torch.randn(12, generator=g, dtype=torch.float64) * 2, -1)
        top_k = [0, 1, 3, 7][trial % 4]
        top_p = [1.0, 0.9, 0.5, 0.3, 0.95][trial % 5]
        min_p = [0.0, 0.05, 0.2][trial % 3]
        got = filter_probs(p, top_k, top_p, min_p)
        assert _kept(got) == _ref_filter(p.tolist(), top_k, top_p, min_p)
        assert float(got.sum()) == pytest.approx(1.0)


def test_gumbel_tau_to_zero_is_one_hot_and_samples_pi():
    pi = torch.tensor([[0.5, 0.3, 0.2, 0.0]], dtype=torch.float64).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    sharp = [float(gumbel_softmax_weights(pi, tau=t, generator=g).max(-1).values.mean()) for t in (1.0, 0.1, 0.01, 1e-3)]
    assert sharp == sorted(sharp) and sharp[0] < 0.9 and sharp[-1] > 0.995
    y = gumbel_softmax_weights(pi, tau=1e-3, generator=g)
    assert torch.all(y[:, 3] == 0)
    freq = torch.bincount(y.argmax(-1), minlength=4).double() / 4000
    assert torch.allclose(freq, pi[0], atol=0.03)  # Gumbel-max: the argmax is a sample of pi
    soft = gumbel_softmax_weights(pi[:200], tau=5.0, generator=g)
    assert soft.max(-1).values.mean() < 0.6 and torch.allclose(soft.sum(-1), torch.ones(200, dtype=torch.float64))
    with pytest.raises(ConfigError, match="gumbel_tau"):
        gumbel_softmax_weights(pi, tau=0.0)


def test_dirichlet_large_gamma_approaches_p_and_is_unbiased():
    p = torch.tensor([0.6, 0.25, 0.1, 0.05, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    big = dirichlet_weights(p.repeat(50, 1), gamma=1e6, generator=g)
    assert (big - p).abs().sum(-1).max() < 0.01 and torch.all(big[:, 4] == 0)
    small = dirichlet_weights(p.repeat(500, 1), gamma=0.05, generator=g)
    assert small.max(-1).values.mean() > 0.9  # small gamma: near one-hot
    mid = dirichlet_weights(p.repeat(4000, 1), gamma=4.0, generator=g)
    assert torch.allclose(mid.mean(0), p, atol=0.02)  # E[Dir(gamma p)] = p
    assert torch.allclose(mid.sum(-1), torch.ones(4000, dtype=torch.float64))
    # per-row generators: a row's sample does not depend on the other rows
    gens = [torch.Generator().manual_seed(derive_seed(3, i)) for i in range(3)]
    rows = dirichlet_weights(p.repeat(3, 1), 4.0, generator=gens)
    alone = dirichlet_weights(p[None], 4.0, generator=[torch.Generator().manual_seed(derive_seed(3, 1))])
    assert torch.equal(rows[1], alone[0])


def test_soft_token_steps_and_sampling():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    st = soft_token(logits, "vanilla", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_topk=2)
    p = torch.softmax(logits, -1)
    assert st.indices.tolist() == [[0, 1]]
    assert torch.allclose(st.weights, p[:, :2] / p[:, :2].sum())
    assert float(st.entropy) == pytest.approx(float(-(p * p.log()).sum()))  # before filtering
    greedy = soft_token(logits, "vanilla", temperature=0.0, max_topk=3)
    assert greedy.weights.tolist() == [[1.0, 0.0, 0.0]] and float(greedy.entropy) == 0.0
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_token(logits, 1.0, 2, 1.0, 0.0, generator=g) for _ in range(2000)])
    assert set(draws.tolist()) == {0, 1}  # top-k 2: never a dropped token
    assert (draws == 0).double().mean() == pytest.approx(float(p[0, 0] / p[0, :2].sum()), abs=0.04)


def test_config_errors_name_the_option():
    for kw, name in [({"mode": "beam"}, "mode"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                     ({"temperature": -1.0}, "temperature"), ({"max_topk": 0}, "max_topk"), ({"min_p": 1.0}, "min_p"),
                     ({"after_thinking": "beam"}, "after_thinking"), ({"entropy_normalization": "bits"}, "entropy_normalization"),
                     ({"after_thinking_top_p": 2.0}, "after_thinking_top_p"), ({"dirichlet_gamma": 0.0}, "dirichlet_gamma"),
                     ({"cold_stop_steps": 0}, "cold_stop_steps"), ({"top_k": -1}, "top_k")]:
        with pytest.raises(ConfigError, match=name):
            soft_config(**kw)
    with pytest.raises(ConfigError, match="topp"):
        soft_config(topp=0.9)
    with pytest.raises(ConfigError, match="preset"):
        soft_config("nope")
    assert soft_config("stochastic").min_p == 0.0 and soft_config("stochastic").cold_stop_entropy == 0.0
    assert SoftThinkingConfig().deterministic and not soft_config(mode="gumbel").deterministic
    assert not soft_config(mode="vanilla", after_thinking="sampling").deterministic


# ----------------------------------------------------------------------------- analysis
def test_js_divergence_bounds():
    a = torch.tensor([0.2, 0.3, 0.5])
    assert float(js_divergence(a, a)) == pytest.approx(0.0, abs=1e-12)
    one, two = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert float(js_divergence(one, two)) == pytest.approx(LN2, abs=1e-8)
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(100, 7, generator=g), -1)
    q = torch.softmax(torch.randn(100, 7, generator=g) * 3, -1)
    js = js_divergence(p, q)
    assert torch.all(js >= 0) and torch.all(js <= LN2) and torch.allclose(js, js_divergence(q, p))
    assert float(js_divergence(torch.tensor([0.5, 0.5]), one)) == pytest.approx(1.5 * math.log(2) - 0.75 * math.log(3), abs=1e-8)
    assert float(softness(torch.tensor([0.5, 0.5]))) == pytest.approx(LN2)
    assert float(randomness(a, a)) == pytest.approx(0.0, abs=1e-12)


def test_js_probe_keeps_trajectory_and_measures():
    bb = _backbone(scale=1.0)
    prompts = _prompts(bb.tokenizer)
    cfg = soft_config(mode="gumbel", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_topk=4)
    plain = _gen(bb, prompts, cfg, seed=3)
    for horizon in (1, 2):
        probe = JSProbe(temperature=1.0, horizon=horizon)
        probed = _gen(bb, prompts, cfg, seed=3, probe=probe)
        assert [o.tokens for o in probed] == [o.tokens for o in plain]
        assert len(probe.records) == sum(o.soft_steps for o in plain) > 0
        for r in probe.records:
            assert 0.0 <= r["js_st_top1"] <= LN2 and 0.0 <= r["js_st_top2"] <= LN2
        bins = probe.summary()["by_top1_weight"]
        assert sum(b["steps"] for b in bins) == len(probe.records)
    # the recorded top-1 weight is the fed soft token's (rows of one batch: per row, steps in order)
    probe = JSProbe(temperature=1.0)
    probed = _gen(bb, prompts, cfg, seed=3, probe=probe, record_distributions=True)
    for i, o in enumerate(probed):
        got = [r["top1_weight"] for r in probe.records if r["row"] == i]
        assert got == pytest.approx([w[0] for _, w in o.distributions if len(w) > 1])
    # K = 1: no mixed step is logged; with a one-hot "soft" input P_st = P_1 exactly
    probe = JSProbe(temperature=1.0)
    _gen(bb, prompts, soft_config(mode="vanilla", max_topk=1), probe=probe)
    assert probe.records == [] and probe.one_component_steps > 0


def test_js_probe_one_hot_top1_gives_zero():
    """A top-1 weight of ~1 makes P_st ≈ P_1: JS(P_st,P_1) ≈ 0 while JS(P_st,P_2) = JS(P_1,P_2)."""
    bb = _backbone(scale=1.0)
    prompts = _prompts(bb.tokenizer)
    cfg = soft_config(mode="gumbel", gumbel_tau=1e-4, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_topk=3)
    probe = JSProbe(temperature=1.0)
    _gen(bb, prompts, cfg, probe=probe)
    recs = [r for r in probe.records]
    assert recs
    assert max(r["js_st_top1"] for r in recs) < 1e-6
    assert all(r["js_st_top2"] == pytest.approx(r["js_top1_top2"], abs=1e-6) for r in recs)



def test_soft_loop_runs_in_inference_mode_and_its_probe_sees_it():
    """soft_generate runs under torch.inference_mode, like the other decode loops (no autograd bookkeeping per
    op); a probe's extra forward passes run inside it and the JS study's records stay plain floats."""
    bb = _backbone(scale=1.0)
    prompts = _prompts(bb.tokenizer)
    cfg = soft_config(mode="gumbel", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_topk=3)
    seen = []

    class Spy(JSProbe):
        def before_step(self, *args, **kwargs):
            seen.append(torch.is_inference_mode_enabled())
            return super().before_step(*args, **kwargs)

    probe = Spy(temperature=1.0)
    _gen(bb, prompts, cfg, probe=probe)
    assert seen and all(seen)
    assert probe.records and all(isinstance(r["js_st_top1"], float) for r in probe.records)
    assert not torch.is_inference_mode_enabled()

def test_model_entropy_and_soft_input_measures_on_known_vectors():
    # entropy of the model's own distribution (temperature 1): [1/2, 1/4, 1/4] -> 1.5 ln 2 nats
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]], dtype=torch.float64))
    assert model_entropy(logits).tolist() == pytest.approx([1.5 * math.log(2), 0.0], abs=1e-9)
    assert float(model_entropy(torch.zeros(1, 7))[0]) == pytest.approx(math.log(7))  # uniform: ln V
    assert float(model_entropy(2.0 * logits[:1])[0]) < 1.4 * math.log(2)  # no temperature: sharper logits, lower entropy
    # softness = entropy of the fed weights; randomness = JS(fed, clean) placed on the union of indices
    fed = [([4, 9], [0.5, 0.5]), ([3, 7], [0.6, 0.4]), ([1], [1.0]), ([2, 5, 6], [0.5, 0.25, 0.25])]
    clean = [([4], [1.0]), ([7, 3], [0.4, 0.6]), ([2], [1.0]), ([2, 5, 6], [0.5, 0.25, 0.25])]
    soft, rand = soft_input_measures(fed, clean)
    assert soft == pytest.approx([math.log(2), -0.6 * math.log(0.6) - 0.4 * math.log(0.4), 0.0, 1.5 * math.log(2)])
    assert rand == pytest.approx([1.5 * math.log(2) - 0.75 * math.log(3), 0.0, LN2, 0.0], abs=1e-8)
    # un-noised (vanilla) inputs: randomness 0 by definition
    assert soft_input_measures(fed) == (soft, [0.0] * 4)
    assert soft_input_measures([]) == ([], [])
    with pytest.raises(ValueError, match="clean"):
        soft_input_measures(fed, clean[:2])


def test_soft_generate_records_entropy_and_clean_tokens():
    bb = _backbone(scale=1.0)
    prompts = _prompts(bb.tokenizer)
    cfg = soft_config(mode="gumbel", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_topk=4, gumbel_tau=0.5)
    outs = _gen(bb, prompts, cfg, seed=5, record_distributions=True)
    vanilla = _gen(bb, prompts, cfg.replace(mode="vanilla"), record_distributions=True)
    for p, o, v in zip(prompts, outs, vanilla):
        # one entropy per thinking step; the first is the prompt's next-token distribution at temperature 1
        assert len(o.step_entropy) == o.thinking_tokens
        with torch.no_grad():
            z = bb.model(input_ids=torch.tensor([p])).logits[0, -1]
        assert o.step_entropy[0] == pytest.approx(float(-(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum()), abs=1e-9)
        # the clean token of each soft step is the vanilla token of the same logits (equal at the first step)
        assert len(o.clean_distributions) == len(o.distributions) == o.soft_steps
        assert o.clean_distributions[0][0] == v.distributions[0][0]
        assert o.clean_distributions[0][1] == pytest.approx(v.distributions[0][1])
        assert v.clean_distributions is None and v.step_entropy[0] == pytest.approx(o.step_entropy[0])
    soft, rand = soft_input_measures(outs[0].distributions, outs[0].clean_distributions)
    assert min(rand) >= 0 and max(rand) > 0.01 and all(s_ > 0 for s_ in soft)
    # Gumbel with a tiny tau gives near one-hot inputs: softness ~ 0
    sharp = _gen(bb, prompts[:1], cfg.replace(gumbel_tau=1e-3), record_distributions=True)[0]
    assert max(soft_input_measures(sharp.distributions, sharp.clean_distributions)[0]) < 1e-3
    # a token mode records entropies but no soft tokens
    g = _gen(bb, prompts[:1], cfg.replace(mode="sampling"), record_distributions=True)[0]
    assert len(g.step_entropy) == g.thinking_tokens > 0 and g.distributions == [] and g.clean_distributions is None


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_logit_lens_last_layer_equals_logits(kind):
    bb = _backbone(kind)
    ids = torch.tensor([bb.tokenizer("1+2*3\n").input_ids])
    out = bb.model(input_ids=ids, output_hidden_states=True)
    lens = lens_logits(bb.model, out.hidden_states)
    assert lens.shape[0] == bb.model.config.num_hidden_layers + 1
    assert torch.allclose(lens[-1], out.logits, atol=1e-8)
    norm = find_final_norm(bb.model)
    assert norm is (bb.model.transformer.ln_f if kind == "tiny-gpt2" else bb.model.model.norm)
    # other layers: the final norm is applied (differs from the raw hidden state through the head)
    head = bb.model.get_output_embeddings()
    assert torch.allclose(lens[1], head(norm(out.hidden_states[1])))
    assert not torch.allclose(lens[1], head(out.hidden_states[1]))
    res = logit_lens(bb.model, input_ids=ids, top_k=3)
    assert res["top_indices"].shape == (lens.shape[0], 1, 3)
    assert bool(res["top1_agrees_final"][-1].all())
    shares = path_share(bb.model, ids[0].tolist(), a=49, b=50)
    assert len(shares["share_a"]) == lens.shape[0] and all(0 <= s <= 1 for s in shares["share_a"] + shares["share_b"])
    with pytest.raises(ConfigError, match="final norm"):
        find_final_norm(torch.nn.Linear(2, 2))


def test_path_share_top1_only_input():
    bb = _backbone()
    ids = bb.tokenizer("1+2*3\n").input_ids
    same = path_share(bb.model, ids, a=49, b=50, weight_a=1.0)
    assert same["share_a"] == [1.0] * len(same["share_a"])  # the soft run is the a run


def test_pass_at_k_matches_enumeration():
    for n in range(1, 8):
        for c in range(0, n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    assert pass_at_k(10, 9, 2) == 1.0
    assert mean_pass_at_k([0, 8], 8, 1) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="larger than"):
        pass_at_k(4, 1, 5)


def test_rouge_tokenisations():
    assert rouge_l("4+7=1 1*8=8", "4+7=1 1*8=8") == 1.0
    assert rouge_l("4+7=1 1*8=9", "4+7=1 1*8=8") == pytest.approx(0.5)
    assert rouge_l("4+7=1 1*8=9", "4+7=1 1*8=8", tokens="char") == pytest.approx(0.9)
    assert rouge_l("", "") == 1.0 and rouge_l("a", "") == 0.0
    assert mean_rouge_l(["a b", "c"], ["a b", "d"]) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="rouge"):
        rouge_l("a", "a", tokens="words")


# ----------------------------------------------------------------------------- study + CLI
def _tiny_cot(tmp_path=None):
    from latentreason.methods.cot import CoT

    method = CoT(_backbone(), CoT.Config(max_new_tokens=10))
    if tmp_path is not None:
        from latentreason.training.checkpoint import save_method

        save_method(method, tmp_path / "ckpt" / "model")
    return method


def test_soft_thinking_study_outputs(tmp_path):
    from latentreason.data.registry import load_dataset
    from latentreason.soft_thinking.study import RESULT_KEYS, soft_thinking_study

    method = _tiny_cot()
    exs = load_dataset("modchain", "test", limit=4)
    cfg = soft_config(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    torch.set_num_threads(2)
    res = soft_thinking_study(method, exs, samples=2, ks=(1, 2), seed=0, out_dir=tmp_path, config=cfg, lens_limit=2,
                              horizons=(1, 2), threads=1)
    assert torch.get_num_threads() == 2  # restored
    assert list(res) == ["greedy", "sampling", "vanilla", "dirichlet", "gumbel"]
    for mode, r in res.items():
        assert tuple(r) == RESULT_KEYS and set(r["pass_at_k"]) == {"1", "2"}
        assert r["pass_at_k"]["1"] == pytest.approx(r["accuracy"]) and r["pass_at_k"]["2"] >= r["pass_at_k"]["1"]
        token_mode = mode in ("greedy", "sampling")
        assert (r["js_top1"] is None) == token_mode and r["js_horizon"] == (None if token_mode else 1)
        assert (r["softness"] is None) == token_mode == (r["randomness"] is None)
        assert 0 < r["mean_thinking_entropy"] <= math.log(method.model.get_input_embeddings().weight.shape[0])
    assert res["vanilla"]["randomness"] == 0.0 and res["vanilla"]["softness"] > 0
    assert res["dirichlet"]["randomness"] > 0 and res["gumbel"]["randomness"] > 0
    # the greedy row's entropy is the model's own along its greedy path: recomputed here by hand
    from latentreason.soft_thinking.method import soft_think as _st

    g = _st(method, exs, cfg.replace(mode="greedy"))
    hand = []
    for ex, o in zip(exs, g):
        ids = method.serializer.prompts([ex])[0] + o.tokens
        with torch.no_grad():
            z = method.model(input_ids=torch.tensor([ids])).logits[0]
        start = len(ids) - len(o.tokens) - 1
        hand += [float(-(torch.softmax(z[start + t], -1) * torch.log_softmax(z[start + t], -1)).sum())
                 for t in range(o.thinking_tokens)]
    assert res["greedy"]["mean_thinking_entropy"] == pytest.approx(sum(hand) / len(hand), rel=1e-6)
    assert res["greedy"]["rouge_l_vs_greedy"] == 1.0 and res["greedy"]["pass_at_k"]["2"] == res["greedy"]["accuracy"]
    saved = json.loads((tmp_path / "soft_thinking.json").read_text())
    assert saved["settings"]["torch_threads"] == 1
    # the file holds the study's numbers: the hand-computed greedy entropy, and the greedy row is the plain greedy decode
    assert saved["results"]["greedy"]["mean_thinking_entropy"] == pytest.approx(sum(hand) / len(hand), rel=1e-6)
    assert saved["results"]["greedy"]["accuracy"] == sum(method.judge(e, o.generation()).correct for e, o in zip(exs, g)) / len(exs)
    assert all(tuple(r) == RESULT_KEYS for r in saved["results"].values())
    assert set(saved["details"]["gumbel"]["js"]) == {"1", "2"} and set(saved["logit_lens"]) == {"1", "2"}
    assert saved["details"]["gumbel"]["js"]["1"]["by_top1_weight"] and saved["settings"]["model"] == {}
    assert 0 <= saved["details"]["vanilla"]["frac_soft_inputs_mixed"] <= 1
    for mode in ("vanilla", "dirichlet", "gumbel"):
        d = saved["details"][mode]
        assert d["softness_where_unsure"] >= res[mode]["softness"] and d["randomness_where_unsure"] >= res[mode]["randomness"]
    for f in ("pass_at_k.png", "js_divergence.png", "logit_lens.png", "rouge_l.png"):
        assert (tmp_path / f).stat().st_size > 1000
    with pytest.raises(ConfigError, match="ks"):
        soft_thinking_study(method, exs, samples=2, ks=(4,))
    with pytest.raises(ConfigError, match="modes"):
        soft_thinking_study(method, exs, modes=("beam",))


def test_cli_commands(tmp_path):
    from latentreason.cli_analyze import analyze_app
    from latentreason.cli_soft import soft_app

    _tiny_cot(tmp_path)
    app = typer.Typer()

    @app.command("noop")
    def _noop() -> None:
        pass

    app.add_typer(soft_app)
    app.add_typer(analyze_app, name="analyze")
    runner = CliRunner()
    for cmd in (["soft-think"], ["analyze", "soft-thinking"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0 and "latentreason " in r.output
    ck = str(tmp_path / "ckpt")
    out = tmp_path / "st.json"
    r = runner.invoke(app, ["soft-think", "--checkpoint", ck, "--mode", "greedy,gumbel", "--limit", "3", "--output", str(out),
                            "--set", "gumbel_tau=0.7"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert set(data["metrics"]) == {"greedy", "gumbel"} and data["config"]["gumbel_tau"] == 0.7
    r = runner.invoke(app, ["analyze", "soft-thinking", "--checkpoint", ck, "--samples", "2", "--k", "1,2", "--limit", "3",
                            "--modes", "greedy,vanilla", "--lens-limit", "1", "--out", str(tmp_path / "study")])
    assert r.exit_code == 0, r.output
    assert set(json.loads((tmp_path / "study" / "soft_thinking.json").read_text())["results"]) == {"greedy", "vanilla"}
    r = runner.invoke(app, ["soft-think", "--checkpoint", ck, "--mode", "beam"])
    assert isinstance(r.exception, ConfigError) and "--mode" in str(r.exception)
    r = runner.invoke(app, ["soft-think", "--checkpoint", ck, "--top-p", "1.5"])
    assert isinstance(r.exception, ConfigError) and "top_p" in str(r.exception)


def test_terminal_soft_table_shows_the_measures_and_labels_the_extension(monkeypatch):
    import io

    from rich.console import Console

    import latentreason.reporting.display as display

    buf = io.StringIO()
    monkeypatch.setattr(display, "out", Console(file=buf, width=220))
    rows = {
        "vanilla": {"accuracy": 0.37, "pass_at_k": {"1": 0.37, "8": 0.37}, "rouge_l_vs_greedy": 0.872, "js_top1": 0.0346,
                    "js_top2": 0.4371, "js_horizon": 2, "mean_thinking_entropy": 0.1443, "softness": 0.0470, "randomness": 0.0,
                    "model": "cot at step 250"},
        "codi_gumbel": {"accuracy": 0.96, "pass_at_k": {"1": 0.96, "8": 0.97}, "rouge_l_vs_greedy": None, "js_top1": None,
                        "js_top2": None, "extension": "project extension: gumbel noise on codi's continuous thoughts"},
    }
    display.print_soft_table(rows)
    text = buf.getvalue()
    assert "soft thinking on cot at step 250" in text and "JS to top-1 (h=2)" in text
    for col in ("thinking entropy", "softness", "randomness"):
        assert col in text
    assert "0.035" in text and "0.437" in text and "0.144" in text and "0.047" in text
    assert "codi_gumbel (ext.)" in text and "vanilla (ext.)" not in text and "this project's extension" in text
