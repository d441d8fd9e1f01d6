"""Regenerate the README's results table and our column of docs/results.md from a run's results.json.

    python benchmarks/readme_results.py                       # from runs/demo/results.json
    python benchmarks/readme_results.py --results runs/demo2/results.json --command "latentreason demo --out runs/demo2"
    python benchmarks/readme_results.py --check               # exit 1 when a file is out of date

Two generated blocks are replaced in place (everything outside the markers is left alone):

* ``README.md`` between ``<!-- results:start -->`` and ``<!-- results:end -->``: the comparison
  table of the run (and its soft-thinking table when present);
* ``docs/results.md`` between ``<!-- ours:start -->`` and ``<!-- ours:end -->``: every method of the
  run next to the papers' own numbers for that method (SPEC §6, kept in :data:`PAPERS` and
  labelled as theirs, never mixed with ours), our full numbers, soft thinking and out-of-distribution
  sets, each with the command that produced it.

Only the standard library is used, so the script runs without the package installed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: The papers' own numbers (SPEC §6), by method. (model, dataset, accuracy, tokens / steps, speed, source)
PAPERS: dict[str, list[tuple[str, str, str, str, str, str]]] = {
    "cot": [("GPT-2", "GSM8k", "42.9 (CODI: 44.1)", "25.0 tok", "0.26 s/problem", "Coconut T1/T4; CODI")],
    "nocot": [("GPT-2", "GSM8k", "16.5 (CODI: 19.1)", "2.2 tok", "0.03 s", "Coconut; CODI")],
    "icot": [
        ("GPT-2 small", "GSM8k", "30.0", "2.2 tok", "34.5 ex/s (bs 1)", "iCoT repo; Coconut T1"),
        ("Mistral-7B", "GSM8k", "51", "–", "–", "iCoT README"),
        ("GPT-2 small", "9×9 mult.", "99", "–", "–", "iCoT README"),
    ],
    "coconut": [
        ("GPT-2", "GSM8k", "34.1", "8.2 tok (6 thoughts)", "0.09 s", "Coconut T1/T4"),
        ("GPT-2", "ProntoQA / ProsQA", "99.8 / 97.0", "9.0 / 14.2", "0.11 / 0.15 s", "Coconut T1/T4"),
    ],
    "codi": [
        ("GPT-2", "GSM8k", "43.7", "8 (6 thoughts)", "3.1× compression, ≈2.7× faster", "CODI"),
        ("GPT-2", "Aug-NL → GSM8k", "34.8 (quoted)", "8", "8.2× compression, ≈5.9× faster", "CODI; codi #17"),
        ("LLaMA-3.2-1B", "GSM8k", "≈55.6, ≈90 % of CoT-SFT (uncertain)", "8", "–", "CODI fig.; re-eval 55.4"),
    ],
    "system15": [
        ("unlabelled (GPT-2 or LLaMA-3.2-1B)", "GSM8K", "46.66 (CoT 46.94)", "2 (CoT 26)",
         "20.27×; −92.31 % tokens; 1.95× fewer FLOPs/step", "System-1.5"),
        ("same", "StrategyQA", "48.61 (CoT 47.62)", "–", "55.65×", "System-1.5"),
    ],
}

#: Soft-thinking modes of the study -> the papers' rows (8-bench averages on 32B models, Single-threaded T1)
SOFT_PAPERS: dict[str, tuple[str, str]] = {
    "greedy": ("greedy 71.57 / 82.64 / 76.85 (R1-Qwen-32B / QwQ-32B / Skywork-OR1-32B, 8-bench avg)", "Single-threaded T1"),
    "sampling": ("sampling 78.50 / 82.35 / 82.99 (same models and benchmarks)", "Single-threaded T1"),
    "vanilla": ("71.50 / 80.06 / 79.21 (same); Soft Thinking paper: math avg 86.32 / 83.03 on QwQ-32B / "
                "R1-Distill-Qwen-32B (CoT 83.84 / 81.32), −11.6 % / −22.4 % length", "Single-threaded T1; Soft Thinking Fig. 1"),
    "dirichlet": ("Dirichlet γ=4: 78.36 / 81.39 / 83.12 (same)", "Single-threaded T1"),
    "gumbel": ("Gumbel τ=0.5: 79.55 / 83.63 / 84.62 (same)", "Single-threaded T1"),
}

#: out-of-distribution sets -> the papers' numbers (CODI T1)
OOD_PAPERS: dict[str, str] = {
    "svamp": "CODI GPT-2 42.9; LLaMA-3.2-1B 61.1 (CODI T1)",
    "gsm_hard": "CODI GPT-2 9.9; LLaMA-3.2-1B 12.8 (CODI T1); System-1.5 ≈38.3 (CoT ≈38.3)",
    "gsmhard": "CODI GPT-2 9.9; LLaMA-3.2-1B 12.8 (CODI T1); System-1.5 ≈38.3 (CoT ≈38.3)",
    "multiarith": "CODI GPT-2 92.8; LLaMA-3.2-1B 96.1 (CODI T1)",
    "asdiv": "– (no published number in SPEC §6)",
}

README_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
DOCS_MARKERS = ("<!-- ours:start -->", "<!-- ours:end -->")


# --------------------------------------------------------------------------- formatting
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def f_acc(v: Any) -> str:
    return "–" if _num(v) is None else f"{v:.3f}"


def n_seeds(res: dict[str, Any]) -> int:
    return len(res.get("seeds") or []) or 1


def f_spread(r: dict[str, Any], key: str = "accuracy", digits: int = 3, unit: str = "") -> str:
    """``0.912 ± 0.030 (min 0.880)`` for a row measured over several seeds, the plain value otherwise."""
    v = r.get(key)
    if _num(v) is None:
        return "–"
    if (r.get("n_seeds") or 1) > 1 and _num(r.get(f"{key}_std")) is not None:
        return f"{v:.{digits}f}{unit} ± {r[f'{key}_std']:.{digits}f} (min {r[f'{key}_min']:.{digits}f}{unit})"
    return f"{v:.{digits}f}{unit}"


def f_count(v: Any) -> str:
    x = _num(v)
    if x is None:
        return "–"
    return str(int(x)) if x == int(x) else f"{x:.1f}"


def f_ms(v: Any) -> str:
    return "–" if _num(v) is None else f"{v:.2f}"


def f_speed(v: Any) -> str:
    return "–" if _num(v) is None else f"{v:.2f}×"


def f_s(v: Any) -> str:
    return "–" if _num(v) is None else f"{v:.1f}"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def method_key(row_name: str, row: dict[str, Any]) -> str:
    """The paper family of a results row: its ``method`` field, normalised (``system-1.5`` -> ``system15``)."""
    key = re.sub(r"[^a-z0-9]", "", str(row.get("method") or row_name).lower())
    return {"cotsft": "cot", "nocotsft": "nocot", "system1": "system15"}.get(key, key)


# --------------------------------------------------------------------------- pieces
def run_line(res: dict[str, Any], command: str) -> str:
    env = res.get("env") or {}
    methods = res.get("methods") or {}
    first = next(iter(methods.values()), {})
    bits = []
    if env.get("device"):
        if env["device"] == "cpu":
            bits.append(f"{env['cpu_count']}-core CPU" if env.get("cpu_count") else "CPU")
        else:
            bits.append(str(env["device"]) + (f" ({env['device_name']})" if env.get("device_name") else ""))
    if env.get("torch"):
        bits.append(f"torch {env['torch']}")
    if first.get("n"):
        bits.append(f"{first['n']} test questions")
    if first.get("batch_size"):
        timed = first.get("latency_questions")
        lat = f"latency at batch {first['batch_size']}"
        if timed and timed != first.get("n"):
            lat += f" on the first {timed}"
        if first.get("latency_repeats"):
            lat += f", median of {first['latency_repeats']} rounds"
        if first.get("batched_batch_size") and first["batched_batch_size"] != first["batch_size"]:
            lat += f" (accuracy pass at batch {first['batched_batch_size']})"
        bits.append(lat)
    if env.get("git_revision"):
        bits.append(f"git {env['git_revision']}")
    seeds = res.get("seeds") or []
    if len(seeds) > 1:
        bits.append(f"{len(seeds)} training seeds ({', '.join(map(str, seeds))}): mean ± std (min) over seeds")
    elif seeds:
        bits.append(f"one training seed ({seeds[0]})")
    task, model = res.get("task") or {}, res.get("model") or {}
    what = []
    if model.get("name"):
        what.append(f"{model['name']}" + (f" ({model['n_layer']} layers, d={model['n_embd']})" if "n_layer" in model and "n_embd" in model else ""))
    if task.get("name"):
        what.append(f"task {task['name']}" + (f" ({task['n_steps']} steps)" if "n_steps" in task else ""))
    return f"`{command}` — {', '.join(what)}; {', '.join(bits)}"


def methods_table(res: dict[str, Any]) -> str:
    multi = n_seeds(res) > 1
    rows = []
    for name, r in (res.get("methods") or {}).items():
        row = [name, f_spread(r)]
        if multi:
            row.append(f_spread(r, "gap_closed", 2))
        row += [f_count(r.get("mean_reasoning_tokens")), f_count(r.get("mean_latent_steps")),
                f_count(r.get("mean_generated_tokens")), f_count(r.get("mean_forward_passes")),
                f_ms(r.get("latency_ms_per_question")), f_spread(r, "speedup_vs_cot", 2, "×") if multi else
                f_speed(r.get("speedup_vs_cot")), f_s(r.get("train_seconds"))]
        rows.append(row)
    head = ["method", "accuracy" + (f" (mean ± std, min; {n_seeds(res)} seeds)" if multi else "")]
    if multi:
        head.append("gap closed (mean ± std, min)")
    head += ["reasoning tokens", "latent steps", "generated tokens", "forward passes", "ms / question",
             "speed-up vs CoT", "train s"]
    return table(head, rows)


def soft_settings(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    p = run_dir / "soft_thinking" / "soft_thinking.json"
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def soft_label(mode: str, r: dict[str, Any]) -> str:
    """Row label; rows of this project's own extension (noise on continuous thoughts) say so."""
    return f"{mode} (project extension)" if isinstance(r, dict) and r.get("extension") else mode


