"""The optional compiled decode path (decoding/compiled.py, ``method_args.compile_decode``, ``eval --compile``).

Its fixed-shape steps on a static cache must give the eager path's tokens and forward-pass counts: run
eagerly here for every option (padding counted as the official CODI code does, iCoT's position shift,
rows stopping at different steps), and once through ``torch.compile`` (slow: compiling takes about a
minute on a CPU).
"""

import pytest
import torch

from conftest import tiny_backbone
from latentreason.data.procedural import TaskConfig, generate_splits
from latentreason.decoding.compiled import (StaticRunner, compiled_greedy_generate, compiled_latent_generate,
                                            traced_owner, weights_version)
from latentreason.decoding.generate import greedy_generate, left_pad
from latentreason.decoding.latent import latent_generate
from latentreason.errors import ConfigError
from latentreason.methods.codi import CODI, CODIConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _sharp(seed=1, **kw):
    bb = tiny_backbone("tiny-gpt2", seed=seed, n_embd=48, n_head=4, **kw)
    with torch.no_grad():  # decisive greedy choices
        for p in bb.model.parameters():
            p.mul_(3.0)
    bb.model.eval()
    return bb


def _prompts(bb):
    return [bb.tokenizer(t).input_ids for t in ("1+2*3\n", "9-8+7*6-5\n", "4\n", "7\n")]


def _stopping_eos(rows):
    """A token that ends some rows (not all) at different steps."""
    firsts = [r[1] for r in rows]
    return max(set(firsts), key=lambda t: (firsts.count(t) < len(firsts), firsts.count(t)))


def _codi():
    bb = _sharp(seed=3, n_layer=2)
    return CODI(bb, CODIConfig(n_latent=3, max_new_tokens=8)).eval()


def _latent_pair(m, compile, count_padding, eos=None):
    exs = generate_splits(TaskConfig(n_train=5, n_valid=2, n_test=2, seed=0))["train"]
    prompts = m.latent_prompts(exs)
    eos = m.ids.eos if eos is None else eos
    eager = latent_generate(m.model, prompts, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=eos,
                            pad_id=m.ids.pad, max_new_tokens=8, record_hidden=True, count_padding=count_padding)
    ids, mask = left_pad(prompts, m.ids.pad)
    fixed = compiled_latent_generate(m.model, ids, mask, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=eos,
                                     max_new_tokens=8, record_hidden=True, count_padding=count_padding, compile=compile)
    return eager, fixed


@pytest.mark.parametrize("shift", [0, 3])
def test_fixed_shape_token_steps_give_the_eager_tokens_and_passes(shift):
    bb = _sharp()
    prompts = _prompts(bb)
    free, _ = greedy_generate(bb.model, prompts, bb.ids.pad, -1, 10, position_shift=shift)
    eos = _stopping_eos(free)
    want = greedy_generate(bb.model, prompts, bb.ids.pad, eos, 10, position_shift=shift)
    got = compiled_greedy_generate(bb.model, prompts, bb.ids.pad, eos, 10, position_shift=shift, compile=False)
    assert len({len(t) for t in want[0]}) >= 2  # rows stopped at different steps
    assert got == want
    again = compiled_greedy_generate(bb.model, prompts[:1] * 4, bb.ids.pad, eos, 10, position_shift=shift, compile=False)
    assert again[0] == [want[0][0]] * 4  # the runner is reused for the same shape: its cache and mask start afresh


@pytest.mark.parametrize("count_padding", [False, True])
def test_fixed_shape_latent_steps_give_the_eager_tokens_states_and_passes(count_padding):
    m = _codi()
    free, _ = _latent_pair(m, False, count_padding, eos=-1)
    eager, (tokens, passes, hidden) = _latent_pair(m, False, count_padding, eos=_stopping_eos(free.tokens))
    assert len({len(t) for t in eager.tokens}) >= 2
    assert tokens == eager.tokens and passes == eager.forward_passes
    for a_row, b_row in zip(hidden, eager.hidden):
        for a, b in zip(a_row, b_row):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_step_inputs_keep_one_stride_whatever_the_prompt_width():
    """A compiled step is guarded on its inputs' strides: the first thought is a view of the prompt's last
    position (its stride follows the prompt width), so each step gets a copy in one buffer; otherwise every new
    width recompiles until torch's limit sends the step back to eager (seen at batch 1 in vs_official.py)."""
    m = _codi()
    base = m.latent_prompts(generate_splits(TaskConfig(n_train=2, n_valid=2, n_test=2, seed=0))["train"])[0]
    prompts = [base[:1] * k + base for k in (0, 3, 7)]  # three widths, one capacity bucket
    seen = []
    for p in prompts:
        ids, mask = left_pad([p], m.ids.pad)
        runner = StaticRunner.get(m.model, 1, ids.shape[1] + 3 + 1 + 4, compile=False)
        inner = runner._fns["embed"]
        runner._fns["embed"] = lambda x, *rest, inner=inner: (seen.append(x.stride()), inner(x, *rest))[1]
        # Coconut's thought: the last state itself (CODI's projection would hand over a fresh tensor)
        compiled_latent_generate(m.model, ids, mask, n_latent=3, thought_fn=lambda h, k, rows: h, eot_id=m.ids.eot,
                                 eos_id=m.ids.eos, max_new_tokens=4, compile=False)
        runner._fns["embed"] = inner
    assert len(seen) == 3 * len(prompts) and len(set(seen)) == 1


