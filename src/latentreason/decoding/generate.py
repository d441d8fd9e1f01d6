"""KV-cached, batched, left-padded greedy decoding — the mechanics every method shares.

A :class:`DecodeState` holds one ``transformers`` cache (through :mod:`latentreason.models.kv_cache`) for a batch of rows plus the 2-D
attention mask over everything cached so far. ``step`` appends one or more positions (token ids
or input embeddings) to every active row with correct position ids (count of real tokens
before it), so the same state serves prompt prefill, latent thoughts (``inputs_embeds``) and
answer decoding. Rows that finish leave the active batch (their cache rows are dropped), so
they stop costing compute.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import Tensor
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from latentreason.models.gpt2_step import gpt2_step
from latentreason.models.kv_cache import (PreallocatedLayer, cached_forward, decoder_of, layer_kv, new_cache,
                                         release_cache)


@dataclass
class Generation:
    """A method's answer to one question, with its cost."""

    text: str
    generated_tokens: int
    reasoning_tokens: int
    latent_steps: int = 0
    forward_passes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the generation limit ended it before its stopping EOS (evaluation counts and reports these)
    truncated: bool = False


def left_pad(seqs: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Left-pad token lists into ``(ids, mask)``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def forward(model: Any, cache: Any, **inputs: Any) -> tuple[Any, Any]:
    """``cached_forward``, through a GPT-2's direct step where it applies (``models/gpt2_step.py``: the same
    operations without transformers' per-call machinery, bitwise the same output; GELU in place)."""
    out = gpt2_step(model, cache, **inputs)
    return (out, out.cache) if out is not None else cached_forward(model, cache, **inputs)


class DecodeState:
    """Cache, attention mask and next positions of the *active* rows; ``rows`` maps active index -> original row.

    The mask lives in a buffer allocated once (every slot past the prompt is a real position once
    written: ``mask`` is a view of the filled part), the next position of every row is kept (not
    recounted from the mask), and a row's forward passes are the state's count when it leaves, so
    a step costs the model's forward and no bookkeeping of its own.
    ``position_shift`` is added to every position from the prompt's last token on (iCoT's
    ``keep_position``: the removed CoT tokens keep their places, so the answer sits where it sat
    behind the full CoT)."""

    def __init__(self, model: PreTrainedModel, cache: Any, mask: Tensor, reserve: int = 0, position_shift: int = 0):
        self.model, self.cache, self.position_shift = model, cache, position_shift
        b, width = mask.shape
        self._mask = mask.new_ones((b, width + max(reserve, 1)))
        self._mask[:, :width] = mask
        self.length = width
        self._pos = mask.sum(-1, keepdim=True) + position_shift  # the next position of each active row
        self.rows = torch.arange(b, device=mask.device)
        #: no padding anywhere (one row, prompts of one length, or the official CODI padding): steps call the model
        #: without an attention mask, causal by itself (transformers builds no 4-D mask), and feed tokens as their
        #: embeddings (a model called with token ids and no mask checks them for padding, a host sync, and warns
        #: when a generated token is the pad id)
        self.dense = bool(mask.bool().all())
        self._embed = model.get_input_embeddings()
        self.forward_passes = 1  # the prefill
        self._left = torch.zeros(b, dtype=torch.long)  # per original row: passes when it left the batch
        self._decoder = decoder_of(model)

    @property
    def batch_size(self) -> int:
        return int(self.rows.shape[0])

    @property
    def mask(self) -> Tensor:
        """The 2-D attention mask over every cached position of the active rows."""
        return self._mask[:, : self.length]

    @property
    def row_passes(self) -> Tensor:
        """Per original row, the number of forward passes that included it (prefill counts 1)."""
        out = self._left.clone()
        out[self.rows.cpu()] = self.forward_passes
        return out

    def positions(self, n_new: int) -> Tensor:
        if n_new == 1:
            return self._pos
        return self._pos + torch.arange(n_new, device=self._pos.device)[None, :]

    def mask_with(self, n_new: int) -> Tensor:
        """The mask over the cached positions plus ``n_new`` new ones."""
        end = self.length + n_new
        if end > self._mask.shape[1]:
            grow = self._mask.new_ones((self._mask.shape[0], max(end, 2 * self._mask.shape[1])))
            grow[:, : self.length] = self.mask
            self._mask = grow
        return self._mask[:, :end]

    def _forward(self, model: Any, n_new: int, **inputs: Any):
        attn = None if self.dense else self.mask_with(n_new)
        out, self.cache = forward(model, self.cache, attention_mask=attn, position_ids=self.positions(n_new), **inputs)
        self.length += n_new
        self._pos = self._pos + n_new
        self.forward_passes += 1
        return out

    def step(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
             output_hidden_states: bool = False):
        """Run the model on new positions of every active row; returns the model output."""
        n_new = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if self.dense and input_ids is not None:
            input_ids, inputs_embeds = None, self._embed(input_ids)
        return self._forward(self.model, n_new, input_ids=input_ids, inputs_embeds=inputs_embeds,
                             output_hidden_states=output_hidden_states)

    def step_hidden(self, inputs_embeds: Tensor):
        """A step whose caller needs the last layer's states only (a continuous thought): through the
        decoder stack without the LM head or every layer's states where the model has one; the output
        has ``last_hidden_state`` (and ``hidden_states`` when the whole model ran)."""
        if self._decoder is None:
            return self.step(inputs_embeds=inputs_embeds, output_hidden_states=True)
        return self._forward(self._decoder, inputs_embeds.shape[1], inputs_embeds=inputs_embeds)

    def keep(self, active: Tensor) -> None:
        """Keep only the active rows given by a boolean mask over the current active rows."""
        if bool(active.all()):
            return
        self.select(active.nonzero(as_tuple=True)[0], left=(~active).nonzero(as_tuple=True)[0])

    def select(self, idx: Tensor, left: Tensor) -> None:
        """Keep the active rows ``idx`` (ascending); ``left`` (the others) records their passes."""
        self._left[self.rows[left].cpu()] = self.forward_passes
        self.cache.batch_select_indices(idx)
        self._mask = self._mask[idx]
        self._pos = self._pos[idx]
        self.rows = self.rows[idx]


@lru_cache(maxsize=None)
def _keeps_logits(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def last_logits_only(model: Any) -> dict[str, int]:
    """The forward keyword that computes the LM head at the last position only, where the model has it."""
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # peft
    return {"logits_to_keep": 1} if _keeps_logits(type(inner)) else {}


def padded_prompt_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The 4-D additive attention mask of a left-padded prompt pass as transformers builds it on CUDA
    for a model called without position ids (what the official CODI code runs): causal over real
    tokens, and fully padded query rows attend to the whole row (its fully-masked-row fix)."""
    n = mask.shape[1]
    causal = torch.ones((n, n), dtype=torch.bool, device=mask.device).tril()
    allowed = causal[None] & mask.bool()[:, None, :]
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    out = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]


def length_groups(lengths: list[int], max_groups: int = 4, min_saving: float = 0.2) -> list[list[int]] | None:
    """Rows in length-sorted groups whose left-padded prefills cover the least area (rows x group width),
    at most ``max_groups`` groups; None when one padded pass is within ``min_saving`` of that.

    An exact dynamic programme over the distinct lengths (groups are contiguous in sorted order)."""
    n = len(lengths)
    if n < 2 or max_groups < 2:
        return None
    order = sorted(range(n), key=lambda i: lengths[i])
    distinct = sorted(set(lengths))
    if len(distinct) < 2:
        return None
    count = [0] * len(distinct)
    at = {v: i for i, v in enumerate(distinct)}
    for x in lengths:
        count[at[x]] += 1
    upto = [0]  # rows with a length among the first i distinct values
    for c in count:
        upto.append(upto[-1] + c)
    m = len(distinct)
    inf = float("inf")
    # best[g][j]: least area covering the first j distinct lengths with g groups; cut[g][j]: where the last starts
    best = [[inf] * (m + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (m + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0
    for g in range(1, max_groups + 1):
        for j in range(1, m + 1):
            for i in range(j):
                a = best[g - 1][i] + (upto[j] - upto[i]) * distinct[j - 1]
                if a < best[g][j]:
                    best[g][j], cut[g][j] = a, i
    g = min(range(1, max_groups + 1), key=lambda k: (best[k][m], k))
    if best[g][m] > (1 - min_saving) * n * distinct[-1] or g == 1:
        return None
    bounds, j = [], m
    for k in range(g, 0, -1):
        bounds.append((cut[k][j], j))
        j = cut[k][j]
    return [order[upto[i]: upto[j]] for i, j in reversed(bounds)]


def grouped_passes(fwd: Any, model: Any, hidden_only: bool, ids: Tensor, mask: Tensor, pos: Tensor,
                   lengths: list[int], groups: list[list[int]], write: Callable[[Tensor, int, Any], None]) -> Tensor:
    """The prompt pass of ``prefill`` run per group of similar length (each group padded to its own width);
    ``write(rows, start, cache)`` puts each group's keys/values where the single padded pass would have put them
    (right-aligned at ``start``). Returns the last position's output (B, 1, ·): the last layer's state, or logits
    as one padded pass with ``logits_to_keep=1`` gives them."""
    b, width = ids.shape
    extra = {} if hidden_only else last_logits_only(fwd)
    last: Tensor | None = None
    for g in groups:
        idx = torch.tensor(g, device=ids.device)
        w = max(lengths[i] for i in g)
        sl = slice(width - w, width)
        out, part = forward(fwd, new_cache(model, capacity=w), input_ids=ids[idx, sl],
                            attention_mask=mask[idx, sl], position_ids=pos[idx, sl], **extra)
        write(idx, width - w, part)
        release_cache(part)  # its keys/values are copied: the next group's cache takes the buffers
        res = out.last_hidden_state if hidden_only else out.logits
        if last is None:
            last = res.new_empty((b, 1, res.shape[-1]))
        last[idx] = res[:, -1:]
    assert last is not None
    return last


def _grouped_prefill(state: DecodeState, fwd: Any, hidden_only: bool, ids: Tensor, mask: Tensor, pos: Tensor,
                     lengths: list[int], groups: list[list[int]]):
    """:func:`grouped_passes` into the state's preallocated cache; the padding slots hold zeros and stay masked."""
    b = ids.shape[0]

    def write(idx: Tensor, start: int, part: Any) -> None:
        for i, layer in enumerate(state.cache.layers):
            layer.write_rows(idx, start, *layer_kv(part, i), batch=b)

    last = grouped_passes(fwd, state.model, hidden_only, ids, mask, pos, lengths, groups, write)
    return BaseModelOutputWithPast(last_hidden_state=last) if hidden_only else CausalLMOutputWithPast(logits=last)


def prefill(model: PreTrainedModel, ids: Tensor, mask: Tensor, output_hidden_states: bool = False,
            count_padding: bool = False, position_shift: int = 0, reserve: int = 0, hidden_only: bool = False,
            grouped: bool = False):
    """Run the left-padded prompt; returns ``(state, output)``.

    ``reserve``: the positions the caller will append (thoughts, answer tokens): the cache and the
    mask are preallocated for the prompt plus these (more still fit, by growing once).
    The output has the LM head's logits at the last prompt position only; ``hidden_only``: no
    logits at all, the last layer's states (``last_hidden_state``) through the decoder stack (a
    latent prompt, whose first thought is the state at ``<bot>``).
    ``count_padding``: reproduce a model called without position ids and, after the prompt,
    without an attention mask (the official CODI code's default): prompt positions count the
    padding, and every later position attends to it (the state's mask is all ones afterwards).
    ``position_shift``: moves the prompt's last token and everything after it right (``DecodeState``).
    ``grouped``: prompts of very different lengths are run in length-sorted groups (:func:`length_groups`)
    instead of one pass padded to the longest, and their keys/values merged into the one cache (the output
    then holds the last position only; callers that read more of it, or hooks that see every pass, leave it off).
    """
    cache = new_cache(model, capacity=ids.shape[1] + reserve)
    if count_padding:
        pos = torch.arange(ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
        attn = padded_prompt_mask(mask, model.get_input_embeddings().weight.dtype)
        state = DecodeState(model, cache, torch.ones_like(mask), reserve=reserve, position_shift=position_shift)
    else:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        attn = mask
        state = DecodeState(model, cache, mask, reserve=reserve, position_shift=position_shift)
    if position_shift:
        pos = pos.clone()
        pos[:, -1] += position_shift
    inputs = dict(input_ids=ids, attention_mask=attn, position_ids=pos)
    # the grouped pass returns the last position only: the decoder's state or the model's logits
    fwd = state._decoder if hidden_only else (None if output_hidden_states else model)
    if grouped and fwd is not None and ids.shape[0] > 1 and not count_padding \
            and all(isinstance(layer, PreallocatedLayer) for layer in cache.layers):
        lengths = mask.sum(-1).tolist()
        groups = length_groups(lengths)
        if groups is not None:
            return state, _grouped_prefill(state, fwd, hidden_only, ids, mask, pos, lengths, groups)
    if hidden_only and state._decoder is not None:
        out, state.cache = forward(state._decoder, cache, **inputs)
    elif hidden_only or output_hidden_states:
        out, state.cache = cached_forward(model, cache, output_hidden_states=True, **inputs)
    else:
        out, state.cache = forward(model, cache, **inputs, **last_logits_only(model))
    return state, out


def normal_tensors(rows: list[list[Tensor]]) -> list[list[Tensor]]:
    """Copies, usable by autograd, of states recorded by a decode loop. The loops run under
    ``torch.inference_mode`` (no autograd bookkeeping on any op: at batch 1, where a step is a few hundred
    small ops, about a tenth of its time on a CPU); the tensors they make cannot be saved for backward."""
    with torch.inference_mode(False):
        return [[t.clone() for t in row] for row in rows]


@torch.inference_mode()
def greedy_continue(
    state: DecodeState,
    next_logits: Tensor,
    eos_id: int,
    max_new_tokens: int,
    stop_after_eos: int = 1,
) -> list[list[int]]:
    """Greedy decoding from ``next_logits`` (one row per active row) until EOS or the limit.

    Returns the generated tokens of each original row (the stopping EOS included). Rows leave the
    active batch as soon as they stop; a step in which none stops costs the forward pass, an
    argmax, a column write and one comparison (one host sync).
    """
    out: list[list[int]] = [[] for _ in range(int(state._left.numel()))]
    if max_new_tokens <= 0:
        return out
    device = next_logits.device
    gen = torch.empty((state.batch_size, max_new_tokens), dtype=torch.long, device=device)  # tokens of active rows
    eos_seen = None if stop_after_eos == 1 else torch.zeros(state.batch_size, dtype=torch.long, device=device)
    logits = next_logits
    for t in range(max_new_tokens):
        tok = logits.argmax(-1)
        gen[:, t] = tok
        if eos_seen is None:
            active = tok != eos_id
        else:
            eos_seen = eos_seen + (tok == eos_id).long()
            active = eos_seen < stop_after_eos
        last = t == max_new_tokens - 1
        n_active = int(active.sum())
        if n_active < active.shape[0] or last:
            done = (~active).nonzero(as_tuple=True)[0] if not last else torch.arange(active.shape[0], device=device)
            for r, toks in zip(state.rows[done].tolist(), gen[done, : t + 1].tolist()):
                out[r] = toks
            if last or n_active == 0:
                break
            idx = active.nonzero(as_tuple=True)[0]
            state.select(idx, left=done)
            gen, tok = gen[idx], tok[idx]
            if eos_seen is not None:
                eos_seen = eos_seen[idx]
        logits = state.step(input_ids=tok[:, None]).logits[:, -1, :]
    return out


@torch.inference_mode()
def greedy_generate(
    model: PreTrainedModel,
    prompts: list[list[int]],
    pad_id: int,
    eos_id: int,
    max_new_tokens: int,
    stop_after_eos: int = 1,
    position_shift: int = 0,
) -> tuple[list[list[int]], list[int]]:
    """Batched cached greedy decoding of token prompts; returns (tokens, forward passes per row).
    ``position_shift``: see :class:`DecodeState`."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    state, out = prefill(model, ids, mask, position_shift=position_shift, reserve=max_new_tokens, grouped=True)
    tokens = greedy_continue(state, out.logits[:, -1, :], eos_id, max_new_tokens, stop_after_eos)
    release_cache(state.cache)
    return tokens, state.row_passes.tolist()


@torch.no_grad()
def greedy_reference(
    model: PreTrainedModel, prompt: list[int], eos_id: int, max_new_tokens: int, stop_after_eos: int = 1
) -> list[int]:
    """Uncached one-row greedy decoding (recomputes the whole sequence each token): the oracle in tests."""
    device = next(model.parameters()).device
    seq = list(prompt)
    out: list[int] = []
    eos = 0
    for _ in range(max_new_tokens):
        logits = model(input_ids=torch.tensor([seq], device=device)).logits[0, -1]
        tok = int(logits.argmax())
        out.append(tok)
        seq.append(tok)
        eos += tok == eos_id
        if eos >= stop_after_eos:
            break
    return out


def hit_limit(tokens: list[int], body: list[int], budget: int) -> bool:
    """Whether a generation was cut by the limit: no stopping EOS (``body`` is all of it) and ``budget`` used."""
    return len(body) == len(tokens) and len(tokens) >= budget


def trim_at_stop(tokens: list[int], eos_id: int, stop_after_eos: int = 1) -> list[int]:
    """Tokens before the stopping EOS (earlier EOS tokens kept)."""
    seen = 0
    for i, t in enumerate(tokens):
        if t == eos_id:
            seen += 1
            if seen >= stop_after_eos:
                return tokens[:i]
    return tokens
