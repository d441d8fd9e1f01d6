"""Tokens/s of latentreason's batched KV-cached greedy decoder vs ``model.generate``.

Both decode the same prompts with the same tiny model for exactly the same number of new
tokens (EOS ignored), batch by batch; the script prints both throughputs and their ratio and
checks that the two produce identical tokens.

    python benchmarks/decode_speed.py [--checkpoint runs/demo/cot] [--batch-size 64] [--new-tokens 48]
"""

from __future__ import annotations

import argparse
import time

import torch

from latentreason.data.registry import load_dataset
from latentreason.decoding.generate import greedy_generate, left_pad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: a fresh tiny-gpt2)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--questions", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    if args.checkpoint:
        from latentreason.training.checkpoint import load_method

        bb = load_method(args.checkpoint).backbone
    else:
        from latentreason.models.backbone import ModelConfig, load_backbone

        bb = load_backbone(ModelConfig(), seed=0)
    model, tok = bb.model.eval(), bb.tokenizer
    exs = load_dataset("modchain", "test", limit=args.questions)
    prompts = [tok(e.question + "\n").input_ids for e in exs]
    batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]

    def ours():
        out = []
        for b in batches:  # eos=-1: never stop early, decode exactly new_tokens
            out += greedy_generate(model, b, bb.ids.pad, -1, args.new_tokens)[0]
        return out

    def hf():
        out = []
        for b in batches:
            ids, mask = left_pad(b, bb.ids.pad)
            g = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False, pad_token_id=bb.ids.pad, eos_token_id=None)
            out += g[:, ids.shape[1] :].tolist()
        return out

    def timed(fn):
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = fn()
            best = min(best, time.perf_counter() - t)
        return res, best

    with torch.no_grad():
        a, ta = timed(ours)
        b, tb = timed(hf)
    n = len(prompts) * args.new_tokens
    print(f"questions {len(prompts)}, batch {args.batch_size}, new tokens {args.new_tokens}, device cpu, threads {torch.get_num_threads()}")
    print(f"latentreason decoder : {n / ta:10.0f} tokens/s")
    print(f"model.generate       : {n / tb:10.0f} tokens/s")
    print(f"ratio (ours / generate): {tb / ta:.2f}x   identical tokens: {a == b}")


if __name__ == "__main__":
    main()
