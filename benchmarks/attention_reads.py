"""What a batch-64 decode step's attention costs once every layer's keys and values are in play.

A one-position decode step attends over the cache of every layer in turn. In isolation (one layer's buffers,
timed again and again) they stay in the processor's caches; in the decode loop the four layers' keys and values
(batch x heads x length x head_dim floats, twice, per layer) plus the weights are the working set, and at batch
64 that is larger than what the caches keep for one core. This script times SDPA as the decode step calls it (one
query, the filled part of preallocated buffers, a boolean padding mask) over ``--layers`` layers' buffers in turn,
against the same calls over one layer's buffers, and prints the ratio and the bytes of keys and values read per
second (medians of --repeats calls or rounds); ``--stream`` bytes summed (a plain read of memory no cache holds) give
the memory's own rate.

    python benchmarks/attention_reads.py [--batch 64] [--heads 4] [--head-dim 32] [--length 68] [--capacity 128]
        [--layers 4] [--repeats 50] [--threads 1]

docs/performance.md ("Against the official code") uses it for the Coconut short-prompt shape at batch 64.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--length", type=int, default=68, help="filled positions (prompt + thoughts + tokens so far)")
    ap.add_argument("--capacity", type=int, default=128, help="positions the preallocated buffers hold")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--stream", type=int, default=256 << 20, help="bytes read once for the memory's own rate")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, h, d, n, cap = args.batch, args.heads, args.head_dim, args.length, args.capacity
    if not 0 < n <= cap:
        ap.error("--length must be between 1 and --capacity")
    keys = [torch.randn(b, h, cap, d) for _ in range(args.layers)]
    values = [torch.randn(b, h, cap, d) for _ in range(args.layers)]
    q = torch.randn(b, h, 1, d)
    mask = torch.ones(b, 1, 1, n, dtype=torch.bool)
    mask[::3, ..., : n // 8] = False  # some rows padded, as in a batch of prompts of different lengths

    def attend(i: int):
        return lambda: F.scaled_dot_product_attention(q, keys[i][:, :, :n], values[i][:, :, :n], attn_mask=mask)

    calls = [attend(i) for i in range(args.layers)]
    with torch.inference_mode():
        one = median_time(calls[0], args.repeats)
        every = median_time(lambda: [c() for c in calls], args.repeats) / args.layers  # per call
        big = torch.ones(max(args.stream // 4, 1))
        stream = median_time(big.sum, 3)
    kv_bytes = 2 * b * h * n * d * 4
    print(f"batch {b}, {h} heads x {d}, {n} of {cap} positions, {args.layers} layers, {args.threads} thread(s); "
          f"keys + values {kv_bytes / 2**20:.2f} MiB a layer")
    print("| attention over | us per call | keys + values read (GB/s) |")
    print("|---|---|---|")
    print(f"| one layer's buffers (stay cached) | {one * 1e6:.0f} | {kv_bytes / one / 1e9:.1f} |")
    print(f"| {args.layers} layers' buffers in turn (the decode step) | {every * 1e6:.0f} | {kv_bytes / every / 1e9:.1f} |")
    print(f"memory read rate (sum of {big.numel() * 4 / 2**20:.0f} MiB): {big.numel() * 4 / stream / 1e9:.1f} GB/s")
    print(f"{args.layers} layers / one layer = {every / one:.2f}x")


if __name__ == "__main__":
    main()
