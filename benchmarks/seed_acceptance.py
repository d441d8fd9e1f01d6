"""Every acceptance point of the seeds, System-1.5 and soft-thinking issues, checked per seed of a run.

    python benchmarks/seed_acceptance.py --run runs/demo5          # a multi-seed demo run
    python benchmarks/seed_acceptance.py --run runs/demo           # a one-seed run works too

Reads ``RUN/results.json`` and each ``RUN/seed-S/results.json`` (written by ``latentreason demo --seeds``)
and prints markdown tables: one row per seed with the share of that seed's No-CoT→CoT gap each latent
row closes and the other criteria, then the System-1.5 shortcut ablation (depth / step / both) and the
exit histogram over seeds. Exit status 1 when a criterion fails on some seed. Criteria:

* ``codi`` closes ≥ 75 % of the gap; ``coconut`` (from the CoT model) ≥ 50 %;
* ``system15`` closes ≥ 75 %, runs < 75 % of the layers per latent step, decodes faster than ``codi``
  (round-robin latency of the same run), and its critical thoughts exit later than the non-critical ones;
* ``codi_adaptive`` uses ≥ 25 % fewer thoughts than the best fixed n, within 1 point of its accuracy;
* soft thinking: vanilla JS(soft‖top-2) ≥ 0.01 and ≥ 5 × JS(soft‖top-1); Dirichlet's and Gumbel's
  Pass@8 above vanilla's; thinking entropy, softness and randomness reported.

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, stdev
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soft_study_seeds import acceptance as soft_acceptance  # noqa: E402  (issue 20's criteria, one definition)


def seed_results(run: Path) -> list[tuple[int, dict[str, Any]]]:
    top = json.loads((run / "results.json").read_text(encoding="utf-8"))
    dirs = top.get("seed_dirs") or {}
    if not dirs:
        return [(int((top.get("seeds") or [0])[0]), top)]
    return [(int(s), json.loads((run / d / "results.json").read_text(encoding="utf-8"))) for s, d in dirs.items()]


def soft_ok(st: dict[str, Any] | None) -> tuple[bool, str] | None:
    if not st or not all(m in st for m in ("vanilla", "dirichlet", "gumbel")):
        return None
    v, d, g = st["vanilla"], st["dirichlet"], st["gumbel"]
    k = max(v["pass_at_k"], key=int)
    j1, j2 = v.get("js_top1"), v.get("js_top2")
    text = (f"JS {j1:.4f} / {j2:.4f}; P@{k} V {v['pass_at_k'][k]:.3f} D {d['pass_at_k'][k]:.3f} "
            f"G {g['pass_at_k'][k]:.3f}; H {st['vanilla'].get('mean_thinking_entropy', float('nan')):.3f}")
    return soft_acceptance(st), text


def mark(ok: bool | None, text: str) -> str:
    return "–" if ok is None else (text if ok else f"**{text} ✗**")


def check_seed(res: dict[str, Any]) -> tuple[list[str], bool]:
    m = res.get("methods", {})
    cells, all_ok = [], True

    def add(ok: bool | None, text: str) -> None:
        nonlocal all_ok
        all_ok &= ok is not False
        cells.append(mark(ok, text))

    cells.append(f"{m['cot']['accuracy']:.3f} / {m['nocot']['accuracy']:.3f}" if "cot" in m and "nocot" in m else "–")
    for name, need in (("codi", 0.75), ("coconut", 0.50), ("system15", 0.75)):
        g = m.get(name, {}).get("gap_closed")  # the share of the same seed's gap, written by the benchmark
        add(None if g is None else g >= need, "–" if g is None else f"{m[name]['accuracy']:.3f} ({100 * g:.0f} %)")
    s15, codi = m.get("system15"), m.get("codi")
    if s15 and s15.get("mean_layers_per_latent_step") is not None:
        hist = s15.get("exit_histogram") or {}
        n_layers = hist.get("num_layers") or 4
        frac = s15["mean_layers_per_latent_step"] / n_layers
        add(frac < 0.75, f"{s15['mean_layers_per_latent_step']:.2f} of {n_layers} ({100 * frac:.0f} %)")
        if codi:
            a, b = s15["latency_ms_per_question"], codi["latency_ms_per_question"]
            add(a < b, f"{a:.3f} vs {b:.3f} ms ({b / a:.2f}×)")
        else:
            cells.append("–")
        c, n = hist.get("critical_mean_exit_layer"), hist.get("noncritical_mean_exit_layer")
        add(None if c is None or n is None else c > n, "–" if c is None or n is None else f"{c:.2f} / {n:.2f}")
    else:
        cells += ["–", "–", "–"]
    ad = res.get("adaptive")
    if ad and ad.get("thought_reduction") is not None:
        red, pts = ad["thought_reduction"], ad["accuracy_gap_points"]
        add(red >= 0.25 and pts <= 1.0, f"{100 * red:.0f} % fewer, {pts:+.1f} pt")
    else:
        cells.append("–")
    s = soft_ok(res.get("soft_thinking"))
    add(None if s is None else s[0], "–" if s is None else s[1])
    return cells, all_ok


def spread(vals: list[float]) -> str:
    if not vals:
        return "–"
    return f"{mean(vals):.3f} ± {stdev(vals) if len(vals) > 1 else 0.0:.3f} (min {min(vals):.3f})"


def shortcut_table(per: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """The System-1.5 shortcut ablation over seeds (mean ± std (min)), then per seed with issue 29's checks: both
    shortcuts within 2 points of depth-only with fewer decoder-layer forwards per latent step; the step shortcut
    alone within 5 points of the stage-1 model (shortcuts off)."""
    names = ("none", "depth", "step", "both")
    rows = {k: [] for k in names}
    for _, res in per:
        abl = (res.get("system15_grid") or {}).get("shortcut_ablation") or {}
        for k in rows:
            if k in abl:
                rows[k].append(abl[k])
    if not any(rows.values()):
        return []
    out = ["| shortcuts | seeds | accuracy | layers per latent step | layers reused per latent step "
           "| ms / question (batch) | ms / question (batch 1) | identical consecutive thoughts |",
           "|---|---|---|---|---|---|---|---|"]
    for k, vals in rows.items():
        if vals:
            out.append(f"| {k} | {len(vals)} | {spread([v['accuracy'] for v in vals])} "
                       f"| {spread([v['layers_per_latent_step'] for v in vals])} "
                       f"| {spread([v.get('reused_layers_per_latent_step', 0.0) for v in vals])} "
                       f"| {spread([v['latency_ms_per_question'] for v in vals])} "
                       f"| {spread([v['batch1_ms_per_question'] for v in vals if 'batch1_ms_per_question' in v])} "
                       f"| {max(v['identical_consecutive_thoughts'] for v in vals):.3f} (max) |")
    out += ["", "| seed | off (stage 1) | depth | step | both | both vs depth: points, layers | step vs off: points "
            "| batch-1 ms / question: off / depth / both |", "|---|---|---|---|---|---|---|---|"]
    for seed, res in per:
        abl = (res.get("system15_grid") or {}).get("shortcut_ablation") or {}
        if not all(k in abl for k in names):
            continue
        cell = {k: f"{abl[k]['accuracy']:.3f} ({abl[k]['layers_per_latent_step']:.2f} layers)" for k in names}
        d_pts = 100 * (abl["both"]["accuracy"] - abl["depth"]["accuracy"])
        fewer = abl["both"]["layers_per_latent_step"] < abl["depth"]["layers_per_latent_step"]
        ok_both = d_pts >= -2.0 and fewer
        s_pts = 100 * (abl["step"]["accuracy"] - abl["none"]["accuracy"])
        ms = " / ".join(f"{abl[k].get('batch1_ms_per_question', float('nan')):.2f}" for k in ("none", "depth", "both"))
        out.append(f"| {seed} | {cell['none']} | {cell['depth']} | {cell['step']} | {cell['both']} "
                   f"| {'✓' if ok_both else '✗'} {d_pts:+.1f} pt, {abl['both']['layers_per_latent_step']:.2f} vs "
                   f"{abl['depth']['layers_per_latent_step']:.2f} | {'✓' if s_pts >= -5.0 else '✗'} {s_pts:+.1f} pt | {ms} |")
    return out


def histogram_table(per: list[tuple[int, dict[str, Any]]]) -> list[str]:
    out = []
    for seed, res in per:
        hist = (res.get("methods", {}).get("system15") or {}).get("exit_histogram")
        if not hist:
            continue
        if not out:
            L = hist["num_layers"]
            out = ["| seed | kind | thoughts | " + " | ".join(f"exit before layer {i}" for i in range(L))
                   + f" | all {L} layers | reused every layer | mean exit layer (computed) | mean layers run |",
                   "|" + "---|" * (L + 7)]
        for kind in ("critical", "noncritical"):
            counts = hist["counts"][kind]
            reused = (hist.get("reused") or {}).get(kind, 0)
            total = (sum(counts) + reused) or 1
            run = hist.get(f"{kind}_mean_layers_run", hist[f"{kind}_mean_exit_layer"])
            out.append(f"| {seed} | {kind} | {sum(counts) + reused} | " + " | ".join(f"{c / total:.2f}" for c in counts)
                       + f" | {reused / total:.2f} | {hist[f'{kind}_mean_exit_layer']:.2f} | {run:.2f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished demo / bench run directory")
    args = ap.parse_args(argv)
    per = seed_results(args.run)
    print("| seed | CoT / No-CoT | codi (gap ≥ 75 %) | coconut (≥ 50 %) | system15 (≥ 75 %) | system15 layers (< 75 %) "
          "| system15 vs codi latency | mean exit critical / non-critical | codi_adaptive (≥ 25 % fewer, ≤ 1 pt) "
          "| soft thinking |")
    print("|" + "---|" * 10)
    ok = True
    for seed, res in per:
        cells, good = check_seed(res)
        ok &= good
        print(f"| {seed} | " + " | ".join(cells) + " |")
    for block in (shortcut_table(per), histogram_table(per)):
        if block:
            print()
            print("\n".join(block))
    print()
    print("every criterion holds on every seed" if ok else "some criterion fails (marked ✗)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
