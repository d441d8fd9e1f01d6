"""Training-step time of the icot-mult model on this CPU under each precision and attention kernel, one run.

Trains the reproduction's model (tiny GPT-2, 4 layers, d = 128, digit tokens, batch 32, 4x4 multiplication with its
CoT) with ``latentreason train`` for ``--steps`` steps in each setting, the settings alternated over ``--rounds``
rounds (each in its own process, one thread), and prints the median seconds per step after ``--skip`` warm-up steps
(from ``metrics.jsonl``) and the ratio to float32 with PyTorch's default SDPA attention:

    python benchmarks/cpu_precision.py --steps 120 --rounds 3

bf16 here is autocast (``train.mixed_precision=bf16``; weights and AdamW stay float32). On a CPU with AVX512-BF16
(AMD EPYC Zen 4, and Intel Xeon with AMX) the products run in bf16; SDPA's CPU kernel is slower in bf16 than the eager
attention's plain products, so bf16 pays off with ``model.attn_implementation=eager``. The last two settings add
AdamW's fused kernel (``train.fused_optimizer``) and ``torch.compile`` of the training step (``train.compile``;
its one-off compilation falls in the warm-up steps left out, ``--only`` picks settings by name).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "fp32 / sdpa": ["train.mixed_precision=no"],
    "fp32 / eager": ["train.mixed_precision=no", "model.attn_implementation=eager"],
    "bf16 / sdpa": ["train.mixed_precision=bf16", "model.attn_implementation=sdpa"],
    "bf16 / eager": ["train.mixed_precision=bf16", "model.attn_implementation=eager"],
    "bf16 / eager, fused AdamW": ["train.mixed_precision=bf16", "model.attn_implementation=eager",
                                  "train.fused_optimizer=true"],
    "bf16 / eager, fused AdamW, compiled": ["train.mixed_precision=bf16", "model.attn_implementation=eager",
                                            "train.fused_optimizer=true", "train.compile=true"],
}
MODEL = ["model.n_layer=4", "model.n_embd=128", "model.n_head=4", "model.n_positions=128", "model.tokenizer=digits"]


def seconds_per_step(out: Path, skip: int) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tr = [r for r in rows if r.get("type") == "train"]
    a = next(r for r in tr if r["step"] >= skip)
    b = tr[-1]
    return (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--skip", type=int, default=20, help="warm-up steps left out of the timing")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--method", default="cot", help="cot | icot | ... (trained from scratch on mult_4x4)")
    p.add_argument("--only", default="", help="setting names separated by ';' (default: all; the first is the baseline)")
    a = p.parse_args()
    settings = {k: v for k, v in SETTINGS.items() if not a.only or k in [n.strip() for n in a.only.split(";")]}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    times: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for i, (name, sets) in enumerate(settings.items()):
                out = Path(tmp) / f"{r}-{i}"
                cmd = [sys.executable, "-m", "latentreason", "train", "--method", a.method, "--dataset", "mult_4x4",
                       "--max-steps", str(a.steps), "--batch-size", "32", "--lr", "1e-3", "--out", str(out)]
                for s in MODEL + sets + [f"method_args.preset={'icot' if a.method in ('cot', 'nocot') else 'icot_paper_mult'}",
                                         "train.eval_every=0", "train.log_every=10", "data.train_limit=4000",
                                         "data.valid_limit=10", "data.test_limit=10"]:
                    cmd += ["--set", s]
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[name].append(seconds_per_step(out, a.skip))
                print(f"round {r}: {name}: {times[name][-1] * 1000:.0f} ms/step", flush=True)
    first = next(iter(times))
    base = statistics.median(times[first])
    print(f"\n{a.method} on mult_4x4, batch 32, one thread, median of {a.rounds} rounds ({a.steps} steps, first {a.skip} left out)")
    print(f"| precision / attention | ms per step | speed-up vs {first} |\n|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m * 1000:.0f} | {base / m:.2f}x |")


if __name__ == "__main__":
    main()
