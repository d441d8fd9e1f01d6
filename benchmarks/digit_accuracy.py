"""Per-digit accuracy of the answers of multiplication rows (``predictions.json``), least significant digit first:
which digits a model gets right tells how far its internal computation reaches (the lowest digit of a product
needs one digit product, every higher one the carries of all the digits below it).

    python benchmarks/digit_accuracy.py runs/repro/icot-mult --rows nocot,cot,icot,icot_keep_position
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def digit_accuracy(records: list[dict]) -> list[float]:
    """Share of questions whose answer digit i (as written: least significant first) is right, for each i."""
    width = max(len(r["gold"].split()) for r in records)
    right = [0] * width
    for r in records:
        gold = r["gold"].split()
        pred = (r.get("prediction") or "").split()
        for i, g in enumerate(gold):
            right[i] += i < len(pred) and pred[i] == g
    return [c / len(records) for c in right]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a benchmark or reproduction directory (seed-S/ sub-directories or not)")
    ap.add_argument("--rows", required=True, help="comma-separated rows")
    args = ap.parse_args()
    seeds = sorted(args.run.glob("seed-*"), key=lambda p: int(p.name.split("-")[1])) or [args.run]
    rows = args.rows.split(",")
    header = None
    for row in rows:
        for d in seeds:
            f = d / row / "predictions.json"
            if not f.is_file():
                continue
            acc = digit_accuracy(json.loads(f.read_text()))
            if header is None:
                header = len(acc)
                print("| row | seed | " + " | ".join(f"digit {i}" for i in range(header)) + " |")
                print("|---|---|" + "---|" * header)
            print(f"| {row} | {d.name if d != args.run else '–'} | " + " | ".join(f"{a:.3f}" for a in acc) + " |")


if __name__ == "__main__":
    main()
