"""The compiled decode path (``method_args.compile_decode`` / ``eval --compile``) over the eager path, per step.

Three paths: eager through transformers' forward (the direct GPT-2 step turned off), eager as the loops run
by default (a GPT-2 takes the direct step of ``models/gpt2_step.py``), and compiled.

On the demo's tiny GPT-2 (4 layers, d = 128, byte tokenizer, random weights) or GPT-2-small's shape
(``--shape gpt2-small``: 12 layers, d = 768, random weights, the byte tokenizer; nothing is
downloaded), one modchain question per row:

* a token step: greedy decoding of ``--new-tokens`` tokens with EOS ignored, minus the same with one
  token (the prefill and the first token cancel), over ``--new-tokens`` - 1;
* a thought step (CODI's projection + the decoder stack): ``--thoughts`` thoughts and one answer token,
  minus no thoughts and one answer token, over ``--thoughts``.

Both paths run in one process, interleaved in every round; each figure is the minimum over
``--rounds`` rounds (a busy moment of a shared machine only ever adds time). The first compiled call
of each step kind compiles it: that time is printed. The tokens of both paths are compared.

    python benchmarks/compile_speed.py [--batch-sizes 1,64] [--rounds 5] [--new-tokens 32] [--shape tiny]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=lambda x: [int(v) for v in x.split(",")], default=[1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--thoughts", type=int, default=6)
    ap.add_argument("--shape", choices=["tiny", "gpt2-small"], default="tiny")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from latentreason.data.registry import load_dataset
    from latentreason.decoding.compiled import compile_seconds, compiled_greedy_generate, compiled_latent_generate
    from latentreason.decoding.generate import greedy_generate, left_pad
    from latentreason.decoding.latent import latent_generate
    from latentreason.methods.codi import CODI, CODIConfig
    from latentreason.models.backbone import ModelConfig, load_backbone
    from latentreason.models.gpt2_step import set_fast_step

    size = {} if args.shape == "tiny" else {"n_layer": 12, "n_embd": 768, "n_head": 12}
    bb = load_backbone(ModelConfig(**size), seed=0)
    codi = CODI(bb, CODIConfig(n_latent=args.thoughts)).eval()
    model = bb.model.eval()
    exs = load_dataset("modchain", "test", limit=max(args.batch_sizes))
    n = args.new_tokens
    print(f"{args.shape} GPT-2 ({model.config.n_layer} layers, d={model.config.n_embd}), random weights, "
          f"CPU threads {torch.get_num_threads()}, torch {torch.__version__}; min over {args.rounds} rounds")
    print("| batch | step | eager, transformers' forward ms | eager, direct step ms (default) | compiled ms | "
          "forward / direct | direct / compiled | forward / compiled | identical tokens | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b in args.batch_sizes:
        prompts = [bb.tokenizer(e.question + "\n").input_ids for e in exs[:b]]
        lat_prompts = codi.latent_prompts(exs[:b])
        ids, mask = left_pad(lat_prompts, bb.ids.pad)

        def tokens(compiled: bool, k: int):
            fn = compiled_greedy_generate if compiled else greedy_generate
            return fn(model, prompts, bb.ids.pad, -1, k)[0]

        def thoughts(compiled: bool, k: int):
            if compiled:
                return compiled_latent_generate(model, ids, mask, n_latent=k, thought_fn=codi.thought, eot_id=bb.ids.eot,
                                                eos_id=-1, max_new_tokens=1)[0]
            return latent_generate(model, lat_prompts, n_latent=k, thought_fn=codi.thought, eot_id=bb.ids.eot,
                                   eos_id=-1, pad_id=bb.ids.pad, max_new_tokens=1).tokens

        paths = ("forward", "direct", "compiled")

        def run(path: str, fn, k: int):  # "forward": the eager path through transformers' forward
            if path != "forward":
                return fn(path == "compiled", k)
            prev = set_fast_step(False)
            try:
                return fn(False, k)
            finally:
                set_fast_step(prev)

        same = {kind: len({str(run(p, fn, k)) for p in paths}) == 1  # the first compiled call compiles
                for kind, fn, k in (("token", tokens, n), ("thought", thoughts, args.thoughts))}
        ts: dict[tuple[str, str, int], list[float]] = {}
        with torch.no_grad():
            for _ in range(args.rounds):
                for path in paths:
                    for kind, fn, ks in (("token", tokens, (1, n)), ("thought", thoughts, (0, args.thoughts))):
                        for k in ks:
                            t0 = time.perf_counter()
                            run(path, fn, k)
                            ts.setdefault((kind, path, k), []).append(time.perf_counter() - t0)
        comp = compile_seconds(model)
        for kind, (k0, k1) in (("token", (1, n)), ("thought", (0, args.thoughts))):
            per = {p: (min(ts[(kind, p, k1)]) - min(ts[(kind, p, k0)])) / (k1 - k0) for p in paths}
            f, d, c = per["forward"], per["direct"], per["compiled"]
            print(f"| {b} | {kind} | {1000 * f:.3f} | {1000 * d:.3f} | {1000 * c:.3f} | {f / d:.2f}x | {d / c:.2f}x | "
                  f"{f / c:.2f}x | {same[kind]} | {comp:.1f} |")


if __name__ == "__main__":
    main()
