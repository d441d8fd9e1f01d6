"""The preallocated KV cache (models/kv_cache.py) and the lean decode step (decoding/generate.py).

Every cached inference loop runs on :class:`PreallocatedLayer` caches; these tests run the same
loops on transformers' dynamic cache (``new_cache`` without a capacity, patched in) and require the
same tokens and the same logits / thought states, with rows leaving the batch at different steps.
"""

from contextlib import contextmanager

import pytest
import torch

from conftest import tiny_backbone
from helpers import sharp_backbone, sharp_latent_method, stop_token
from latentreason.data.procedural import TaskConfig, generate_splits
from latentreason.decoding import generate as gen_mod
from latentreason.decoding.generate import greedy_generate, greedy_reference
from latentreason.decoding.latent import latent_generate
from latentreason.models import kv_cache
from latentreason.models.kv_cache import PreallocatedLayer, layer_kv, new_cache

pytestmark = pytest.mark.usefixtures("one_thread")


def _dynamic(model, capacity=None):
    return kv_cache.new_cache(model)


@pytest.fixture
def on_dynamic_cache(monkeypatch):
    """Inside ``with on_dynamic_cache():`` every loop gets transformers' dynamic cache."""
    @contextmanager
    def use():
        with monkeypatch.context() as m:
            m.setattr(gen_mod, "new_cache", _dynamic)
            yield

    return use


def _head_log(model):
    """Record the input of every LM-head call: (calls, handle)."""
    calls = []
    handle = model.get_output_embeddings().register_forward_hook(lambda mod, inp, out: calls.append(out.detach().clone()))
    return calls, handle


def test_preallocated_layer_holds_the_dynamic_caches_entries_through_row_removal_crop_and_growth():
    bb = tiny_backbone("tiny-llama", n_embd=32, n_head=4)
    pre, dyn = new_cache(bb.model, capacity=3), new_cache(bb.model)
    assert all(isinstance(layer, PreallocatedLayer) for layer in pre.layers)
    torch.manual_seed(0)

    def feed(n, batch):
        for i in range(len(pre.layers)):
            k, v = torch.randn(batch, 2, n, 8), torch.randn(batch, 2, n, 8)
            a, b = pre.update(k, v, i), dyn.update(k.clone(), v.clone(), i)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    def same():
        for i in range(len(pre.layers)):
            assert all(torch.equal(x, y) for x, y in zip(layer_kv(pre, i), layer_kv(dyn, i)))
        assert pre.get_seq_length() == dyn.get_seq_length()

    feed(2, 5)
    feed(1, 5)
    feed(3, 5)  # past the capacity of 3: the buffers grow
    same()
    idx = torch.tensor([0, 2, 4])
    pre.batch_select_indices(idx)
    dyn.batch_select_indices(idx)
    same()
    feed(1, 3)
    pre.crop(-2)
    dyn.crop(-2)
    same()
    feed(2, 3)
    pre.batch_select_indices(torch.tensor([1]))
    dyn.batch_select_indices(torch.tensor([1]))
    feed(1, 1)
    same()


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_cot_decoding_on_the_preallocated_cache_gives_the_dynamic_caches_tokens_and_logits(kind, on_dynamic_cache,
                                                                                          monkeypatch):
    monkeypatch.setattr(gen_mod, "length_groups", lambda lengths: None)  # one padded prefill (grouped: below)
    bb = sharp_backbone(kind)
    prompts = [bb.tokenizer(t).input_ids for t in ("1+2*3\n", "9-8+7*6-5\n", "4\n", "2*2*2*2*2*2\n", "7\n")]
    free, _ = greedy_generate(bb.model, prompts, bb.ids.pad, eos_id=-1, max_new_tokens=10)
    # EOS := a token some rows produce at different steps, so rows leave the batch at different times
    eos = stop_token(free)
    calls, h = _head_log(bb.model)
    try:
        toks, passes = greedy_generate(bb.model, prompts, bb.ids.pad, eos, max_new_tokens=10)
        lean = list(calls)
        calls.clear()
        with on_dynamic_cache():
            ref_toks, ref_passes = greedy_generate(bb.model, prompts, bb.ids.pad, eos, max_new_tokens=10)
    finally:
        h.remove()
    assert len({len(t) for t in toks}) >= 2, toks  # rows left at different steps
    assert toks == ref_toks and passes == ref_passes
    assert [c.shape for c in lean] == [c.shape for c in calls]
    for a, b in zip(lean, calls):
        assert a.shape[1] == 1  # the prefill computes logits at its last position only
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    for p, got in zip(prompts, toks):
        assert got == greedy_reference(bb.model, p, eos, max_new_tokens=10)


