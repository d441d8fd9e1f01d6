"""The latent-thought engine shared by CODI, Coconut and System-1.5 (SPEC §1.3).

A continuous thought is the last layer's hidden state at the previous position (post final norm
in HF GPT-2 / LLaMA), optionally passed through a projection, fed back as the next *input
embedding* through ``inputs_embeds``. ``generate()`` cannot do this, so this module owns the loop:

* :func:`latent_generate` — inference for a whole left-padded batch with one KV cache: prefill
  ``question + <bot>``, run up to ``n_max`` thoughts, feed ``<eot>``, decode the answer greedily.
  Every row has its own phase (thinking / answering), so rows may stop thinking at different
  steps (adaptive halting) and finished rows leave the batch; results equal one-by-one decoding.
* :func:`latent_forward` — the training-time variant: the same recurrence with the autograd
  graph kept, so gradients from the answer loss reach every thought; earlier positions are never
  recomputed (their keys/values stay in the cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import Tensor
from transformers import PreTrainedModel

from latentreason.decoding.compiled import compiled_latent_generate
from latentreason.decoding.generate import (DecodeState, greedy_continue, left_pad, normal_tensors, padded_prompt_mask,
                                             prefill)
from latentreason.errors import ConfigError
from latentreason.models.kv_cache import cached_forward, new_cache, release_cache


class ThoughtFn(Protocol):
    def __call__(self, hidden: Tensor, step: Tensor, rows: Tensor | None = None) -> Tensor:
        """Map last-layer states (R, d) of rows at thought index ``step`` (R,) to input embeddings (R, d).

        ``rows`` are the rows' indices in the original batch (for per-row random streams)."""


#: decides, from the state after a thought (R, d) and the thought count (R,), which rows stop thinking
HaltFn = Callable[[Tensor, Tensor], Tensor]


def identity_thought(hidden: Tensor, step: Tensor, rows: Tensor | None = None) -> Tensor:
    return hidden


@dataclass
class LatentGeneration:
    tokens: list[list[int]]
    n_thoughts: list[int]
    forward_passes: list[int]
    #: per row, the last-layer state at <bot> and after each thought (pre-projection), if recorded
    hidden: list[list[Tensor]] = field(default_factory=list)