def js_horizon(soft: dict[str, Any]) -> int | None:
    hs = {r.get("js_horizon") for r in soft.values() if isinstance(r, dict) and r.get("js_horizon")}
    return hs.pop() if len(hs) == 1 else None


def soft_table(soft: dict[str, Any]) -> str:
    ks = sorted({k for r in soft.values() if isinstance(r, dict) for k in (r.get("pass_at_k") or {})}, key=int)
    h = js_horizon(soft)
    hs = f" (h={h})" if h else ""
    rows = []
    for mode, r in soft.items():
        if not isinstance(r, dict):
            continue
        pk = r.get("pass_at_k") or {}
        rows.append([soft_label(mode, r), f_acc(r.get("accuracy")), *[f_acc(pk.get(k)) for k in ks],
                     *[f_acc(r.get(k)) for k in ("rouge_l_vs_greedy", "js_top1", "js_top2", "mean_thinking_entropy",
                                                 "softness", "randomness")]])
    return table(["mode", "accuracy", *[f"pass@{k}" for k in ks], "ROUGE-L vs greedy", f"JS to top-1{hs}", f"JS to top-2{hs}",
                  "thinking entropy (nats)", "softness", "randomness"], rows)


def soft_intro(soft: dict[str, Any], settings: dict[str, Any]) -> str:
    bits = [f"{settings['questions']} test questions" if "questions" in settings else None,
            f"{settings['samples']} samples per stochastic mode" if "samples" in settings else None]
    cfg = settings.get("config") or {}
    if _num(cfg.get("temperature")) is not None:
        bits.append(f"thinking temperature {cfg['temperature']:g}")
    bits = [b for b in bits if b]
    models = list(dict.fromkeys(r["model"] for r in soft.values()
                                if isinstance(r, dict) and r.get("model") and not r.get("extension")))
    model = models[0] if len(models) == 1 else "the CoT model"
    h = js_horizon(soft)
    notes = []
    if h:
        why = " (SPEC §4.1 is h=1; docs/soft_thinking.md says why h=2 here)" if h > 1 else ""
        notes.append(f"JS compares the next-token distributions {h} token{'s' if h > 1 else ''} after a soft input with those "
                     f"after its top-1 / top-2 component{why}")
    notes.append("thinking entropy: mean entropy of the model's own next-token distribution over the thinking steps; "
                 "softness / randomness: SPEC §4.2")
    ext = sorted({m for m, r in soft.items() if isinstance(r, dict) and r.get("extension")})
    if ext:
        notes.append(f"rows {', '.join(f'`{m}`' for m in ext)} are this project's extension, not a paper's method: "
                     f"Dirichlet / Gumbel noise on a latent model's continuous thoughts")
    return f"Soft thinking on {model} ({', '.join(bits) or 'see soft_thinking/soft_thinking.json'}); " + "; ".join(notes) + ":"