@pytest.mark.parametrize("name", ["codi", "coconut"])
@pytest.mark.parametrize("halting", [False, True])
def test_latent_generation_on_the_preallocated_cache_equals_the_dynamic_cache(name, halting, on_dynamic_cache):
    m = sharp_latent_method(name)
    exs = generate_splits(TaskConfig(n_train=6, n_valid=2, n_test=2, seed=0))["train"]
    prompts = m.latent_prompts(exs)

    def run(eos):
        halt = (lambda h, k: h[:, 0] > h[:, 0].median()) if halting else None  # rows stop at different thoughts
        return latent_generate(m.model, prompts, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=eos,
                               pad_id=m.ids.pad, max_new_tokens=8, record_hidden=True, halt_fn=halt)

    free = run(-1)
    eos = stop_token(free.tokens, at=2)
    got = run(eos)
    with on_dynamic_cache():
        ref = run(eos)
    assert len({len(t) for t in got.tokens}) >= 2, got.tokens  # rows finished at different steps
    assert got.tokens == ref.tokens
    assert got.n_thoughts == ref.n_thoughts and got.forward_passes == ref.forward_passes
    if halting:
        assert len(set(got.n_thoughts)) >= 2, got.n_thoughts
    for a_row, b_row in zip(got.hidden, ref.hidden):
        assert len(a_row) == len(b_row)
        for a, b in zip(a_row, b_row):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_thoughts_skip_the_lm_head():
    """A latent prompt and its thoughts run the decoder stack only: the LM head runs at ``<eot>`` and
    for every answer token after it, on one position each."""
    m = sharp_latent_method("codi")
    exs = generate_splits(TaskConfig(n_train=3, n_valid=2, n_test=2, seed=0))["train"]
    calls, h = _head_log(m.model)
    try:
        res = latent_generate(m.model, m.latent_prompts(exs), n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot,
                              eos_id=-1, pad_id=m.ids.pad, max_new_tokens=4)
    finally:
        h.remove()
    assert [len(t) for t in res.tokens] == [4, 4, 4]
    assert len(calls) == 4 and all(c.shape[:2] == (3, 1) for c in calls)


# ----------------------------------------------------------------------------------------- grouped prefill
def _area(groups, lengths):
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


@pytest.mark.parametrize("lengths", [[5, 5, 5, 5], [3, 40, 4, 41, 5, 39, 80], [1, 2], [7, 100, 8, 9, 101, 6, 50, 52, 51]])
def test_length_groups_cover_every_row_once_with_the_least_padded_area(lengths):
    from itertools import combinations

    groups = gen_mod.length_groups(lengths, max_groups=3, min_saving=0.0)
    n = len(lengths)
    order = sorted(range(n), key=lambda i: lengths[i])
    best = n * max(lengths)  # brute force over every split of the sorted rows into at most 3 runs
    for k in range(1, 3):
        for cuts in combinations(range(1, n), k):
            bounds = [0, *cuts, n]
            best = min(best, _area([order[a:b] for a, b in zip(bounds, bounds[1:])], lengths))
    if len(set(lengths)) == 1:
        assert groups is None
        return
    assert sorted(i for g in groups for i in g) == list(range(n))
    assert _area(groups, lengths) == best
    assert gen_mod.length_groups(lengths, max_groups=3, min_saving=0.99) is None  # not worth a second pass


