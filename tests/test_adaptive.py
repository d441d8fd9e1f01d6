"""Adaptive latent thinking (issue 9): halting head, training-free probe, batched halting, Spearman."""

import math

import pytest
import torch

from conftest import tiny_backbone
from helpers import train_examples
from latentreason.analysis.spearman import rankdata, spearman
from latentreason.data.procedural import TaskConfig
from latentreason.data.registry import load_dataset
from latentreason.methods.adaptive.halting import HaltingHead, head_halt_fn, probe_halt_fn, probe_stop_probability, threshold_logit
from latentreason.methods.adaptive.method import CODIAdaptive, CODIAdaptiveConfig
from latentreason.methods.codi import CODI, CODIConfig
from latentreason.training.checkpoint import load_method, save_method


def mixed_examples(n: int, seed: int = 0):
    """Training examples of 1..4 steps."""
    return train_examples(n, seed, n_steps=4, min_steps=1)


def _adaptive(kind="tiny-gpt2", dtype=torch.float64, **cfg):
    bb = tiny_backbone(kind, seed=3, dtype=dtype, n_embd=48, n_head=4, n_layer=2)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(3.0)
    cfg.setdefault("n_latent", 5)
    cfg.setdefault("max_new_tokens", 6)
    m = CODIAdaptive(bb, CODIAdaptiveConfig(**cfg))
    m.to(dtype)
    return m.eval()


def _spread_head(m, exs, seed=0, quantile=0.5):
    """Give the halting head a random direction, its bias at a quantile of the states' projections,
    so that rows stop at different thoughts."""
    g = torch.Generator().manual_seed(seed)
    dtype = m.halting_head.linear.weight.dtype
    w = torch.randn(m.halting_head.linear.weight.shape, generator=g, dtype=torch.float64).to(dtype)
    gens = m.generate(exs, record_hidden=True, halting="none", n_latent=m.n_max)
    proj = torch.cat([torch.stack(gg.extra["hidden"][1:]) @ w[0] for gg in gens])
    with torch.no_grad():
        scale = 50.0 / float(proj.std())
        m.halting_head.linear.weight.copy_(w * scale)
        m.halting_head.linear.bias.fill_(-float(proj.quantile(quantile)) * scale)


def _first_stop(m, gens, exs, p_fn, thr):
    """Expected thought count from the recorded states: first k >= min_latent with p(h_k) > thr, else n_max."""
    out = []
    for g in gens:
        hs = g.extra["hidden"]  # states at <bot> (index 0) and after each thought
        k_stop = m.n_max
        for k in range(m.config.min_latent, m.n_max):
            with torch.no_grad():
                p = float(p_fn(hs[k][None])[0])
            if p > thr:
                k_stop = k
                break
        out.append(k_stop)
    return out


# ---------------------------------------------------------------------- data
def test_modchain_mixed_with_custom_task_records_steps():
    task = TaskConfig(n_steps=5, min_steps=2, n_train=200, n_valid=20, n_test=30, seed=4)
    test = load_dataset("modchain_mixed", "test", task=task)
    assert len(test) == 30
    counts = {e.meta["n_steps"] for e in test}
    assert counts <= set(range(2, 6)) and len(counts) >= 3
    assert all(e.meta["n_steps"] == len(e.steps) for e in test)
    # a task without min_steps still gives the mixed set (1..max(n_steps, 6))
    plain = load_dataset("modchain_mixed", "valid", task=TaskConfig(n_train=50, n_valid=60, n_test=10))
    assert max(e.meta["n_steps"] for e in plain) > 4 and min(e.meta["n_steps"] for e in plain) < 4


# ---------------------------------------------------------------------- halting head thresholds
@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_head_threshold_zero_stops_after_one_thought_and_one_runs_to_n_max(kind):
    m = _adaptive(kind, n_latent=4, n_max=6)
    exs = mixed_examples(6)
    _spread_head(m, exs)
    m.config.halt_threshold = 0.0
    assert [g.latent_steps for g in m.generate(exs)] == [1] * len(exs)
    m.config.halt_threshold = 1.0
    assert [g.latent_steps for g in m.generate(exs)] == [6] * len(exs)  # the cap is n_max, not n_latent
    m.config.halting = "none"
    assert [g.latent_steps for g in m.generate(exs)] == [4] * len(exs)
    assert threshold_logit(0.0) == -math.inf and threshold_logit(1.0) == math.inf
    assert threshold_logit(0.5) == 0.0


