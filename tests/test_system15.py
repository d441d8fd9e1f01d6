import pytest
import torch

from conftest import tiny_backbone
from helpers import train_examples
from latentreason.experiments.flops import kv_flops, layer_flops, matrix_params, step_flops
from latentreason.methods.codi import CODI, CODIConfig
from latentreason.methods.system15.method import System15, System15Config



def _pair(kind="tiny-gpt2", **cfg):
    """A stage-1 (CODI) model and a System-1.5 stage-2 model sharing its weights."""
    bb = tiny_backbone(kind, seed=7, dtype=torch.float64, n_embd=48, n_head=4, n_layer=3)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(2.5)
    base = dict(n_latent=3, max_new_tokens=5)
    codi = CODI(bb, CODIConfig(**base)).to(torch.float64).eval()
    s15 = System15(bb, System15Config(**base, **cfg)).to(torch.float64).eval()
    s15.projection.load_state_dict(codi.projection.state_dict())
    with torch.no_grad():  # routers and adapters that really do something
        for p in s15.shortcut_parameters():
            p.normal_(0, 0.5)
    return codi, s15


def test_routers_at_zero_equal_the_stage1_model():
    for kind in ("tiny-gpt2", "tiny-llama"):
        codi, s15 = _pair(kind)
        exs = train_examples(5)
        ref = codi.generate(exs)
        s15.ctl.force_weight = 0.0  # routers forced to 0: never exit
        s15.ctl.force_step_weight = 0.0  # and never reuse
        got = s15.generate(exs)
        assert [g.text for g in got] == [g.text for g in ref]
        assert all(g.extra["layers_per_latent_step"] == 3 for g in got)
        # soft mode (training) with w = 0 gives the stage-1 model's training loss too: CODI's student answer loss
        batch = s15.collate([s15.features(t) for t in s15.prepare(exs)])
        with torch.no_grad():
            ref = codi.train()(codi.collate([codi.features(t) for t in codi.prepare(exs)]))["loss_student"]
            got = s15.train()(batch)["loss_nll"]
            assert torch.isfinite(ref) and torch.allclose(got, ref, rtol=0, atol=1e-10), (kind, float(got), float(ref))
            s15.ctl.force_weight = 1.0  # every latent position on the adapter branch: another loss
            assert not torch.allclose(s15(batch)["loss_nll"], ref, rtol=0, atol=1e-6)


def test_lambda_depth_zero_exits_at_the_first_layer():
    _, s15 = _pair(step_shortcut=False)
    gens = s15.generate(train_examples(4), lambda_depth=0.0)
    assert all(g.extra["exit_layers"] == [0, 0, 0] for g in gens)
    assert all(g.extra["layers_per_latent_step"] == 0.0 for g in gens)


def test_exit_carry_step_shortcut_moves_on_and_saves_layers_without_repeating_thoughts():
    """A step that exits at layer l hands its post-exit state to the next step, which starts at layer
    l + 1 and runs it: with every router firing, step 1 leaves at layer 0, step 2 runs layer 1 and
    leaves at layer 2 (the last: step 3 restarts at 0), instead of repeating the same layer on the
    same state (the old fixed point: identical thoughts, exits [l, l, l], no layer ever run)."""
    exs = train_examples(5, seed=2)
    _, s15 = _pair(step_shortcut=True, step_rule="exit_carry")
    gens, th = _thoughts(s15, exs, lambda_depth=0.0)
    assert all(g.extra["exit_layers"] == [0, 2, 0] for g in gens)
    assert all(g.extra["layers_per_latent_step"] == pytest.approx(1 / 3) for g in gens)  # step 2 ran layer 1
    assert all(g.extra["adapters_per_latent_step"] == pytest.approx(7 / 3) for g in gens)  # 3 + 1 + 3
    assert all(g.extra["routers_per_latent_step"] == 1.0 for g in gens)  # each step asked one router
    assert (th[:, 1:] - th[:, :-1]).abs().amax(-1).min() > 1e-6  # consecutive thoughts differ
    # router 1 always fires, routers 0 and 2 never: with the step shortcut alone (exits decided, the step
    # still runs all its layers) step 1 runs 3 layers and step 2 starts at layer 2: 1 layer instead of 3
    for kind in ("tiny-gpt2", "tiny-llama"):
        _, s15 = _pair(kind, step_shortcut=True, depth_shortcut=False, step_rule="exit_carry")
        with torch.no_grad():
            for l, r in enumerate(s15.routers):
                r.net[-1].weight.zero_()
                r.net[-1].bias.fill_(10.0 if l == 1 else -10.0)
        ss, th_ss = _thoughts(s15, exs)
        assert all(g.extra["exit_layers"] == [1, 3, 1] for g in ss), kind  # step 2 starts after layer 1: no exit
        assert all(g.extra["layers_per_latent_step"] == pytest.approx(7 / 3) for g in ss), kind  # 3 + 1 + 3
        assert (th_ss[:, 1:] - th_ss[:, :-1]).abs().amax(-1).min() > 1e-6, kind
        s15.config.step_shortcut = False
        full, _ = _thoughts(s15, exs)
        assert all(g.extra["layers_per_latent_step"] == 3 for g in full), kind


