"""New positions of a GPT-2 on a KV cache (a decode step, or a prompt), without transformers' per-call machinery.

A decode step of a small model at batch 1 is mostly the cost of calling it: transformers' GPT-2 forward
checks its arguments, builds a 4-D mask, dispatches the attention through its interface table and wraps
every output, around about forty tensor operations. :func:`gpt2_step` runs exactly those operations, in
the same order and on the same cache (``cache.update`` as the attention calls it), and nothing else, so
its logits and states are bitwise the model's own (``tests/test_gpt2_step.py`` checks them with
``torch.equal``, with and without padding, token ids and input embeddings, iCoT's shifted positions, and
through the decode loops). Measured in the greedy loop (the demo's 4-layer GPT-2, one CPU thread;
``benchmarks/compile_speed.py``): 0.66 against 1.18 ms a token step at batch 1, 2.6 against 3.2 ms at batch 64.
Several positions (a prompt) attend under the mask transformers builds for the model (its own
``create_causal_mask``); GPT-2's ``gelu_new`` runs in place (:func:`gelu_new_inplace`, the same bits).

It applies to the transformers classes it mirrors only (``GPT2LMHeadModel`` and ``GPT2Model``, SDPA
attention, no cross-attention, not training, no autocast, no forward hooks on any module it would skip
(transformers' idle output-capture hooks excepted), no ``forward`` replaced on an instance, a 2-D
mask or none, no per-layer states asked for); everything else (LLaMA, a peft-wrapped model, System-1.5's
hooked or swapped layers, eager attention) returns None and the caller runs the model as usual.
:func:`set_fast_step` turns it off (for comparisons against the plain forward). Checked on CPU; on a GPU the
operations are the same, but no GPU has run the bitwise tests yet.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import GPT2LMHeadModel, GPT2Model
from transformers.activations import NewGELUActivation
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention, GPT2Block, GPT2MLP
from transformers.pytorch_utils import Conv1D

try:  # transformers' output-capture hooks (5.x); without the module there are none to recognise
    from transformers.utils import output_capturing as _capture
except ImportError:  # pragma: no cover - depends on the transformers release
    _capture = None

_ENABLED = True


def set_fast_step(enabled: bool) -> bool:
    """Use (True, the default) or bypass :func:`gpt2_step` in the decode loops; returns the previous setting."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, bool(enabled)
    return previous


def fast_step_enabled() -> bool:
    return _ENABLED


def _capture_hook(hook: Any) -> bool:
    """transformers' own output-capturing hook: installed on every block and attention module the first time a
    forward asks for hidden states or attentions, and a no-op unless a forward is collecting (checked per step)."""
    return _capture is not None and getattr(hook, "__module__", None) == _capture.__name__ and \
        getattr(hook, "__qualname__", "").endswith(".output_capturing_hook")


def _hooked(module: torch.nn.Module) -> bool:
    """Forward hooks on ``module`` (other than transformers' idle output capture), or a ``forward`` set on the
    instance (a wrapped or timed forward)."""
    if module._forward_pre_hooks or "forward" in module.__dict__:
        return True
    return any(not _capture_hook(h) for h in module._forward_hooks.values()) if module._forward_hooks else False


def _collecting() -> bool:
    """Whether a transformers forward is collecting outputs through its capture hooks right now (unknown: yes)."""
    if _capture is None:
        return False
    collector = getattr(_capture, "_active_collector", None)
    return collector is None or collector.get() is not None


def _global_hooks() -> bool:
    m = torch.nn.modules.module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_new_inplace(u: Tensor) -> Tensor:
    """GPT-2's ``gelu_new`` (transformers' ``NewGELUActivation``), ``0.5 * u * (1 + tanh(sqrt(2/pi) * (u + 0.044715 *
    u**3)))``, overwriting ``u``: the same element-wise operations on the same operands in the same order, so the same
    bits (``tests/test_gpt2_step.py``), with one temporary where the module's expression allocates seven (at batch 64
    each is a fresh 128 KiB buffer, and on a CPU a fresh buffer is page faults). Out of place where autograd records
    ``u`` (its backward needs the values the in-place operations would overwrite)."""
    if u.requires_grad:
        return 0.5 * u * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (u + 0.044715 * torch.pow(u, 3.0))))
    t = torch.pow(u, 3.0)
    t.mul_(0.044715).add_(u).mul_(_SQRT_2_OVER_PI).tanh_().add_(1.0)
    return u.mul_(0.5).mul_(t)