def adaptive_table(ad: dict[str, Any]) -> str:
    rows = []
    for name in ("codi_fixed", "codi_adaptive", "codi_adaptive_probe"):
        r = ad.get(name)
        if not isinstance(r, dict):
            continue
        how = f"n = {r['n']}" if r.get("n") else f"{r.get('halting', 'halting')}, n_max {r.get('n_max', '?')}"
        rows.append([name, how, f_acc(r.get("accuracy")), f"{r['mean_latent_steps']:.2f}" if _num(r.get("mean_latent_steps")) else "–",
                     f_ms(r.get("latency_ms_per_question")), f_speed(r.get("speedup_vs_cot"))])
    return table(["row", "thoughts", "accuracy", "mean thoughts", "ms / question", "speed-up vs CoT"], rows)


def adaptive_intro(ad: dict[str, Any]) -> str:
    task = ad.get("task") or {}
    steps = f"{task.get('min_steps', 1)}..{task.get('n_steps', '?')} steps" if task else "mixed steps"
    bits = [f"Adaptive thinking on the mixed-difficulty task ({steps} per problem, {ad.get('codi_fixed', {}).get('n_questions', '?')} test questions)"]
    if _num(ad.get("spearman_steps_vs_true")) is not None:
        bits.append(f"Spearman(thoughts, true steps) = {ad['spearman_steps_vs_true']:.2f}")
    if _num(ad.get("thought_reduction")) is not None:
        bits.append(f"{100 * ad['thought_reduction']:.0f} % fewer thoughts than fixed n")
    if _num(ad.get("accuracy_gap_points")) is not None:
        bits.append(f"accuracy gap {ad['accuracy_gap_points']:.1f} points")
    return "; ".join(bits) + " (speed-up vs the CoT row above, which runs the 4-step task):"


