"""Where System-1.5's skipped layers go in wall-clock time: CODI vs System-1.5 at batch 100 and batch 1.

    python benchmarks/system15_speed.py --run runs/demo5/seed-0            # a demo run's codi and system15
    python benchmarks/system15_speed.py --run runs/demo --questions 60 --rounds 3

Loads ``RUN/codi/model`` and ``RUN/system15/model`` (and ``RUN/cot/model`` for reference), decodes the
same test questions with each, interleaved (the order reversed every other round, median of the
rounds; at batch 1 the models take turns per question, as the benchmark's latency), at batch 100
and at batch 1 (SPEC §5's latency protocol), and counts the decoder-layer calls
each model makes (a forward hook on every layer): System-1.5 saves a layer in wall-clock only when
*every* row of the batch skips it, and each skipped (position, layer) still costs an adapter, a
key/value projection and, before it, a router. Prints one markdown table; the ratios are what to
quote (one machine, one run).
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

    from latentreason.experiments.latency import turn_order
    from latentreason.methods.system15.shortcuts import find_decoder_layers
    from latentreason.training.api import load_split
    from latentreason.training.checkpoint import load_method
    from latentreason.training.run_config import load_run_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a demo run directory (one seed) with cot, codi, system15")
    ap.add_argument("--questions", type=int, default=100, help="test questions decoded at batch 1 (batch 100 uses 5x)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="100,1", help="batch sizes to time, comma-separated (default 100,1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ("cot", "codi", "system15")
    models = {n: load_method(args.run / n / "model") for n in names}
    test = load_split(load_run_config(args.run / "system15" / "run_config.json"), "test")
    calls = {n: 0 for n in names}
    for n, m in models.items():
        m.eval()
        for layer in find_decoder_layers(m.model):
            layer.register_forward_pre_hook(lambda mod, a, n=n: calls.__setitem__(n, calls[n] + 1))
        m.generate(test[:2])  # warm-up
    rows = []
    batch_sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    for batch, count in ((b, args.questions if b == 1 else 5 * args.questions) for b in batch_sizes):
        qs = test[:count]
        times: dict[str, list[float]] = {n: [] for n in names}
        for n in names:
            calls[n] = 0
        for r in range(args.rounds):
            if batch == 1:  # as the benchmark's latency: the models take turns per question, order rotated
                spent = dict.fromkeys(names, 0.0)
                for i, q in enumerate(qs):
                    for n in turn_order(list(names), i, r):
                        t0 = time.perf_counter()
                        models[n].generate([q])
                        spent[n] += time.perf_counter() - t0
                for n in names:
                    times[n].append(1000 * spent[n] / len(qs))
                continue
            order = list(names) if r % 2 == 0 else list(reversed(names))
            for n in order:
                t0 = time.perf_counter()
                for i in range(0, len(qs), batch):
                    models[n].generate(qs[i : i + batch])
                times[n].append(1000 * (time.perf_counter() - t0) / len(qs))
        batches = args.rounds * -(-len(qs) // batch)
        for n in names:
            rows.append((batch, len(qs), n, statistics.median(times[n]), calls[n] / batches))
    print(f"torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds, median\n")
    print("| batch | questions | model | ms / question | decoder-layer calls per batch | vs codi (time) |")
    print("|---|---|---|---|---|---|")
    for batch, nq, n, ms, c in rows:
        ref = next(r[3] for r in rows if r[0] == batch and r[2] == "codi")
        print(f"| {batch} | {nq} | {n} | {ms:.3f} | {c:.1f} | {ref / ms:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
