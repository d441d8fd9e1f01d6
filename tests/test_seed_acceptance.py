"""benchmarks/seed_acceptance.py: every criterion checked per seed, a failing seed makes the exit status 1."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("seed_acceptance", ROOT / "benchmarks" / "seed_acceptance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _seed(codi=0.99, s15_ms=0.8, reduction=0.36):
    hist = {"num_layers": 4, "counts": {"critical": [0, 0, 5, 0, 0], "noncritical": [0, 5, 0, 0, 0]},
            "critical_mean_exit_layer": 2.0, "noncritical_mean_exit_layer": 1.0}
    soft = {m: {"pass_at_k": {"1": p, "8": p}, "js_top1": 0.01, "js_top2": 0.3, "mean_thinking_entropy": 0.1,
                "softness": 0.02, "randomness": 0.001} for m, p in (("vanilla", 0.5), ("dirichlet", 0.7), ("gumbel", 0.8))}
    return {
        "methods": {
            "cot": {"accuracy": 1.0}, "nocot": {"accuracy": 0.1},
            "codi": {"accuracy": codi, "gap_closed": (codi - 0.1) / 0.9, "latency_ms_per_question": 0.9},
            "coconut": {"accuracy": 0.9, "gap_closed": 0.8 / 0.9},
            "system15": {"accuracy": 0.95, "gap_closed": 0.85 / 0.9, "latency_ms_per_question": s15_ms,
                         "mean_layers_per_latent_step": 2.0, "exit_histogram": hist},
        },
        "adaptive": {"thought_reduction": reduction, "accuracy_gap_points": 0.2},
        "soft_thinking": soft,
        "system15_grid": {"shortcut_ablation": {k: {"accuracy": 0.9, "layers_per_latent_step": 2.0, "latency_ms_per_question": 1.0,
                                                    "identical_consecutive_thoughts": 0.0} for k in ("depth", "step", "both")}},
    }


def _run(tmp_path, seeds):
    for s, res in seeds.items():
        (tmp_path / f"seed-{s}").mkdir()
        (tmp_path / f"seed-{s}" / "results.json").write_text(json.dumps(res))
    (tmp_path / "results.json").write_text(json.dumps({"seeds": list(seeds), "seed_dirs": {str(s): f"seed-{s}" for s in seeds}}))
    return tmp_path


def test_all_criteria_hold(tmp_path, capsys):
    run = _run(tmp_path, {0: _seed(), 1: _seed()})
    assert _script().main(["--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "every criterion holds on every seed" in out and "| depth | 2 |" in out


def test_one_failing_seed_fails_the_run(tmp_path, capsys):
    # seed 1: CODI closes 50 % of the gap, System-1.5 slower than CODI, adaptive saves 10 %
    run = _run(tmp_path, {0: _seed(), 1: _seed(codi=0.55, s15_ms=1.0, reduction=0.10)})
    assert _script().main(["--run", str(run)]) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |"))
    assert row.count("✗") == 3
