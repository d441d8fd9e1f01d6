"""The benchmark scripts run end to end (tiny sizes) and print their ratios."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("script,args,ratios", [
    ("codi_cost.py", ["--batch-size", "2", "--repeats", "1", "--n-latent", "2", "--infer-batch", "1,2"],
     ["CODI / CoT", "thought / bare", "token / bare"]),
    ("coconut_cost.py", ["--batch-size", "2", "--repeats", "1"], ["Coconut / CoT"]),
    ("decode_speed.py", ["--batch-size", "4", "--questions", "8", "--new-tokens", "6", "--repeats", "1"], []),
    ("attention_reads.py", ["--batch", "2", "--length", "8", "--capacity", "16", "--layers", "2", "--repeats", "1",
                            "--stream", "1048576"], ["layers / one layer"]),
])
def test_benchmark_script_prints_ratios(script, args, ratios):
    r = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ratios:
        m = re.search(re.escape(name) + r" = (\d+\.\d+)x", r.stdout)
        assert m and float(m.group(1)) > 0, (name, r.stdout)
    if script == "decode_speed.py":  # the cached batched decoder gives the same tokens as model.generate
        assert re.search(r"ratio \(ours / generate\): \d+\.\d+x\s+identical tokens: True", r.stdout), r.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_scale_prints_a_row_per_configuration_and_refuses_checkpointed_codi():
    """One-layer GPT-2-small shape: CoT-SFT and CODI, LoRA, float32, checkpointing off and on. Every
    measured row has a step time and a peak memory; CODI under checkpointing is refused with its reason
    (transformers' checkpointed layers drop the KV cache the latent loop needs)."""
    r = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--models", "gpt2-small", "--tuning", "lora",
                        "--precision", "fp32", "--layers", "1", "--batch-size", "1", "--steps", "1", "--threads", "1"],
                       capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CODI loss changes under gradient checkpointing: True" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| gpt2-small")]
    assert len(rows) == 4, r.stdout
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if cells[1] == "CODI" and cells[4] == "on":
            assert "n/a" in ln and "KV cache" in ln
        else:
            assert float(cells[7]) > 0 and float(cells[8]) > 0, ln