def grid_line(grid: dict[str, Any]) -> str | None:
    acc, rows, cols = grid.get("accuracy"), grid.get("lambda_depth") or grid.get("rows"), grid.get("lambda_step") or grid.get("cols")
    best = grid.get("best")
    if isinstance(best, dict) and _num(best.get("test_accuracy")) is not None:
        where = best.get("chosen_on", "valid")
        cells = grid.get("best_per_seed") or [best]
        picked = "; ".join(f"λ_depth {c['lambda_depth']:g}, λ_step {c['lambda_step']}"
                           + (f" (seed {c['seed']})" if "seed" in c else "") for c in cells if "lambda_depth" in c)
        layers = best.get("test_layers_per_latent_step")
        return (f"System-1.5 test-time grid ({grid.get('n', '?')} {where} questions per cell): best cell chosen on {where}: "
                f"{picked}; on the test questions it scores accuracy {best['test_accuracy']:.3f}"
                + (f" with {layers:.2f} layers per latent step" if _num(layers) is not None else "") + ".")
    if isinstance(best, dict) and best:
        inner = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in best.items())
        return f"System-1.5 test-time grid, best cell: {inner}."
    if not (acc and rows and cols):
        return None
    i, j = max(((i, j) for i in range(len(rows)) for j in range(len(cols))), key=lambda ij: acc[ij[0]][ij[1]])
    return f"System-1.5 test-time grid, best cell: λ_depth {rows[i]}, λ_step {cols[j]}, accuracy {acc[i][j]:.3f}."