def test_exit_loss_targets_live_in_the_residual_space_at_every_layer():
    """Routers forced to 0: the soft path is the full path, so every layer's exit term is exactly 0 —
    the last layer's target included (before the final norm, where the mixture lives)."""
    for kind in ("tiny-gpt2", "tiny-llama"):
        _, s15 = _pair(kind)
        s15.ctl.force_weight = 0.0
        s15.ctl.force_step_weight = 0.0
        batch = s15.collate([s15.features(t) for t in s15.prepare(train_examples(4))])
        s15.train()
        out = s15(batch)
        assert float(out["loss_exit"]) < 1e-20, kind


def test_learned_router_targets():
    _, s15 = _pair(exit_tolerance=0.1)  # 3 layers
    crit = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    err = torch.tensor([[0.5, 0.05, 0.3], [0.5, 0.4, 0.2], [0.35, 0.3, 0.3]], dtype=torch.float64)
    tgt = s15.router_targets_for(crit, err)
    # row 0: first acceptable layer 1, and every layer after it; row 1: never; row 2 (non-critical,
    # e_l = (l + 1) / 3): 0.35 / 3 > 0.1, 0.3 * 2 / 3 = 0.2 > 0.1, 0.3 > 0.1: never
    assert tgt.tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 0]]
    err[2] = torch.tensor([0.29, 0.5, 0.5])
    assert s15.router_targets_for(crit, err)[2].tolist() == [1, 1, 1]  # 0.29 / 3 < 0.1: leaves before layer 1
    # perfect adapters: the exit error of the trained model's adapter branch is what the targets read
    s15.config.router_targets = "hand"
    assert s15.router_targets_for(crit, err).tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1]]


def test_batched_mixed_exits_equal_one_by_one():
    for kind, ss, kv, ld in (("tiny-gpt2", False, "project", 0.5), ("tiny-gpt2", True, "project", 0.95),
                             ("tiny-gpt2", False, "copy", 0.5), ("tiny-llama", False, "project", 0.5),
                             ("tiny-llama", True, "project", 0.5), ("tiny-qwen3", False, "project", 0.7),
                             ("tiny-qwen3", True, "copy", 0.7), ("tiny-gpt2", "exit_carry", "project", 0.5)):
        rule = {"step_rule": ss} if isinstance(ss, str) else {}
        _, s15 = _pair(kind, step_shortcut=bool(ss), lambda_depth=ld, kv_rule=kv, **rule)
        exs = train_examples(6, seed=3)
        if ss is True:
            _split_step_router(s15, exs)
        b = s15.generate(exs)
        one = [s15.generate([e])[0] for e in exs]
        def paths(gens):
            return [(g.text, g.extra["exit_layers"], g.extra.get("reused_layers")) for g in gens]

        assert paths(b) == paths(one), (kind, ss, kv)
        exits = {tuple(g.extra["exit_layers"]) for g in b}
        assert len(exits) >= 2, (kind, ss, kv, exits)  # rows really exited at different layers
        if ss is True:  # and reused different numbers of layers from the previous thought
            assert len({tuple(g.extra["reused_layers"]) for g in b}) >= 2, (kind, ss, kv, paths(b))