@pytest.mark.parametrize("script", ["vs_official.py", "parity/make_golden.py"])
def test_official_code_scripts_explain_themselves(script, tmp_path):
    """They need local checkouts of the official repositories: --help says so, a missing one is named."""
    r = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--official-dir" in r.stdout and "facebookresearch/coconut" in r.stdout
    r = subprocess.run([sys.executable, str(BENCH / script), "--official-dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and str(tmp_path / "coconut") in r.stderr and "missing" in r.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_system15_scale_exits_where_told_and_prints_ratios():
    """Constant routers: every latent step leaves before --exit-layer, so it runs exactly that many layers; the
    shortcuts-off row runs them all; both decode the same number of forward passes."""
    r = subprocess.run([sys.executable, str(BENCH / "system15_scale.py"), "--n-layer", "3", "--n-embd", "32", "--n-head", "2",
                        "--exit-layer", "1", "--questions", "3", "--rounds", "1", "--new-tokens", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| ([^|]+?) \| (\d+\.\d+) \| (\d+\.\d+) \| \d+\.\d+ \| (\d+\.\d+)× \| \d+\.\d+ \| (\d+\.\d+)× \|$", r.stdout, re.M)}
    off, s15 = rows["shortcuts off (CODI)"], rows["System-1.5"]
    assert float(off[0]) == 3.0 and float(s15[0]) == 1.0 and off[1] == s15[1]
    assert float(off[2]) == 1.0 and float(s15[2]) > 0 and float(s15[3]) > 0


def _write_run(d: Path, rows: list[dict], preds: list[dict]) -> None:
    import json

    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "predictions.json").write_text(json.dumps(preds))


def test_learning_curve_and_digit_accuracy_read_a_multi_seed_run(tmp_path):
    """The two scripts the reproduction docs are made with: one column per seed, digits least significant first."""
    for seed, acc in ((0, 0.5), (1, 0.25)):
        _write_run(tmp_path / f"seed-{seed}" / "icot",
                   [{"step": 50, "type": "train", "loss": 0.7},
                    {"step": 100, "type": "stage_end", "valid_accuracy": acc, "valid_mean_reasoning_tokens": 3.0, "stage": "1"},
                    {"step": 200, "type": "final", "valid_accuracy": acc, "valid_mean_reasoning_tokens": 0, "stage": "all"}],
                   [{"gold": "1 2 3", "prediction": "1 2 4"}, {"gold": "4 5 6", "prediction": "4 0 6"}])
    r = subprocess.run([sys.executable, str(BENCH / "learning_curve.py"), str(tmp_path), "--rows", "icot", "--stages"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "| 100 | 1 | 0.500 / 3.0 / 0.700 | 0.250 / 3.0 / 0.700 |" in r.stdout
    r = subprocess.run([sys.executable, str(BENCH / "digit_accuracy.py"), str(tmp_path), "--rows", "icot"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "| icot | seed-0 | 1.000 | 0.500 | 0.500 |" in r.stdout


@pytest.mark.parametrize("cap", [{"gate_max_steps": 750}, {"gate_deadline": 9000}])
def test_learning_curve_stage_steps_counts_each_removal_and_marks_the_cap_and_the_running_stage(tmp_path, cap):
    """``--stage-steps``: steps between stage ends (the gated iCoT table), bold where a stage ended below the gate
    (its cap: gate_max_steps or gate_deadline's share), the unfinished stage as its last accuracy "after" its steps
    so far."""
    import json

    run = tmp_path / "gated"
    _write_run(run, [{"step": 250, "type": "stage_end", "valid_accuracy": 0.95, "stage": "0"},
                     {"step": 500, "type": "eval", "valid_accuracy": 0.4, "stage": "1"},
                     {"step": 1000, "type": "stage_end", "valid_accuracy": 0.6, "stage": "1"},
                     {"step": 1250, "type": "eval", "valid_accuracy": 0.91, "stage": "2"},
                     {"step": 1250, "type": "stage_end", "valid_accuracy": 0.91, "stage": "2"},
                     {"step": 1500, "type": "eval", "valid_accuracy": 0.3, "stage": "3"},
                     {"step": 1510, "type": "train", "loss": 0.1, "elapsed_s": 99.4}], [])
    (run / "run_config.json").write_text(json.dumps({"method_args": {"removal_gate": 0.9, **cap}}))
    r = subprocess.run([sys.executable, str(BENCH / "learning_curve.py"), str(run), "--stage-steps"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "| gated | 250 (0.95) | **750 (0.60)** | 250 (0.91) | 0.30 after 250… | 1,510 | 99 |" in r.stdout
    twin = tmp_path / "seed-1" / "gated"  # the same row of another seed: each named with its parent
    import shutil
    shutil.copytree(run, twin)
    r = subprocess.run([sys.executable, str(BENCH / "learning_curve.py"), str(run), str(twin), "--stage-steps"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"| {tmp_path.name}/gated | 250 (0.95)" in r.stdout and "| seed-1/gated | 250 (0.95)" in r.stdout


def test_official_environment_setup_clones_local_mirrors_and_shares_only_torch(tmp_path):
    """``--setup`` without GitHub or the PyTorch index: clones from the given mirrors (the Python files at the
    pinned commits) and gives both environments this interpreter's torch through a folder that links torch and
    its dependencies only (an old transformers must not see this environment's transformers, hub or kernels)."""
    r = subprocess.run([sys.executable, str(BENCH / "vs_official.py"), "--setup", str(tmp_path / "off"), "--dry-run",
                        "--coconut-repo", "/m/coconut", "--codi-repo", "/m/codi", "--share-torch"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "git clone --quiet --no-checkout /m/coconut" in out and "git clone --quiet --no-checkout /m/codi" in out
    assert "checkout --quiet 27273cb -- *.py" in out and "checkout --quiet 4fd88d4 -- *.py" in out
    assert "download.pytorch.org" not in out and "github.com" not in out
    assert out.count("zz_shared_torch.pth") == 2 and "transformers==4.46.2" in out and "transformers==4.52.4" in out
    assert not (tmp_path / "off").exists()  # a dry run changes nothing

    import importlib.util

    spec = importlib.util.spec_from_file_location("vs_official", BENCH / "vs_official.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    linked = {p.name for p in mod.link_torch(tmp_path / "shared").iterdir()}
    assert "torch" in linked and any(n.startswith("torch-") and n.endswith(".dist-info") for n in linked)
    assert {"sympy", "filelock"} <= linked
    assert not {"transformers", "huggingface_hub", "kernels", "latentreason"} & linked


def test_icot_positions_scores_each_piece_and_names_cot_tokens_from_the_removed_count():
    """benchmarks/icot_positions.py: right-share per whitespace piece (a short or missing prediction is wrong there),
    positions named by their index in the full CoT, then ``####`` and the answer digits."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("icot_positions", BENCH / "icot_positions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    golds = ["7 ) #### 1 2", "3 ) #### 4 5"]
    assert mod.position_accuracy(golds, ["7 ) #### 1 9", "3 )"]) == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert mod.position_names(golds[0], 32) == ["CoT token 33", "CoT token 34", "####", "answer 0", "answer 1"]
    assert mod.position_names("#### 4", 46) == ["####", "answer 0"]


def test_grow_layers_inserts_identity_blocks_that_leave_the_logits_unchanged(tmp_path):
    """benchmarks/grow_layers.py: a 2-block checkpoint grown after block 0 has 3 blocks and the same logits; the new
    block is block 0's copy with both output projections zero."""
    import torch
    from safetensors.torch import load_file

    from conftest import tiny_backbone
    from latentreason.methods.cot import CoT
    from latentreason.training.checkpoint import load_method, save_method

    src = tmp_path / "src"
    save_method(CoT(tiny_backbone("tiny-gpt2", n_layer=2)), src)
    r = subprocess.run([sys.executable, str(BENCH / "grow_layers.py"), str(src), str(tmp_path / "grown"), "--after", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_method(src), load_method(tmp_path / "grown")
    assert b.model.config.n_layer == 3
    ids = torch.randint(0, a.model.config.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.allclose(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits, atol=1e-5)
    w = load_file(str(tmp_path / "grown" / "model.safetensors"))
    assert not w["transformer.h.1.mlp.c_proj.weight"].any() and not w["transformer.h.1.attn.c_proj.bias"].any()
    assert torch.equal(w["transformer.h.1.attn.c_attn.weight"], w["transformer.h.0.attn.c_attn.weight"])


def test_grow_layers_widens_the_mlps_without_changing_the_logits(tmp_path):
    """benchmarks/grow_layers.py --mlp-width: every block's MLP gets new hidden units (random in, zero out); the
    widened model's logits equal the original's and its config says the new width."""
    import torch
    from safetensors.torch import load_file

    from conftest import tiny_backbone
    from latentreason.methods.cot import CoT
    from latentreason.training.checkpoint import load_method, save_method

    src = tmp_path / "src"
    save_method(CoT(tiny_backbone("tiny-gpt2", n_layer=2)), src)
    d = load_method(src).model.config.n_embd
    r = subprocess.run([sys.executable, str(BENCH / "grow_layers.py"), str(src), str(tmp_path / "wide"), "--after", "",
                        "--mlp-width", str(8 * d)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_method(src), load_method(tmp_path / "wide")
    assert b.model.config.n_layer == 2 and b.model.config.n_inner == 8 * d
    ids = torch.randint(0, a.model.config.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.allclose(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits, atol=1e-5)
    w = load_file(str(tmp_path / "wide" / "model.safetensors"))
    assert w["transformer.h.0.mlp.c_fc.weight"].shape == (d, 8 * d)
    assert not w["transformer.h.1.mlp.c_proj.weight"][4 * d:].any() and w["transformer.h.1.mlp.c_fc.weight"][:, 4 * d:].any()
