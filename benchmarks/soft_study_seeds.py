"""The demo's soft-thinking study on several training seeds, with the acceptance of issue 20 checked.

For each seed S, the demo's CoT entry (``demo_config()``: its training schedule, task and the snapshot
``soft_thinking.checkpoint_step`` it saves) is trained through the benchmark runner with ``cfg.seed = S``
into ``OUT/sS`` (a finished run trained by the same code is reused), and the demo's soft-thinking study
runs on the snapshot exactly as in the demo (the ``codi_*`` rows, adaptive thinking and the System-1.5
grid are left out). Prints one markdown row per seed and whether, on that seed, vanilla ``js_top2`` >=
0.01 and >= 5 x ``js_top1`` and Dirichlet's and Gumbel's Pass@8 exceed vanilla's.

    python benchmarks/soft_study_seeds.py --seeds 0,1,2 --out runs/soft_seeds
    python benchmarks/soft_study_seeds.py --seeds 0 --set temperature=0.3   # another study setting

Each seed costs one CoT training (800 steps: ~1 min on an idle 2-core CPU, several under load) and one
study (~35 s idle, 1-2 min under load).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def acceptance(st: dict[str, Any]) -> bool:
    v, d, g = st["vanilla"], st["dirichlet"], st["gumbel"]
    top8 = max(v["pass_at_k"], key=int)
    return (v["js_top1"] is not None and v["js_top2"] is not None and v["js_top2"] >= 0.01
            and v["js_top2"] >= 5 * v["js_top1"] and d["pass_at_k"][top8] > v["pass_at_k"][top8]
            and g["pass_at_k"][top8] > v["pass_at_k"][top8]
            and all(st[m].get(k) is not None for m in ("vanilla", "dirichlet", "gumbel")
                    for k in ("mean_thinking_entropy", "softness", "randomness")))


def row(seed: int, res: dict[str, Any], study: dict[str, Any]) -> str:
    st = res["soft_thinking"]
    v, d, g, gr, sa = st["vanilla"], st["dirichlet"], st["gumbel"], st["greedy"], st["sampling"]
    det = study["details"]
    js = det["vanilla"]["js"]
    h = str(v["js_horizon"])
    other = next((k for k in js if k != h), None)
    k = max(v["pass_at_k"], key=int)
    unsure = " / ".join(f"{det[m]['softness_where_unsure']:.3f}" for m in ("vanilla", "dirichlet", "gumbel"))
    return (f"| {seed} | {res['methods']['cot']['accuracy']:.3f} | {gr['accuracy']:.3f} | {gr['mean_thinking_entropy']:.3f} "
            f"| {js[h]['steps']} | {v['js_top1']:.4f} / {v['js_top2']:.4f} ({v['js_top2'] / max(v['js_top1'], 1e-12):.1f}×) "
            + (f"| {js[other]['mean_js_st_top1']:.4f} / {js[other]['mean_js_st_top2']:.4f} " if other else "| – ")
            + f"| {v['pass_at_k'][k]:.3f} | {d['pass_at_k'][k]:.3f} | {g['pass_at_k'][k]:.3f} | {sa['pass_at_k'][k]:.3f} "
            f"| {v['softness']:.3f} / {d['softness']:.3f} / {g['softness']:.3f} | {d['randomness']:.4f} / {g['randomness']:.4f} "
            f"| {unsure} | {det['dirichlet']['randomness_where_unsure']:.3f} / {det['gumbel']['randomness_where_unsure']:.3f} "
            f"| {'yes' if acceptance(st) else '**no**'} |")


def header(cot_steps: int, snapshot: int | None) -> str:
    model = f"step-{snapshot} snapshot" if snapshot is not None else "final model"
    return (f"| seed | final CoT accuracy ({cot_steps} steps) | {model} greedy accuracy "
            "| thinking entropy, greedy path (nats) "
            "| mixed soft inputs (JS probe) | vanilla JS(soft‖top-1) / JS(soft‖top-2), reported horizon "
            "| same, other horizon | vanilla Pass@8 | Dirichlet Pass@8 | Gumbel Pass@8 | sampling Pass@8 "
            "| softness V / D / G | randomness D / G | softness where unsure V / D / G | randomness where unsure D / G "
            "| acceptance |\n|" + "---|" * 16)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--out", type=Path, default=Path("runs/soft_seeds"))
    ap.add_argument("--set", dest="set_", action="append", default=[],
                    help="study sampler override FIELD=VALUE (e.g. temperature=0.6); repeatable")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from latentreason.config import parse_override
    from latentreason.experiments.bench import run_bench
    from latentreason.experiments.demo import demo_config

    rows, ok, head = [], True, ""
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        cfg = demo_config()
        cfg.seed = seed
        cfg.entries = [e for e in cfg.entries if e.name == "cot"]
        cfg.adaptive_from, cfg.system15_grid, cfg.latency_repeats = None, 0, 1
        st = cfg.soft_thinking
        st.latent_entry = None
        for item in args.set_:
            keys, value = parse_override(item)
            st.sampler[".".join(keys)] = value
        cot = next(e for e in cfg.entries if e.name == "cot")
        head = (f"study: {st.entry} {f'step {st.checkpoint_step}' if st.checkpoint_step else 'final model'} of "
                f"{cot.train['max_steps']}, sampler {st.sampler}, horizons {st.horizons}\n\n"
                + header(cot.train["max_steps"], st.checkpoint_step))
        out = args.out / f"s{seed}"
        res = run_bench(cfg, out, progress=False, log=lambda s: print(s, flush=True))
        study = json.loads((out / "soft_thinking" / "soft_thinking.json").read_text())
        rows.append(row(seed, res, study))
        ok &= acceptance(res["soft_thinking"])
    print(head)
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
