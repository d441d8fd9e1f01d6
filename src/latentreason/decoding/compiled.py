"""The optional compiled decode path: ``torch.compile`` on a fixed-shape step over a static cache.

The eager loops (:mod:`~latentreason.decoding.generate`, :mod:`~latentreason.decoding.latent`) drop
finished rows and attend over the filled part of a preallocated cache, so shapes change at every
step, which a compiled graph cannot follow. Here every shape is fixed for a batch: transformers'
static cache of ``capacity`` positions (rounded up to a multiple of :data:`CAPACITY_STEP`, so
batches of similar prompt lengths share a graph), a (batch, capacity) mask buffer whose slots are
switched on as they are written, and finished rows stay in the batch (their tokens after the stop
are dropped; their forward-pass counts stop where the eager path's would). The prompt runs eagerly;
each one-position step (a token to the last logits; an input embedding to the last layer's state,
without the LM head) is one compiled graph per (model, batch, capacity). A :class:`StaticRunner`
is kept per model and shape, so later batches of the same shape reuse its graphs.

The first call of a step compiles it (seconds to a minute on a CPU: ``compile_seconds``); greedy
tokens equal the eager path's (``tests/test_compiled.py``); ``benchmarks/compile_speed.py``
measures the per-step gain. Fixed thoughts only: halting rules and System-1.5's routed steps
(hooks, layers swapped per step) run eagerly.
"""

from __future__ import annotations

import time
import types
import weakref
from typing import Any, Callable

import torch
from torch import Tensor

from latentreason.decoding.generate import last_logits_only, left_pad, normal_tensors, padded_prompt_mask, trim_at_stop
from latentreason.models.gpt2_step import direct_parts, direct_step, fast_step_enabled
from latentreason.models.kv_cache import decoder_of, static_cache, static_forward

#: capacities are rounded up to a multiple of this (one compiled graph serves every batch below it)
CAPACITY_STEP = 64

_RUNNERS: "weakref.WeakKeyDictionary[Any, dict[tuple, StaticRunner]]" = weakref.WeakKeyDictionary()


