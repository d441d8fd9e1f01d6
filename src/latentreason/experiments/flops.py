"""FLOPs estimates (SPEC §5): matrix products of the Transformer, Kaplan et al. (2020) style.

Per position and executed layer: 2·P_layer (P_layer = weights of the layer's matrices) plus
2·n_ctx·d for attention over the context. The LM head (2·d·V) is counted separately, because
System-1.5 compares "Transformer matrix products only" per decoding step (SPEC §3.5).
A System-1.5 latent step adds what its shortcut modules ran, counted per row while decoding: a
router (2·P_router) at every layer where one was consulted, an adapter (2·P_adapter) wherever one
was applied, and the key/value projection (:func:`kv_flops`: what the KV rule ``project`` runs) for
every (position, layer) whose keys/values were projected after an exit.

:func:`cot_cost` and :func:`latent_cost` give a benchmark row's cost figures (layers and FLOPs per
decoding / latent step) from its evaluation records.
"""

from __future__ import annotations

from torch import nn

from latentreason.methods.system15.shortcut_layer import is_gpt2_block
from latentreason.methods.system15.shortcuts import find_decoder_layers


def matrix_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() >= 2)


def layer_flops(model: nn.Module, n_ctx: float) -> float:
    """FLOPs of one decoder layer for one position attending over ``n_ctx`` positions."""
    layers = find_decoder_layers(model)
    d = model.get_input_embeddings().weight.shape[1]
    return 2.0 * matrix_params(layers[0]) + 2.0 * n_ctx * d


#: names of attention input projections of LLaMA-style models (queries, keys, values)
_QKV_NAMES = ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "Wqkv")


def kv_flops(model: nn.Module) -> float:
    """FLOPs of what the KV rule ``project`` runs for one skipped (position, layer): GPT-2 blocks are
    projected directly, keys and values only (the key/value columns of ``c_attn``: 2·d·2d); any other
    architecture runs its attention input projections up to ``cache.update`` (queries included)."""
    layer = find_decoder_layers(model)[0]
    d = model.get_input_embeddings().weight.shape[1]
    if is_gpt2_block(layer):
        return 2.0 * d * 2 * d
    p = sum(matrix_params(m) for n, m in layer.named_modules() if n.split(".")[-1] in _QKV_NAMES)
    if p == 0:  # unknown layout: queries, keys and values of width d
        p = 3 * d * d
    return 2.0 * p


def step_flops(model: nn.Module, n_ctx: float, layers_run: float) -> float:
    """Transformer FLOPs of one decoding step that runs ``layers_run`` layers."""
    return layers_run * layer_flops(model, n_ctx)


def head_flops(model: nn.Module) -> float:
    w = model.get_output_embeddings().weight
    return 2.0 * w.shape[0] * w.shape[1]


# --------------------------------------------------------------------------- a benchmark row's cost
def _mean_prompt_tokens(method, examples) -> float:
    prompts = method.serializer.prompts(examples)
    return sum(len(p) for p in prompts) / max(1, len(prompts))


def cot_cost(method, examples, row) -> dict[str, float]:
    """Transformer FLOPs of one CoT decoding step (full depth, at the mean context of the generation)."""
    L = len(find_decoder_layers(method.model))
    n_ctx = _mean_prompt_tokens(method, examples) + row["mean_generated_tokens"] / 2
    return {"num_layers": L, "flops_per_step": step_flops(method.model, n_ctx, L)}


def latent_cost(method, examples, records, row) -> dict[str, float]:
    """Layers run per latent step and Transformer (+ router/adapter/KV-projection) FLOPs per latent step."""
    L = len(find_decoder_layers(method.model))

    def mean_of(key: str, default: float) -> float:
        vals = [r[key] for r in records if key in r]
        return sum(vals) / len(vals) if vals else default

    m = mean_of("layers_per_latent_step", float(L))
    n_ctx = _mean_prompt_tokens(method, examples) + 1 + row["mean_latent_steps"] / 2
    flops = step_flops(method.model, n_ctx, m)
    out = {"num_layers": L, "mean_layers_per_latent_step": m}
    routers = getattr(method, "routers", None)
    if routers is not None and any("routers_per_latent_step" in r for r in records):
        per = {k: mean_of(f"{k}_per_latent_step", 0.0) for k in ("routers", "adapters", "kv_projections")}
        flops += (per["routers"] * 2.0 * matrix_params(routers[0]) + per["adapters"] * 2.0 * matrix_params(method.adapters[0])
                  + per["kv_projections"] * kv_flops(method.model))
        out.update({f"mean_{k}_per_latent_step": v for k, v in per.items()})
    out["flops_per_latent_step"] = flops
    return out
