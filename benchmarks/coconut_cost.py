"""Coconut's training cost over CoT-SFT's, in ratios measured in one run on this machine.

For each curriculum stage k = 0..K (and the final stage, every step latent), the training step
time (forward + backward + AdamW) of Coconut on the same batch as CoT-SFT (same examples, same
model): stage k feeds c·k continuous thoughts one forward pass at a time (each thought needs the
previous one's last hidden state), then the remaining language steps and the answer in one pass.
The paper's preset (identity thoughts, no teacher) and the project's ``default_task`` preset
(projection, step alignment and teacher pass) are both measured.

    python benchmarks/coconut_cost.py [--batch-size 32] [--repeats 10]
"""

from __future__ import annotations

import argparse

import torch
from _timing import cot_baseline, median_time, train_step_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    exs, bb, cot, b_cot = cot_baseline(args.batch_size)
    from latentreason.methods.coconut import Coconut, CoconutConfig

    opt = torch.optim.AdamW(bb.model.parameters(), lr=1e-4)

    step = train_step_fn(opt)

    t_cot = median_time(lambda: step(cot, b_cot), args.repeats)
    print(f"batch {args.batch_size}, tiny-gpt2 (4x128), CPU threads {torch.get_num_threads()}, 4-step modchain")
    print(f"CoT-SFT training step: {1000 * t_cot:.1f} ms")
    for preset in ("coconut_paper_default_task", "default_task"):
        m = Coconut(bb, CoconutConfig(**Coconut.presets[preset]))
        m.train()
        toks = m.prepare(exs)
        print(f"Coconut preset {preset} (c={m.config.thoughts_per_step}, K={m.config.max_latent_stage}):")
        for stage in range(0, m.final_stage + 1):
            m.stage = m._batch_stage = stage
            b = m.collate([m.features(t) for t in toks])
            t = median_time(lambda: step(m, b), args.repeats)
            label = f"stage {stage}" + (" (final)" if stage == m.final_stage else "")
            print(f"  {label:<17} {b['n_latent']} thoughts: {1000 * t:7.1f} ms -> Coconut / CoT = {t / t_cot:.2f}x")


if __name__ == "__main__":
    main()
