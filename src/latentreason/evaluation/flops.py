"""FLOPs estimates (SPEC §5): matrix products of the Transformer, Kaplan et al. (2020) style.

Per position and executed layer: 2·P_layer (P_layer = weights of the layer's matrices) plus
2·n_ctx·d for attention over the context. The LM head (2·d·V) is counted separately, because
System-1.5 compares "Transformer matrix products only" per decoding step (SPEC §3.5).
A System-1.5 latent step adds what its shortcut modules ran, counted per row while decoding: a
router (2·P_router) at every layer where one was consulted, an adapter (2·P_adapter) wherever one
was applied, and the key/value projection (:func:`kv_flops`: what the KV rule ``project`` runs) for
every (position, layer) whose keys/values were projected after an exit.
"""

from __future__ import annotations

from torch import nn

from latentreason.models.shortcuts import find_decoder_layers


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
    from latentreason.models.shortcuts import _is_gpt2_block

    layer = find_decoder_layers(model)[0]
    d = model.get_input_embeddings().weight.shape[1]
    if _is_gpt2_block(layer):
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