def _activation(act: Any) -> Any:
    """The MLP's activation as the step calls it on the first product's fresh output: in place for ``gelu_new``."""
    return gelu_new_inplace if type(act) is NewGELUActivation and not _hooked(act) else act


def _layer(block: Any) -> tuple | None:
    """One transformers GPT-2 block as built (no subclass, no hook on it or on a module the step skips), as the
    tensors and settings the step reads (through the modules' own dicts: ``module.weight`` costs a lookup
    through ``nn.Module.__getattr__``, a few microseconds a step at every use), or None."""
    if type(block) is not GPT2Block or "crossattention" in block._modules:
        return None
    m = block._modules
    attn, mlp, ln1, ln2 = m["attn"], m["mlp"], m["ln_1"], m["ln_2"]
    if type(attn) is not GPT2Attention or type(mlp) is not GPT2MLP:
        return None
    c_attn, a_proj = attn._modules["c_attn"], attn._modules["c_proj"]
    c_fc, m_proj = mlp._modules["c_fc"], mlp._modules["c_proj"]
    # exactly the classes transformers builds: a LoRA layer (peft replaces Conv1D in place) or any other wrapper
    # computes more than the weight the step would read
    if any(type(x) is not Conv1D for x in (c_attn, a_proj, c_fc, m_proj)) or \
            type(ln1) is not torch.nn.LayerNorm or type(ln2) is not torch.nn.LayerNorm:
        return None
    if any(_hooked(x) for x in (block, ln1, attn, c_attn, a_proj, ln2, mlp, c_fc, m_proj)):
        return None
    p = [x._parameters for x in (ln1, c_attn, a_proj, ln2, c_fc, m_proj)]
    return (ln1.normalized_shape, p[0]["weight"], p[0]["bias"], ln1.eps, p[1]["weight"], p[1]["bias"], attn.split_size,
            attn.head_dim, attn.scaling, p[2]["weight"], p[2]["bias"], ln2.normalized_shape, p[3]["weight"],
            p[3]["bias"], ln2.eps, p[4]["weight"], p[4]["bias"], _activation(mlp._modules["act"]), p[5]["weight"], p[5]["bias"])


def direct_parts(model: Any) -> tuple[GPT2Model, Any, list[tuple]] | None:
    """``(decoder, lm_head or None, layers)`` when the step can stand in for ``model``'s forward (the module
    docstring), else None."""
    if type(model) is GPT2LMHeadModel:
        decoder, head = model._modules["transformer"], model._modules["lm_head"]
        if type(decoder) is not GPT2Model or type(head) is not torch.nn.Linear or _hooked(model) or _hooked(head):
            return None
    elif type(model) is GPT2Model:
        decoder, head = model, None
    else:
        return None
    cfg = decoder.config
    if decoder.training or cfg._attn_implementation != "sdpa" or getattr(cfg, "add_cross_attention", False):
        return None
    dm = decoder._modules
    if type(dm["wte"]) is not torch.nn.Embedding or type(dm["wpe"]) is not torch.nn.Embedding or \
            type(dm["ln_f"]) is not torch.nn.LayerNorm:
        return None
    if _hooked(decoder) or any(_hooked(dm[k]) for k in ("wte", "wpe", "drop", "ln_f")):
        return None
    layers = []
    for block in dm["h"]._modules.values():
        layer = _layer(block)
        if layer is None:
            return None
        layers.append(layer)
    return decoder, head, layers


