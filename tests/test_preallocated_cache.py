"""The preallocated KV cache (models/kv_cache.py) and the lean decode step (decoding/generate.py).

Every cached inference loop runs on :class:`PreallocatedLayer` caches; these tests run the same
loops on transformers' dynamic cache (``new_cache`` without a capacity, patched in) and require the
same tokens and the same logits / thought states, with rows leaving the batch at different steps.
"""

from contextlib import contextmanager

import pytest
import torch

from conftest import tiny_backbone
from latentreason.data.procedural import TaskConfig, generate_splits
from latentreason.decoding import generate as gen_mod
from latentreason.decoding.generate import greedy_generate, greedy_reference
from latentreason.decoding.latent import latent_generate
from latentreason.methods.codi import CODI, CODIConfig
from latentreason.methods.coconut import Coconut, CoconutConfig
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


def _sharp(kind, seed=1, dtype=torch.float32, **kw):
    bb = tiny_backbone(kind, seed=seed, dtype=dtype, n_embd=48, n_head=4, **kw)
    with torch.no_grad():  # decisive greedy choices (random-init logits are near-uniform otherwise)
        for p in bb.model.parameters():
            p.mul_(3.0)
    bb.model.eval()
    return bb


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
def test_cot_decoding_on_the_preallocated_cache_gives_the_dynamic_caches_tokens_and_logits(kind, on_dynamic_cache):
    bb = _sharp(kind)
    prompts = [bb.tokenizer(t).input_ids for t in ("1+2*3\n", "9-8+7*6-5\n", "4\n", "2*2*2*2*2*2\n", "7\n")]
    free, _ = greedy_generate(bb.model, prompts, bb.ids.pad, eos_id=-1, max_new_tokens=10)
    # EOS := a token some rows produce at different steps, so rows leave the batch at different times
    counts = {}
    for row in free:
        for t in set(row):
            counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=lambda t: (0 < counts[t] < len(prompts), counts[t]))
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


def _latent_method(name, kind="tiny-gpt2"):
    bb = _sharp(kind, seed=3, n_layer=2)
    if name == "codi":
        m = CODI(bb, CODIConfig(n_latent=3, max_new_tokens=8))
    else:
        m = Coconut(bb, CoconutConfig(max_latent_stage=3, max_new_tokens=8))
    return m.eval()


@pytest.mark.parametrize("name", ["codi", "coconut"])
@pytest.mark.parametrize("halting", [False, True])
def test_latent_generation_on_the_preallocated_cache_equals_the_dynamic_cache(name, halting, on_dynamic_cache):
    m = _latent_method(name)
    exs = generate_splits(TaskConfig(n_train=6, n_valid=2, n_test=2, seed=0))["train"]
    prompts = m.latent_prompts(exs)

    def run(eos):
        halt = (lambda h, k: h[:, 0] > h[:, 0].median()) if halting else None  # rows stop at different thoughts
        return latent_generate(m.model, prompts, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=eos,
                               pad_id=m.ids.pad, max_new_tokens=8, record_hidden=True, halt_fn=halt)

    free = run(-1)
    firsts = [row[2] for row in free.tokens]
    eos = max(set(firsts), key=lambda t: (firsts.count(t) < len(firsts), firsts.count(t)))
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
    m = _latent_method("codi")
    exs = generate_splits(TaskConfig(n_train=3, n_valid=2, n_test=2, seed=0))["train"]
    calls, h = _head_log(m.model)
    try:
        res = latent_generate(m.model, m.latent_prompts(exs), n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot,
                              eos_id=-1, pad_id=m.ids.pad, max_new_tokens=4)
    finally:
        h.remove()
    assert [len(t) for t in res.tokens] == [4, 4, 4]
    assert len(calls) == 4 and all(c.shape[:2] == (3, 1) for c in calls)
