"""Seeds in the benchmark: per-seed rows, their summaries, reproducibility, and stale-code retraining."""

import json
from statistics import mean, stdev

import pytest

from latentreason.config import from_dict
from latentreason.errors import ConfigError
from latentreason.experiments import bench as bench_mod
from latentreason.experiments.bench import run_bench
from latentreason.experiments.bench_config import BenchConfig
from latentreason.experiments.seeds import aggregate, gap_closed, mean_tree, parse_seeds

TINY = {
    "task": {"n_train": 300, "n_valid": 8, "n_test": 12},
    "model": {"n_layer": 1, "n_embd": 32, "n_head": 2},
    "train": {"batch_size": 16, "lr": 0.003, "warmup_steps": 2, "log_every": 5},
    "entries": [
        {"name": "cot", "method": "cot", "train": {"max_steps": 12}},
        {"name": "nocot", "method": "nocot", "train": {"max_steps": 12}},
    ],
    "eval_batch_size": 12,
    "valid_limit": 8,
    "latency_repeats": 2,
    "system15_grid": 0,
}


def _cfg(**kw) -> BenchConfig:
    return from_dict(BenchConfig, {**TINY, **kw})


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds(2) == [0, 1]
    assert parse_seeds("0,4,7") == [0, 4, 7] and parse_seeds("7,") == [7] and parse_seeds(None, 5) == [5]
    for bad in ("0", "x", "1,1", "-1,2", "a,b"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_aggregate_means_spread_and_gap():
    def run(cot, nocot, codi, lat):
        return {"task": {"name": "t"}, "methods": {
            "cot": {"accuracy": cot, "latency_ms_per_question": 2.0, "method": "cot", "n": 10},
            "nocot": {"accuracy": nocot, "latency_ms_per_question": 1.0, "method": "nocot", "n": 10},
            "codi": {"accuracy": codi, "latency_ms_per_question": lat, "speedup_vs_cot": 2.0 / lat, "method": "codi",
                     "n": 10, "latency_rounds_ms": [lat, lat]}},
            "adaptive": {"codi_fixed": {"accuracy": codi}, "thought_reduction": 0.3}, "total_seconds": 10.0}

    res = aggregate([(0, run(1.0, 0.2, 0.9, 1.0)), (3, run(0.9, 0.1, 0.5, 0.5))])
    assert res["seeds"] == [0, 3] and res["total_seconds"] == 20.0
    codi = res["methods"]["codi"]
    assert codi["accuracy"] == pytest.approx(0.7) == codi["accuracy_mean"]
    assert codi["accuracy_std"] == pytest.approx(stdev([0.9, 0.5])) and codi["accuracy_min"] == 0.5
    assert codi["n_seeds"] == 2 and [p["seed"] for p in codi["per_seed"]] == [0, 3]
    # the gap is each seed's own: (0.9 - 0.2) / 0.8 and (0.5 - 0.1) / 0.8
    assert [p["gap_closed"] for p in codi["per_seed"]] == pytest.approx([0.875, 0.5])
    assert codi["gap_closed_min"] == pytest.approx(0.5)
    assert codi["speedup_vs_cot"] == pytest.approx(mean([2.0, 4.0]))
    assert codi["n"] == 10 and codi["method"] == "codi"  # equal integers stay, strings are kept
    assert res["adaptive"]["thought_reduction"] == pytest.approx(0.3)
    assert [p["seed"] for p in res["adaptive"]["codi_fixed"]["per_seed"]] == [0, 3]
    assert gap_closed(0.5, 0.5, 0.5) is None and mean_tree([1, None, 3]) == 2


def test_per_seed_rows_and_summaries_agree_and_seeds_differ(tmp_path):
    res = run_bench(_cfg(), tmp_path / "b", seeds=[0, 1], progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["seed_dirs"] == {"0": "seed-0", "1": "seed-1"}
    for name, row in saved["methods"].items():
        per = row["per_seed"]
        assert [p["seed"] for p in per] == [0, 1] and row["n_seeds"] == 2
        for key in ("accuracy", "mean_generated_tokens", "speedup_vs_cot"):
            assert row[key] == pytest.approx(mean(p[key] for p in per)), (name, key)
        assert row["accuracy_mean"] == pytest.approx(row["accuracy"])
        assert row["accuracy_std"] == pytest.approx(stdev(p["accuracy"] for p in per))
        assert row["accuracy_min"] == min(p["accuracy"] for p in per)
        for s in (0, 1):  # each seed's own results.json holds the same per-seed values
            own = json.loads((tmp_path / "b" / f"seed-{s}" / "results.json").read_text())
            assert own["seeds"] == [s] and own["methods"][name]["accuracy"] == per[s]["accuracy"]
            assert own["methods"][name]["per_seed"][0]["seed"] == s
    assert res["methods"]["cot"]["accuracy"] == saved["methods"]["cot"]["accuracy"]
    # the seed changes training: different losses (initialisation and data order)
    loss = {s: json.loads((tmp_path / "b" / f"seed-{s}" / "cot" / "done.json").read_text())["train"]["final_loss"]
            for s in (0, 1)}
    assert loss[0] != loss[1]
    # the same seed twice: identical metrics and losses
    again = run_bench(_cfg(), tmp_path / "c", seeds=[1], progress=False, log=lambda s: None)
    redo = json.loads((tmp_path / "c" / "cot" / "done.json").read_text())["train"]["final_loss"]
    assert redo == loss[1]
    for name in ("cot", "nocot"):
        a, b = again["methods"][name]["per_seed"][0], saved["methods"][name]["per_seed"][1]
        assert {k: a[k] for k in ("accuracy", "mean_generated_tokens")} == {k: b[k] for k in ("accuracy", "mean_generated_tokens")}
    preds = [json.loads((d / "cot" / "predictions.json").read_text()) for d in (tmp_path / "c", tmp_path / "b" / "seed-1")]
    assert [p["output"] for p in preds[0]] == [p["output"] for p in preds[1]]


def test_stale_code_identity_retrains_unless_reuse_stale(tmp_path, monkeypatch):
    cfg = _cfg(entries=[TINY["entries"][0]])
    logs: list[str] = []
    run_bench(cfg, tmp_path / "b", progress=False, log=logs.append)
    done = tmp_path / "b" / "cot" / "done.json"
    first = json.loads(done.read_text())
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["code"]["source_hash"] == first["code"]["source_hash"] and "git_revision" in saved["code"]
    logs.clear()
    run_bench(cfg, tmp_path / "b", progress=False, log=logs.append)
    assert any("reusing the finished run" in s for s in logs)
    assert json.loads(done.read_text())["run_id"] == first["run_id"]

    real = bench_mod.code_identity()
    monkeypatch.setattr(bench_mod, "code_identity", lambda: {**real, "source_hash": "0123456789abcdef"})
    logs.clear()
    res = run_bench(cfg, tmp_path / "b", progress=False, log=logs.append, reuse_stale=True)
    assert any("--reuse-stale" in s and "reusing" in s for s in logs)
    assert res["methods"]["cot"]["per_seed"][0] and res["methods"]["cot"].get("code_stale") is True
    assert json.loads(done.read_text())["run_id"] == first["run_id"]
    logs.clear()
    run_bench(cfg, tmp_path / "b", progress=False, log=logs.append)
    assert any("trained by other code" in s and "retraining" in s for s in logs)
    retrained = json.loads(done.read_text())
    assert retrained["run_id"] != first["run_id"] and retrained["code"]["source_hash"] == "0123456789abcdef"


def test_results_record_the_code_identity_read_before_training_not_after(tmp_path, monkeypatch):
    """A commit made while a benchmark trains is not its revision: results.json (code and env) and done.json carry
    the identity read when the seed's benchmark started."""
    real = bench_mod.code_identity()
    calls = iter(range(1000))
    monkeypatch.setattr(bench_mod, "code_identity", lambda: {**real, "git_revision": f"rev-{next(calls)}"})
    done_file = tmp_path / "b" / "cot" / "done.json"
    monkeypatch.setattr(bench_mod, "env_info", lambda device: {"read_after_training": done_file.exists()})
    res = run_bench(_cfg(entries=[TINY["entries"][0]]), tmp_path / "b", progress=False, log=lambda s: None)
    done = json.loads((tmp_path / "b" / "cot" / "done.json").read_text())
    assert res["code"]["git_revision"] == done["code"]["git_revision"] == "rev-0"
    assert res["env"] == {"read_after_training": False}  # the environment (its git revision too) is read before


def test_modules_added_to_a_loaded_model_follow_the_seed(tmp_path):
    """init_from: CODI's projection (new on a CoT model) is drawn from the run's seed, whatever ran before."""
    import torch

    from latentreason.training.api import build_method
    from latentreason.training.run_config import RunConfig

    cfg = _cfg(entries=[TINY["entries"][0]])
    run_bench(cfg, tmp_path / "b", progress=False, log=lambda s: None)
    rc = {"method": "codi", "init_from": str(tmp_path / "b" / "cot" / "model"), "model": TINY["model"]}
    a = build_method(from_dict(RunConfig, {**rc, "train": {"seed": 4}}))
    torch.rand(100)  # the process's random state moves on
    b = build_method(from_dict(RunConfig, {**rc, "train": {"seed": 4}}))
    c = build_method(from_dict(RunConfig, {**rc, "train": {"seed": 5}}))
    assert torch.equal(a.projection.fc1.weight, b.projection.fc1.weight)
    assert not torch.equal(a.projection.fc1.weight, c.projection.fc1.weight)


def test_batched_latency_protocol_and_bad_latency_settings(tmp_path):
    """latency_batch_size > 1 times whole passes over the first latency_questions; 0 is refused by name."""
    res = run_bench(_cfg(latency_batch_size=5, latency_questions=10), tmp_path / "b", progress=False, log=lambda s: None)
    for row in res["methods"].values():
        assert row["batch_size"] == 5 and row["latency_questions"] == 10 and len(row["latency_rounds_ms"]) == 2
        assert row["batched_batch_size"] == 12 and row["batched_ms_per_question"] > 0
    with pytest.raises(ConfigError, match="latency_batch_size"):
        run_bench(_cfg(latency_batch_size=0), tmp_path / "c", progress=False, log=lambda s: None)


def test_batch_one_latency_takes_turns_per_question(tmp_path, monkeypatch):
    """SPEC §5's protocol (latency_batch_size 1): the entries take turns per question, the order rotated."""
    from latentreason.experiments import latency

    calls: list[tuple[str, int]] = []
    real = latency.run_generation

    def spy(method, examples, batch_size, *a, **k):
        calls.append((type(method).__name__, len(examples), batch_size))
        return real(method, examples, batch_size, *a, **k)

    monkeypatch.setattr(latency, "run_generation", spy)
    res = run_bench(_cfg(latency_batch_size=1, latency_questions=3, latency_repeats=1), tmp_path / "b", progress=False,
                    log=lambda s: None)
    timed = calls[2:]  # after one warm-up batch per entry
    assert [c[1:] for c in timed] == [(1, 1)] * 6
    assert [c[0] for c in timed] == ["CoT", "NoCoT", "NoCoT", "CoT", "CoT", "NoCoT"]
    assert all(r["batch_size"] == 1 and r["latency_questions"] == 3 for r in res["methods"].values())