def readme_block(res: dict[str, Any], command: str, run_dir: Path | None) -> str:
    parts = [run_line(res, command) + ":", "", methods_table(res)]
    soft = res.get("soft_thinking")
    if isinstance(soft, dict) and soft:
        parts += ["", soft_intro(soft, soft_settings(run_dir)), "", soft_table(soft)]
    ad = res.get("adaptive")
    if isinstance(ad, dict) and isinstance(ad.get("codi_fixed"), dict):
        parts += ["", adaptive_intro(ad), "", adaptive_table(ad)]
    grid = res.get("system15_grid")
    line = grid_line(grid) if isinstance(grid, dict) else None
    if line:
        parts += ["", line]
    return "\n".join(parts)


def _ours_cell(r: dict[str, Any]) -> str:
    cost = []
    if _num(r.get("mean_latent_steps")):
        cost.append(f"{f_count(r['mean_latent_steps'])} thoughts")
    cost.append(f"{f_count(r.get('mean_reasoning_tokens'))} reasoning tok")
    if _num(r.get("mean_forward_passes")) is not None:
        cost.append(f"{f_count(r['mean_forward_passes'])} forward passes")
    if _num(r.get("mean_layers_per_latent_step")) is not None and _num(r.get("num_layers")) is not None:
        cost.append(f"{r['mean_layers_per_latent_step']:.2f} of {r['num_layers']} layers per thought")
    if _num(r.get("flops_per_step_vs_cot")) is not None:
        cost.append(f"FLOPs per thought {r['flops_per_step_vs_cot']:.2f}× a CoT token's")
    return (f"acc {f_spread(r)}; {', '.join(cost)}; {f_ms(r.get('latency_ms_per_question'))} ms/q, "
            f"{f_speed(r.get('speedup_vs_cot'))} vs our CoT")


