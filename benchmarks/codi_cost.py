"""CODI's cost in ratios measured in one run on this machine.

1. Training step time of CODI over CoT-SFT's on the same batch (same examples, same model):
   the floor is about 2x (teacher pass + student passes).
2. Per-step inference cost at batch 1 and 64 (``--infer-batch``), min over interleaved rounds: one
   continuous thought as the latent loop runs it (projection + the decoder stack through
   ``inputs_embeds``, no LM head) and one cached greedy token step of the answer loop, each over the
   floor: the model's own cached forward of one token with mask and positions precomputed, and (the least a
   caller can pass) with the token and the cache alone — the same computation where no row is padded.

    python benchmarks/codi_cost.py [--batch-size 32] [--repeats 20] [--n-latent 5] [--infer-batch 1,64]
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
    ap.add_argument("--infer-batch", type=lambda x: [int(v) for v in x.split(",")], default=[1, 64],
                    help="batch sizes of the inference-step comparison (comma-separated)")
    args = ap.parse_args()
    exs, bb, cot, b_cot = cot_baseline(args.batch_size)
    from latentreason.decoding.generate import left_pad, prefill
    from latentreason.models.kv_cache import cached_forward
    from latentreason.methods.codi import CODI, CODIConfig

    codi = CODI(bb, CODIConfig(**{**CODI.presets["default_task"], "n_latent": args.n_latent}))
    opt = torch.optim.AdamW(codi.parameters(), lr=1e-4)
    b_codi = codi.collate([codi.features(t) for t in codi.prepare(exs)])

    step = train_step_fn(opt)

    t_cot = median_time(lambda: step(cot, b_cot), args.repeats)
    t_codi = median_time(lambda: step(codi, b_codi), args.repeats)

    # per-step inference cost on a warm cache after the same prefill: one continuous thought as the latent loop
    # runs it (projection + the decoder stack, no LM head), one cached greedy token as the answer loop runs it, and
    # the floor: the model's own cached forward of one token with everything precomputed (no bookkeeping)
    codi.eval()
    step_rows = []
    for b in args.infer_batch:
        prompts = codi.latent_prompts((exs * (b // len(exs) + 1))[:b])
        ids, mask = left_pad(prompts, bb.ids.pad)

        def one(kind: str, n: int = 8) -> float:
            with torch.no_grad():
                state, out = prefill(bb.model, ids, mask, reserve=n + 1, hidden_only=kind.startswith("thought"))
                if kind.startswith("thought"):
                    h = out.last_hidden_state[:, -1]
                else:
                    tok = out.logits[:, -1].argmax(-1)
                if kind.startswith("bare"):
                    attn, pos, cache = state.mask_with(n), state.positions(1), state.cache
                    width = state.length
                t = time.perf_counter()
                for i in range(n):
                    if kind == "thought":
                        h = state.step_hidden(codi.thought(h, None)[:, None]).last_hidden_state[:, -1]
                    elif kind == "thought_identity":
                        h = state.step_hidden(h[:, None]).last_hidden_state[:, -1]
                    elif kind == "token":
                        tok = state.step(input_ids=tok[:, None]).logits[:, -1].argmax(-1)
                    elif kind == "bare_nomask":  # the least a caller can pass: the token and the cache
                        o, cache = cached_forward(bb.model, cache, input_ids=tok[:, None])
                        tok = o.logits[:, -1].argmax(-1)
                    else:
                        o, cache = cached_forward(bb.model, cache, input_ids=tok[:, None], attention_mask=attn[:, : width + i + 1],
                                                  position_ids=pos + i)
                        tok = o.logits[:, -1].argmax(-1)
                return (time.perf_counter() - t) / n

        ts = {k: [] for k in ("thought", "thought_identity", "token", "bare", "bare_nomask")}
        for _ in range(args.repeats):  # interleaved, so a busy moment of the machine hits all three alike
            for k in ts:
                ts[k].append(one(k))
        step_rows.append((b, *(min(ts[k]) for k in ("thought", "thought_identity", "token", "bare", "bare_nomask"))))
    print(f"batch {args.batch_size}, tiny-gpt2 (4x128), CPU threads {torch.get_num_threads()}, n_latent {args.n_latent}")
    print(f"training step: CoT-SFT {1000 * t_cot:.1f} ms, CODI {1000 * t_codi:.1f} ms -> CODI / CoT = {t_codi / t_cot:.2f}x")
    print("inference step, min over rounds (thought: CODI's projection + the decoder stack; identity thought: the "
          "decoder stack alone, Coconut's; token: the answer loop's step; bare: the model's cached forward of one "
          "token, nothing else):")
    for b, t_th, t_id, t_tok, t_bare, t_nm in step_rows:
        print(f"  batch {b}: thought {1000 * t_th:.3f} ms, identity thought {1000 * t_id:.3f} ms, token {1000 * t_tok:.3f} ms, "
              f"bare forward {1000 * t_bare:.3f} ms -> thought / bare = {t_th / t_bare:.3f}x, "
              f"identity thought / bare = {t_id / t_bare:.3f}x, token / bare = {t_tok / t_bare:.3f}x")
        print(f"  batch {b}: bare forward without mask or positions {1000 * t_nm:.3f} ms"
              + (" (the prompts are padded: not the same computation, shown for scale)" if b > 1 else "")
              + f" -> thought / bare-no-mask = {t_th / t_nm:.3f}x, token / bare-no-mask = {t_tok / t_nm:.3f}x")


if __name__ == "__main__":
    main()
