"""What an early exit buys in wall-clock as the model grows: System-1.5 vs the same model without shortcuts.

    python benchmarks/system15_scale.py                                  # GPT-2-small shape (12 layers, d = 768)
    python benchmarks/system15_scale.py --n-layer 4 --n-embd 128 --n-head 4   # the demo's shape

On the demo's 4-layer, d = 128 model a skipped layer saves little on a CPU, where time goes per
operation rather than per multiply (docs/system15.md, "Speed"). This script asks what the same
mechanism saves at a realistic width, without a trained model: it builds a System-1.5 model of the
given shape (random weights, stage 2, the demo's preset), sets every router to a constant — the router
of each layer from ``--exit-layer`` on always fires, those before never do — so every latent step leaves
before layer ``--exit-layer`` and the rest of the stack goes through the adapters and key/value
projections exactly as a trained model's exits do, and times it against the same weights with the
shortcuts off (CODI's inference), one question at a time, the two taking turns per question, median of
``--rounds`` rounds. Both decode the same number of tokens per question (random weights rarely emit EOS;
the forward passes per question are printed to show it). Prints one markdown table: ms per question,
ms per latent step (the latent passes alone, timed by a hook), and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    import torch
    import transformers

    from latentreason.data.registry import load_dataset
    from latentreason.experiments.latency import turn_order
    from latentreason.methods.base import method_config
    from latentreason.methods.system15.method import System15
    from latentreason.models.backbone import ModelConfig, load_backbone
    from latentreason.models.gpt2_step import set_fast_step
    from latentreason.models.kv_cache import decoder_of

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--n-head", type=int, default=12)
    ap.add_argument("--exit-layer", type=int, default=None, help="every latent step leaves before this layer (default: half the layers)")
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=6, help="answer tokens decoded per question")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    L = args.n_layer
    k = L // 2 if args.exit_layer is None else args.exit_layer
    if not 0 <= k <= L:
        ap.error(f"--exit-layer must be between 0 and {L}")
    bb = load_backbone(ModelConfig(n_layer=L, n_embd=args.n_embd, n_head=args.n_head), seed=0)
    cfg = method_config(System15, {"preset": "default_task", "max_new_tokens": args.new_tokens})
    m = System15(bb, cfg).eval()
    with torch.no_grad():
        for l, r in enumerate(m.routers):  # a constant logit: fires from layer k on, never before
            r.net[2].weight.zero_()
            r.net[2].bias.fill_(20.0 if l >= k else -20.0)
    qs = load_dataset("modchain", "test", limit=args.questions)

    # both rows through transformers' forward: System-1.5's routed steps (hooks, layers left out) cannot take the
    # direct GPT-2 step (models/gpt2_step.py), so CODI's row does not either, and the ratio is the skipped layers' alone
    set_fast_step(False)
    latent = {"s": 0.0, "n": 0}
    stack = decoder_of(m.model) or m.model  # thoughts run the decoder stack alone (no LM head)
    inner = stack.forward

    def timed_forward(*a, **kw):  # the latent passes are those fed an embedding and no token ids
        is_latent = kw.get("inputs_embeds") is not None and kw.get("input_ids") is None
        t0 = time.perf_counter()
        out = inner(*a, **kw)
        if is_latent:
            latent["s"] += time.perf_counter() - t0
            latent["n"] += 1
        return out

    stack.forward = timed_forward
    runs = {"shortcuts off (CODI)": False, "System-1.5": True}
    for use in runs.values():
        m.generate(qs[:2], shortcuts=use)  # warm-up
    per_round: dict[str, list[float]] = {n: [] for n in runs}
    per_step: dict[str, list[float]] = {n: [] for n in runs}
    passes: dict[str, float] = {}
    layers: dict[str, float] = {}
    names = list(runs)
    for r in range(args.rounds):
        spent = dict.fromkeys(names, 0.0)
        lat_s, lat_n = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
        fwd, lay = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        for i, q in enumerate(qs):
            for n in turn_order(names, i, r):
                latent["s"], latent["n"] = 0.0, 0
                t0 = time.perf_counter()
                g = m.generate([q], shortcuts=runs[n])[0]
                spent[n] += time.perf_counter() - t0
                lat_s[n] += latent["s"]
                lat_n[n] += latent["n"]
                fwd[n] += g.forward_passes
                lay[n] += g.extra.get("layers_per_latent_step", float(L))
        for n in names:
            per_round[n].append(1000 * spent[n] / len(qs))
            per_step[n].append(1000 * lat_s[n] / max(1, lat_n[n]))
            passes[n] = fwd[n] / len(qs)
            layers[n] = lay[n] / len(qs)
    base = names[0]
    q0, s0 = statistics.median(per_round[base]), statistics.median(per_step[base])
    print(f"GPT-2 shape: {L} layers, d = {args.n_embd}, {args.n_head} heads; every latent step leaves before layer {k}; "
          f"{len(qs)} questions, {args.new_tokens} answer tokens, batch 1, torch threads {torch.get_num_threads()}, "
          f"median of {args.rounds} rounds\n")
    print("| inference | layers per latent step | forward passes per question | ms per question | vs off | ms per latent step | vs off |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        q, s = statistics.median(per_round[n]), statistics.median(per_step[n])
        print(f"| {n} | {layers[n]:.2f} | {passes[n]:.1f} | {q:.2f} | {q0 / q:.2f}× | {s:.3f} | {s0 / s:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
