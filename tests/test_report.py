"""The self-contained HTML report of a run directory (synthetic run, no training)."""

import base64
import json
import re
import shutil
import subprocess

import pytest

from latentreason.errors import DataError
from latentreason.reporting.html import find_grid, png_size
from latentreason.reporting.report import build_report, write_report

WEIRD = 'x<b>&"y"'  # a method name that must be escaped


def _png(path, colour="C0"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 0], color=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def _row(acc, ms, reasoning, latent, method, train_s):
    return {"accuracy": acc, "n": 50, "correct": int(acc * 50), "unparseable": 1, "mean_generated_tokens": reasoning + 7,
            "mean_reasoning_tokens": reasoning, "mean_latent_steps": latent, "mean_forward_passes": reasoning + latent + 7,
            "latency_ms_per_question": ms, "batch_size": 100, "train_seconds": train_s, "train_steps": 40,
            "method": method, "device": "cpu", "dtype": "float32"}


def make_run(root):
    """A run directory shaped like ``latentreason demo``'s, plus the optional sections."""
    methods = {"cot": _row(1.0, 2.5, 24, 0, "cot", 46.9), "nocot": _row(0.156, 0.9, 0, 0, "nocot", 21.0),
               "codi": _row(0.98, 1.4, 0, 5, "codi", 140.9), WEIRD: _row(0.5, 1.0, 3, 2, "coconut", 9.0)}
    for r in methods.values():
        r["speedup_vs_cot"] = 2.5 / r["latency_ms_per_question"]
    results = {
        "task": {"name": "modchain", "n_steps": 4, "modulus": 10},
        "model": {"name": "tiny-gpt2", "n_layer": 4, "n_embd": 128},
        "methods": methods,
        "soft_thinking": {
            "greedy": {"accuracy": 0.9, "pass_at_k": {"1": 0.9, "2": 0.9}, "rouge_l_vs_greedy": 1.0, "js_top1": None, "js_top2": None},
            "dirichlet": {"accuracy": 0.8, "pass_at_k": {"1": 0.8, "2": 0.95}, "rouge_l_vs_greedy": 0.6, "js_top1": 0.01, "js_top2": 0.2,
                          "js_horizon": 2, "mean_thinking_entropy": 0.1234, "softness": 0.0567, "randomness": 0.0089,
                          "model": "cot at step 250"},
            "codi_gumbel": {"accuracy": 0.7, "pass_at_k": {"1": 0.7, "2": 0.75}, "rouge_l_vs_greedy": None, "js_top1": None,
                            "js_top2": None, "extension": "project extension: gumbel noise on codi's continuous thoughts"},
        },
        "ood": {"svamp": {"cot": {"accuracy": 0.01, "n": 1000, "unparseable": 3, "too_long": 12, "latency_ms_per_question": 4.0},
                          "codi": {"accuracy": 0.02, "n": 1000, "unparseable": 0, "too_long": 15, "latency_ms_per_question": 2.0}}},
        "adaptive": {"thresholds": [0.5, 0.9], "codi": [{"threshold": 0.5, "accuracy": 0.7, "mean_latent_steps": 2.5},
                                                         {"threshold": 0.9, "accuracy": 0.9, "mean_latent_steps": 4.1}]},
        "mystery_section": {"alpha": 1, "note": "<script>alert(1)</script>"},
        "env": {"latentreason": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.23.0", "python": "3.11.7"},
        "total_seconds": 321.7,
    }
    (root / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(results))
    for i, name in enumerate(methods):
        d = root / name
        d.mkdir()
        rows = []
        for step in range(10, 110, 10):
            row = {"step": step, "type": "train", "loss": 2.0 / (step / 10 + i), "lr": 1e-3, "tokens_per_s": 1e4, "elapsed_s": step / 10}
            if name == "codi":
                row.update(loss_student=0.5 / step, loss_kd=0.3 / step)
            if name == WEIRD:
                row["stage"] = str(step // 40)
            rows.append(row)
        if name == WEIRD:
            rows += [{"step": 40, "type": "stage_end", "valid_accuracy": 0.3, "stage": "0"},
                     {"step": 60, "type": "eval", "valid_accuracy": 0.4, "stage": "1"},
                     {"step": 80, "type": "stage_end", "valid_accuracy": 0.45, "stage": "1"}]
        rows.append({"step": 100, "type": "final", "valid_accuracy": 0.5 + 0.1 * i})
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 110, "type": "tr')  # cut line
        (d / "run_config.json").write_text(json.dumps({"method": methods[name]["method"], "method_args": {"preset": "x"},
                                                       "train": {"max_steps": 100, "batch_size": 32, "lr": 2e-3},
                                                       "init_from": str(root / "cot" / "model") if name == "codi" else None}))
        (d / "predictions.json").write_text(json.dumps([{"question": "4+7*8", "gold": "5", "output": "4+7=1 #### 5",
                                                         "correct": True}]))
    st = root / "soft_thinking"
    _png(st / "pass_at_k.png")
    _png(st / "rouge_l.png", "C1")
    (st / "soft_thinking.json").write_text(json.dumps({"results": results["soft_thinking"],
                                                       "settings": {"questions": 20, "samples": 2, "ks": [1, 2], "seed": 0}}))
    grid = [{"lambda_depth": d, "lambda_step": s, "accuracy": 0.4 + 0.05 * d + 0.01 * s} for d in (0, 1, 2) for s in (1, 2)]
    (root / "system15_grid.json").write_text(json.dumps({"grid": grid}))
    _png(root / "system15_grid_heatmap.png", "C2")
    _png(root / "adaptive.png", "C3")
    _png(root / "extra_figure.png", "C4")
    (root / "codi" / "probe-modchain.json").write_text(json.dumps({
        "summary": {"n": 2, "top_k": 2, "result_in_any_top1": 0.75},
        "examples": [{"question": "4+7", "output": "#### 1", "results": ["1"],
                      "thoughts": [{"position": "<bot>", "top": [["1", 0.6], ["<x>", 0.2]], "norm": 12.5}]}]}))
    return root


def _attr_values(text, attr):
    return re.findall(rf'\b{attr}\s*=\s*"([^"]*)"', text) + re.findall(rf"\b{attr}\s*=\s*'([^']*)'", text)


def test_report_is_self_contained_and_complete(tmp_path):
    run = make_run(tmp_path / "run")
    path = write_report(run)
    assert path == run / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # self-contained: no script, no external stylesheet, every src an inline PNG, every href an in-page anchor
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text and "url(" not in text
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, re.I)
    srcs = _attr_values(text, "src")
    assert len(srcs) >= 9 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert png_size(base64.b64decode(s.split(",", 1)[1])) is not None
    assert all(h.startswith("#") for h in _attr_values(text, "href"))
    # every method has a row in the comparison table; the odd name is escaped, never raw
    for name in ("cot", "nocot", "codi"):
        assert f'<td class="key">{name}</td>' in text
    assert '<td class="key">x&lt;b&gt;&amp;&quot;y&quot;</td>' in text and WEIRD not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    for col in ("accuracy", "reasoning tokens", "latent steps", "generated tokens", "forward passes", "ms / question",
                "speed-up vs CoT", "train s"):
        assert f"<th>{col}</th>" in text
    assert "2.50×" in text and "46.9" in text  # nocot's speed-up, cot's train time
    for title in ("Comparison", "Out-of-distribution evaluation", "Training", "Soft thinking", "System-1.5: exits and test-time grid",
                  "Thought probing", "Adaptive thinking", "Other results", "Configuration and environment"):
        assert f"<h2>{title}</h2>" in text, title
    assert "pass@2" in text and "12 too long" in text and "mystery_section" in text and "2.13.0+cpu" in text
    assert "result_in_any_top1" in text and "lambda_depth" in text
    # soft thinking: the model studied, the new measures, the project's own rows labelled as such
    for col in ("thinking entropy", "softness", "randomness", "JS to top-1"):
        assert f"<th>{col}</th>" in text, col
    assert '<td class="num">0.123</td><td class="num">0.057</td><td class="num">0.009</td>' in text
    assert "Model studied: cot at step 250." in text and "(h = 2)" in text
    assert '<td class="key">codi_gumbel <em>(project extension)</em></td>' in text
    assert '<td class="key">dirichlet</td>' in text
    assert "could not be rendered" not in text
    # each figure on disk is embedded exactly once
    for f in ("pass_at_k.png", "rouge_l.png", "system15_grid_heatmap.png", "adaptive.png", "extra_figure.png"):
        assert text.count(f) == 1, f


def test_optional_sections_degrade_gracefully(tmp_path):
    run = make_run(tmp_path / "run")
    res = json.loads((run / "results.json").read_text())
    res["ood"] = {"svamp": {"cot": {"accuracy": "n/a"}}, "broken": 5}  # not the expected shape
    res["soft_thinking"] = ["unexpected"]
    for k in ("adaptive", "mystery_section"):
        del res[k]
    (run / "results.json").write_text(json.dumps(res))
    (run / "codi" / "metrics.jsonl").write_text("not json\n")
    text = build_report(run)
    assert "could not be rendered" in text  # the malformed section says so ...
    assert '<td class="key">nocot</td>' in text and "<h2>Configuration and environment</h2>" in text  # ... the rest is there
    assert "<h2>Adaptive thinking</h2>" in text  # adaptive.png alone still gives the section


def test_missing_results_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="results.json"):
        write_report(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "results.json").write_text('{"methods": ')
    with pytest.raises(DataError, match="not a JSON object"):
        write_report(tmp_path)


