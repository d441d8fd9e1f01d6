"""The learning curve of trained rows as a markdown table: validation accuracy (and reasoning tokens) against the
optimiser step and the curriculum stage, read from each run's ``metrics.jsonl``; the training loss beside it.

    python benchmarks/learning_curve.py runs/repro/icot-mult --rows icot,icot_keep_position --every 500
    python benchmarks/learning_curve.py runs/repro/icot-mult/seed-0/icot          # one run directory
    python benchmarks/learning_curve.py runs/gated-s0 runs/gated-s1 --stage-steps  # steps spent per stage

``--stage-steps`` prints one row per run directory: the optimiser steps each stage took (for iCoT's gated schedule,
stage k = k tokens removed) and the validation accuracy that ended it; bold where the stage ended below
``method_args.removal_gate`` (moved on by its cap, ``gate_max_steps`` or ``gate_deadline``'s share), "…" for the
stage still running.

For a multi-seed run (``seed-S/`` sub-directories) every seed's value is one column. ``--every N`` keeps the
validations at multiples of N steps plus the first and last (and all up to --first); ``--stages`` keeps one row per stage end instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _rows(run: Path) -> list[dict]:
    f = run / "metrics.jsonl"
    if not f.is_file():
        raise SystemExit(f"{f}: no metrics.jsonl (not a run directory)")
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def curve(run: Path, every: int | None, stages: bool, first: int = 0) -> dict[int, dict]:
    """step -> {"stage", "acc", "tokens", "loss"} for the validations kept."""
    rows = _rows(run)
    losses = {r["step"]: r["loss"] for r in rows if r.get("type") == "train"}
    vals = [r for r in rows if "valid_accuracy" in r]
    if stages:
        vals = [r for r in vals if r.get("type") in ("stage_end", "final")]
    elif every:
        last = max(r["step"] for r in vals) if vals else 0
        vals = [r for r in vals if r["step"] % every == 0 or r["step"] in (1, last) or r["step"] <= first
                or r.get("type") == "final"]
    out = {}
    for r in vals:
        near = [s for s in losses if s <= r["step"]]
        out[r["step"]] = {"stage": r.get("stage", ""), "acc": r["valid_accuracy"],
                          "tokens": r.get("valid_mean_reasoning_tokens"),
                          "loss": losses[max(near)] if near else None}
    return out


def stage_steps(run: Path) -> tuple[list[dict], int, float | None]:
    """Per stage: {"stage", "steps", "acc" (its last validation), "done", "capped"}; the last training step and
    its elapsed training seconds."""
    rows = _rows(run)
    cfg = run / "run_config.json"
    gate = json.loads(cfg.read_text()).get("method_args", {}).get("removal_gate") if cfg.is_file() else None
    last_val: dict[str, dict] = {}
    for r in rows:
        if "valid_accuracy" in r and r.get("stage") is not None:
            ended = r.get("type") == "stage_end" or last_val.get(r["stage"], {}).get("ended", False)
            done = ended or r.get("type") == "final" or last_val.get(r["stage"], {}).get("done", False)
            last_val[r["stage"]] = {"step": r["step"], "acc": r["valid_accuracy"], "done": done, "ended": ended}
    out, prev = [], 0
    for stage, v in last_val.items():
        steps = v["step"] - prev
        # a stage the gate did not end: it moved on below the gate (its cap), validated where it ended
        out.append({"stage": stage, "steps": steps, "acc": v["acc"], "done": v["done"],
                    "capped": v["ended"] and gate is not None and v["acc"] < gate})
        prev = v["step"]
    train = [r for r in rows if r.get("type") == "train"]
    return out, (train[-1]["step"] if train else 0), (train[-1].get("elapsed_s") if train else None)


def print_stage_steps(runs: list[Path]) -> None:
    tables = {r: stage_steps(r) for r in runs}
    stages = max((t[0] for t in tables.values()), key=len, default=[])
    print("| run | " + " | ".join(st["stage"] for st in stages) + " | last step | train s |")
    print("|---|" + "---|" * (len(stages) + 2))
    names = [r.name for r in runs]
    for run, (per, last, elapsed) in tables.items():
        label = run.name if names.count(run.name) == 1 else f"{run.parent.name}/{run.name}"  # seed-0/icot_gated
        cells = []
        for st in per:
            cell = f"{st['steps']:,} ({st['acc']:.2f})" if st["done"] else f"{st['acc']:.2f} after {st['steps']:,}…"
            cells.append(f"**{cell}**" if st["capped"] else cell)
        cells += [""] * (len(stages) - len(cells))
        secs = f"{elapsed:,.0f}" if elapsed is not None else "–"
        print(f"| {label} | " + " | ".join(cells) + f" | {last:,} | {secs} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="+",
                    help="a run directory, or a benchmark / reproduction directory with --rows (several with --stage-steps)")
    ap.add_argument("--rows", default=None, help="comma-separated rows of a benchmark directory")
    ap.add_argument("--every", type=int, default=None, help="keep validations at multiples of N steps")
    ap.add_argument("--stages", action="store_true", help="one row per stage end")
    ap.add_argument("--first", type=int, default=0, help="with --every: also every validation up to this step")
    ap.add_argument("--stage-steps", action="store_true", help="one row per run: the steps each stage took")
    args = ap.parse_args()
    if args.stage_steps:
        print_stage_steps(args.run)
        return
    if len(args.run) > 1:
        ap.error("several run directories only with --stage-steps")
    args.run = args.run[0]
    seeds = sorted(args.run.glob("seed-*"), key=lambda p: int(p.name.split("-")[1]))
    for row in (args.rows.split(",") if args.rows else [None]):
        runs = {p.name: p / row for p in seeds} if (seeds and row) else {"": args.run / row if row else args.run}
        curves = {name: curve(path, args.every, args.stages, args.first) for name, path in runs.items()}
        steps = sorted({s for c in curves.values() for s in c})
        print(f"\n**{row or args.run.name}** (validation accuracy / reasoning tokens; training loss)\n")
        names = list(curves)
        print("| step | stage | " + " | ".join(f"{n or 'run'}: acc / tokens / loss" for n in names) + " |")
        print("|---|---|" + "---|" * len(names))
        for s in steps:
            cells, stage = [], ""
            for n in names:
                v = curves[n].get(s)
                if v is None:
                    cells.append("–")
                    continue
                stage = v["stage"]
                tok = f"{v['tokens']:.1f}" if isinstance(v["tokens"], (int, float)) else "–"
                loss = f"{v['loss']:.3f}" if isinstance(v["loss"], (int, float)) else "–"
                cells.append(f"{v['acc']:.3f} / {tok} / {loss}")
            print(f"| {s} | {stage} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