def test_halting_head_module_and_halt_fn():
    head = HaltingHead(6).double()
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.weight[0, 0] = 1.0
        head.linear.bias.zero_()
    h = torch.tensor([[3.0, 0, 0, 0, 0, 0], [-3.0, 0, 0, 0, 0, 0], [1000.0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    k = torch.ones(3, dtype=torch.long)
    assert torch.allclose(head(h), torch.sigmoid(h[:, 0]))
    assert head_halt_fn(head, 0.5)(h, k).tolist() == [True, False, True]
    assert head_halt_fn(head, 0.9)(h, k).tolist() == [True, False, True]  # sigmoid(3) = 0.953
    assert head_halt_fn(head, 0.96)(h, k).tolist() == [False, False, True]
    # the endpoints hold even where the sigmoid saturates to exactly 0 or 1
    assert head_halt_fn(head, 1.0)(h, k).tolist() == [False, False, False]
    assert head_halt_fn(head, 0.0)(-h, k).tolist() == [True, True, True]
    assert float(HaltingHead(6)(torch.zeros(1, 6)).detach()) < 0.2  # a fresh head leans towards "keep thinking"


def test_head_halts_at_first_thought_above_threshold():
    m = _adaptive(n_latent=6)
    exs = mixed_examples(8)
    _spread_head(m, exs)
    m.config.halt_threshold = 0.5
    gens = m.generate(exs, record_hidden=True)
    expected = _first_stop(m, gens, exs, m.halting_head, 0.5)
    assert [g.latent_steps for g in gens] == expected
    assert len(set(expected)) >= 2, expected  # the test needs rows that stop at different thoughts


# ---------------------------------------------------------------------- batched halting
@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_batched_adaptive_equals_one_by_one(kind):
    m = _adaptive(kind, n_latent=6)
    exs = mixed_examples(8, seed=2)
    _spread_head(m, exs, seed=1, quantile=0.7)
    batched = m.generate(exs, record_hidden=True)
    single = [m.generate([e], record_hidden=True)[0] for e in exs]
    assert [(g.text, g.latent_steps, g.forward_passes) for g in batched] == \
        [(g.text, g.latent_steps, g.forward_passes) for g in single]
    for b, s in zip(batched, single):
        assert len(b.extra["hidden"]) == b.latent_steps + 1
        for x, y in zip(b.extra["hidden"], s.extra["hidden"]):
            assert torch.allclose(x, y, atol=1e-9)
    steps = [g.latent_steps for g in batched]
    assert len(set(steps)) >= 3, steps
    # a row that thinks less costs fewer forward passes: finished thinking rows are not padded along
    by_steps = {}
    for g in batched:
        by_steps.setdefault(g.latent_steps, set()).add(g.forward_passes - g.generated_tokens)
    for k, passes in by_steps.items():
        assert passes == {k + 1}, (k, passes)  # prefill + k thoughts + <eot> + (tokens - 1) fed back


def test_halted_row_is_untouched_by_later_steps_of_the_others():
    m = _adaptive(n_latent=6)
    exs = mixed_examples(4, seed=5)
    early = 1  # row 1 halts after its first thought, the others think to n_max

    fed: list[list[int]] = []
    batch_sizes: list[int] = []

    def thought(h, step, rows=None):
        fed.append(rows.tolist())
        return m.thought(h, step)

    # the halting rule is a property of the row's own state: row `early`'s state after its first thought
    target = m.generate([exs[early]], record_hidden=True, halting="none")[0].extra["hidden"][1]

    def halt(h, k):
        return ((h - target).abs().amax(-1) < 1e-6) & (k >= 1)

    hook = m.model.register_forward_pre_hook(
        lambda mod, args, kwargs: batch_sizes.append(
            (kwargs.get("inputs_embeds") if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"]).shape[0]),
        with_kwargs=True)
    try:
        batched = m.generate(exs, thought_fn=thought, halt_fn=halt, record_hidden=True)
    finally:
        hook.remove()
    alone = m.generate([exs[early]], thought_fn=m.thought, halt_fn=halt, record_hidden=True)[0]
    assert batched[early].latent_steps == 1 and all(g.latent_steps == 6 for i, g in enumerate(batched) if i != early)
    # after its single thought, the halted row is never fed another thought ...
    assert fed[0] == [0, 1, 2, 3] and all(early not in rows for rows in fed[1:])
    # ... its answer and states equal decoding it alone, and it leaves the batch once its answer is done
    assert batched[early].text == alone.text and batched[early].forward_passes == alone.forward_passes
    for x, y in zip(batched[early].extra["hidden"], alone.extra["hidden"]):
        assert torch.allclose(x, y, atol=1e-9)
    assert batched[early].forward_passes < min(g.forward_passes for i, g in enumerate(batched) if i != early)
    assert batch_sizes[0] == 4 and min(batch_sizes) < 4  # finished rows leave the batch


# ---------------------------------------------------------------------- training-free probe
def test_probe_halts_when_stop_tokens_dominate():
    vocab, d = 7, 5
    lm = torch.nn.Linear(d, vocab, bias=False)
    with torch.no_grad():
        lm.weight.zero_()
        lm.weight[3, 0] = 10.0  # feature 0 votes for token 3 (a stop token)
        lm.weight[5, 1] = 10.0  # feature 1 votes for token 5 (not a stop token)
    h = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0], [0.3, 0.3, 0, 0, 0]])
    p = probe_stop_probability(lm, h, [3, 6])
    assert p[0] > 0.99 and p[1] < 0.01 and 0.3 < p[2] < 0.7
    halt = probe_halt_fn(lm, [3, 6], threshold=0.5)
    assert halt(h, torch.ones(3, dtype=torch.long)).tolist() == [True, False, False]
    assert probe_halt_fn(lm, [3], threshold=0.0)(h, torch.ones(3)).all()
    assert not probe_halt_fn(lm, [3], threshold=1.0)(h, torch.ones(3)).any()


def test_probe_mode_stops_at_first_thought_where_condition_holds():
    m = _adaptive(n_latent=6, halting="probe")
    exs = mixed_examples(8, seed=3)
    ids = m.probe_token_ids()
    assert m.ids.eot in ids and m.tokenizer("\n", add_special_tokens=False).input_ids[0] in ids
    lm = m.model.get_output_embeddings()
    gens0 = m.generate(exs, record_hidden=True, halting="none", n_latent=6)
    with torch.no_grad():
        ps = sorted(float(probe_stop_probability(lm, g.extra["hidden"][k][None], ids)[0]) for g in gens0 for k in range(1, 6))
    thr = ps[len(ps) // 2]  # the median: some rows stop early, some late
    m.config.probe_threshold = thr
    gens = m.generate(exs, record_hidden=True)
    expected = _first_stop(m, gens, exs, lambda h: probe_stop_probability(lm, h, ids), thr)
    assert [g.latent_steps for g in gens] == expected
    assert len(set(expected)) >= 2, expected
    assert [g.text for g in gens] == [m.generate([e])[0].text for e in exs]


# ---------------------------------------------------------------------- training
def test_training_targets_halt_loss_and_detached_head():
    torch.manual_seed(0)
    m = _adaptive(dtype=torch.float32, n_latent=5, align_steps=True, teacher_drop_last_step=False, vary_n=0.0).train()
    exs = mixed_examples(16, seed=1)
    toks = m.prepare(exs)
    batch = m.collate([m.features(t) for t in toks])
    assert batch["n_steps"].tolist() == [len(e.steps) for e in exs]
    assert m.stop_targets(torch.tensor([1, 2, 4, 9]), 5).tolist() == [2, 3, 5, 5]
    # the head's loss alone reaches the head and nothing else (detached states)
    m.config.alpha = m.config.beta = m.config.gamma = m.config.align_weight = m.config.step_ce_weight = 0.0
    m(batch)["loss"].backward()
    assert m.halting_head.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in m.named_parameters() if not n.startswith("halting_head"))
    # a few steps of head training lower its loss
    m.zero_grad()
    opt = torch.optim.Adam(m.halting_head.parameters(), lr=1e-1)
    first = last = None
    m.model.requires_grad_(False)  # only the head learns here: skip the backbone's backward
    m.projection.requires_grad_(False)
    for _ in range(12):
        out = m(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["loss_halt"])
        last = float(out["loss_halt"])
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_stop_exit_equals_answering_after_fewer_thoughts(kind):
    """The training-time stop exit (one masked parallel pass) = feeding <eot> after each row's stop thought."""
    from latentreason.decoding.latent import latent_forward

    m = _adaptive(kind, n_latent=5)
    exs = mixed_examples(6, seed=7)
    b = m.collate([m.features(t) for t in m.prepare(exs)])
    stops = torch.tensor([1, 2, 3, 4, 5, 2])
    with torch.no_grad():
        full = latent_forward(m.model, b["prompt_ids"], b["prompt_mask"], 5, m.thought, b["suffix_ids"], b["suffix_mask"])
        logits, hidden = m.stop_exit(b, full.thoughts, stops)
        for r in range(len(exs)):
            k, v = int(stops[r]), b["suffix_mask"][r].bool()
            one = latent_forward(m.model, b["prompt_ids"][r : r + 1], b["prompt_mask"][r : r + 1], k, m.thought,
                                 b["suffix_ids"][r : r + 1], b["suffix_mask"][r : r + 1])
            assert torch.allclose(logits[r][v], one.suffix_logits[0][v], atol=1e-9)
            assert torch.allclose(hidden[-1][r][v], one.suffix_hidden[-1][0][v], atol=1e-9)
        assert not torch.allclose(logits[0][b["suffix_mask"][0].bool()], full.suffix_logits[0][b["suffix_mask"][0].bool()])


def test_vary_n_masks_rows_whose_answer_is_not_due():
    torch.manual_seed(0)
    m = _adaptive(dtype=torch.float32, n_latent=5, vary_n=1.0).train()
    exs = mixed_examples(32, seed=2)
    batch = m.collate([m.features(t) for t in m.prepare(exs)])
    seen = set()
    for _ in range(12):
        out = m(batch)
        n = int(out["n_thoughts"])
        targets = m.stop_targets(batch["n_steps"], 5)
        assert int(targets.min()) <= n <= 5
        assert abs(float(out["ready_fraction"]) - float((targets <= n).float().mean())) < 1e-6
        seen.add(n)
    assert len(seen) >= 2
    # evaluation mode always uses n_latent
    m.eval()
    assert int(m(batch)["n_thoughts"]) == 5


def test_halting_none_equals_codi_and_checkpoint_round_trip(tmp_path):
    m = _adaptive(dtype=torch.float32, n_latent=3, halting="none")
    codi = CODI(m.backbone, CODIConfig(n_latent=3, max_new_tokens=6))
    codi.projection.load_state_dict(m.projection.state_dict())
    exs = mixed_examples(5)
    assert [g.text for g in m.generate(exs)] == [g.text for g in codi.generate(exs)]
    # from_codi keeps the CODI model's weights and adds a head
    wrapped = CODIAdaptive.from_codi(codi, CODIAdaptiveConfig(n_latent=3, max_new_tokens=6, halting="none"))
    assert [g.text for g in wrapped.generate(exs)] == [g.text for g in codi.generate(exs)]
    # the head is saved in extra.safetensors and loads strictly
    _spread_head(m, exs)
    m.config.halting = "head"
    save_method(m, tmp_path / "ck")
    loaded = load_method(tmp_path / "ck", expected_method="codi_adaptive")
    assert torch.equal(loaded.halting_head.linear.weight, m.halting_head.linear.weight)
    assert [(g.text, g.latent_steps) for g in loaded.generate(exs)] == [(g.text, g.latent_steps) for g in m.generate(exs)]
    # a checkpoint whose extra weights lack the head is refused
    from safetensors.torch import load_file, save_file

    t = load_file(str(tmp_path / "ck" / "extra.safetensors"))
    save_file({k: v for k, v in t.items() if not k.startswith("halting_head.")}, str(tmp_path / "ck" / "extra.safetensors"))
    with pytest.raises(Exception, match="halting_head"):
        load_method(tmp_path / "ck")


def test_end_alignment_and_step_ce_targets():
    from latentreason.decoding.latent import latent_forward
    from latentreason.methods.objective import layerwise_distance, step_ce

    m = _adaptive(dtype=torch.float64, n_latent=5, align_steps=True, teacher_drop_last_step=False, step_ce_weight=1.0)
    exs = mixed_examples(6, seed=4)
    toks = m.prepare(exs)
    feats = [m.features(t) for t in toks]
    close = m.tokenizer("\n", add_special_tokens=False).input_ids[0]
    for f, e in zip(feats, exs):
        seq = f["teacher"][0]
        assert seq[f["p_end"] + 1] == close  # the end position predicts the token closing the CoT
        # anchors: the next token is the step's result
        assert [m.tokenizer.decode([seq[a + 1]]) for a in f["anchors"]] == [str(v)[0] for v in e.meta["values"]]
    batch = m.collate(feats)
    with torch.no_grad():
        t_out = m.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        s = latent_forward(m.model, batch["prompt_ids"], batch["prompt_mask"], 5, m.thought, batch["suffix_ids"],
                           batch["suffix_mask"])
        targets = m.stop_targets(batch["n_steps"], 5)
        got = m._end_align_loss(batch, t_out.hidden_states, s.latent_hidden, targets, 5)
        rows = [r for r in range(len(exs)) if int(targets[r]) <= 5]
        s_l = [torch.stack([s.latent_hidden[int(targets[r])][l][r] for r in rows]) for l in range(1, 3)]
        t_l = [torch.stack([t_out.hidden_states[l][r, int(batch["p_end"][r])] for r in rows]) for l in range(1, 3)]
        assert torch.allclose(got, layerwise_distance(s_l, t_l, "smooth_l1", True))
        # step CE: thought j's LM-head probe against step j's result token
        ce = step_ce(m.model, s.latent_hidden, batch["input_ids"], m.step_groups(batch, s.latent_hidden))
        lm = m.model.get_output_embeddings()
        logits, tgt = [], []
        for r, e in enumerate(exs):
            for j, v in enumerate(e.meta["values"][:5]):
                logits.append(lm(s.latent_hidden[1 + j][-1][r]))
                tgt.append(m.tokenizer(str(v), add_special_tokens=False).input_ids[0])
        expected = torch.nn.functional.cross_entropy(torch.stack(logits), torch.tensor(tgt))
        assert torch.allclose(ce.double(), expected, atol=1e-5)


def test_fit_halting_head_changes_only_the_head():
    m = _adaptive(dtype=torch.float32, n_latent=4)
    exs = mixed_examples(24, seed=6)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = m.fit_halting_head(exs, steps=60, lr=5e-2)
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"halting_head.linear.weight", "halting_head.linear.bias"}
    y = [float(j >= min(len(e.steps) + 1, 4)) for e in exs for j in range(1, 5) if j <= min(len(e.steps) + 1, 4) + 1]
    majority = max(sum(y), len(y) - sum(y)) / len(y)
    assert res["states"] == len(y) and res["accuracy"] > majority, (res, majority)


def test_config_validation():
    from latentreason.errors import ConfigError

    for bad in ({"halting": "sometimes"}, {"halt_threshold": 1.5}, {"n_max": 0}, {"min_latent": 0},
                {"vary_n": -0.1}, {"n_max": 2, "min_latent": 3}):
        with pytest.raises(ConfigError):
            CODIAdaptiveConfig(**bad).validate()


# ---------------------------------------------------------------------- Spearman
def test_spearman_with_ties_hand_computed():
    x = [1, 2, 2, 3, 4]
    y = [1, 3, 2, 2, 5]
    assert rankdata(x) == [1.0, 2.5, 2.5, 4.0, 5.0]
    assert rankdata(y) == [1.0, 4.0, 2.5, 2.5, 5.0]
    # ranks centred: x: -2, -0.5, -0.5, 1, 2 ; y: -2, 1, -0.5, -0.5, 2
    # sum xy = 4 - 0.5 + 0.25 - 0.5 + 4 = 7.25 ; sum x^2 = 9.5 ; sum y^2 = 9.5
    assert spearman(x, y) == pytest.approx(7.25 / 9.5)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1], [2]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


