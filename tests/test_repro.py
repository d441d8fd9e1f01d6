"""Reproductions (experiments/repro.py) and what they rest on: the digits tokenizer, iCoT's keep_position, the
generation limit that follows the data, reasoning tokens of an internalised iCoT model."""

from __future__ import annotations

import math

import pytest
import torch

from latentreason.data.example import Example
from latentreason.data.multiplication import generate_multiplication
from latentreason.decoding.generate import trim_at_stop
from latentreason.errors import ConfigError, DataError
from latentreason.evaluation.evaluate import evaluate
from latentreason.experiments.repro import Reproduction, check, list_reproductions, load_reproduction, table_markdown
from latentreason.methods.base import UNTRAINED_GENERATION_LIMIT, generation_limit_for, method_config
from latentreason.methods.cot import CoT
from latentreason.methods.icot import ICoT
from latentreason.methods.nocot import NoCoT
from latentreason.models.backbone import ModelConfig, load_backbone
from latentreason.models.tokenizer import build_digit_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits_backbone(seed: int = 0):
    return load_backbone(ModelConfig(n_layer=2, n_embd=32, n_head=2, n_positions=128, tokenizer="digits"), seed=seed)


def _mult(n: int = 8) -> list[Example]:
    return generate_multiplication(4, 4, n, seed=1)


# ---------------------------------------------------------------------------- digits tokenizer
def test_digit_tokenizer_gives_one_token_per_symbol_and_round_trips_icot_lines():
    tok = build_digit_tokenizer()
    line = "5 6 3 2 * 7 4 3 4"
    ids = tok(f" {line} ", add_special_tokens=False).input_ids
    assert len(ids) == 9
    assert tok.decode(ids) == line
    assert tok(" #### 5 5 ", add_special_tokens=False).input_ids[0] == tok.convert_tokens_to_ids("####")


def test_digit_tokenizer_halves_a_4x4_sequence_against_bytes():
    ex = _mult(1)
    lengths = {}
    for kind in ("byte", "digits"):
        bb = load_backbone(ModelConfig(n_layer=1, n_embd=16, n_head=1, tokenizer=kind), seed=0)
        t = CoT(bb, method_config(CoT, {"preset": "icot"})).serializer.tokenize(ex)[0]
        lengths[kind] = len(t.prompt) + len(t.cot) + len(t.answer)
    assert lengths["digits"] == 67  # 9 + EOS, 46 CoT symbols + EOS, "####" + 8 digits + EOS
    assert lengths["byte"] > 1.8 * lengths["digits"]


def test_digit_tokenizer_names_the_example_with_an_unknown_word():
    m = CoT(_digits_backbone(), method_config(CoT, {"preset": "icot"}))
    bad = [*_mult(2), Example("3 + x", [], "3")]
    with pytest.raises(DataError, match=r"example 2 .*'x'"):
        m.prepare(bad)


def test_digit_tokenizer_is_refused_for_a_hugging_face_model():
    with pytest.raises(ConfigError, match="model.tokenizer=digits is for the tiny models"):
        ModelConfig(name="gpt2", tokenizer="digits").validate()


# ---------------------------------------------------------------------------- generation limit
def test_generation_limit_follows_the_training_data():
    m = CoT(_digits_backbone(), method_config(CoT, {"serialization": "icot", "answer_mode": "icot"}))
    assert m.config.max_new_tokens is None
    toks = m.prepare(_mult(4))
    m.fit_to_data(toks)
    longest = max(len(t.cot) + len(t.answer) for t in toks)  # 47 + 10
    assert longest == 57
    assert m.config.max_new_tokens == generation_limit_for(toks) == longest + 14
    # an explicit limit is kept
    m2 = CoT(_digits_backbone(), method_config(CoT, {"serialization": "icot", "max_new_tokens": 20}))
    m2.fit_to_data(toks)
    assert m2.config.max_new_tokens == 20


def test_untrained_method_uses_the_documented_limit():
    m = CoT(_digits_backbone(), method_config(CoT, {"serialization": "icot"}))
    assert m.generation_budget([[1, 2, 3]]) == min(UNTRAINED_GENERATION_LIMIT, 128 - 3)


