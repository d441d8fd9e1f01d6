"""Where a mid-curriculum iCoT model goes wrong: the share of questions whose continuation is right at each
position (the CoT tokens it still writes, ``####``, the answer digits), greedy, with ``--removed`` tokens of the CoT
removed from the left as during training. A gated run's plateau shows up as one position at chance while the
tokens before it are right: the removed token is needed again further on (a running sum adding it, the answer
copying it), where the model now has to compute it.

    python benchmarks/icot_positions.py runs/gated/checkpoints/step-00066429 --removed 32 --limit 200

Positions are whitespace-separated pieces of the decoded text (digits on the multiplication data).
"""

from __future__ import annotations

import argparse

import torch

from latentreason.data.registry import load_dataset
from latentreason.methods.icot import ICoT
from latentreason.training.checkpoint import load_method


def position_accuracy(golds: list[str], preds: list[str]) -> list[float]:
    """Share of the pairs whose whitespace-separated piece i agrees, for each i of the longest gold."""
    width = max(len(g.split()) for g in golds)
    right = [0] * width
    for gold, pred in zip(golds, preds):
        p = pred.split()
        for i, g in enumerate(gold.split()):
            right[i] += i < len(p) and p[i] == g
    return [c / len(golds) for c in right]


def position_names(gold: str, removed: int, marker: str = "####") -> list[str]:
    """Each position of one gold continuation: ``CoT token N`` (1-based in the full CoT), the marker, ``answer j``."""
    pieces = gold.split()
    cut = pieces.index(marker) if marker in pieces else len(pieces)
    return ([f"CoT token {removed + 1 + i}" for i in range(cut)] + ([marker] if cut < len(pieces) else [])
            + [f"answer {j}" for j in range(len(pieces) - cut - 1)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="an iCoT run, its model/ or a checkpoints/step-N directory")
    ap.add_argument("--removed", type=int, required=True, help="CoT tokens removed from the left (the run's stage)")
    ap.add_argument("--dataset", default="mult_4x4")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load_method(a.checkpoint)
    if not isinstance(m, ICoT):
        raise SystemExit(f"{a.checkpoint}: an {m.name} checkpoint; this script reads iCoT runs")
    m.eval()
    m.removed = a.removed
    examples = load_dataset(a.dataset, a.split, limit=a.limit)
    golds = [m.tokenizer.decode(m.slice_cot(t, a.removed) + t.answer, skip_special_tokens=True)
             for t in m.prepare(examples, "examples")]
    with torch.no_grad():
        gens = m.generate(examples)
    preds = [g.text for g in gens]
    acc = position_accuracy(golds, preds)
    names = position_names(golds[0], a.removed)
    whole = sum(m.judge(ex, g).correct for ex, g in zip(examples, gens)) / len(examples)  # as the evaluation judges
    print(f"{a.checkpoint}, {a.removed} CoT tokens removed, {len(examples)} {a.dataset} {a.split} questions; "
          f"whole answer right: {whole:.3f}")
    print(f"first question: gold {golds[0]!r}\n                prediction {preds[0]!r}\n")
    print("| position | right |\n|---|---|")
    for name, x in zip(names, acc):
        print(f"| {name} | {x:.2f} |")


if __name__ == "__main__":
    main()