@torch.inference_mode()
def latent_generate(
    model: PreTrainedModel,
    prompts: list[list[int]],
    *,
    n_latent: int,
    thought_fn: ThoughtFn,
    eot_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    stop_after_eos: int = 1,
    halt_fn: HaltFn | None = None,
    min_latent: int = 1,
    record_hidden: bool = False,
    last_hidden: Callable[[object], Tensor] | None = None,
    count_padding: bool = False,
    compiled: bool = False,
) -> LatentGeneration:
    """Batched cached latent decoding; ``prompts`` end with ``<bot>``.

    Each row thinks ``n_latent`` thoughts (or until ``halt_fn`` says stop, after at least
    ``min_latent``), then ``<eot>`` is fed and the answer decoded greedily until EOS.
    ``last_hidden(output)`` returns the (B, d) last-layer states of a forward pass (default: the
    last position of ``output.last_hidden_state`` for a pass through the decoder stack alone, as the
    prompt and the thoughts run, else of ``output.hidden_states[-1]``). ``count_padding``: the official CODI code's padding
    handling (see :func:`~latentreason.decoding.generate.prefill`). ``compiled``: the fixed-shape compiled
    steps of :mod:`~latentreason.decoding.compiled` (fixed thoughts: no ``halt_fn`` or ``last_hidden``).
    Runs under ``torch.inference_mode``; recorded states are returned as ordinary tensors.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    if compiled:
        if halt_fn is not None or last_hidden is not None:
            raise ConfigError("method_args.compile_decode: the compiled path runs a fixed number of thoughts on the "
                              "plain model (no halting rule, no System-1.5 shortcuts); leave it off for this method")
        tokens, passes, hidden = compiled_latent_generate(
            model, ids, mask, n_latent=n_latent, thought_fn=thought_fn, eot_id=eot_id, eos_id=eos_id,
            max_new_tokens=max_new_tokens, stop_after_eos=stop_after_eos, record_hidden=record_hidden,
            count_padding=count_padding)
        return LatentGeneration(tokens, [n_latent] * len(prompts), passes, hidden)  # already ordinary tensors
    state, out = prefill(model, ids, mask, hidden_only=True, count_padding=count_padding,
                         reserve=n_latent + 1 + max_new_tokens, grouped=last_hidden is None)
    last_hidden = last_hidden or _default_last_hidden
    n = len(prompts)
    h = last_hidden(out)
    hidden: list[list[Tensor]] = [[h[i].detach().clone()] if record_hidden else [] for i in range(n)]
    if halt_fn is None:
        gen = _lockstep(state, h, hidden, n_latent=n_latent, thought_fn=thought_fn, eot_id=eot_id, eos_id=eos_id,
                        max_new_tokens=max_new_tokens, stop_after_eos=stop_after_eos, record_hidden=record_hidden,
                        last_hidden=last_hidden)
    else:
        gen = _halting(state, h, hidden, model.get_input_embeddings(), n_latent=n_latent, thought_fn=thought_fn,
                       eot_id=eot_id, eos_id=eos_id, max_new_tokens=max_new_tokens, stop_after_eos=stop_after_eos,
                       halt_fn=halt_fn, min_latent=min_latent, record_hidden=record_hidden, last_hidden=last_hidden)
    release_cache(state.cache)  # what the loops return (tokens, counts, copied states) holds no view of it
    if record_hidden:
        gen.hidden = normal_tensors(gen.hidden)
    return gen


def _lockstep(state: DecodeState, h: Tensor, hidden: list[list[Tensor]], *, n_latent: int, thought_fn: ThoughtFn,
              eot_id: int, eos_id: int, max_new_tokens: int, stop_after_eos: int, record_hidden: bool,
              last_hidden: Callable[[object], Tensor]) -> LatentGeneration:
    """A fixed number of thoughts for every row: think in lock-step, then plain cached greedy decoding."""
    n = len(hidden)
    device = h.device
    for kk in range(n_latent):
        step = torch.full((n,), kk, dtype=torch.long, device=device)
        e = thought_fn(h, step, rows=state.rows).to(h.dtype)
        out = state.step_hidden(e[:, None, :])
        h = last_hidden(out)
        if record_hidden:
            for i in range(n):
                hidden[i].append(h[i].detach().clone())
    out = state.step(input_ids=torch.full((n, 1), eot_id, dtype=torch.long, device=device))
    tokens = greedy_continue(state, out.logits[:, -1, :], eos_id, max_new_tokens, stop_after_eos)
    return LatentGeneration(tokens, [n_latent] * n, state.row_passes.tolist(), hidden)


def _halting(state: DecodeState, h: Tensor, hidden: list[list[Tensor]], emb: torch.nn.Module, *, n_latent: int,
             thought_fn: ThoughtFn, eot_id: int, eos_id: int, max_new_tokens: int, stop_after_eos: int, halt_fn: HaltFn,
             min_latent: int, record_hidden: bool, last_hidden: Callable[[object], Tensor]) -> LatentGeneration:
    """Every row in its own phase: thinking until ``halt_fn`` (or ``n_latent``) stops it, then ``<eot>`` and its answer."""
    n = len(hidden)
    device = h.device
    k = torch.zeros(n, dtype=torch.long, device=device)  # thoughts fed, per active row
    thinking = torch.ones(n, dtype=torch.bool, device=device)
    last_tok = torch.zeros(n, dtype=torch.long, device=device)
    eos_seen = torch.zeros(n, dtype=torch.long, device=device)
    n_gen = torch.zeros(n, dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    thoughts_per_row = [0] * n
    eot_vec = emb(torch.tensor([eot_id], device=device))[0]
    while state.batch_size:
        stop = thinking & (k >= n_latent)
        if halt_fn is not None and n_latent > 0:
            may = thinking & (k >= min_latent) & ~stop
            if bool(may.any()):
                stop = stop | (may & halt_fn(h, k).to(torch.bool))
        think_now = thinking & ~stop
        inputs = torch.empty((state.batch_size, h.shape[-1]), dtype=h.dtype, device=device)
        if bool(think_now.any()):
            inputs[think_now] = thought_fn(h[think_now], k[think_now], rows=state.rows[think_now]).to(h.dtype)
        if bool(stop.any()):
            inputs[stop] = eot_vec.to(h.dtype)
        answering = ~thinking
        if bool(answering.any()):
            inputs[answering] = emb(last_tok[answering]).to(h.dtype)
        produce = ~think_now  # rows that feed <eot> or an answer token predict the next token
        producing = bool(produce.any())
        if producing:
            out = state.step(inputs_embeds=inputs[:, None, :], output_hidden_states=True)
        else:  # every row thinks: no LM head
            out = state.step_hidden(inputs[:, None, :])
        h = last_hidden(out)
        rows = state.rows.tolist()
        if record_hidden:
            for j in think_now.nonzero(as_tuple=True)[0].tolist():
                hidden[rows[j]].append(h[j].detach().clone())
        k = k + think_now.long()
        tok = out.logits[:, -1].argmax(-1) if producing else last_tok
        done = torch.zeros_like(thinking)
        for j in produce.nonzero(as_tuple=True)[0].tolist():
            tokens[rows[j]].append(int(tok[j]))
        n_gen = n_gen + produce.long()
        eos_seen = eos_seen + (produce & (tok == eos_id)).long()
        done = produce & ((eos_seen >= stop_after_eos) | (n_gen >= max_new_tokens))
        for j in stop.nonzero(as_tuple=True)[0].tolist():
            thoughts_per_row[rows[j]] = int(k[j])
        thinking = thinking & ~stop
        last_tok = torch.where(produce, tok, last_tok)
        keep = ~done
        if not bool(keep.any()):
            break
        state.keep(keep)
        h, k, thinking, last_tok, eos_seen, n_gen = (x[keep] for x in (h, k, thinking, last_tok, eos_seen, n_gen))
    return LatentGeneration(tokens, thoughts_per_row, state.row_passes.tolist(), hidden)


def _default_last_hidden(out) -> Tensor:
    """The last layer's state at the last position: the decoder's ``last_hidden_state`` (a thought
    step without the LM head) or the full model's ``hidden_states[-1]`` (the same tensor)."""
    h = getattr(out, "last_hidden_state", None)
    return (h if h is not None else out.hidden_states[-1])[:, -1]