class StaticRunner:
    """Fixed-shape cached steps of one model at one (batch, capacity, dtype)."""

    def __init__(self, model: Any, batch: int, capacity: int, compile: bool = True):
        self.batch, self.capacity = batch, capacity
        self._model = weakref.ref(model)  # the runner lives as long as the model (a key of _RUNNERS), not longer
        self.cache = static_cache(model, capacity)
        self.decoder = decoder_of(model)
        self._parts = direct_parts(model) if fast_step_enabled() else None  # (decoder, lm_head, layers) of a GPT-2
        self._decoder_parts = None if self._parts is None else (self._parts[0], None, self._parts[2])
        device = next(model.parameters()).device
        self.mask = torch.zeros((batch, capacity), dtype=torch.long, device=device)
        self.length = 0
        self.pos = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.compile_seconds = 0.0
        self._warm: set[str] = set()
        #: each step's input is copied into a buffer of its own: a compiled graph is guarded on its inputs' strides,
        #: and a thought computed from the prompt's last position is a view whose stride follows the prompt width
        #: (every new width would recompile, until torch's recompile limit sends the step back to eager)
        self._inputs: dict[str, Tensor] = {}
        tok, emb = self._token, self._embed
        if compile:  # each runner's steps get code objects of their own: torch caches graphs (and counts
            # recompilations against its limit) per code object, and every runner compiles its shapes once
            tok, emb = (torch.compile(_own_code(f, self), dynamic=False) for f in (StaticRunner._token, StaticRunner._embed))
        self._fns: dict[str, Callable[..., Tensor]] = {"token": tok, "embed": emb}

    @classmethod
    def get(cls, model: Any, batch: int, positions: int, compile: bool = True) -> "StaticRunner":
        """The runner of ``model`` for ``batch`` rows and at least ``positions`` positions (made on first use)."""
        capacity = -(-positions // CAPACITY_STEP) * CAPACITY_STEP
        dtype = next(model.parameters()).dtype
        runners = _RUNNERS.setdefault(model, {})
        key = (batch, capacity, dtype, compile)
        if key not in runners:
            runners[key] = cls(model, batch, capacity, compile)
        return runners[key]

    @property
    def model(self) -> Any:
        return self._model()

    # the compiled bodies: one new position of every row, on the static cache; a GPT-2 runs the direct step
    # (models/gpt2_step.py: transformers' operations without its per-call machinery), any other model its forward
    def _token(self, ids: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        inputs = dict(input_ids=ids, attention_mask=mask, position_ids=pos)
        if self._parts is not None:
            return direct_step(self._parts, self.cache, **inputs).logits[:, -1]
        return static_forward(self.model, self.cache, **inputs).logits[:, -1]

    def _embed(self, embeds: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        if self._decoder_parts is not None:  # the decoder stack alone: no LM head
            return direct_step(self._decoder_parts, self.cache, inputs_embeds=embeds, attention_mask=mask,
                               position_ids=pos).last_hidden_state[:, -1]
        return self._hidden(inputs_embeds=embeds, attention_mask=mask, position_ids=pos)

    def _hidden(self, **inputs: Any) -> Tensor:
        """The last layer's states at the last position: the decoder stack alone where the model has one."""
        if self.decoder is None:
            return static_forward(self.model, self.cache, output_hidden_states=True, **inputs).hidden_states[-1][:, -1]
        return static_forward(self.decoder, self.cache, **inputs).last_hidden_state[:, -1]

    def prefill(self, ids: Tensor, mask: Tensor, hidden_only: bool = False, count_padding: bool = False,
                position_shift: int = 0) -> Tensor:
        """Run the left-padded prompt eagerly; returns the last position's logits (or last-layer states)."""
        b, width = ids.shape
        self.cache.reset()
        self.mask.zero_()
        if count_padding:  # as decoding.generate.prefill: positions count the padding, later positions attend to it
            pos = torch.arange(width, device=ids.device)[None].expand(b, -1)
            square = padded_prompt_mask(mask, self.model.get_input_embeddings().weight.dtype)
            attn = square.new_full((b, 1, width, self.capacity), torch.finfo(square.dtype).min)
            attn[..., :width] = square
            self.mask[:, :width] = 1
        else:
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            self.mask[:, :width] = mask
            attn = self.mask
        if position_shift:
            pos = pos.clone()
            pos[:, -1] += position_shift
        self.length = width
        self.pos = self.mask[:, :width].sum(-1, keepdim=True) + position_shift
        inputs = dict(input_ids=ids, attention_mask=attn, position_ids=pos)
        if hidden_only:
            return self._hidden(**inputs)
        return static_forward(self.model, self.cache, **inputs, **last_logits_only(self.model)).logits[:, -1]

    def step(self, kind: str, x: Tensor) -> Tensor:
        """One position of every row: ``token`` ids (B,) to logits (B, V), ``embed`` inputs (B, d) to states (B, d)."""
        if self.length >= self.capacity:
            raise ValueError(f"static cache of {self.capacity} positions is full")
        self.mask[:, self.length] = 1
        fn = self._fns[kind]
        buf = self._inputs.get(kind)
        if buf is None or buf.dtype != x.dtype:
            buf = self._inputs[kind] = x.new_empty((x.shape[0], 1, *x.shape[1:]))
        buf.copy_(x[:, None])
        t0 = time.perf_counter() if kind not in self._warm else None
        out = fn(buf, self.mask, self.pos)
        if t0 is not None:  # the first call compiles
            self._warm.add(kind)
            self.compile_seconds += time.perf_counter() - t0
        self.length += 1
        self.pos = self.pos + 1
        return out


def _own_code(fn: Callable[..., Tensor], owner: Any) -> Callable[..., Tensor]:
    """``fn`` bound to ``owner`` with a copy of its code object."""
    return types.MethodType(types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__), owner)


def compile_seconds(model: Any) -> float:
    """Seconds spent so far in the first (compiling) calls of ``model``'s compiled steps, over every shape."""
    return sum(r.compile_seconds for r in _RUNNERS.get(model, {}).values())


def static_greedy(runner: StaticRunner, logits: Tensor, eos_id: int, max_new_tokens: int,
                  stop_after_eos: int = 1) -> list[list[int]]:
    """Greedy decoding on a :class:`StaticRunner` from ``logits`` (B, V): every row stays in the batch; each
    row's tokens end at its stopping EOS (included), as :func:`~latentreason.decoding.generate.greedy_continue`."""
    b = logits.shape[0]
    gen = torch.empty((b, max(max_new_tokens, 0)), dtype=torch.long, device=logits.device)
    eos_seen = torch.zeros(b, dtype=torch.long, device=logits.device)
    n = 0
    for t in range(max_new_tokens):
        tok = logits.argmax(-1)
        gen[:, t] = tok
        n = t + 1
        eos_seen = eos_seen + (tok == eos_id).long()
        if t == max_new_tokens - 1 or bool((eos_seen >= stop_after_eos).all()):
            break
        logits = runner.step("token", tok)
    out = []
    for row in gen[:, :n].tolist():
        body = trim_at_stop(row, eos_id, stop_after_eos)
        out.append(row[: len(body) + 1] if len(body) < len(row) else row)
    return out


@torch.inference_mode()
def compiled_greedy_generate(model: Any, prompts: list[list[int]], pad_id: int, eos_id: int, max_new_tokens: int,
                             stop_after_eos: int = 1, position_shift: int = 0, compile: bool = True
                             ) -> tuple[list[list[int]], list[int]]:
    """:func:`~latentreason.decoding.generate.greedy_generate` on the compiled path (``compile=False``: the same
    fixed-shape steps, eager)."""
    ids, mask = left_pad(prompts, pad_id, next(model.parameters()).device)
    runner = StaticRunner.get(model, ids.shape[0], ids.shape[1] + max_new_tokens, compile=compile)
    logits = runner.prefill(ids, mask, position_shift=position_shift)
    tokens = static_greedy(runner, logits, eos_id, max_new_tokens, stop_after_eos)
    return tokens, [len(t) for t in tokens]  # the prefill, then one pass per token after the first


@torch.inference_mode()
def compiled_latent_generate(model: Any, ids: Tensor, mask: Tensor, *, n_latent: int, thought_fn: Callable[..., Tensor],
                             eot_id: int, eos_id: int, max_new_tokens: int, stop_after_eos: int = 1,
                             record_hidden: bool = False, count_padding: bool = False, compile: bool = True
                             ) -> tuple[list[list[int]], list[int], list[list[Tensor]]]:
    """The lock-step latent loop (prompt, ``n_latent`` thoughts, ``<eot>``, greedy answer) on the compiled
    path; returns (tokens, forward passes, recorded states) per row."""
    b = ids.shape[0]
    runner = StaticRunner.get(model, b, ids.shape[1] + n_latent + 1 + max_new_tokens, compile=compile)
    h = runner.prefill(ids, mask, hidden_only=True, count_padding=count_padding)
    hidden: list[list[Tensor]] = [[h[i].clone()] if record_hidden else [] for i in range(b)]
    rows = torch.arange(b, device=ids.device)
    for k in range(n_latent):
        e = thought_fn(h, torch.full((b,), k, dtype=torch.long, device=ids.device), rows=rows).to(h.dtype)
        h = runner.step("embed", e)
        if record_hidden:
            for i in range(b):
                hidden[i].append(h[i].clone())
    logits = runner.step("token", torch.full((b,), eot_id, dtype=torch.long, device=ids.device))
    tokens = static_greedy(runner, logits, eos_id, max_new_tokens, stop_after_eos)
    return tokens, [n_latent + 1 + len(t) for t in tokens], normal_tensors(hidden) if record_hidden else hidden