def docs_block(res: dict[str, Any], command: str, run_dir: Path | None, ood_command: str | None) -> str:
    methods = res.get("methods") or {}
    out = [f"Run: {run_line(res, command)}. All our rows below are on this run's test questions.", "", "### Methods", ""]
    rows = []
    shown: dict[str, str] = {}
    for name, r in methods.items():
        key = method_key(name, r)
        papers = PAPERS.get(key, [])
        if key in shown:
            theirs = f"as for {shown[key]} above"
        else:
            theirs = "<br>".join(f"{m}, {d}: **{a}**; {t}; {s} [{src}]" for m, d, a, t, s, src in papers) or "– (no paper row)"
            shown[key] = name
        rows.append([f"{name} ({r.get('method', name)})", theirs, _ours_cell(r), f"`{command}`"])
    out.append(table(["method", "papers' own numbers (model, dataset: accuracy %; tokens/steps; speed) [source]",
                      "ours (accuracy as a fraction; speed-up measured in this run)", "our command"], rows))
    soft = res.get("soft_thinking")
    if isinstance(soft, dict) and soft:
        out += ["", "### Soft thinking", "", soft_intro(soft, soft_settings(run_dir)), ""]
        srows = []
        for mode, r in soft.items():
            if not isinstance(r, dict):
                continue
            default = ("– (this project's extension: no paper has it)", "") if r.get("extension") else ("– (no paper row)", "")
            theirs, src = SOFT_PAPERS.get(mode, default)
            pk = r.get("pass_at_k") or {}
            kmax = max(pk, key=int) if pk else None
            ours = f"acc {f_acc(r.get('accuracy'))}" + (f", pass@{kmax} {f_acc(pk[kmax])}" if kmax else "")
            if _num(r.get("softness")) is not None:
                ours += f", softness {f_acc(r['softness'])}, randomness {f_acc(r.get('randomness'))}"
            srows.append([soft_label(mode, r), f"{theirs}" + (f" [{src}]" if src else ""), ours, f"`{command}`"])
        out.append(table(["mode", "papers' own numbers (accuracy %, 32B models)", "ours (this run, model named above)",
                          "our command"], srows))
    ood = res.get("ood")
    if isinstance(ood, dict) and ood:
        out += ["", "### Out-of-distribution sets", "", f"Our command: `{ood_command or command}`", ""]
        orows = []
        for set_name, per in ood.items():
            if not isinstance(per, dict):
                continue
            ours = "; ".join(f"{m} {f_acc(r.get('accuracy'))} (n {r.get('n')}"
                             + (f", {r['too_long']} too long" if r.get("too_long") else "") + ")"
                             for m, r in per.items() if isinstance(r, dict))
            orows.append([set_name, OOD_PAPERS.get(set_name.lower(), "–"), ours])
        out.append(table(["set", "papers' own numbers (accuracy %)", "ours (accuracy over all n; too long counts as wrong)"], orows))
    return "\n".join(out)


def ood_command(res: dict[str, Any], command: str) -> str | None:
    ood = res.get("ood")
    if not isinstance(ood, dict) or not ood:
        return None
    specs = []
    for set_name, per in ood.items():
        src = next((r.get("source") for r in (per or {}).values() if isinstance(r, dict) and r.get("source")), None)
        specs.append(f"--eval-set {set_name}={src}" if src and src != set_name else f"--eval-set {set_name}")
    return f"{command} {' '.join(specs)}"


# --------------------------------------------------------------------------- files
def replace_block(text: str, markers: tuple[str, str], block: str, where: str) -> str:
    start, end = markers
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"{where}: expected exactly one {start} ... {end} pair")
    a = text.index(start) + len(start)
    b = text.index(end)
    return text[:a] + "\n" + block.strip("\n") + "\n" + text[b:]


def default_command(results: Path) -> str:
    run_dir = results.resolve().parent
    try:
        rel = run_dir.relative_to(ROOT)
    except ValueError:
        rel = run_dir
    return f"latentreason demo --out {rel}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "runs" / "demo" / "results.json", help="the run's results.json")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--command", default=None, help="the command that produced the run (default: latentreason demo --out RUN_DIR)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    args = ap.parse_args(argv)
    try:
        res = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"error: {args.results}: {e}", file=sys.stderr)
        return 2
    command = args.command or default_command(args.results)
    run_dir = args.results.resolve().parent
    stale = []
    for path, markers, block in (
        (args.readme, README_MARKERS, readme_block(res, command, run_dir)),
        (args.docs, DOCS_MARKERS, docs_block(res, command, run_dir, ood_command(res, command))),
    ):
        old = path.read_text(encoding="utf-8")
        new = replace_block(old, markers, block, str(path))
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for p in stale:
        print(f"{'out of date' if args.check else 'updated'}: {p}")
    if not stale:
        print("up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
