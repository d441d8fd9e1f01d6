"""Training-step time and peak memory at the papers' model sizes, measured on this machine.

Models: GPT-2 small (12 layers, d = 768, 50,257-token vocabulary: Coconut's, CODI's and iCoT's GPT-2)
and Llama-3.2-1B (16 layers, d = 2,048, 32 heads / 8 key-value heads, MLP 8,192, 128,256-token
vocabulary, tied embeddings: CODI's LLaMA), as *shapes*: configs built here, random weights, the
package's byte tokenizer for the token ids (nothing is downloaded). Methods: CoT-SFT and CODI (the
``codi_paper`` preset: 6 thoughts, projection, teacher + student), each full fine-tuning and LoRA
(CODI's recipe: r 128, alpha 32, on every attention and MLP matrix). Precision: float32 (``fp32``), bfloat16
autocast over float32 weights (``bf16``: what ``train.mixed_precision=bf16`` runs), and the weights themselves
in bfloat16 (``bf16w``: what ``model.dtype=bfloat16`` loads; LoRA adapters stay float32, peft's default; not in
the default set). Autocast keeps one bfloat16 copy of a weight that requires grad per step, but casts a frozen
one again at every use and autograd saves each copy: with LoRA, every pass through the model holds its own
bfloat16 copy of the frozen weights until the backward, and CODI makes one teacher and eight student passes
per step. Gradient checkpointing
(transformers' ``activation_checkpointing_enable``) on and off; for CODI it is reported as not
applicable: transformers' checkpointed layers run without the KV cache, and CODI's latent loop
needs it (its loss changes: the script checks and says so).

Every configuration runs in its own subprocess: a training step (forward, backward, AdamW) on one
batch of synthetic GSM8k-Aug-length examples (``--question-tokens`` + 4 CoT steps + answer), one
warm-up step and ``--steps`` timed ones (median). Peak memory is the subprocess's peak resident set
during the training steps on a CPU (Linux: the peak is reset after the model and batch are built, so
the transient of building random weights does not count; it holds weights, gradients, optimiser
state, activations and the Python process; the resident set after building is printed too) or
``torch.cuda.max_memory_allocated`` on a GPU.

``--quick`` (this 2-core CPU: about 20 minutes) runs batch 1, one timed step and no warm-up (the first
step also pays for first-touch allocations), and builds Llama-3.2-1B at 1 and 2 layers only: its full-depth row is projected linearly in depth from those two (marked
"projected"; a full-depth float32 full fine-tuning needs about 20 GB for weights, gradients and
AdamW state alone, more than this machine has). Without ``--quick`` every row is measured at full
depth. The table, with the projected GPU cost of the papers' recipes, is in ``docs/performance.md``.

    python benchmarks/scale.py --quick
    python benchmarks/scale.py --models gpt2-small --methods cot --batch-size 8 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the shapes (transformers config fields) and the LoRA targets of the papers' recipes
MODELS = {
    "gpt2-small": ("gpt2", dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
                   ["c_attn", "c_proj", "c_fc"]),
    "llama-3.2-1b": ("llama", dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                   num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                   max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                                   tie_word_embeddings=True),
                     ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
}


#: the papers' recipes (SPEC §3.1, §3.3, §3.4; docs/performance.md): model, method, tuning, epochs over GSM8k-Aug's
#: 385,620 training examples, the wall time the paper / official scripts report where they do
RECIPES = [
    ("CoT-SFT (Coconut's stage 0)", "gpt2-small", "cot", "full", 25, None),
    ("Coconut (stages 1-3, then 13 epochs at 6 thoughts)", "gpt2-small", "coconut", "full", 22, None),
    ("CODI, GPT-2", "gpt2-small", "codi", "lora", 40, "≈36 h on 1× A100-80GB"),
    ("CODI, LLaMA-3.2-1B", "llama-3.2-1b", "codi", "lora", 10, "≈48 h on 1× A100"),
]
GSM8K_AUG_TRAIN = 385_620
#: GSM8k-Aug in a GPT-2-style BPE: the valid split's mean question is 234 bytes (≈ 4.2 bytes a token: 56 tokens),
#: its CoT 43 bytes of equations (≈ 1.7 bytes a token: 25 tokens), then the answer and separators (≈ 6)
QUESTION_TOKENS, COT_TOKENS, ANSWER_TOKENS, THOUGHTS = 56, 25, 6, 6


def matmul_params(model_name: str) -> tuple[float, float]:
    """(weights of the decoder layers' matrices, the LM head's) of a shape, from its config fields."""
    kind, f, _ = MODELS[model_name]
    if kind == "gpt2":
        d, L, v = f["n_embd"], f["n_layer"], f["vocab_size"]
        return L * (4 * d * d + 8 * d * d), d * v  # qkv + out, 4d MLP up and down
    d, L, v, m = f["hidden_size"], f["num_hidden_layers"], f["vocab_size"], f["intermediate_size"]
    kv = f["num_key_value_heads"] * f["head_dim"]
    return L * (2 * d * d + 2 * d * kv + 3 * d * m), d * v


def recipe_rows(sustained_tflops: float) -> list[str]:
    """Training FLOPs of each paper recipe (matrix products, 2 per weight and position forward; backward 2x that with
    full fine-tuning, 1x with LoRA, whose frozen weights get no gradient) and the hours at ``sustained_tflops``."""
    rows = []
    for name, model, method, tuning, epochs, reported in RECIPES:
        layers, head = matmul_params(model)
        cot = QUESTION_TOKENS + COT_TOKENS + ANSWER_TOKENS
        # CODI: the teacher reads the whole CoT example, the student question + <bot> + thoughts + <eot> + answer;
        # Coconut (paper mechanics): the thoughts replace CoT steps, about the CoT example's positions
        positions = cot + (QUESTION_TOKENS + THOUGHTS + 2 + ANSWER_TOKENS if method == "codi" else 0)
        fwd = 2 * (layers + head) * positions
        flops = fwd * (2 if tuning == "lora" else 3) * GSM8K_AUG_TRAIN * epochs
        hours = flops / (sustained_tflops * 1e12) / 3600
        rows.append(f"| {name} | {model} | {tuning} | {epochs} | {positions} | {flops:.2e} | {hours:.1f} | "
                    f"{reported or '–'} |")
    return rows


def _rss_mb() -> float:
    """The process's peak resident set since start or the last :func:`_reset_peak` (Linux: VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes; never reset