# ---------------------------------------------------------------------- the demo section
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_adaptive_quick_section(tmp_path):
    import json

    from latentreason.experiments.adaptive_section import adaptive_config, run_adaptive

    bb = tiny_backbone("tiny-gpt2", seed=1, n_embd=32, n_head=2, n_layer=2)
    save_method(CODI(bb, CODIConfig(n_latent=2, max_new_tokens=8)), tmp_path / "codi")
    logs = []
    res = run_adaptive(tmp_path / "adaptive", tmp_path / "codi", quick=True, log=logs.append)
    cfg = adaptive_config(quick=True)
    for name in ("codi_fixed", "codi_adaptive", "codi_adaptive_probe"):
        row = res[name]
        assert set(row) >= {"accuracy", "mean_latent_steps", "latency_ms_per_question", "n", "by_true_steps"}
        assert row["n_questions"] == cfg.test_limit and row["batch_size"] == cfg.eval_batch_size
        assert 0 <= row["mean_latent_steps"] <= cfg.n_max and row["latency_ms_per_question"] > 0
    fixed = res["codi_fixed"]
    assert fixed["n"] == res["valid_sweep"]["best_n"] and res["codi_adaptive"]["n"] is None
    assert res["valid_sweep"]["best_n"] == max(range(1, cfg.n_max + 1), key=lambda n: (res["valid_sweep"]["accuracy_by_n"][str(n)], -n))
    assert fixed["mean_latent_steps"] == res["valid_sweep"]["best_n"]
    # the reported coefficient is Spearman's of the adaptive row's thoughts against each question's true steps
    recs = json.loads((tmp_path / "adaptive" / "predictions-codi_adaptive.json").read_text())
    assert len(recs) == cfg.test_limit
    assert res["spearman_steps_vs_true"] == spearman([r["latent_steps"] for r in recs], [r["meta"]["n_steps"] for r in recs])
    assert res["codi_adaptive"]["by_true_steps"] == {
        str(k): {"n": len(v), "accuracy": sum(r["correct"] for r in v) / len(v), "mean_latent_steps": sum(r["latent_steps"] for r in v) / len(v)}
        for k, v in sorted({k: [r for r in recs if r["meta"]["n_steps"] == k] for k in {r["meta"]["n_steps"] for r in recs}}.items())}
    png = (tmp_path / "adaptive" / "thoughts_vs_steps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "adaptive" / "results.json").read_text())["codi_fixed"]["accuracy"] == fixed["accuracy"]
    # a second call reuses the finished training run
    logs.clear()
    again = run_adaptive(tmp_path / "adaptive", tmp_path / "codi", quick=True, log=logs.append)
    assert any("reusing" in line for line in logs)
    assert again["codi_adaptive"]["accuracy"] == res["codi_adaptive"]["accuracy"]
    # a run directory moved elsewhere (with the checkpoint it started from) is still reused: paths are not
    # part of the fingerprint, the parent's files are
    import shutil

    shutil.copytree(tmp_path / "adaptive", tmp_path / "moved" / "adaptive")
    shutil.copytree(tmp_path / "codi", tmp_path / "moved" / "codi")
    logs.clear()
    moved = run_adaptive(tmp_path / "moved" / "adaptive", tmp_path / "moved" / "codi", quick=True, log=logs.append)
    assert any("reusing" in line for line in logs) and not any("training codi_adaptive" in line for line in logs)
    assert moved["codi_adaptive"]["accuracy"] == res["codi_adaptive"]["accuracy"]


def test_adaptive_curriculum_trains_two_phases(tmp_path):
    """first_phase_steps: the first phase draws its questions with its own step weights in train/first_phase,
    the second continues the same model for the remaining steps; bad settings are refused by name."""
    import json

    from latentreason.errors import ConfigError
    from latentreason.experiments.adaptive_section import adaptive_config, run_adaptive

    bb = tiny_backbone("tiny-gpt2", seed=1, n_embd=32, n_head=2, n_layer=2)
    save_method(CODI(bb, CODIConfig(n_latent=2, max_new_tokens=8)), tmp_path / "codi")
    cfg = adaptive_config(quick=True)
    cfg.train.max_steps = 3
    cfg.first_phase_steps, cfg.first_phase_step_weights = 1, [0.0, 0.0, 1.0]
    logs = []
    run_adaptive(tmp_path / "adaptive", tmp_path / "codi", cfg=cfg, log=logs.append)
    first = tmp_path / "adaptive" / "train" / "first_phase"
    done = json.loads((tmp_path / "adaptive" / "train" / "done.json").read_text())
    assert done["first_phase_train"]["steps"] == 1 and done["train"]["steps"] == 2
    assert json.loads((first / "results.json").read_text())["config"]["data"]["task"]["train_step_weights"] == [0.0, 0.0, 1.0]
    assert any("curriculum" in line for line in logs)
    cfg.first_phase_steps = 3
    with pytest.raises(ConfigError, match="first_phase_steps"):
        run_adaptive(tmp_path / "bad", tmp_path / "codi", cfg=cfg, log=logs.append)