@dataclass
class LatentForward:
    """Outputs of the training-time latent pass."""

    #: logits over the suffix positions (B, S, V)
    suffix_logits: Tensor
    #: hidden states of every layer over the suffix: tuple of (B, S, d), index 0 = embeddings
    suffix_hidden: tuple[Tensor, ...]
    #: per latent position j (0 = <bot>, 1..n = thoughts): tuple over layers of (B, d)
    latent_hidden: list[tuple[Tensor, ...]]
    #: the inputs fed at thought positions (B, n, d)
    thoughts: Tensor
    forward_passes: int


def latent_forward(
    model: PreTrainedModel,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    n_latent: int,
    thought_fn: ThoughtFn,
    suffix_ids: Tensor,
    suffix_mask: Tensor,
    thought_override: Callable[[int, Tensor], Tensor | None] | None = None,
    last_hidden: Callable[[object], Tensor] | None = None,
    count_padding: bool = False,
) -> LatentForward:
    """Question (left-padded, ends with <bot>) -> ``n_latent`` thoughts -> suffix (right-padded).

    One pass over the prompt, one per thought and one over the suffix, all on one cache with the
    graph kept. ``thought_override(k, h)`` may return the input to use at thought ``k`` instead of
    ``thought_fn`` (e.g. Coconut's pause tokens); returning None keeps the thought.
    ``last_hidden`` as in :func:`latent_generate` (``latent_hidden`` is then empty when the model
    records no hidden states). ``count_padding``: the official CODI code's padding handling (its
    ``fix_attn_mask=False``): prompt positions count the left padding, and thoughts and suffix
    attend to it.
    """
    last_hidden = last_hidden or _default_last_hidden
    B = prompt_ids.shape[0]
    cache = new_cache(model)
    if count_padding:
        pos = torch.arange(prompt_ids.shape[1], device=prompt_ids.device)[None].expand(B, -1)
        attn = padded_prompt_mask(prompt_mask, model.get_input_embeddings().weight.dtype)
    else:
        pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        attn = prompt_mask
    out, cache = cached_forward(model, cache, input_ids=prompt_ids, attention_mask=attn, position_ids=pos,
                                output_hidden_states=True)
    latent_hidden = [tuple(hs[:, -1] for hs in out.hidden_states)]
    h = last_hidden(out)
    mask = torch.ones_like(prompt_mask) if count_padding else prompt_mask
    thoughts = []
    step = torch.zeros(B, dtype=torch.long, device=prompt_ids.device)
    for kk in range(n_latent):
        e = thought_override(kk, h) if thought_override is not None else None
        if e is None:
            e = thought_fn(h, step + kk, rows=torch.arange(B, device=h.device))
        thoughts.append(e)
        p = mask.sum(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        out, cache = cached_forward(model, cache, inputs_embeds=e[:, None, :], attention_mask=mask, position_ids=p,
                                    output_hidden_states=True)
        latent_hidden.append(tuple(hs[:, -1] for hs in out.hidden_states))
        h = last_hidden(out)
    p0 = mask.sum(-1, keepdim=True)
    pos = p0 + torch.arange(suffix_ids.shape[1], device=suffix_ids.device)[None, :]
    suffix_attn = torch.ones_like(suffix_mask) if count_padding else suffix_mask
    mask = torch.cat([mask, suffix_attn.to(mask.dtype)], dim=1)
    out, cache = cached_forward(model, cache, input_ids=suffix_ids, attention_mask=mask, position_ids=pos,
                                output_hidden_states=True)
    th = torch.stack(thoughts, dim=1) if thoughts else prompt_ids.new_zeros((B, 0, h.shape[-1]), dtype=h.dtype)
    return LatentForward(out.logits, out.hidden_states, latent_hidden, th, n_latent + 2)


def right_pad(seqs: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)