def _counted_prefills(monkeypatch):
    """Counts the prompt-pass groups of every prefill."""
    seen = []
    real = gen_mod._grouped_prefill

    def spy(state, fwd, hidden_only, ids, mask, pos, lengths, groups):
        seen.append([len(g) for g in groups])
        return real(state, fwd, hidden_only, ids, mask, pos, lengths, groups)

    monkeypatch.setattr(gen_mod, "_grouped_prefill", spy)
    return seen


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("shift", [0, 3])
def test_grouped_prefill_decodes_the_single_padded_prefills_tokens(kind, shift, monkeypatch):
    bb = sharp_backbone(kind)
    texts = ("1+2*3\n", "9-8+7*6-5*4+3-2*1+9-8+7\n", "4\n", "2*2*2*2*2*2*2*2*2*2*2*2\n", "7\n", "5-5\n")
    prompts = [bb.tokenizer(t).input_ids for t in texts]
    seen = _counted_prefills(monkeypatch)
    toks, passes = greedy_generate(bb.model, prompts, bb.ids.pad, eos_id=-1, max_new_tokens=8, position_shift=shift)
    assert seen and len(seen[0]) >= 2  # the prompts ran in groups
    with monkeypatch.context() as m:
        m.setattr(gen_mod, "length_groups", lambda lengths: None)
        ref, ref_passes = greedy_generate(bb.model, prompts, bb.ids.pad, eos_id=-1, max_new_tokens=8,
                                          position_shift=shift)
    assert toks == ref and passes == ref_passes
    if not shift:
        for p, got in zip(prompts, toks):
            assert got == greedy_reference(bb.model, p, -1, max_new_tokens=8)


@pytest.mark.parametrize("name", ["codi", "coconut"])
def test_grouped_prefill_gives_the_single_padded_prefills_thoughts_and_answers(name, monkeypatch):
    m = sharp_latent_method(name)
    exs = generate_splits(TaskConfig(n_train=12, n_valid=2, n_test=2, seed=0))["train"]
    prompts = m.latent_prompts(exs)
    prompts = [p if i % 3 else p[:2] + p for i, p in enumerate(prompts)]  # lengths further apart
    prompts[0] = prompts[0][:1] * 40 + prompts[0]

    def run():
        return latent_generate(m.model, prompts, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=-1,
                               pad_id=m.ids.pad, max_new_tokens=6, record_hidden=True)

    seen = _counted_prefills(monkeypatch)
    got = run()
    assert seen and len(seen[0]) >= 2
    with monkeypatch.context() as mp:
        mp.setattr(gen_mod, "length_groups", lambda lengths: None)
        ref = run()
    assert got.tokens == ref.tokens and got.forward_passes == ref.forward_passes
    for a_row, b_row in zip(got.hidden, ref.hidden):
        for a, b in zip(a_row, b_row):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_grouped_prefill_is_off_for_the_official_padding_and_custom_state_readers(monkeypatch):
    m = sharp_latent_method("codi")
    exs = generate_splits(TaskConfig(n_train=6, n_valid=2, n_test=2, seed=0))["train"]
    prompts = m.latent_prompts(exs)
    prompts[0] = prompts[0][:1] * 40 + prompts[0]
    seen = _counted_prefills(monkeypatch)
    kw = dict(n_latent=2, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=-1, pad_id=m.ids.pad, max_new_tokens=2)
    latent_generate(m.model, prompts, count_padding=True, **kw)
    latent_generate(m.model, prompts, last_hidden=lambda out: out.last_hidden_state[:, -1], **kw)
    assert seen == []
    latent_generate(m.model, prompts, **kw)
    assert len(seen) == 1


def test_generation_without_padding_calls_the_model_without_a_mask_and_without_the_padding_warning():
    """One row (no padding): steps run mask-free, tokens fed as embeddings, so a generated token that is the pad
    id raises no transformers warning about a missing attention mask; the tokens are the uncached reference's."""
    import logging

    from transformers.utils import logging as hf_logging

    bb = sharp_backbone("tiny-gpt2")
    prompt = bb.tokenizer("9-8+7*6\n").input_ids
    free = greedy_reference(bb.model, prompt, -1, max_new_tokens=6)
    bb.model.config.pad_token_id = free[2]  # a token the loop will feed back
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = hf_logging.get_logger("transformers")
    logger.addHandler(handler)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # conftest silences transformers below errors
    masks = []
    hook = bb.model.transformer.register_forward_pre_hook(lambda mod, a, kw: masks.append(kw.get("attention_mask")),
                                                          with_kwargs=True)
    try:
        toks, _ = greedy_generate(bb.model, [prompt], bb.ids.pad, eos_id=-1, max_new_tokens=6)
    finally:
        hf_logging.set_verbosity(level)
        logger.removeHandler(handler)
        hook.remove()
    assert toks == [free]
    assert masks[0] is not None and all(m is None for m in masks[1:])  # the prefill keeps its mask
    assert not [r for r in records if "attention_mask" in r.getMessage()]