def gpt2_step(model: Any, cache: Any, *, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
              attention_mask: Tensor | None = None, position_ids: Tensor, output_hidden_states: bool = False,
              logits_to_keep: int = 0, **unused: Any) -> Any:
    """``model(..., cache=cache, use_cache=True)`` for new positions, computed directly; None where it does not
    apply (see the module docstring: the caller then runs the model itself).

    ``attention_mask``: the 2-D mask over every cached position plus the new ones, or None (no padding);
    ``position_ids``: (batch, new positions); ``logits_to_keep``: as the model's keyword (1: the LM head at the
    last position only). Returns the model's own output class: ``logits`` for a ``GPT2LMHeadModel``,
    ``last_hidden_state`` (batch, new positions, d) for a ``GPT2Model``, and ``cache``."""
    x = input_ids if input_ids is not None else inputs_embeds
    if not _ENABLED or output_hidden_states or unused or x.shape[1] < 1 or _global_hooks() or _collecting() \
            or torch.is_autocast_enabled(x.device.type) or (attention_mask is not None and attention_mask.dim() != 2):
        return None
    parts = direct_parts(model)
    if parts is None:
        return None
    return direct_step(parts, cache, input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                       position_ids=position_ids, logits_to_keep=logits_to_keep)


def direct_step(parts: tuple, cache: Any, *, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                attention_mask: Tensor | None = None, position_ids: Tensor, logits_to_keep: int = 0) -> Any:
    """The step itself, on ``parts = direct_parts(model)`` (no checks: the compiled path's body). ``cache`` may be
    transformers' static cache, with ``attention_mask`` (batch, capacity) over its slots (one new position).

    One new position attends under the 2-D mask as it stands; several (a prompt) under the mask transformers builds
    for the model (``create_causal_mask``, None where causality alone will do), the attention called as its SDPA
    integration calls it."""
    decoder, head, layers = parts
    dm = decoder._modules
    if inputs_embeds is None:
        inputs_embeds = F.embedding(input_ids, dm["wte"]._parameters["weight"])
    h = inputs_embeds + F.embedding(position_ids, dm["wpe"]._parameters["weight"])
    b, n = h.shape[:2]
    if n == 1:
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
    else:
        mask = create_causal_mask(config=decoder.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  cache=cache, position_ids=position_ids)
    causal = n > 1 and mask is None
    for i, (ln1_shape, ln1_w, ln1_b, ln1_eps, qkv_w, qkv_b, split, head_dim, scaling, ap_w, ap_b,
            ln2_shape, ln2_w, ln2_b, ln2_eps, fc_w, fc_b, act, mp_w, mp_b) in enumerate(layers):
        x = F.layer_norm(h, ln1_shape, ln1_w, ln1_b, ln1_eps)
        q, k, v = torch.addmm(qkv_b, x.view(b * n, -1), qkv_w).view(b, n, -1).split(split, dim=2)
        q, k, v = (t.view(b, n, -1, head_dim).transpose(1, 2) for t in (q, k, v))
        k, v = cache.update(k, v, i)
        if causal and k.shape[2] > n:  # as transformers' SDPA integration: causal from the first key on
            k, v = k[:, :, :n], v[:, :, :n]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scaling, is_causal=causal)
        h = torch.addmm(ap_b, a.transpose(1, 2).reshape(b * n, -1), ap_w).view(b, n, -1) + h
        x = F.layer_norm(h, ln2_shape, ln2_w, ln2_b, ln2_eps)
        h = h + torch.addmm(mp_b, act(torch.addmm(fc_b, x.view(b * n, -1), fc_w)), mp_w).view(b, n, -1)
    ln = dm["ln_f"]
    h = F.layer_norm(h, ln.normalized_shape, ln._parameters["weight"], ln._parameters["bias"], ln.eps)
    if head is None:
        return BaseModelOutputWithPast(last_hidden_state=h, cache=cache)
    if logits_to_keep:
        h = h[:, -logits_to_keep:]
    return CausalLMOutputWithPast(logits=head(h), cache=cache)