def test_evaluation_counts_and_reports_truncated_generations(caplog):
    # iCoT's serialisation stops at the second EOS: one token can never be a finished answer
    m = CoT(_digits_backbone(), method_config(CoT, {"serialization": "icot", "answer_mode": "icot", "max_new_tokens": 1}))
    with caplog.at_level("WARNING", logger="latentreason"):
        res = evaluate(m, _mult(4), batch_size=4, warmup=False)
    assert res.metrics["truncated"] == 4
    assert "4 of 4 generations hit the generation limit" in caplog.text


# ---------------------------------------------------------------------------- iCoT keep_position
def _icot(keep: bool, **kw) -> ICoT:
    return ICoT(_digits_backbone(), method_config(ICoT, {"preset": "icot_paper_mult", "keep_position": keep,
                                                         "smoothing_lambda": None, **kw}))


def test_keep_position_moves_the_first_eos_and_everything_after_it_as_the_official_code():
    m = _icot(True)
    t = m.prepare(_mult(1))[0]
    m.removed = 5
    ids, labels, pos = m.features(t)
    q = len(t.prompt)  # the question and the first EOS
    cot = [x for step in t.steps for x in step]
    assert ids[:q] == t.prompt and ids[q:q + 3] == cot[5:8]
    # official: position_ids[removal_from - 1:] += removed, removal_from = first EOS + 1
    assert pos[: q - 1] == list(range(q - 1))
    assert pos[q - 1:] == [p + 5 for p in range(q - 1, len(ids))]
    # everything removed: the answer sits where it sat behind the full CoT
    m.removed = math.inf
    ids, _, pos = m.features(t)
    full = len(t.prompt) + len(t.cot) + len(t.answer)
    assert pos[-1] == full - 1 and pos[q - 1] == q - 1 + len(cot)
    m.fit_to_data([t])
    assert m.config.position_shift == len(t.cot) - 1  # the CoT symbols (its closing EOS stays)


def test_keep_position_off_renumbers_contiguously():
    m = _icot(False)
    t = m.prepare(_mult(1))[0]
    m.removed = 5
    feats = m.features(t)
    assert len(feats) == 2  # no position ids: the model numbers the re-packed sequence 0..n-1
    batch = m.collate([feats])
    assert "position_ids" not in batch


def test_keep_position_generation_equals_uncached_decoding_with_the_shifted_positions():
    m = _icot(True, max_new_tokens=12)
    exs = _mult(3)
    m.fit_to_data(m.prepare(exs))
    m.removed = math.inf
    m.eval()
    gens = m.generate(exs)
    shift = m.config.position_shift
    assert shift == 46
    for ex, g in zip(exs, gens):
        prompt = list(m.serializer.prompts([ex])[0])
        seq, out = list(prompt), []
        while out.count(m.ids.eos) < 2 and len(out) < 12:
            pos = list(range(len(prompt) - 1)) + [p + shift for p in range(len(prompt) - 1, len(seq))]
            with torch.no_grad():
                logits = m.model(input_ids=torch.tensor([seq]), position_ids=torch.tensor([pos])).logits[0, -1]
            out.append(int(logits.argmax()))
            seq.append(out[-1])
        assert m.tokenizer.decode(trim_at_stop(out, m.ids.eos, 2), skip_special_tokens=True) == g.text
        assert g.generated_tokens == len(out)


def test_keep_position_generation_stays_inside_the_context():
    """An untrained model never stops: the shifted positions of its longest generation still fit the context."""
    bb = load_backbone(ModelConfig(n_layer=1, n_embd=16, n_head=1, n_positions=70, tokenizer="digits"), seed=0)
    m = ICoT(bb, method_config(ICoT, {"preset": "icot_paper_mult", "keep_position": True, "position_shift": 46}))
    m.removed = math.inf
    gens = m.generate(_mult(2))  # 10 prompt tokens + 46 shift: at most 14 new tokens
    assert all(g.generated_tokens <= 70 - 10 - 46 for g in gens)


def test_keep_position_training_batch_carries_position_ids_into_the_loss():
    m = _icot(True)
    toks = m.prepare(_mult(2))
    m.removed = 3
    batch = m.collate([m.features(t) for t in toks])
    assert batch["position_ids"].shape == batch["input_ids"].shape
    out = m(batch)["loss"]
    m.config.keep_position = False
    plain = m(m.collate([m.features(t) for t in toks]))["loss"]
    assert not torch.isclose(out, plain)  # the shifted positions reach the model


