"""The direct GPT-2 decode step (models/gpt2_step.py): bitwise the model's own forward, used by the loops, and
out of the way wherever it does not apply."""

from contextlib import contextmanager

import pytest
import torch

from helpers import sharp_backbone, sharp_latent_method, stop_token
from latentreason.data.procedural import TaskConfig, generate_splits
from latentreason.decoding import generate as gen_mod
from latentreason.decoding.generate import greedy_generate
from latentreason.decoding.latent import latent_generate
from latentreason.models.gpt2_step import gpt2_step, set_fast_step
from latentreason.models.kv_cache import cached_forward, decoder_of, new_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@contextmanager
def plain_forward():
    """Inside, the loops call the model's forward for every step."""
    prev = set_fast_step(False)
    try:
        yield
    finally:
        set_fast_step(prev)


def _prefilled(model, ids, mask, capacity=32):
    cache = new_cache(model, capacity=capacity)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        cached_forward(model, cache, input_ids=ids, attention_mask=mask, position_ids=pos)
    return cache


def _prompts(seed, width, padded):
    """Three random prompts of ``width`` tokens, left-padded (two rows) when ``padded``."""
    torch.manual_seed(seed)
    ids = torch.randint(3, 40, (3, width))
    mask = torch.ones(3, width, dtype=torch.long)
    if padded:
        mask[0, :width // 2] = 0
        mask[2, :1] = 0
    return ids, mask


def _assert_bitwise(fast, ref, a, b, key):
    """The direct step's output and cache equal the forward's, bit for bit."""
    assert fast is not None
    assert getattr(fast, key).shape == getattr(ref, key).shape
    assert torch.equal(getattr(fast, key), getattr(ref, key))
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.keys, lb.keys) and torch.equal(la.values, lb.values)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("embeds", [False, True])
def test_gpt2_step_equals_the_models_forward_bitwise_logits_states_and_cache(padded, embeds):
    bb = sharp_backbone()
    model = bb.model
    ids, mask = _prompts(0, 6, padded)
    new = torch.randint(3, 40, (3, 1))
    for target in (model, decoder_of(model)):  # the LM (logits) and its decoder stack (a thought's state)
        a, b = _prefilled(model, ids, mask), _prefilled(model, ids, mask)
        pos = mask.sum(-1, keepdim=True) + 5  # iCoT's keep_position shifts positions: any (batch, 1) positions
        full = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1) if padded else None
        inputs = {"inputs_embeds": model.get_input_embeddings()(new)} if embeds else {"input_ids": new}
        with torch.inference_mode():
            fast = gpt2_step(target, a, attention_mask=full, position_ids=pos, **inputs)
            ref, _ = cached_forward(target, b, attention_mask=full, position_ids=pos, **inputs)
        _assert_bitwise(fast, ref, a, b, "logits" if target is model else "last_hidden_state")


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("cached", [False, True])
def test_gpt2_step_runs_a_prompt_of_several_positions_as_the_models_forward_bitwise(padded, cached):
    """A prompt pass (the prefill, each group of the grouped prefill): transformers' causal mask, or causality alone
    where it builds none, and the LM head at every position or the last one only."""
    bb = sharp_backbone()
    model = bb.model
    ids, mask = _prompts(1, 7, padded)
    for target in (model, decoder_of(model)):
        for keep in ((0, 1) if target is model else (0,)):
            if cached:  # several positions after a cached prefix
                a, b = _prefilled(model, ids[:, :4], mask[:, :4]), _prefilled(model, ids[:, :4], mask[:, :4])
                new, full = ids[:, 4:], mask
                pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, 4:]
            else:
                a, b = new_cache(model, capacity=16), new_cache(model, capacity=16)
                new, full, pos = ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)
            attn = full if padded or cached else None
            extra = {"logits_to_keep": keep} if target is model else {}
            with torch.inference_mode():
                fast = gpt2_step(target, a, input_ids=new, attention_mask=attn, position_ids=pos, **extra)
                ref, _ = cached_forward(target, b, input_ids=new, attention_mask=attn, position_ids=pos, **extra)
            _assert_bitwise(fast, ref, a, b, "logits" if target is model else "last_hidden_state")


def test_gpt2_step_applies_after_transformers_installed_its_idle_output_capture_hooks():
    """A forward that asks for hidden states leaves transformers' capture hooks on every block for good (training
    CODI does); idle, they change nothing, and the direct step still runs, bitwise equal."""
    bb = sharp_backbone()
    model = bb.model
    ids, mask = torch.randint(3, 40, (2, 4)), torch.ones(2, 4, dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=ids, output_hidden_states=True)
    assert model.transformer.h[0]._forward_hooks  # installed
    a, b = _prefilled(model, ids, mask), _prefilled(model, ids, mask)
    step = dict(input_ids=torch.randint(3, 40, (2, 1)), attention_mask=None, position_ids=torch.full((2, 1), 4))
    with torch.inference_mode():
        fast = gpt2_step(model, a, **step)
        ref, _ = cached_forward(model, b, **step)
    assert fast is not None and torch.equal(fast.logits, ref.logits)


