"""KV-cached, batched, left-padded greedy decoding — the mechanics every method shares.

A :class:`DecodeState` holds one ``transformers`` cache (through :mod:`latentreason.models.kv_cache`) for a batch of rows plus the 2-D
attention mask over everything cached so far. ``step`` appends one or more positions (token ids
or input embeddings) to every active row with correct position ids (count of real tokens
before it), so the same state serves prompt prefill, latent thoughts (``inputs_embeds``) and
answer decoding. Rows that finish leave the active batch (their cache rows are dropped), so
they stop costing compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel

from latentreason.models.kv_cache import cached_forward, new_cache


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


@dataclass
class DecodeState:
    """Cache + attention mask of the *active* rows; ``rows`` maps active index -> original row."""

    model: PreTrainedModel
    cache: Any  # a transformers Cache
    mask: Tensor
    rows: Tensor
    forward_passes: int = 0
    #: per original row, the number of forward passes that included it (prefill counts 1)
    row_passes: Tensor | None = None
    #: added to every position from the prompt's last token on (iCoT's ``keep_position``: the removed CoT
    #: tokens keep their places, so the answer sits where it sat behind the full CoT)
    position_shift: int = 0

    @property
    def batch_size(self) -> int:
        return int(self.rows.numel())

    def positions(self, n_new: int) -> Tensor:
        start = self.mask.sum(-1, keepdim=True) + self.position_shift
        return start + torch.arange(n_new, device=self.mask.device)[None, :]

    def step(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool = False,
        new_mask: Tensor | None = None,
    ):
        """Run the model on new positions of every active row; returns the model output."""
        n_new = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if new_mask is None:
            new_mask = torch.ones((self.batch_size, n_new), dtype=self.mask.dtype, device=self.mask.device)
        pos = self.positions(n_new)
        # positions of padded new slots do not matter (masked); keep them in range
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        out, self.cache = cached_forward(
            self.model,
            self.cache,
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=self.mask,
            position_ids=pos,
            output_hidden_states=output_hidden_states,
        )
        self.forward_passes += 1
        self.row_passes[self.rows] += 1
        return out

    def keep(self, active: Tensor) -> None:
        """Keep only the active rows given by a boolean mask over the current active rows."""
        if bool(active.all()):
            return
        idx = active.nonzero(as_tuple=True)[0]
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        self.rows = self.rows[idx]


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


def prefill(model: PreTrainedModel, ids: Tensor, mask: Tensor, output_hidden_states: bool = False,
            count_padding: bool = False, position_shift: int = 0):
    """Run the left-padded prompt; returns ``(state, output)``.

    ``count_padding``: reproduce a model called without position ids and, after the prompt,
    without an attention mask (the official CODI code's default): prompt positions count the
    padding, and every later position attends to it (the state's mask is all ones afterwards).
    ``position_shift``: moves the prompt's last token and everything after it right (``DecodeState``).
    """
    state = DecodeState(
        model=model,
        cache=new_cache(model),
        mask=mask,
        rows=torch.arange(ids.shape[0], device=ids.device),
        forward_passes=1,
        row_passes=torch.ones(ids.shape[0], dtype=torch.long, device=ids.device),
        position_shift=position_shift,
    )
    if count_padding:
        pos = torch.arange(ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
        attn = padded_prompt_mask(mask, model.get_input_embeddings().weight.dtype)
        state.mask = torch.ones_like(mask)
    else:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        attn = mask
    if position_shift:
        pos = pos.clone()
        pos[:, -1] += position_shift
    out, state.cache = cached_forward(
        model, state.cache, input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=output_hidden_states
    )
    return state, out


@torch.no_grad()
def greedy_continue(
    state: DecodeState,
    next_logits: Tensor,
    eos_id: int,
    max_new_tokens: int,
    stop_after_eos: int = 1,
) -> list[list[int]]:
    """Greedy decoding from ``next_logits`` (one row per active row) until EOS or the limit.

    Returns the generated tokens of each original row (the stopping EOS included). Rows leave the
    active batch as soon as they stop.
    """
    n_total = int(state.row_passes.numel())
    device = next_logits.device
    buf = torch.full((n_total, max(max_new_tokens, 0)), -1, dtype=torch.long, device=device)
    eos_seen = torch.zeros(state.batch_size, dtype=torch.long, device=device)
    logits = next_logits
    for t in range(max_new_tokens):
        tok = logits.argmax(-1)
        buf[state.rows, t] = tok
        eos_seen = eos_seen + (tok == eos_id).long()
        active = eos_seen < stop_after_eos
        if t == max_new_tokens - 1 or not bool(active.any()):
            break
        state.keep(active)
        tok, eos_seen = tok[active], eos_seen[active]
        logits = state.step(input_ids=tok[:, None]).logits[:, -1, :]
    return [[k for k in row if k >= 0] for row in buf.tolist()]


@torch.no_grad()
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
    state, out = prefill(model, ids, mask, position_shift=position_shift)
    tokens = greedy_continue(state, out.logits[:, -1, :], eos_id, max_new_tokens, stop_after_eos)
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