def test_find_grid_shapes():
    recs = [{"a": x, "b": y, "accuracy": x * 10 + y, "other": 1} for x in (2, 1) for y in (5, 3, 4)]
    g = find_grid({"rows": recs})
    assert (g["row_name"], g["col_name"], g["value_name"]) == ("a", "b", "accuracy")
    assert g["rows"] == [1, 2] and g["cols"] == [3, 4, 5] and g["values"] == [[13, 14, 15], [23, 24, 25]]
    g = find_grid({"lambda_depth": [0.1, 0.2], "lambda_step": [1, 2, 3], "accuracy": [[1, 2, 3], [4, 5, 6]]})
    assert g["rows"] == [0.1, 0.2] and g["values"][1] == [4, 5, 6] and g["value_name"] == "accuracy"
    g = find_grid({"r1": {"c1": 1.0, "c2": 2.0}, "r2": {"c1": 3.0, "c2": 4.0}})
    assert g["values"] == [[1.0, 2.0], [3.0, 4.0]]
    assert find_grid({"a": 1, "b": [1, 2]}) is None
    assert find_grid([{"a": 1, "b": 1, "acc": 0.5}, {"a": 1, "b": 1, "acc": 0.6}]) is None  # not a full grid


def test_report_cli_command(tmp_path):
    from typer.testing import CliRunner

    from latentreason.cli_report import report_app

    run = make_run(tmp_path / "run")
    r = CliRunner().invoke(report_app, [str(run), "--output", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(tmp_path / "r.html") and (tmp_path / "r.html").stat().st_size > 10000
    r = CliRunner().invoke(report_app, ["--help"])
    assert r.exit_code == 0 and "latentreason report runs/demo" in r.output
    r = CliRunner().invoke(report_app, [str(tmp_path / "missing")])
    assert isinstance(r.exception, DataError)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian package `chromium`; .ci/run installs it): "
                           "the headless rendering check of the HTML report is skipped")