def test_gpt2_step_steps_aside_where_it_does_not_mirror_the_forward():
    bb = sharp_backbone()
    model = bb.model
    ids, mask = torch.randint(3, 40, (2, 4)), torch.ones(2, 4, dtype=torch.long)
    cache = _prefilled(model, ids, mask)
    step = dict(input_ids=torch.randint(3, 40, (2, 1)), attention_mask=None, position_ids=torch.full((2, 1), 4))
    with torch.inference_mode():
        assert gpt2_step(model, cache, **step) is not None
        cache.crop(-1)
        assert gpt2_step(model, cache, output_hidden_states=True, **step) is None  # every layer's states
        four_d = torch.zeros(2, 1, 1, 5)
        assert gpt2_step(model, cache, **dict(step, attention_mask=four_d)) is None  # a 4-D mask is the model's to read
        h = model.transformer.h[1].mlp.register_forward_hook(lambda *a: None)  # a hook on a module it skips
        assert gpt2_step(model, cache, **step) is None
        h.remove()
        model.transformer.forward = model.transformer.forward  # a forward set on the instance (wrapped, timed)
        assert gpt2_step(model, cache, **step) is None
        del model.transformer.forward
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert gpt2_step(model, cache, **step) is None
        model.train()
        assert gpt2_step(model, cache, **step) is None  # dropout
        model.eval()
        model.config._attn_implementation = "eager"
        try:
            assert gpt2_step(model, cache, **step) is None  # another attention kernel
        finally:
            model.config._attn_implementation = "sdpa"
        from latentreason.models.backbone import ModelConfig, load_backbone, maybe_apply_lora

        cfg = ModelConfig(name="tiny-gpt2", n_layer=2, n_embd=48, n_head=4, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                          lora_targets=["c_attn", "c_proj", "c_fc"])
        lora = maybe_apply_lora(load_backbone(cfg), cfg).model.eval()  # LoRA layers in place of Conv1D
        lcache = _prefilled(lora, ids, mask)
        assert gpt2_step(lora, lcache, **step) is None and gpt2_step(decoder_of(lora), lcache, **step) is None
        llama = sharp_backbone("tiny-llama").model
        lcache = _prefilled(llama, ids, mask)
        assert gpt2_step(llama, lcache, **step) is None
        prev = set_fast_step(False)
        try:
            assert gpt2_step(model, cache, **step) is None
        finally:
            set_fast_step(prev)


def test_greedy_decoding_takes_the_direct_step_and_gives_the_forwards_tokens(monkeypatch):
    bb = sharp_backbone()
    prompts = [bb.tokenizer(t).input_ids for t in ("1+2*3\n", "9-8+7*6-5\n", "4\n", "2*2*2*2*2*2\n", "7\n")]
    free, _ = greedy_generate(bb.model, prompts, bb.ids.pad, eos_id=-1, max_new_tokens=10)
    eos = stop_token(free)
    calls = []
    real = gen_mod.cached_forward
    monkeypatch.setattr(gen_mod, "cached_forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    for shift in (0, 3):
        calls.clear()
        toks, passes = greedy_generate(bb.model, prompts, bb.ids.pad, eos, max_new_tokens=10, position_shift=shift)
        n_prefill = len(calls)
        with plain_forward():
            ref_toks, ref_passes = greedy_generate(bb.model, prompts, bb.ids.pad, eos, max_new_tokens=10,
                                                   position_shift=shift)
        assert len({len(t) for t in toks}) >= 2, toks  # rows left the batch at different steps
        assert toks == ref_toks and passes == ref_passes
        assert n_prefill <= 4 and len(calls) - n_prefill >= 9  # the steps ran through the forward only when asked


@pytest.mark.parametrize("name", ["codi", "coconut"])
def test_latent_decoding_with_the_direct_step_equals_the_forward_bitwise(name):
    m = sharp_latent_method(name)
    exs = generate_splits(TaskConfig(n_train=6, n_valid=2, n_test=2, seed=0))["train"]
    prompts = m.latent_prompts(exs)

    def run(eos):
        return latent_generate(m.model, prompts, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=eos,
                               pad_id=m.ids.pad, max_new_tokens=8, record_hidden=True)

    free = run(-1)
    eos = stop_token(free.tokens, at=2)
    got = run(eos)
    with plain_forward():
        ref = run(eos)
    assert got.tokens == ref.tokens and got.forward_passes == ref.forward_passes
    for a_row, b_row in zip(got.hidden, ref.hidden):
        assert len(a_row) == len(b_row) and all(torch.equal(a, b) for a, b in zip(a_row, b_row))


def test_in_place_gelu_new_equals_gpt2s_activation_bitwise_and_keeps_autograd_intact():
    from transformers.activations import NewGELUActivation

    from latentreason.models.gpt2_step import gelu_new_inplace

    module = NewGELUActivation()
    torch.manual_seed(0)
    x = torch.cat([torch.randn(200_000) * s for s in (0.1, 1.0, 4.0, 30.0)] + [torch.tensor(
        [0.0, -0.0, 1e-40, -1e-40, 1e30, -1e30, float("inf"), float("-inf"), float("nan")])])
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        u = x.to(dtype)
        ref = module(u)
        out = gelu_new_inplace(u.clone())
        assert torch.equal(out.isnan(), ref.isnan())
        assert torch.equal(out[~ref.isnan()], ref[~ref.isnan()]), dtype
    # where autograd records the input, the values and the gradient are the module's (nothing overwritten)
    a, b = x[:1000].clone().requires_grad_(), x[:1000].clone().requires_grad_()
    gelu_new_inplace(a).sum().backward()
    module(b).sum().backward()
    assert torch.equal(a.grad, b.grad)
