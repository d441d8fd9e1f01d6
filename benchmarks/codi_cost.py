"""CODI's cost in ratios measured in one run on this machine.

1. Training step time of CODI over CoT-SFT's on the same batch (same examples, same model):
   the floor is about 2x (teacher pass + student passes).
2. Per-latent-step cost over a cached one-token forward: one continuous thought (projection +
   one cached forward fed through ``inputs_embeds``) vs one cached greedy token step.

    python benchmarks/codi_cost.py [--batch-size 32] [--repeats 20] [--n-latent 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import cot_baseline, median_time, train_step_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--n-latent", type=int, default=5)
    args = ap.parse_args()
    exs, bb, cot, b_cot = cot_baseline(args.batch_size)
    from latentreason.decoding.generate import left_pad, prefill
    from latentreason.methods.codi import CODI, CODIConfig

    codi = CODI(bb, CODIConfig(**{**CODI.presets["default_task"], "n_latent": args.n_latent}))
    opt = torch.optim.AdamW(codi.parameters(), lr=1e-4)
    b_codi = codi.collate([codi.features(t) for t in codi.prepare(exs)])

    step = train_step_fn(opt)

    t_cot = median_time(lambda: step(cot, b_cot), args.repeats)
    t_codi = median_time(lambda: step(codi, b_codi), args.repeats)

    # per-step inference cost: one thought vs one token, both on a warm cache after the same prefill
    codi.eval()
    prompts = codi.latent_prompts(exs)
    ids, mask = left_pad(prompts, bb.ids.pad)

    def one(kind: str) -> float:
        with torch.no_grad():
            state, out = prefill(bb.model, ids, mask, output_hidden_states=True)
            h = out.hidden_states[-1][:, -1]
            tok = out.logits[:, -1].argmax(-1)
            t = time.perf_counter()
            for _ in range(8):
                if kind == "thought":
                    o = state.step(inputs_embeds=codi.thought(h, None)[:, None], output_hidden_states=True)
                    h = o.hidden_states[-1][:, -1]
                else:
                    o = state.step(input_ids=tok[:, None])
                    tok = o.logits[:, -1].argmax(-1)
            return (time.perf_counter() - t) / 8

    t_thought = sorted(one("thought") for _ in range(args.repeats))[args.repeats // 2]
    t_token = sorted(one("token") for _ in range(args.repeats))[args.repeats // 2]
    print(f"batch {args.batch_size}, tiny-gpt2 (4x128), CPU threads {torch.get_num_threads()}, n_latent {args.n_latent}")
    print(f"training step: CoT-SFT {1000 * t_cot:.1f} ms, CODI {1000 * t_codi:.1f} ms -> CODI / CoT = {t_codi / t_cot:.2f}x")
    print(f"inference step: thought {1000 * t_thought:.2f} ms, cached token {1000 * t_token:.2f} ms -> thought / token = {t_thought / t_token:.2f}x")


if __name__ == "__main__":
    main()