def _reset_peak() -> bool:
    """Start the peak resident set afresh (Linux ``clear_refs``), so building the model does not count."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _examples(n: int, question_tokens: int):
    """GSM8k-Aug-length examples for the byte tokenizer: a question of ``question_tokens`` bytes, 4 steps, an answer."""
    from latentreason.data.example import Example

    words = "Natalia sold clips to 48 of her friends in April and then half as many clips in May "
    q = (words * (question_tokens // len(words) + 1))[: question_tokens - 1] + "?"
    return [Example(question=q, steps=[f"<<48/2={24 + i}>>", f"<<48+24={72 + i}>>", "<<72*2=144>>", "<<144-2=142>>"],
                    answer=str(142 + i)) for i in range(n)]


def _build(model_name: str, layers: int | None, lora: bool, dropout: bool = True, bf16_weights: bool = False):
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    from latentreason.models.backbone import Backbone, ModelConfig, maybe_apply_lora
    from latentreason.models.tokenizer import build_byte_tokenizer, special_ids

    kind, fields, targets = MODELS[model_name]
    fields = dict(fields)
    if layers is not None:
        fields["n_layer" if kind == "gpt2" else "num_hidden_layers"] = layers
    if not dropout and kind == "gpt2":
        fields.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    tok = build_byte_tokenizer()
    ids = special_ids(tok)
    common = dict(bos_token_id=ids.eos, eos_token_id=ids.eos, pad_token_id=ids.pad)
    cfg = GPT2Config(**fields, **common) if kind == "gpt2" else LlamaConfig(**fields, **common)
    torch.manual_seed(0)
    bb = Backbone(AutoModelForCausalLM.from_config(cfg), tok, ids)
    if bf16_weights:
        bb.model.to(torch.bfloat16)
    if lora:
        bb = maybe_apply_lora(bb, ModelConfig(name=model_name, lora_r=128, lora_alpha=32, lora_dropout=0.0,
                                              lora_targets=targets))
    return bb


def measure(args: argparse.Namespace) -> dict:
    """One configuration (runs in the subprocess)."""
    import torch

    torch.set_num_threads(args.threads)
    from latentreason.methods.codi import CODI, CODIConfig
    from latentreason.methods.cot import CoT, CoTConfig
    from latentreason.methods.base import method_config

    device = torch.device(args.device)
    bb = _build(args.model, args.layers, args.tuning == "lora", bf16_weights=args.precision == "bf16w")
    if args.method == "cot":
        m = CoT(bb, CoTConfig())
    else:
        m = CODI(bb, method_config(CODI, {"preset": "codi_paper"}))
    m.to(device).train()
    if args.checkpointing:
        bb.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    batch = m.collate([m.features(t) for t in m.prepare(_examples(args.batch_size, args.question_tokens))])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    import gc

    gc.collect()
    _reset_peak()
    rss_built = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step() -> float:
        t0 = time.perf_counter()
        with amp:
            loss = m(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb()
    tokens = int(batch["input_ids"].numel()) if "input_ids" in batch else None
    return {"step_s": statistics.median(times), "peak_mb": peak, "built_mb": rss_built,
            "params": sum(p.numel() for p in m.parameters()), "trainable": sum(p.numel() for p in params),
            "tokens_per_row": (tokens or 0) // args.batch_size}


def codi_checkpointing_changes_the_loss(threads: int) -> bool:
    """Whether transformers' gradient checkpointing changes CODI's loss (a 2-layer GPT-2 without dropout, same batch)."""
    import torch

    torch.set_num_threads(threads)
    from latentreason.methods.base import method_config
    from latentreason.methods.codi import CODI

    bb = _build("gpt2-small", 2, False, dropout=False)
    m = CODI(bb, method_config(CODI, {"preset": "codi_paper"}))
    batch = m.collate([m.features(t) for t in m.prepare(_examples(2, 48))])
    m.train()
    with torch.no_grad():
        plain = float(m(batch)["loss"])
        bb.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        ckpt = float(m(batch)["loss"])
    return abs(plain - ckpt) > 1e-5 * max(1.0, abs(plain))


def _run_child(cfg: dict, common: list[str]) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg), *common]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 1, 1 timed step, no warm-up, Llama-3.2-1B projected from 1 and 2 layers")
    ap.add_argument("--models", default="gpt2-small,llama-3.2-1b")
    ap.add_argument("--methods", default="cot,codi")
    ap.add_argument("--tuning", default="full,lora")
    ap.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 (autocast), bf16w (weights in bfloat16)")
    ap.add_argument("--checkpointing", default="off,on")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--question-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=torch_threads_default())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=None, help="build every shape with this many layers (smoke tests)")
    ap.add_argument("--sustained-tflops", type=float, default=100.0,
                    help="GPU throughput the recipe projection assumes (dense bf16 matrix products actually sustained)")
    ap.add_argument("--recipes-only", action="store_true", help="print the projection of the papers' recipes only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        cfg = json.loads(args.child)
        ns = argparse.Namespace(**{**vars(args), **cfg})
        print(json.dumps(measure(ns)))
        return
    print(f"Projected cost of the papers' recipes (GSM8k-Aug, {GSM8K_AUG_TRAIN:,} examples; matrix-product FLOPs at "
          f"{args.sustained_tflops:.0f} TFLOPS sustained; the sequential thought passes of Coconut and CODI are not "
          "FLOP-bound, so their real time is higher):")
    print("| recipe | model | tuning | epochs | positions / example | training FLOPs | GPU hours | reported |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(recipe_rows(args.sustained_tflops)) + "\n", flush=True)
    if args.recipes_only:
        return
    if args.quick:
        args.batch_size, args.steps, args.warmup = 1, 1, 0
    common = ["--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--question-tokens",
              str(args.question_tokens), "--threads", str(args.threads), "--device", args.device]
    ckpt_breaks_codi = codi_checkpointing_changes_the_loss(args.threads)
    depth = f"{args.layers} layer(s) per model (not the full shapes), " if args.layers else ""
    print(f"{depth}batch {args.batch_size}, {args.steps} timed step(s) (median) after {args.warmup} warm-up, {args.device}, "
          f"{args.threads} thread(s); CODI loss changes under gradient checkpointing: {ckpt_breaks_codi}", flush=True)
    print("| model | method | tuning | precision | grad. ckpt | trainable params | tokens / row | step s | peak MB | "
          "resident after build MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        full_layers = MODELS[model][1].get("n_layer") or MODELS[model][1]["num_hidden_layers"]
        depths = [args.layers] if args.layers else [1, 2] if args.quick and model == "llama-3.2-1b" else [None]
        for method in args.methods.split(","):
            for tuning in args.tuning.split(","):
                for precision in args.precision.split(","):
                    for ck in args.checkpointing.split(","):
                        on = ck == "on"
                        label = f"| {model} | {'CoT-SFT' if method == 'cot' else 'CODI'} | {tuning} | {precision} | {ck} |"
                        if on and method == "codi" and ckpt_breaks_codi:
                            print(f"{label} – | – | n/a: drops the KV cache of the latent loop | – | – |", flush=True)
                            continue
                        rows = [_run_child(dict(model=model, method=method, tuning=tuning, precision=precision,
                                                checkpointing=on, layers=d), common) for d in depths]
                        if any("error" in r for r in rows):
                            print(f"{label} – | – | failed: {next(r['error'] for r in rows if 'error' in r)} | – | – |",
                                  flush=True)
                            continue
                        r = rows[0]
                        if len(rows) == 2:  # linear in depth: f(L) = f(1) + (L - 1)(f(2) - f(1))
                            a, b = rows
                            r = {k: a[k] + (full_layers - 1) * (b[k] - a[k]) for k in ("step_s", "peak_mb", "built_mb",
                                                                                       "trainable")}
                            r["tokens_per_row"] = a["tokens_per_row"]
                            note = " (projected from 1 and 2 layers)"
                        else:
                            note = ""
                        print(f"{label} {r['trainable'] / 1e6:.1f} M | {r['tokens_per_row']} | {r['step_s']:.2f}{note} | "
                              f"{r['peak_mb']:.0f}{note} | {r['built_mb']:.0f} |", flush=True)


def torch_threads_default() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or max(1, (os.cpu_count() or 1))


if __name__ == "__main__":
    main()
