"""Grow a GPT-2 checkpoint by identity blocks: the same function, more depth to train.

Each new block is a copy of the block before it with both output projections (attention's and the MLP's
``c_proj``, weights and biases) set to zero, so it adds nothing to the residual stream: the grown model's
logits equal the original's (checked here before writing, to float32 rounding), and training starts from the
same point with more layers to learn in. Used to ask whether a plateau of an iCoT curriculum (docs/results.md,
"Past k = 32") is a capacity limit of the 4-layer model: continue the run from the grown checkpoint with
``latentreason train --init-from OUT ...``.

    python benchmarks/grow_layers.py RUN/checkpoints/step-N OUT --after 1,3   # a new block after blocks 1 and 3
    python benchmarks/grow_layers.py RUN/checkpoints/step-N OUT --after "" --mlp-width 2048   # wider MLPs only

``--mlp-width`` widens every block's MLP (GPT-2's 4 d by default) the same way: the new hidden units get
random input weights (normal, std 0.02, as GPT-2 initialises) and zero output weights, so they add nothing
until trained.

Only the model and the method's metadata are copied (no optimizer or trainer state: ``--init-from`` starts a
fresh optimiser, as every iCoT removal does).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def grow(state: dict[str, torch.Tensor], n_layer: int, after: list[int]) -> tuple[dict[str, torch.Tensor], int]:
    """The state dict with an identity block inserted after each block in ``after`` (original indices)."""
    prefix = "transformer.h."
    blocks: list[dict[str, torch.Tensor]] = [{} for _ in range(n_layer)]
    out = {}
    for k, v in state.items():
        if k.startswith(prefix):
            i, rest = k[len(prefix):].split(".", 1)
            blocks[int(i)][rest] = v
        else:
            out[k] = v
    grown: list[dict[str, torch.Tensor]] = []
    for i, b in enumerate(blocks):
        grown.append(b)
        if i in after:
            new = {k: v.clone() for k, v in b.items()}
            for k in ("attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"):
                new[k].zero_()
            grown.append(new)
    for i, b in enumerate(grown):
        out.update({f"{prefix}{i}.{k}": v.contiguous() for k, v in b.items()})
    return out, len(grown)


def widen_mlp(state: dict[str, torch.Tensor], n_layer: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict with every block's MLP widened to ``width`` hidden units (new units: random in, zero out)."""
    g = torch.Generator().manual_seed(seed)
    out = dict(state)
    for i in range(n_layer):
        p = f"transformer.h.{i}.mlp."
        w_in, b_in, w_out = state[p + "c_fc.weight"], state[p + "c_fc.bias"], state[p + "c_proj.weight"]
        d, old = w_in.shape  # Conv1D weights are (in, out)
        if width < old:
            raise SystemExit(f"--mlp-width {width} is narrower than the model's {old}")
        extra = width - old
        out[p + "c_fc.weight"] = torch.cat([w_in, 0.02 * torch.randn(d, extra, generator=g, dtype=w_in.dtype)], 1)
        out[p + "c_fc.bias"] = torch.cat([b_in, b_in.new_zeros(extra)])
        out[p + "c_proj.weight"] = torch.cat([w_out, w_out.new_zeros(extra, d)], 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--after", type=lambda x: [int(v) for v in x.split(",") if v], default=[1, 3],
                    help="insert a new block after each of these blocks (0-based, original numbering; \"\": none)")
    ap.add_argument("--mlp-width", type=int, help="widen every block's MLP to this many hidden units")
    args = ap.parse_args()
    src, out = args.checkpoint, args.out
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("model_type") != "gpt2":
        raise SystemExit(f"{src}: a GPT-2 checkpoint is needed (model_type {cfg.get('model_type')!r})")
    state = load_file(str(src / "model.safetensors"))
    if args.mlp_width:
        state = widen_mlp(state, cfg["n_layer"], args.mlp_width)
        cfg = {**cfg, "n_inner": args.mlp_width}
    new_state, n = grow(state, cfg["n_layer"], args.after)
    out.mkdir(parents=True, exist_ok=False)
    for f in src.iterdir():
        if f.name not in ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json"):
            shutil.copy2(f, out / f.name)
    (out / "config.json").write_text(json.dumps({**cfg, "n_layer": n}, indent=2) + "\n")
    save_file(new_state, str(out / "model.safetensors"), metadata={"format": "pt"})

    from latentreason.training.checkpoint import load_method  # the grown model computes what the original did

    a, b = load_method(src), load_method(out)
    ids = torch.randint(0, cfg["vocab_size"], (4, 40))
    with torch.no_grad():
        la, lb = a.model(input_ids=ids).logits, b.model(input_ids=ids).logits
    diff = (la - lb).abs().max().item()
    print(f"{src} ({cfg['n_layer']} blocks) -> {out} ({n} blocks, new after {args.after}, MLP width "
          f"{cfg.get('n_inner') or 4 * cfg['n_embd']}); max |logit difference| {diff:.2e}")
    if diff > 1e-4:
        shutil.rmtree(out)
        raise SystemExit("the grown model does not compute the original's function; nothing written")


if __name__ == "__main__":
    main()
