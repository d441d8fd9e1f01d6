"""Out-of-distribution evaluation: extra evaluation sets, too-long questions counted, results["ood"]."""

import json

import pytest
import torch

from conftest import FIXTURES, tiny_backbone
from latentreason.data.procedural import TaskConfig
from latentreason.data.registry import load_dataset
from latentreason.errors import ConfigError, DataError
from latentreason.experiments.bench import run_bench
from latentreason.experiments.bench_config import BenchConfig, BenchEntry, EvalSet
from latentreason.experiments.ood import evaluate_ood, fitting_mask, load_eval_sets, parse_eval_sets
from latentreason.methods.codi import CODI, CODIConfig
from latentreason.methods.cot import CoT
from latentreason.models.backbone import ModelConfig
from latentreason.training.checkpoint import load_method
from latentreason.training.run_config import TrainConfig

SETS = {"svamp": "svamp.json", "gsmhard": "gsmhard.jsonl", "multiarith": "multiarith.jsonl", "asdiv": "asdiv.jsonl"}
CONTEXT = 128


pytestmark = pytest.mark.usefixtures("one_thread")


def _all_examples():
    return [ex for f in SETS.values() for ex in load_dataset(str(FIXTURES / f), "test")]


def _methods():
    cot = CoT(tiny_backbone(seed=1, n_positions=CONTEXT), CoT.Config(max_new_tokens=12)).eval()
    codi = CODI(tiny_backbone(seed=2, n_positions=CONTEXT), CODIConfig(n_latent=3, max_new_tokens=8)).eval()
    return cot, codi


def test_parse_eval_sets():
    sets = parse_eval_sets(["svamp=tests/fixtures/svamp.json", " gsm_hard ", "ma=multi=arith.jsonl"], data_dir="d")
    assert [(s.name, s.path, s.data_dir) for s in sets] == [
        ("svamp", "tests/fixtures/svamp.json", "d"), ("gsm_hard", "gsm_hard", "d"), ("ma", "multi=arith.jsonl", "d")]
    assert parse_eval_sets(None) == [] == parse_eval_sets([])
    for bad, msg in (("=x.json", "NAME=PATH"), ("svamp=", "NAME=PATH"), ("a b=x.json", "may only contain"),
                     ("../x=y.json", "may only contain")):
        with pytest.raises(ConfigError, match=msg):
            parse_eval_sets([bad])
    with pytest.raises(ConfigError, match="given twice"):
        parse_eval_sets(["a=x.json", "a=y.json"])


def test_load_eval_sets_names_the_set(tmp_path):
    loaded = load_eval_sets([EvalSet(n, str(FIXTURES / f)) for n, f in SETS.items()])
    assert {n: len(v) for n, v in loaded.items()} == {"svamp": 3, "gsmhard": 4, "multiarith": 2, "asdiv": 2}
    assert loaded["svamp"][0].answer == "51" or float(loaded["svamp"][0].answer) == 51.0
    with pytest.raises(DataError, match="evaluation set 'svamp'.*not found"):
        load_eval_sets([EvalSet("svamp", str(tmp_path / "missing.json"))])


def _needed_positions(method, ex) -> int:
    """Positions a question needs before its first answer token, computed independently of the code under test."""
    prompt = method.serializer.tokenize([ex])[0].prompt
    if isinstance(method, CODI):
        return len(prompt) + 1 + method.config.n_latent + 1  # <bot>, thoughts, <eot>
    return len(prompt)


def test_fitting_mask_asks_the_method_itself():
    exs = _all_examples()
    cot, codi = _methods()
    for m in (cot, codi):
        expected = [_needed_positions(m, ex) + 1 <= CONTEXT for ex in exs]
        assert fitting_mask(m, exs, batch_size=4) == expected
        assert m.config.max_new_tokens in (12, 8)  # the 1-token probe setting was restored
    # some question fits CoT but not CODI (its thoughts need positions too): the probe, not the prompt length, decides
    cot_mask, codi_mask = fitting_mask(cot, exs, 4), fitting_mask(codi, exs, 4)
    assert any(a and not b for a, b in zip(cot_mask, codi_mask))
    assert any(codi_mask) and not all(cot_mask)


