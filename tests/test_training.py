import json

import pytest
import torch

from latentreason.errors import CheckpointError, ConfigError
from latentreason.training.api import build_method
from latentreason.training.checkpoint import load_method, save_method
from latentreason.training.run import run_training
from latentreason.training.run_config import load_run_config


def _cfg(tmp_path, method="cot", steps=30, **extra):
    over = [
        f"method={method}",
        f"out_dir={tmp_path / method}",
        "model.n_layer=2",
        "model.n_embd=64",
        "model.n_head=2",
        f"train.max_steps={steps}",
        "train.batch_size=32",
        "train.lr=3e-3",
        "train.warmup_steps=5",
        "train.log_every=5",
        "data.task.n_train=600",
        "data.task.n_valid=20",
        "data.task.n_test=20",
        "data.valid_limit=20",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_run_config(overrides=over)


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_short_training_lowers_loss_and_writes_results(tmp_path):
    cfg = _cfg(tmp_path, steps=40)
    res = run_training(cfg, progress=False)
    losses = _losses(tmp_path / "cot")
    assert losses[-1] < 0.6 * losses[0]
    saved = json.loads((tmp_path / "cot" / "results.json").read_text())
    assert saved["test"]["n"] == 20 and 0.0 <= saved["test"]["accuracy"] <= 1.0
    assert saved["train"]["steps"] == 40 and saved["config"]["method"] == "cot"
    assert (tmp_path / "cot" / "model" / "model.safetensors").exists()
    assert res["test"]["mean_reasoning_tokens"] >= 0


def test_checkpoint_reload_strict_same_logits(tmp_path):
    cfg = _cfg(tmp_path, steps=3)
    method = build_method(cfg)
    save_method(method, tmp_path / "ck")
    loaded = load_method(tmp_path / "ck")
    x = torch.tensor([method.tokenizer("1+2*3\n<<1+2=3>>").input_ids])
    method.eval()
    assert torch.equal(method.model(input_ids=x).logits, loaded.model(input_ids=x).logits)
    # same with a llama backbone
    cfg2 = _cfg(tmp_path, steps=3, **{"model.name": "tiny-llama"})
    m2 = build_method(cfg2)
    save_method(m2, tmp_path / "ck2")
    l2 = load_method(tmp_path / "ck2")
    m2.eval()
    assert torch.equal(m2.model(input_ids=x).logits, l2.model(input_ids=x).logits)


def test_strict_load_rejects_wrong_method_and_shapes(tmp_path):
    cfg = _cfg(tmp_path, steps=3)
    method = build_method(cfg)
    save_method(method, tmp_path / "ck")
    with pytest.raises(CheckpointError, match="of method 'cot', expected 'nocot'"):
        load_method(tmp_path / "ck", expected_method="nocot")
    # corrupt the vocabulary size in config.json: shapes no longer match the weights
    c = json.loads((tmp_path / "ck" / "config.json").read_text())
    c["vocab_size"] = c["vocab_size"] + 5
    (tmp_path / "ck" / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError):
        load_method(tmp_path / "ck")


def test_init_from_honours_the_runs_weight_dtype_and_attention_kernel(tmp_path):
    """model.dtype and model.attn_implementation apply to init_from weights as to a fresh backbone (both were
    dropped once: an iCoT run from a CoT model under bf16 autocast kept SDPA, ~1.6x slower per step on CPU than
    eager attention in bf16)."""
    save_method(build_method(_cfg(tmp_path, steps=3)), tmp_path / "ck")
    plain = build_method(_cfg(tmp_path, method="icot", steps=3, init_from=tmp_path / "ck"))
    assert plain.model.config._attn_implementation == "sdpa" and plain.model.dtype == torch.float32
    asked = build_method(_cfg(tmp_path, method="icot", steps=3, init_from=tmp_path / "ck",
                              **{"model.attn_implementation": "eager", "model.dtype": "bfloat16"}))
    assert asked.model.config._attn_implementation == "eager" and asked.model.dtype == torch.bfloat16
    x = torch.tensor([plain.tokenizer("1+2*3\n").input_ids])
    plain.eval(); asked.eval()
    torch.testing.assert_close(asked.model(input_ids=x).logits.float(), plain.model(input_ids=x).logits,
                               atol=0.1, rtol=0.05)  # the same weights, rounded to bf16


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    method = build_method(_cfg(tmp_path, steps=3))
    save_method(method, tmp_path / "ck")
    f = tmp_path / "ck" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="ck"):
        load_method(tmp_path / "ck")


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"train.lrr: unknown key"):
        load_run_config(overrides=["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"train.batch_size: expected an integer"):
        load_run_config(overrides=["train.batch_size=abc"])
    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 1"):
        load_run_config(overrides=["train.batch_size=0"])
    # the method and its options are checked when the config is read (before any data or model)
    with pytest.raises(ConfigError, match=r"--set method=nope: .*unknown method 'nope'; valid methods: .*cot, nocot"):
        load_run_config(overrides=["method=nope"])
    with pytest.raises(ConfigError, match=r"--set method_args.bogus=1: method_args.bogus: unknown key"):
        load_run_config(overrides=["method_args.bogus=1"])
    with pytest.raises(ConfigError, match=r"method_args.n_latent must be >= 0"):
        load_run_config(overrides=["method=codi", "method_args.n_latent=-1"])


def test_yaml_no_and_off_stay_words_where_a_string_is_wanted(tmp_path):
    """PyYAML reads yes/no/on/off as booleans (YAML 1.1): `--set train.mixed_precision=no`, the documented value,
    failed with "expected a string, got False". Configs now read only true/false as booleans; true/false fields
    still take the words."""
    assert load_run_config(overrides=["train.mixed_precision=no"]).train.mixed_precision == "no"
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  mixed_precision: no\nmodel:\n  dropout: 0.0\nmethod_args:\n  keep_position: on\n"
                 "method: icot\n", encoding="utf-8")
    cfg = load_run_config(f)
    assert cfg.train.mixed_precision == "no" and cfg.method_args["keep_position"] in (True, "on")
    from latentreason.methods.base import method_config
    from latentreason.methods.icot import ICoT

    assert method_config(ICoT, {"keep_position": "off"}).keep_position is False
    assert method_config(ICoT, {"keep_position": "yes"}).keep_position is True
    with pytest.raises(ConfigError, match="expected true or false"):
        method_config(ICoT, {"keep_position": "maybe"})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_continues_same_loss_trace(tmp_path):
    import shutil

    full = _cfg(tmp_path / "a", steps=12, **{"train.save_every": 6, "train.keep_checkpoints": 5})
    run_training(full, progress=False, evaluate_test=False)
    first = _losses(tmp_path / "a" / "cot")
    # a copy of the run as it was at step 6: resume must reproduce steps 7..12 exactly
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "cot" / "checkpoints" / "step-00000012")
    shutil.rmtree(tmp_path / "b" / "cot" / "model")
    cont = _cfg(tmp_path / "b", steps=12)
    run_training(cont, progress=False, evaluate_test=False, resume=True)
    second = _losses(tmp_path / "b" / "cot")
    assert len(first) == len(second) == 12 // 5 + 1
    assert second == pytest.approx(first, rel=1e-5, abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fused_optimizer_and_compiled_training_step_follow_the_default_loss_trace(tmp_path):
    """train.fused_optimizer and train.compile change how a step runs, not what it computes: the same losses as
    PyTorch's default AdamW loop in eager mode, to float rounding, and validation still runs on the eager module."""
    extra = {"train.eval_every": 6, "train.log_every": 1}
    run_training(_cfg(tmp_path / "eager", steps=12, **extra), progress=False, evaluate_test=False)
    fast = _cfg(tmp_path / "fast", steps=12, **extra, **{"train.fused_optimizer": "true", "train.compile": "true"})
    assert fast.train.fused_optimizer and fast.train.compile
    run_training(fast, progress=False, evaluate_test=False)
    a, b = _losses(tmp_path / "eager" / "cot"), _losses(tmp_path / "fast" / "cot")
    assert len(a) == len(b) == 12 and a[-1] < 0.8 * a[0]
    assert b == pytest.approx(a, rel=2e-3)
    evals = [json.loads(line) for line in (tmp_path / "fast" / "cot" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["type"], r["step"]) for r in evals if r["type"] in ("eval", "final")] == [("eval", 6), ("final", 12)]


def test_recipe_configs_load_and_validate():
    from pathlib import Path

    from latentreason.methods.base import method_config
    from latentreason.methods.registry import get_method_class

    from latentreason.config import from_dict, load_yaml
    from latentreason.experiments.bench_config import BenchConfig

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        if "entries" in load_yaml(f):  # a benchmark config
            from_dict(BenchConfig, load_yaml(f))
            continue
        cfg = load_run_config(f)
        method_config(get_method_class(cfg.method), cfg.method_args)  # presets and options are valid


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tiny_cot_model_learns_the_task_and_nocot_does_not(tmp_path):
    """Behaviour, not plumbing: a tiny model trained from scratch for a few hundred steps solves 2-step
    modular chains with its chain of thought, well above chance (0.10) and above the same model without it."""
    common = {"data.task.n_steps": 2, "data.task.n_train": 8000, "data.task.n_test": 100,
              "train.eval_batch_size": 100, "train.lr": 5e-3, "train.warmup_steps": 10}
    cot = run_training(_cfg(tmp_path, "cot", steps=1200, **common), progress=False)
    assert cot["test"]["n"] == 100 and cot["test"]["accuracy"] >= 0.9, cot["test"]
    nocot = run_training(_cfg(tmp_path, "nocot", steps=1200, **common), progress=False)
    assert nocot["test"]["accuracy"] < cot["test"]["accuracy"] - 0.2, (nocot["test"], cot["test"])


def test_bench_rejects_an_unknown_latency_protocol(tmp_path):
    from latentreason.experiments.bench import run_bench
    from latentreason.experiments.bench_config import BenchConfig, BenchEntry

    cfg = BenchConfig(entries=[BenchEntry("cot", "cot")], latency_protocol="fastest")
    with pytest.raises(ConfigError, match="latency_protocol"):
        run_bench(cfg, tmp_path / "b", log=lambda s: None)
    assert not (tmp_path / "b" / "cot").exists()  # nothing trained


def test_wsd_schedule_and_early_decay_at_a_validation_target(tmp_path):
    from latentreason.training.optim import lr_factor

    lrs = [lr_factor(s, 2, 10, "wsd", 4) for s in range(10)]
    assert lrs[:6] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0] and lrs[6] > lrs[7] > lrs[8] > lrs[9] > 0  # cosine over the last 4
    with pytest.raises(ConfigError, match="decay_at_valid_accuracy"):
        _cfg(tmp_path, **{"train.decay_at_valid_accuracy": 0.5})  # needs schedule=wsd and eval_every
    # a target every model reaches at its first validation: the decay starts there and the run ends early
    cfg = _cfg(tmp_path, steps=40, **{"train.schedule": "wsd", "train.decay_steps": 4, "train.eval_every": 5,
                                      "train.decay_at_valid_accuracy": 0.001, "train.log_every": 1})
    res = run_training(cfg, progress=False, evaluate_test=False)
    rows = [json.loads(line) for line in (tmp_path / "cot" / "metrics.jsonl").read_text().splitlines()]
    starts = [r for r in rows if r["type"] == "decay_start"]
    first = next(r["step"] for r in rows if r["type"] == "eval" and r["valid_accuracy"] >= 0.001)
    assert len(starts) == 1 and starts[0]["step"] == first and starts[0]["total_steps"] == first + 4 < 40
    assert res["train"]["steps"] == first + 4
    lr = [r["lr"] for r in rows if r["type"] == "train"]
    assert lr[first - 1] == pytest.approx(3e-3) and lr[first] < lr[first - 1] and lr[-1] < lr[first]  # the decay