def test_write_rows_places_a_groups_entries_right_aligned_with_zeros_in_the_padding():
    bb = tiny_backbone("tiny-gpt2", n_embd=32, n_head=4)
    cache = new_cache(bb.model, capacity=6)
    layer = cache.layers[0]
    torch.manual_seed(0)
    k1, v1 = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8)  # rows 0 and 2, width 5 of 5
    k2, v2 = torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8)  # row 1, its last 2 positions
    layer.write_rows(torch.tensor([0, 2]), 0, k1, v1, batch=3)
    layer.write_rows(torch.tensor([1]), 3, k2, v2, batch=3)
    keys, values = layer_kv(cache, 0)
    assert keys.shape == (3, 4, 5, 8) and cache.get_seq_length() == 5
    assert torch.equal(keys[[0, 2]], k1) and torch.equal(values[[0, 2]], v1)
    assert torch.equal(keys[1, :, 3:], k2[0]) and torch.equal(values[1, :, 3:], v2[0])
    assert not keys[1, :, :3].any() and not values[1, :, :3].any()
    layer.update(torch.randn(3, 4, 1, 8), torch.randn(3, 4, 1, 8))  # the loop appends after the prompt
    assert cache.get_seq_length() == 6


def test_a_released_caches_buffers_serve_the_next_generation_with_the_same_tokens_and_states(monkeypatch):
    """CPU caches take spare buffers (written before: no page faults) and give them back when the loop ends;
    a buffer holding the previous call's keys/values changes nothing in the next call's results."""
    m = sharp_latent_method("coconut")
    exs = generate_splits(TaskConfig(n_train=6, n_valid=2, n_test=2, seed=0))["train"]
    prompts = m.latent_prompts(exs)

    def run(ps):
        return latent_generate(m.model, ps, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=-1,
                               pad_id=m.ids.pad, max_new_tokens=6, record_hidden=True)

    spare = kv_cache.SPARE_BUFFERS
    spare.clear()
    try:
        first = run(prompts)
        assert spare.nbytes > 0  # the cache's buffers came back
        kept = {t.data_ptr() for t in spare._free}
        taken: list[int] = []
        real_take = spare.take

        def take(shape, like):
            buf = real_take(shape, like)
            taken.append(buf.data_ptr())
            return buf

        monkeypatch.setattr(spare, "take", take)
        other = run(prompts[::-1])  # fills the buffers with other rows' keys/values
        again = run(prompts)
        assert kept & set(taken)  # the next generations wrote into released buffers
        assert again.tokens == first.tokens and again.forward_passes == first.forward_passes
        assert other.tokens == first.tokens[::-1]
        for a_row, b_row in zip(again.hidden, first.hidden):
            assert all(torch.equal(a, b) for a, b in zip(a_row, b_row))
    finally:
        spare.clear()


def test_spare_buffers_keep_cpu_buffers_within_their_limit_and_respect_inference_mode():
    spare = kv_cache.SpareBuffers(limit_bytes=4096)
    like = torch.zeros(1)
    with torch.inference_mode():
        inf_buf = spare.take((2, 2, 8, 16), like)  # 512 floats: 2 KiB
    spare.give([inf_buf, torch.empty(2048), torch.empty(256)])  # 2 + 8 + 1 KiB: the 8 alone is over the limit
    assert sorted(t.numel() for t in spare._free) == [256, 512]
    spare = kv_cache.SpareBuffers(limit_bytes=1 << 20)
    with torch.inference_mode():
        inf_buf = spare.take((2, 2, 8, 16), like)
    spare.give([inf_buf])
    normal = spare.take((2, 2, 8, 16), like)  # outside inference mode an inference tensor cannot be written
    assert normal.data_ptr() != inf_buf.data_ptr() and not normal.is_inference()
    with torch.inference_mode():
        assert spare.take((2, 2, 4, 16), like).data_ptr() == inf_buf.data_ptr()  # smaller shapes fit in it
    spare.give([torch.empty(10, dtype=torch.float64)])
    assert spare.take((10,), like).dtype == torch.float32  # never another dtype
    layer = PreallocatedLayer(capacity=8)
    with torch.inference_mode():
        layer.update(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    kv_cache.release_cache(type("C", (), {"layers": [layer]})())
    assert not layer.is_initialized and layer.get_seq_length() == 0 and layer._owned == []