def _split_step_router(s15, exs) -> None:
    """Make the random step router part the rows of ``exs``: one output for every layer (so a row reuses all
    layers or none), and the threshold between the middle two of its outputs on the second thought."""
    with torch.no_grad():
        last = s15.step_router.net[-1]
        last.weight.copy_(last.weight[:1].expand_as(last.weight))
        last.bias.zero_()
    seen, orig = [], s15.ctl.step_fires

    def record(last):
        seen.append(s15.step_router(last))
        return orig(last)

    s15.ctl.step_fires = record
    try:
        s15.generate(exs)
    finally:
        del s15.ctl.step_fires
    v = seen[0][:, 0].sort().values  # between the two middle rows: no row sits on the threshold
    s15.config.step_threshold = float(v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    patterns = {tuple(g.extra["reused_layers"]) for g in s15.generate(exs)}
    assert len(patterns) >= 2 and any(3 in p for p in patterns), patterns


def _thoughts(s15, exs, **kw):
    """The input embeddings fed at the thought positions, per row (hard inference)."""
    fed = []

    def capture(h, step, rows=None):
        e = s15.thought(h, step, rows)
        fed.append(e.detach().clone())
        return e

    gens = s15.generate(exs, thought_fn=capture, **kw)
    return gens, torch.stack(fed, 1)  # (B, n, d)


def test_projected_kv_makes_inference_equal_the_trained_soft_path():
    """Routers at 1: every thought leaves before layer 1. With the `project` KV rule hard inference
    computes exactly what the soft mixture computes in training (w = 1): the same thoughts and the
    same logits after <eot>, which attend to the thoughts' keys/values; the `copy` rule does not."""
    for kind in ("tiny-gpt2", "tiny-llama", "tiny-qwen3"):
        _, s15 = _pair(kind, step_shortcut=False)
        exs = [e for e in train_examples(12, seed=5) if len(e.question) == 9][:4]  # one prompt length: no padding
        s15.ctl.force_weight = 1.0
        # the prompt and the 3 thoughts run without the LM head: <eot> is its first call
        soft, hard, after_eot, gens = _soft_and_hard(s15, exs)
        s15.config.kv_rule = "copy"
        _, _, after_eot_copy, _ = _soft_and_hard(s15, exs)
        assert all(g.extra["exit_layers"] == [0, 0, 0] for g in gens)
        assert all(g.extra["kv_projections_per_latent_step"] == 3 for g in gens)
        assert torch.allclose(hard, soft.thoughts, atol=1e-9), kind
        assert torch.allclose(after_eot, soft.suffix_logits[:, 0], atol=1e-8), kind
        assert not torch.allclose(after_eot_copy, soft.suffix_logits[:, 0], atol=1e-3), kind


def test_whole_batch_fast_paths_and_direct_kv_change_nothing():
    for kind in ("tiny-gpt2", "tiny-llama"):
        for ld, reuse in ((0.0, None), (0.5, None), (1.0, None), (0.5, "all"), (1.0, "first"), (0.5, "split")):
            _, s15 = _pair(kind, lambda_depth=ld)
            exs = train_examples(6, seed=3)
            if reuse == "all":  # every row reuses every layer: the whole-batch reuse path
                s15.ctl.force_step_weight = 1.0
            elif reuse == "first":  # every row reuses layer 0 and computes from layer 1: the whole-batch junction
                with torch.no_grad():
                    s15.step_router.net[-1].weight.zero_()
                    s15.step_router.net[-1].bias.copy_(torch.tensor([40.0, -40.0, -40.0]))
            elif reuse == "split":  # rows part ways
                _split_step_router(s15, exs)
            ref, ref_th = _thoughts(s15, exs)
            s15.ctl.fast_paths = False
            s15.ctl.direct_kv = False
            got, got_th = _thoughts(s15, exs)
            assert [g.text for g in got] == [g.text for g in ref]
            assert torch.allclose(got_th, ref_th, atol=1e-10)
            keys = ("exit_layers", "layers_per_latent_step", "routers_per_latent_step", "adapters_per_latent_step",
                    "kv_projections_per_latent_step", "reused_layers")
            assert [[g.extra[k] for k in keys] for g in got] == [[g.extra[k] for k in keys] for g in ref], (kind, ld)
            if reuse is not None:
                assert any(sum(g.extra["reused_layers"]) for g in ref), (kind, ld, reuse)


def test_gpt2_direct_kv_equals_the_layer_own_projection():
    from latentreason.methods.system15.shortcut_layer import _CaptureCache, _Captured, gpt2_kv
    from latentreason.methods.system15.shortcuts import find_decoder_layers

    bb = tiny_backbone("tiny-gpt2", seed=3, dtype=torch.float64, n_embd=48, n_head=4, n_layer=2)
    layer = find_decoder_layers(bb.model)[1]
    h = torch.randn(5, 1, 48, dtype=torch.float64)
    from transformers import DynamicCache

    try:
        layer(h, cache=_CaptureCache(DynamicCache(config=bb.model.config)))
        raise AssertionError("the layer did not hand its keys/values to the cache")
    except _Captured as c:
        k, v = gpt2_kv(layer, h)
        assert torch.allclose(k, c.keys) and torch.allclose(v, c.values)


def test_router_targets_follow_criticality():
    _, s15 = _pair(critical_skip_layers=2)  # 3 layers
    assert [s15.router_target(True, l) for l in range(3)] == [0.0, 1.0, 1.0]
    assert [s15.router_target(False, l) for l in range(3)] == [1.0, 1.0, 1.0]
    _, s15 = _pair(critical_skip_layers=5)  # more than L - 1: a critical thought still runs its first layer
    assert [s15.router_target(True, l) for l in range(3)] == [0.0, 1.0, 1.0]
    _, s15 = _pair()  # default: critical thoughts run every layer
    assert [s15.router_target(True, l) for l in range(3)] == [0.0, 0.0, 0.0]


def test_stage2_trains_only_shortcuts():
    _, s15 = _pair(step_adapter=True)
    with torch.no_grad():  # thoughts 2.. reuse layer 0 and compute the rest from q_0 of the reused state
        s15.step_router.net[-1].weight.zero_()
        s15.step_router.net[-1].bias.copy_(torch.tensor([40.0, -40.0, -40.0]))
    s15.train()
    before = {k: v.clone() for k, v in s15.state_dict().items() if not k.startswith(("routers", "adapters", "step_"))}
    routers_before = [p.detach().clone() for p in s15.routers.parameters()]
    opt = torch.optim.AdamW([p for p in s15.parameters() if p.requires_grad], lr=1e-2)
    batch = s15.collate([s15.features(t) for t in s15.prepare(train_examples(4))])
    for _ in range(3):
        out = s15(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = s15.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b) for a, b in zip(routers_before, s15.routers.parameters()))  # the shortcuts did train
    trainable = {n.split(".")[0] for n, p in s15.named_parameters() if p.requires_grad}
    assert trainable == {"routers", "adapters", "step_router", "step_adapters"}
    assert float(out["reused_layers"]) > 0 and torch.isfinite(out["loss_step_router"])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in s15.step_adapters[0].parameters()), \
        "the answer loss reaches the step adapter at the first computed layer"
    assert all(p.grad is not None for p in s15.step_router.parameters())