def test_compiled_path_refuses_halting_naming_the_field():
    m = _codi()
    prompts = m.latent_prompts(generate_splits(TaskConfig(n_train=2, n_valid=2, n_test=2, seed=0))["train"])
    with pytest.raises(ConfigError, match="compile_decode"):
        latent_generate(m.model, prompts, n_latent=3, thought_fn=m.thought, eot_id=m.ids.eot, eos_id=m.ids.eos,
                        pad_id=m.ids.pad, max_new_tokens=4, halt_fn=lambda h, k: k >= 1, compiled=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compiled_steps_give_the_eager_tokens():
    """Through torch.compile (inductor): CoT decoding and CODI's thoughts + answer, the same tokens as eager."""
    bb = _sharp()
    prompts = _prompts(bb)
    want = greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, 10)
    assert compiled_greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, 10) == want
    ids, _ = left_pad(prompts, bb.ids.pad)
    runner = StaticRunner.get(bb.model, len(prompts), ids.shape[1] + 10)
    assert runner.compile_seconds > 0
    m = _codi()
    eager, (tokens, passes, hidden) = _latent_pair(m, True, False)
    assert tokens == eager.tokens and passes == eager.forward_passes
    for a_row, b_row in zip(hidden, eager.hidden):
        for a, b in zip(a_row, b_row):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["foreach", "fused"])
def test_weights_version_changes_with_an_optimiser_step_fused_included(kind):
    """A frozen graph keeps the weights it was compiled with: the runner is rebuilt when this changes. A fused
    AdamW step updates the weights in place without bumping their version counters; the sums still see it."""
    bb = tiny_backbone("tiny-gpt2", seed=0, n_embd=48, n_head=4, n_layer=1)
    before = weights_version(bb.model)
    assert weights_version(bb.model) == before
    opt = torch.optim.AdamW(bb.model.parameters(), lr=1e-3, **{kind: True})
    ids = torch.tensor([[1, 2, 3, 4]])
    bb.model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert weights_version(bb.model) != before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compiled_steps_follow_weights_changed_after_compiling():
    """Frozen weights must not go stale: after an in-place update of the weights (as an optimiser step between two
    validations), the compiled path recompiles and gives the new weights' eager tokens."""
    bb = _sharp(seed=2, n_layer=1)
    prompts = _prompts(bb)
    old = greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, 8)
    assert compiled_greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, 8) == old
    ids, _ = left_pad(prompts, bb.ids.pad)
    first = StaticRunner.get(bb.model, len(prompts), ids.shape[1] + 8)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.add_(torch.randn_like(p))
    want = greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, 8)
    assert want != old  # stale weights would give the old tokens
    assert compiled_greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, 8) == want
    assert StaticRunner.get(bb.model, len(prompts), ids.shape[1] + 8) is not first


def test_only_a_methods_own_thought_is_traced_into_the_compiled_graph():
    """A method's own ``thought`` is pure (its inputs and weights): traced into the thought graph. Any other callable
    (a noise or a capture hook, a lambda) may have side effects and runs eagerly between the compiled steps."""
    m = _codi()
    assert traced_owner(m.thought) is m
    assert traced_owner(lambda h, k, rows=None: m.thought(h, k, rows)) is None
    assert traced_owner(m.forward) is None

    class Noisy(CODI):
        def thought(self, hidden, step, rows=None):
            return super().thought(hidden, step, rows) + torch.randn_like(hidden)

    noisy = Noisy(m.backbone, m.config)
    assert traced_owner(noisy.thought) is noisy  # a subclass's own thought is its method's


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_traced_thoughts_follow_the_projection_changed_after_compiling():
    """CODI's projection is frozen into the thought graph with the model: changed in place (an optimiser step), the
    graph is made again and the states follow the new weights."""
    m = _codi()
    eager, (tokens, _, hidden) = _latent_pair(m, True, False)
    assert tokens == eager.tokens
    with torch.no_grad():
        for p in m.projection.parameters():
            p.add_(torch.randn_like(p))
    eager2, (tokens2, _, hidden2) = _latent_pair(m, True, False)
    assert not torch.allclose(eager2.hidden[0][1], eager.hidden[0][1], atol=1e-3)  # the projection matters
    assert tokens2 == eager2.tokens
    for a_row, b_row in zip(hidden2, eager2.hidden):
        for a, b in zip(a_row, b_row):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