# ---------------------------------------------------------------------------- reasoning tokens
def test_an_internalised_icot_answer_counts_zero_reasoning_tokens():
    m = NoCoT(_digits_backbone(), method_config(NoCoT, {"preset": "icot"}))
    tok = m.tokenizer
    body = [m.ids.eos, *tok(" #### 5 5 6 0 8 2 0 1", add_special_tokens=False).input_ids]
    assert m.count_reasoning_tokens(body) == 0
    cot = tok(" 5 5 5 6 1 + 0 0", add_special_tokens=False).input_ids
    assert m.count_reasoning_tokens(cot + body) == len(cot)


# ---------------------------------------------------------------------------- reproductions
def test_icot_mult_reproduction_loads_and_runs_the_paper_preset():
    repros = list_reproductions()
    r = repros["icot-mult"]
    assert r.bench.data.dataset == "mult_4x4" and r.bench.test_limit is None  # the 1,000 shipped questions
    icot = next(e for e in r.bench.entries if e.name == "icot")
    assert icot.method_args["preset"] == "icot_paper_mult" and icot.init_from == "cot"
    assert {x.row for x in r.expect} == {"nocot", "cot", "icot"}
    assert {e.name for e in r.bench.entries} >= {"coconut", "codi", "system15"}


def test_gpu_reproduction_removes_a_token_every_3156_steps_as_the_official_run():
    """icot-mult-gpu's point is the official schedule: 808k lines at batch 32 and 8 tokens per epoch."""
    r = load_reproduction("icot-mult-gpu")
    steps_per_epoch = r.bench.data.train_limit // r.bench.train.batch_size
    for name in ("icot", "icot_keep_position"):
        e = next(e for e in r.bench.entries if e.name == name)
        per_epoch = ICoT.presets[e.method_args["preset"]]["remove_per_epoch"]
        assert e.init_from is None  # the official recipe has no CoT-SFT stage
        assert steps_per_epoch / per_epoch == pytest.approx(3156.25)
        assert e.train["epochs"] * per_epoch >= 46  # the whole 46-token CoT is removed
    assert (r.bench.model.n_layer, r.bench.model.n_head, r.bench.model.n_embd) == (2, 4, 768)


def test_paper_presets_reproduction_runs_each_preset_with_its_papers_schedule():
    r = load_reproduction("paper-presets")
    rows = {e.name: e for e in r.bench.entries}
    coconut, codi = rows["coconut_paper"], rows["codi_paper"]
    assert coconut.method_args == {"preset": "coconut_paper"} and codi.method_args == {"preset": "codi_paper"}
    assert (coconut.train["lr"], coconut.train["batch_size"], coconut.train["grad_clip"]) == (1e-4, 128, 0.0)
    assert (codi.train["lr"], codi.train["schedule"], codi.train["warmup_ratio"], codi.train["grad_clip"]) == \
        (3e-3, "cosine", 0.03, 2.0)
    assert coconut.init_from == "cot" and rows["cot"].method_args["preset"] == "coconut_gsm"
    assert codi.init_from == "cot_codi" and rows["cot_codi"].method_args["preset"] == "codi"
    assert {x.row for x in r.expect if x.metric == "gap_closed"} == {"coconut_paper", "codi_paper"}


def test_icot_embedded_reproduction_gates_the_removal_and_checks_the_gap_with_zero_tokens():
    """icot-embedded runs the demo's task with the project's gated schedule (named for what it is, not the paper
    preset) beside the demo's fixed one, and checks the share of the No-CoT→CoT gap at zero reasoning tokens."""
    r = load_reproduction("icot-embedded")
    rows = {e.name: e for e in r.bench.entries}
    gated = rows["icot_gated"]
    assert gated.method_args == {"preset": "default_task", "keep_position": True, "removal_gate": 0.9,
                                 "gate_deadline": 40000}
    assert gated.init_from == "cot" and gated.train["eval_every"] > 0  # the gate reads periodic validations
    assert gated.method_args["gate_deadline"] < gated.train["max_steps"]  # steps with no CoT after the deadline
    assert rows["icot_fast"].method_args == {"preset": "default_task"}
    assert r.bench.task.identity_prob == 0.25 and r.bench.task.n_steps == 4 and r.bench.data is None  # the embedded task
    assert {(x.row, x.metric) for x in r.expect} == {("nocot", "accuracy"), ("cot", "accuracy"),
                                                     ("icot_gated", "gap_closed"), ("icot_gated", "mean_reasoning_tokens")}