def test_evaluate_ood_counts_too_long_and_keeps_order():
    exs = _all_examples()
    cot, codi = _methods()
    for m in (cot, codi):
        mask = fitting_mask(m, exs, 4)
        metrics, records = evaluate_ood(m, exs, batch_size=1)
        assert metrics["n"] == len(exs) == len(records)
        assert metrics["too_long"] == mask.count(False) > 0
        assert metrics["answerable"] == mask.count(True)
        assert metrics["accuracy"] == pytest.approx(metrics["correct"] / len(exs))
        assert metrics["accuracy_answerable"] == pytest.approx(metrics["correct"] / metrics["answerable"])
        assert metrics["latency_ms_per_question"] > 0
        assert {"accuracy", "n", "unparseable", "latency_ms_per_question", "too_long"} <= set(metrics)
        for ex, ok, rec in zip(exs, mask, records):
            assert rec["question"] == ex.question
            if ok:
                # the length-sorted evaluation maps every answer back to its question
                assert rec["output"] == m.generate([ex])[0].text and "too_long" not in rec
            else:
                assert rec["too_long"] is True and rec["correct"] is False and rec["output"] is None
    # batched evaluation (several questions per batch) gives the same counts
    metrics4, _ = evaluate_ood(cot, exs, batch_size=4)
    assert (metrics4["n"], metrics4["too_long"]) == (len(exs), fitting_mask(cot, exs, 4).count(False))


def _bench_cfg(eval_sets):
    train = TrainConfig(batch_size=8, lr=2e-3, warmup_steps=1, log_every=5, eval_every=0, eval_batch_size=50, max_steps=3)
    return BenchConfig(
        task=TaskConfig(n_train=64, n_valid=4, n_test=6), model=ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=CONTEXT),
        train=train, entries=[BenchEntry("cot", "cot", {"max_new_tokens": 16}), BenchEntry("nocot", "nocot")],
        eval_batch_size=4, latency_repeats=1, test_limit=6, valid_limit=4, eval_sets=eval_sets)


def test_run_bench_writes_ood_section(tmp_path):
    sets = parse_eval_sets([f"{n}={FIXTURES / f}" for n, f in SETS.items()])
    res = run_bench(_bench_cfg(sets), tmp_path / "b", progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(saved["ood"]) == set(res["ood"]) == set(SETS)
    models = {m: load_method(tmp_path / "b" / m / "model") for m in ("cot", "nocot")}
    for name, n in (("svamp", 3), ("gsmhard", 4), ("multiarith", 2), ("asdiv", 2)):
        examples = load_dataset(str(FIXTURES / SETS[name]), "test")
        for method in ("cot", "nocot"):
            row = saved["ood"][name][method]
            assert row["n"] == n and row["source"] == str(FIXTURES / SETS[name])
            recs = json.loads((tmp_path / "b" / method / f"ood-{name}.json").read_text())
            assert len(recs) == n and sum(bool(r.get("too_long")) for r in recs) == row["too_long"]
            assert row["accuracy"] == sum(bool(r["correct"]) for r in recs) / n  # too-long questions count as wrong
            # the saved model evaluated again here gives the row's numbers
            again, _ = evaluate_ood(models[method], examples, batch_size=4)
            assert (again["accuracy"], again["too_long"], again["n"]) == (row["accuracy"], row["too_long"], row["n"])
    # the 280-byte GSM-Hard question does not fit a 128-position context: counted, not fatal
    assert saved["ood"]["gsmhard"]["cot"]["too_long"] >= 1
    assert saved["methods"]["cot"]["n"] == 6  # the in-distribution evaluation is unchanged


def test_bad_eval_set_fails_before_training(tmp_path):
    with pytest.raises(DataError, match="evaluation set 'x'"):
        run_bench(_bench_cfg([EvalSet("x", str(tmp_path / "nope.jsonl"))]), tmp_path / "b", progress=False, log=lambda s: None)
    assert not (tmp_path / "b" / "cot").exists()


def test_demo_cli_rejects_malformed_eval_set(tmp_path, capsys):
    from latentreason.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demo", "--quick", "--out", str(tmp_path / "d"), "--eval-set", "=x.json"])
    assert e.value.code == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