def test_turn_order_rotates_every_question_and_round():
    """At batch 1 every entry goes first equally often over a round, and a round starts where the last began + 1."""
    from latentreason.experiments.latency import turn_order

    names = ["a", "b", "c"]
    firsts = [turn_order(names, i, 0)[0] for i in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    assert turn_order(names, 0, 1) == ["b", "c", "a"] and turn_order(names, 2, 1) == ["a", "b", "c"]
    assert all(sorted(turn_order(names, i, r)) == names for i in range(4) for r in range(3))


@pytest.mark.parametrize("dtype,noted", [("float32", True), ("bfloat16", False)])
def test_lora_under_autocast_over_float32_weights_is_noted(tmp_path, dtype, noted):
    """bf16 autocast over frozen float32 weights keeps a bf16 copy of the base model per pass (benchmarks/scale.py:
    CODI's LoRA recipe on a Llama-3.2-1B shape, 24.6 GB against 4.5 GB with the base in bf16): the run says so."""
    run_training(_cfg(tmp_path / "first", steps=1, **{"train.mixed_precision": "no"}), progress=False,
                 evaluate_test=False)  # a run of another precision first, in the same process (as in a notebook)
    logs = []
    cfg = _cfg(tmp_path, method="codi", steps=1, **{"model.lora_r": 4, "model.dtype": dtype,
                                                     "train.mixed_precision": "bf16", "train.eval_every": 0})
    run_training(cfg, progress=False, evaluate_test=False, log=logs.append)
    assert any("autocast over frozen float32 weights" in s and "model.dtype=bfloat16" in s for s in logs) == noted


def test_gated_icot_needs_validation_and_a_stage_ending_at_a_validation_is_not_validated_or_logged_twice(
        tmp_path, monkeypatch):
    import latentreason.training.trainer as trainer_mod

    with pytest.raises(ConfigError, match="removal_gate"):
        run_training(_cfg(tmp_path, method="icot", steps=4, **{"method_args.removal_gate": 0.5, "train.eval_every": 0}),
                     progress=False, evaluate_test=False)
    calls = []
    real = trainer_mod.validation_metrics
    monkeypatch.setattr(trainer_mod, "validation_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = _cfg(tmp_path, method="icot", steps=12, **{"method_args.removal_gate": 1.0, "method_args.gate_max_steps": 4,
                                                      "train.eval_every": 4})
    logs: list[str] = []
    run_training(cfg, progress=False, evaluate_test=False, log=logs.append)
    rows = [json.loads(line) for line in (tmp_path / "icot" / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["type"], r.get("stage")) for r in rows if r["type"] != "train"]
    # a tiny model after 4 steps is below the gate: the amount grows at gate_max_steps, each stage's end coincides
    # with a periodic validation of the same weights, which its row reuses
    assert evals == [(4, "eval", "0"), (4, "stage_end", "0"), (8, "eval", "1"), (8, "stage_end", "1"), (12, "final", "2")]
    assert len(calls) == 3
    lines = [s for s in logs if "valid accuracy" in s]  # one line per validation run, none for a reused one
    assert [s.split(":")[0] for s in lines] == ["step 4", "step 8", "step 12"], logs