def test_reproduction_overrides_reach_an_entry_by_name():
    r = load_reproduction("icot-mult", ["bench.entries.icot.train.max_steps=7", "bench.valid_limit=5"])
    assert next(e for e in r.bench.entries if e.name == "icot").train["max_steps"] == 7
    assert r.bench.valid_limit == 5


def test_unknown_reproduction_names_the_valid_ones():
    with pytest.raises(ConfigError, match="icot-mult"):
        load_reproduction("nope")


def _results(icot_accs: list[float]) -> dict:
    rows = {
        "nocot": [0.01, 0.02], "cot": [0.99, 0.97], "icot": icot_accs,
    }
    return {"seeds": [0, 1], "methods": {
        name: {"method": name, "accuracy": sum(a) / 2, "per_seed": [
            {"seed": s, "accuracy": a[s], "mean_reasoning_tokens": 0.0, "train_seconds": 10.0} for s in (0, 1)]}
        for name, a in rows.items()}}


def test_check_holds_only_when_every_seed_passes():
    r = load_reproduction("icot-mult")
    assert check(r, _results([0.95, 0.93]))["holds"]
    rep = check(r, _results([0.95, 0.40]))
    assert not rep["holds"]
    icot = next(c for c in rep["checks"] if c["row"] == "icot" and c["metric"] == "accuracy")
    assert [s["holds"] for s in icot["seeds"]] == [True, False]
    table = table_markdown(r, _results([0.95, 0.40]))
    assert "0.950 ✓, 0.400 ✗" in table and "✗ does not hold" in table


def test_codi_alignment_past_the_last_layer_is_a_config_error():
    from latentreason.methods.codi import CODI
    bb = load_backbone(ModelConfig(n_layer=1, n_embd=16, n_head=1), seed=0)
    with pytest.raises(ConfigError, match="align_first_layer=2: the model has 1 layer"):
        CODI(bb, method_config(CODI, {"preset": "default_task"}))


def test_an_expectation_on_a_missing_row_is_a_config_error():
    data = {"name": "x", "title": "x", "finding": "x", "source": "x",
            "bench": {"entries": [{"name": "cot", "method": "cot"}]}, "expect": [{"row": "icot", "min": 0.5}]}
    from latentreason.config import from_dict
    with pytest.raises(ConfigError, match="row 'icot' is not an entry"):
        from_dict(Reproduction, data)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_repro_smoke_trains_every_row_and_writes_results_and_table(tmp_path, shared_data):
    """The machinery end to end on a few steps (not the finding): every row trained, checked per seed, table written."""
    from latentreason.experiments.repro import run_repro
    steps = {"cot": 4, "nocot": 4, "icot": 4, "icot_keep_position": 4, "coconut": 4, "codi": 2, "system15": 2}
    sets = [f"bench.entries.{k}.train.max_steps={v}" for k, v in steps.items()]
    sets += ["bench.data.train_limit=64", "bench.valid_limit=4", "bench.test_limit=8", "bench.latency_questions=2",
             "bench.latency_repeats=1", "bench.entries.icot.train.eval_every=0",
             "bench.entries.icot_keep_position.train.eval_every=0", "bench.entries.coconut.method_args.steps_per_stage=1",
             "bench.model.n_layer=2", "bench.model.n_embd=16", "bench.model.n_head=1", f"bench.data.data_dir={shared_data}"]
    sets += [f"bench.entries.{k}.method_args.max_new_tokens=4" for k in steps if k != "system15"]
    res = run_repro("icot-mult", tmp_path / "r", [0], overrides=sets, progress=False, log=lambda s: None)
    assert set(res["methods"]) == set(steps)
    assert all(r["n"] == 8 for r in res["methods"].values())
    assert len(res["reproduction"]["checks"]) == 4 and "holds" in res["reproduction"]
    assert (tmp_path / "r" / "table.md").read_text().startswith("### icot-mult")
    assert (tmp_path / "r" / "icot" / "model" / "method.json").is_file()
    assert res["seconds_per_seed"]["0"] > 0