def test_report_renders_in_headless_chromium(tmp_path):
    import numpy as np
    from matplotlib.image import imread

    run = make_run(tmp_path / "run")
    path = write_report(run)
    shot = tmp_path / "shot.png"
    cmd = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,2000", path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.exists(), proc.stderr[-2000:]
    img = imread(shot)[..., :3]
    assert img.shape[:2] == (2000, 1200)
    flat = (img.reshape(-1, 3) * 255).round().astype(np.uint8)
    non_white = float((flat.min(axis=1) < 235).mean())
    colours = len(np.unique(flat, axis=0))
    assert non_white > 0.03, non_white  # text, tables and plots, not an empty page
    assert colours > 200, colours  # anti-aliased text and the embedded plots, not a flat error page
    # the embedded plots are drawn: matplotlib's default blue (C0) appears in the screenshot
    c0 = np.array([31, 119, 180])
    assert (np.abs(flat.astype(int) - c0).sum(axis=1) < 30).sum() > 200


def test_readme_results_script_rewrites_only_the_marked_blocks(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "readme_results.py"
    spec = importlib.util.spec_from_file_location("readme_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = make_run(tmp_path / "run")
    readme = tmp_path / "README.md"
    docs = tmp_path / "results.md"
    readme.write_text("intro\n<!-- results:start -->\nold table\n<!-- results:end -->\noutro\n")
    docs.write_text("# head\n<!-- ours:start -->\n<!-- ours:end -->\n## papers\n| 42.9 |\n")
    args = ["--results", str(run / "results.json"), "--readme", str(readme), "--docs", str(docs), "--command", "latentreason demo --out X"]
    assert mod.main(args + ["--check"]) == 1 and "old table" in readme.read_text()  # --check changes nothing
    assert mod.main(args) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\noutro\n")
    assert "old table" not in text
    assert "| cot | 1.000 | 24 | 0 | 31 | 31 | 2.50 | 1.00× | 46.9 |" in text
    assert "| nocot | 0.156 | 0 | 0 | 7 | 7 | 0.90 | 2.78× | 21.0 |" in text
    assert "| dirichlet | 0.800 | 0.800 | 0.950 | 0.600 | 0.010 | 0.200 | 0.123 | 0.057 | 0.009 |" in text
    assert "| codi_gumbel (project extension) | 0.700 | 0.700 | 0.750 | – | – | – | – | – | – |" in text
    assert "| mode | accuracy | pass@1 | pass@2 | ROUGE-L vs greedy | JS to top-1 (h=2) | JS to top-2 (h=2) |" in text
    assert "Soft thinking on cot at step 250 (" in text and "`codi_gumbel` are this project's extension" in text
    d = docs.read_text()
    assert d.startswith("# head\n") and d.endswith("## papers\n| 42.9 |\n")
    # the papers' numbers sit in their own column, labelled; ours carry the command
    assert "GPT-2, GSM8k: **43.7**" in d and "acc 0.980; 5 thoughts" in d and "`latentreason demo --out X`" in d
    assert "svamp | CODI GPT-2 42.9" in d and "cot 0.010 (n 1000, 12 too long)" in d
    assert "| codi_gumbel (project extension) | – (this project's extension: no paper has it) |" in d
    assert "softness 0.057, randomness 0.009" in d
    assert mod.main(args + ["--check"]) == 0  # now up to date
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="results:start"):
        mod.main(args)