def test_flops_counter_matches_hand_count():
    bb = tiny_backbone("tiny-gpt2", n_embd=32, n_head=2, n_layer=2)
    # GPT-2 layer matrices: c_attn 32x96 + c_proj 32x32 + c_fc 32x128 + mlp c_proj 128x32 = 12 * 32^2
    from latentreason.methods.system15.shortcuts import find_decoder_layers

    assert matrix_params(find_decoder_layers(bb.model)[0]) == 12 * 32 * 32
    assert layer_flops(bb.model, n_ctx=10) == 2 * 12 * 32 * 32 + 2 * 10 * 32
    assert step_flops(bb.model, 10, 1.5) == 1.5 * (2 * 12 * 32 * 32 + 2 * 10 * 32)
    # the KV rule `project` on GPT-2 runs the key/value columns of c_attn only: 32 x 64 (not the queries' 32 x 32)
    assert kv_flops(bb.model) == 2 * 2 * 32 * 32
    # other architectures run q/k/v projections up to cache.update (LLaMA: q 32x32, k and v 32 x kv_width)
    llama = tiny_backbone("tiny-llama", n_embd=32, n_head=4, n_layer=2)
    kv_width = llama.model.config.num_key_value_heads * (32 // 4)
    assert kv_flops(llama.model) == 2 * (32 * 32 + 2 * 32 * kv_width)


def test_criticality_labels_follow_the_steps():
    _, s15 = _pair()
    (t,) = s15.prepare(train_examples(1))
    t.example.meta["critical"] = [True, False, True, True]
    f = s15.features(t)
    # thought j <-> step j (align_offset 1); thought 3 of 3 maps to step 3
    assert f["critical"] == [True, False, True]


def test_shortcut_ablation_reports_each_shortcut():
    from latentreason.methods.system15.grid import shortcut_ablation

    _, s15 = _pair(lambda_depth=0.5)
    exs = train_examples(6, seed=3)
    s15.config.depth_shortcut = False
    _split_step_router(s15, exs)
    s15.config.depth_shortcut = True
    res = shortcut_ablation(s15, exs, batch_size=4, batch1_questions=2)
    assert res["n"] == 6 and set(res) >= {"none", "depth", "step", "both"} and res["batch1_questions"] == 2
    assert res["none"]["layers_per_latent_step"] == 3 and res["none"]["reused_layers_per_latent_step"] == 0
    assert res["depth"]["reused_layers_per_latent_step"] == 0 < res["step"]["reused_layers_per_latent_step"]
    assert all(res[k]["batch1_ms_per_question"] > 0 for k in ("none", "depth", "step", "both"))
    for name in ("depth", "step", "both"):
        r = res[name]
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["layers_per_latent_step"] <= 3 and r["latency_ms_per_question"] > 0
    assert res["depth"]["identical_consecutive_thoughts"] == 0.0  # exits never repeat a thought
    # Eq. 4: a thought that reuses every layer ends in the previous thought's final state, so the thought fed
    # after it repeats the one fed before it; the ablation counts exactly those pairs
    s15.config.depth_shortcut = False
    gens = s15.generate(exs)
    n = s15.config.n_latent
    repeats = sum(g.extra["reused_layers"][t] == 3 for g in gens for t in range(1, n - 1))
    assert res["step"]["identical_consecutive_thoughts"] == pytest.approx(repeats / (len(exs) * (n - 1)))
    assert 0 < repeats  # some thoughts reuse every layer
    assert res["step"]["layers_per_latent_step"] < 3


def test_grid_best_cell_is_deterministic():
    """The grid's best cell: highest accuracy, ties to the fewest decoder layers over the latent steps
    (λ_step × layers per step), then the first cell; latency never decides."""
    from latentreason.methods.system15.grid import best_cell

    acc = [[0.5, 0.9, 0.9], [0.9, 0.8, 0.9]]
    layers = [[1.0, 2.0, 1.5], [1.0, 1.0, 2.0]]
    steps = [2, 4, 6]
    # 0.9 at (0,1): 8 layers, (0,2): 9, (1,0): 2, (1,2): 12 -> (1,0)
    assert best_cell(acc, layers, steps) == (1, 0)
    layers[1][0] = 4.5  # now (1,0) runs 9 layers: (0,1) with 8 wins
    assert best_cell(acc, layers, steps) == (0, 1)
    layers[0][1] = 2.25  # (0,1) 9 layers too: a three-way tie at 9 goes to the first cell in the grid
    assert best_cell(acc, layers, steps) == (0, 1)
    acc[1][2] = 0.95  # accuracy first, whatever the cost
    assert best_cell(acc, layers, steps) == (1, 2)


def _soft_and_hard(s15, exs, n=3):
    """The training-time soft pass and hard inference of the same questions: (soft, thoughts fed at inference,
    logits after <eot> at inference, generations)."""
    from latentreason.decoding.latent import latent_forward

    batch = s15.collate([s15.features(t) for t in s15.prepare(exs)])
    assert bool((batch["suffix_ids"][:, 0] == s15.ids.eot).all())  # the soft pass's first suffix logits follow <eot>
    ctl = s15.ctl

    def thought(h, step, rows=None):
        e = s15.thought(h, step)
        ctl.arm()
        return e

    with torch.no_grad(), ctl.installed("soft"):
        soft = latent_forward(s15.model, batch["prompt_ids"], batch["prompt_mask"], n, thought,
                              batch["suffix_ids"], batch["suffix_mask"], last_hidden=ctl.last_hidden)
    logits = []
    hook = s15.model.get_output_embeddings().register_forward_hook(lambda m, i, o: logits.append(o[:, -1]))
    try:
        gens, hard = _thoughts(s15, exs)
    finally:
        hook.remove()
    return soft, hard, logits[0], gens


def test_trained_step_shortcut_inference_equals_the_soft_path():
    """Step rule "reuse" with the step routers forced to a 0/1 pattern: hard inference (reused layers not run,
    their keys/values projected from the reused state entering them, q_{k-1} at the first computed layer)
    computes exactly what the soft mixture computes in training — the thoughts and the logits after <eot> —
    with the depth shortcut on or off, for reuse of every layer (k = L) and of the first layer only (k = 1)."""
    exs = [e for e in train_examples(12, seed=5) if len(e.question) == 9][:4]  # one prompt length: no padding
    for kind, adapter in (("tiny-gpt2", True), ("tiny-llama", True), ("tiny-gpt2", False)):
        for depth, pattern in ((False, "all"), (True, "all"), (False, "first"), (True, "first")):
            _, s15 = _pair(kind, step_shortcut=True, depth_shortcut=depth, step_adapter=adapter)
            if pattern == "all":
                s15.ctl.force_step_weight = 1.0
            else:  # S_0 fires, S_1 and S_2 never: thoughts 2 and 3 reuse layer 0 and compute layers 1 and 2
                with torch.no_grad():
                    s15.step_router.net[-1].weight.zero_()
                    s15.step_router.net[-1].bias.copy_(torch.tensor([40.0, -40.0, -40.0]))
            if not depth:  # the soft path always mixes the depth branch in: its routers at 0 are the full layers
                s15.ctl.force_weight = 0.0
            else:  # the depth routers fire from layer 1 on: a computed thought exits there, mixed with reuse
                with torch.no_grad():
                    for l, r in enumerate(s15.routers):
                        r.net[-1].weight.zero_()
                        r.net[-1].bias.fill_(40.0 if l >= 1 else -40.0)
            soft, hard, after_eot, gens = _soft_and_hard(s15, exs)
            k = 3 if pattern == "all" else 1
            assert all(g.extra["reused_layers"] == [0, k, k] for g in gens), (kind, depth, pattern)
            assert all(g.extra["adapters_per_latent_step"] >= (2 / 3 if adapter else 0) for g in gens)
            ran = [3 if not depth else 1] + [max(0, (3 if not depth else 1) - k) if depth else 3 - k] * 2
            assert all(g.extra["layers_per_latent_step"] == pytest.approx(sum(ran) / 3) for g in gens), \
                (kind, depth, pattern, gens[0].extra)
            assert torch.allclose(hard, soft.thoughts, atol=1e-9), (kind, depth, pattern)
            assert torch.allclose(after_eot, soft.suffix_logits[:, 0], atol=1e-8), (kind, depth, pattern)
            gap = (hard[:, 1:] - hard[:, :-1]).abs().amax(-1).min()
            if adapter or (pattern == "first" and not depth):  # q_{k-1}, or computed layers, move the state on
                assert gap > 1e-6
            else:  # Eq. 4 with nothing computed: the thought's final state is the previous one's, fed again
                assert gap == 0


def test_step_router_targets_follow_criticality():
    _, s15 = _pair()
    crit = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    assert s15.step_targets_for(crit).tolist() == [0.0, 1.0, 0.0]  # non-critical thoughts reuse
    # the loss: thoughts 2..n have a step router; its BCE enters with step_router_bce and is all that trains it
    batch = s15.collate([s15.features(t) for t in s15.prepare(train_examples(4))])
    s15.train()
    with torch.no_grad():
        out = s15(batch)
        s15.config.step_router_bce = 0.0
        out_none = s15(batch)
    assert float(out["loss"] - out_none["loss"]) == pytest.approx(5 * float(out["loss_step_router"]), rel=1e-6)
    for p in s15.parameters():
        p.grad = None
    s15(batch)["loss"].backward()  # every other term: none reaches the step router
    assert all(p.grad is None or not p.grad.any() for p in s15.step_router.parameters())



def test_exit_histogram_counts_reused_thoughts_as_running_no_layer():
    _, s15 = _pair()  # 3 layers
    exs = train_examples(2, seed=4)
    exits, reused = [[1, 3, 3], [0, 2, 3]], [[0, 3, 1], [0, 0, 3]]
    hist = s15.exit_histogram(exs, exits, reused)
    assert sum(map(sum, hist["counts"].values())) == 4 and sum(hist["reused"].values()) == 2
    run = {"critical": [], "noncritical": []}
    for ex, es, ks in zip(exs, exits, reused):
        for c, e, k in zip(s15.thought_criticality(ex, 3), es, ks):
            run["critical" if c else "noncritical"].append(0 if k == 3 else e - k)
    for kind, vals in run.items():
        if vals:
            assert hist[f"{kind}_mean_layers_run"] == pytest.approx(sum(vals) / len(vals)), kind
            assert hist[f"{kind}_thoughts"] == len(vals)
