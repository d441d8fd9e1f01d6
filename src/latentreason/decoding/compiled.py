"""The optional compiled decode path: ``torch.compile`` on a fixed-shape step over a static cache.

The eager loops (:mod:`~latentreason.decoding.generate`, :mod:`~latentreason.decoding.latent`) drop
finished rows and attend over the filled part of a preallocated cache, so shapes change at every
step, which a compiled graph cannot follow. Here every shape is fixed for a batch: transformers'
static cache of ``capacity`` positions (rounded up to a multiple of :data:`CAPACITY_STEP`, so
batches of similar prompt lengths share a graph), a (batch, capacity) mask buffer whose slots are
switched on as they are written, and finished rows stay in the batch (their tokens after the stop
are dropped; their forward-pass counts stop where the eager path's would). The prompt runs eagerly;
each one-position step is one compiled graph per (model, batch, capacity): a greedy step (a token to
its greedy successor, with the EOS count, the mask slot and the positions updated in place, so a
step is one call) and a thought step (an input embedding to the last layer's state, without the LM
head). A :class:`StaticRunner` is kept per model and shape, so later batches of the same shape reuse
its graphs; after a graph's first call its loops skip dynamo's guard evaluation (every input is a
buffer of the runner's own).

On a CPU the steps are compiled for inference (:data:`CPU_OPTIONS`): the weights *frozen* into the graph
(constants, pre-packed for the matrix kernels), matrix products chosen among MKL and inductor's own C++
kernels by timing them on the step's shapes, and the graph called from a C++ wrapper instead of
Python. A frozen graph holds the weights it was compiled with, so a runner remembers the parameters'
storage and sums (:func:`weights_version`) and is rebuilt (compiled again) when they change, e.g. after
an optimiser step between two validations of a training run.

The first call of a step compiles it (seconds to a minute on a CPU: ``compile_seconds``); greedy
tokens equal the eager path's (``tests/test_compiled.py``); ``benchmarks/compile_speed.py``
measures the per-step gain. Fixed thoughts only: halting rules and System-1.5's routed steps
(hooks, layers swapped per step) run eagerly.
"""

from __future__ import annotations

import contextlib
import time
import types
import weakref
from typing import Any, Callable

import torch
from torch import Tensor

from latentreason.decoding.generate import (grouped_passes, last_logits_only, left_pad, length_groups, normal_tensors,
                                            padded_prompt_mask, trim_at_stop)
from latentreason.models.gpt2_step import direct_parts, direct_step, fast_step_enabled
from latentreason.models.kv_cache import decoder_of, layer_kv, static_cache, static_forward

#: inductor's options for the CPU steps (``torch.compile(options=...)``): freezing, autotuned matrix products, the
#: C++ wrapper; the autotuning's choice tables are not printed. On other devices the defaults.
CPU_OPTIONS = {"freezing": True, "max_autotune_gemm": True, "cpp_wrapper": True,
               "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}

#: capacities are rounded up to a multiple of this (one compiled graph serves every batch below it)
CAPACITY_STEP = 64

_RUNNERS: "weakref.WeakKeyDictionary[Any, dict[tuple, StaticRunner]]" = weakref.WeakKeyDictionary()


class StaticRunner:
    """Fixed-shape cached steps of one model at one (batch, capacity, dtype)."""

    def __init__(self, model: Any, batch: int, capacity: int, compile: bool = True, weights: Any = None):
        self.batch, self.capacity = batch, capacity
        self._model = weakref.ref(model)  # the runner lives as long as the model (a key of _RUNNERS), not longer
        #: the weights a compiled runner's graphs were made with (:func:`weights_version`; eager runners read them live)
        self.weights = (weights if weights is not None else weights_version(model)) if compile else None
        self.cache = static_cache(model, capacity)
        self.decoder = decoder_of(model)
        self._parts = direct_parts(model) if fast_step_enabled() else None  # (decoder, lm_head, layers) of a GPT-2
        self._decoder_parts = None if self._parts is None else (self._parts[0], None, self._parts[2])
        device = next(model.parameters()).device
        emb = model.get_input_embeddings().weight
        # every graph input is a buffer of the runner, fixed in shape, dtype and strides; the graphs update them in
        # place (the mask slot they write, the positions, the slot counter, the greedy state), so a step is one call
        self.mask = torch.zeros((batch, capacity), dtype=torch.long, device=device)
        self.pos = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.col = torch.zeros(1, dtype=torch.long, device=device)  # the slot the next step writes (= self.length)
        self.length = 0
        #: a thought's input: a copy, whatever the strides of the tensor it came from (a state of the prompt's last
        #: position is a view whose stride follows the prompt width: a graph guarded on it would recompile)
        self.embeds = torch.zeros((batch, 1, emb.shape[1]), dtype=emb.dtype, device=device)
        # a traced thought's inputs: the states it starts from (a copy, as above), the thought's index, the rows
        self.states = torch.zeros((batch, emb.shape[1]), dtype=emb.dtype, device=device)
        self.k = torch.zeros(batch, dtype=torch.long, device=device)
        self.rows = torch.arange(batch, device=device)
        # the greedy step's state: its input token (its output, written back), EOS seen per row, EOS id, stop count
        self.ids = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.seen = torch.zeros(batch, dtype=torch.long, device=device)
        self.eos = torch.zeros(1, dtype=torch.long, device=device)
        self.stop = torch.ones(1, dtype=torch.long, device=device)
        self.compiled = compile
        self.compile_seconds = 0.0
        self._options = CPU_OPTIONS if device.type == "cpu" else None
        self._warm: set[Any] = set()
        self._fns: dict[Any, Callable[..., Any]] = {k: self._compiled(k) for k in ("greedy", "embed")}
        #: a method whose own ``thought`` is traced into a thought graph -> (its kind, its own weights' version)
        self._thinkers: "weakref.WeakKeyDictionary[Any, tuple[Any, Any]]" = weakref.WeakKeyDictionary()

    def _compiled(self, body: str) -> Callable[..., Any]:
        """The step ``_<body>`` of this runner, through torch.compile where the runner compiles. Each runner's steps
        get code objects of their own: torch caches graphs (and counts recompilations against its limit) per code
        object, and every runner compiles its shapes once."""
        fn = getattr(StaticRunner, "_" + body)
        if not self.compiled:
            return types.MethodType(fn, self)
        return torch.compile(_own_code(fn, self), dynamic=False, options=self._options)

    @classmethod
    def get(cls, model: Any, batch: int, positions: int, compile: bool = True) -> "StaticRunner":
        """The runner of ``model`` for ``batch`` rows and at least ``positions`` positions (made on first use)."""
        capacity = -(-positions // CAPACITY_STEP) * CAPACITY_STEP
        dtype = next(model.parameters()).dtype
        runners = _RUNNERS.setdefault(model, {})
        key = (batch, capacity, dtype, compile)
        runner = runners.get(key)
        weights = weights_version(model) if compile else None  # one pass over the weights per call, compiled only
        if runner is None or runner.weights != weights:  # new, or its frozen weights are stale
            runner = runners[key] = cls(model, batch, capacity, compile, weights)
        return runner

    @property
    def model(self) -> Any:
        return self._model()

    # the compiled bodies: one new position of every row, on the static cache; a GPT-2 runs the direct step
    # (models/gpt2_step.py: transformers' operations without its per-call machinery), any other model its forward
    def _greedy(self, ids: Tensor, mask: Tensor, pos: Tensor, col: Tensor, seen: Tensor, eos: Tensor, stop: Tensor
                ) -> tuple[Tensor, Tensor]:
        """From the tokens in ``ids``: their greedy successors (also written back into ``ids``), EOS counted into
        ``seen``; returns (the successors, whether every row has seen ``stop`` EOS)."""
        mask.index_fill_(1, col, 1)
        inputs = dict(input_ids=ids, attention_mask=mask, position_ids=pos)
        if self._parts is not None:
            logits = direct_step(self._parts, self.cache, **inputs).logits[:, -1]
        else:
            logits = static_forward(self.model, self.cache, **inputs).logits[:, -1]
        pos.add_(1)
        col.add_(1)
        nxt = logits.argmax(-1)
        ids.copy_(nxt[:, None])
        seen.add_((nxt == eos).long())
        return nxt, (seen >= stop).all()

    def _embed(self, embeds: Tensor, mask: Tensor, pos: Tensor, col: Tensor) -> Tensor:
        """The last layer's states after input embeddings ``embeds`` (B, 1, d)."""
        mask.index_fill_(1, col, 1)
        if self._decoder_parts is not None:  # the decoder stack alone: no LM head
            h = direct_step(self._decoder_parts, self.cache, inputs_embeds=embeds, attention_mask=mask,
                            position_ids=pos).last_hidden_state[:, -1]
        else:
            h = self._hidden(inputs_embeds=embeds, attention_mask=mask, position_ids=pos)
        pos.add_(1)
        col.add_(1)
        return h

    def _think(self, owner: Any, h: Tensor, k: Tensor, rows: Tensor, mask: Tensor, pos: Tensor, col: Tensor) -> Tensor:
        """A method's own thought function on the states ``h`` (B, d), then :meth:`_embed` on its output."""
        return self._embed(owner.thought(h, k, rows=rows)[:, None].to(self.embeds.dtype), mask, pos, col)

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
        self.col.fill_(width)
        self.pos.copy_(self.mask[:, :width].sum(-1, keepdim=True) + position_shift)
        fwd = self.decoder if hidden_only else self.model
        lengths = mask.sum(-1).tolist()
        groups = None if count_padding or fwd is None else length_groups(lengths)
        if groups is not None:  # as decoding.generate.prefill: prompts of very different lengths in length groups
            last = grouped_passes(fwd, self.model, hidden_only, ids, mask, pos, lengths, groups, self._write_rows)
            for layer in self.cache.layers:
                layer.cumulative_length.fill_(width)
            return last[:, -1]
        inputs = dict(input_ids=ids, attention_mask=attn, position_ids=pos)
        if hidden_only:
            return self._hidden(**inputs)
        return static_forward(self.model, self.cache, **inputs, **last_logits_only(self.model)).logits[:, -1]

    def _write_rows(self, rows: Tensor, start: int, part: Any) -> None:
        """A length group's keys/values (cache ``part``) into the static cache at rows ``rows``, from ``start``."""
        for i, layer in enumerate(self.cache.layers):
            k, v = layer_kv(part, i)
            if not layer.is_initialized:
                layer.lazy_initialization(k.new_empty((self.batch, k.shape[1], 0, k.shape[3])),
                                          v.new_empty((self.batch, v.shape[1], 0, v.shape[3])))
            layer.keys[rows, :, start : start + k.shape[2]] = k
            layer.values[rows, :, start : start + v.shape[2]] = v

    def _call(self, kind: Any, *args: Any) -> Any:
        if self.length >= self.capacity:
            raise ValueError(f"static cache of {self.capacity} positions is full")
        self.length += 1
        if kind in self._warm:
            return self._fns[kind](*args)
        t0 = time.perf_counter()  # the first call compiles
        out = self._fns[kind](*args)
        self._warm.add(kind)
        self.compile_seconds += time.perf_counter() - t0
        return out

    def _unguarded(self, kind: Any) -> Any:
        """Where ``kind`` has compiled its one graph: a context that runs it without evaluating its guards (~30 us a
        step on a CPU). Every input is one of the runner's buffers (fixed shape, dtype and strides) and the weights
        are checked before each generation, so no guard can fail after the first call. (Entering the context costs
        ~100 us: it is held over a loop of steps.)"""
        if self.compiled and kind in self._warm:
            return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
        return contextlib.nullcontext()

    def embed(self, x: Tensor) -> Tensor:
        """One position of every row from input embeddings ``x`` (B, d): the last layer's states (B, d)."""
        self.embeds.copy_(x[:, None])
        return self._call("embed", self.embeds, self.mask, self.pos, self.col)

    def thoughts(self, h: Tensor, n: int, thought_fn: Callable[..., Tensor], record: list[Tensor] | None = None
                 ) -> Tensor:
        """``n`` continuous thoughts from the last states ``h`` (B, d): each the step on ``thought_fn``'s embedding
        of the states before it; returns the last states (each thought's states appended to ``record``).

        Where ``thought_fn`` is a method's own ``thought`` (CODI's projection, Coconut's identity) a compiled
        runner traces it into the step: one graph a thought. Any other callable (noise, capture hooks) runs
        eagerly between the compiled decoder steps."""
        owner = traced_owner(thought_fn) if self.compiled else None
        if owner is not None:
            kind = self._thinker(owner)
            args = (owner, self.states, self.k, self.rows, self.mask, self.pos, self.col)

            def one(h: Tensor, k: int) -> Tensor:
                self.states.copy_(h)
                self.k.fill_(k)
                return self._call(kind, *args)
        else:
            kind = "embed"
            rows = torch.arange(h.shape[0], device=h.device)

            def one(h: Tensor, k: int) -> Tensor:
                return self.embed(thought_fn(h, torch.full((h.shape[0],), k, dtype=torch.long, device=h.device),
                                             rows=rows))

        first = 0
        if n and kind not in self._warm:  # the first call compiles (with its guards)
            h, first = one(h, 0), 1
            if record is not None:
                record.append(h)
        # guards are skipped only where nothing but the runner's graph runs (a callable of the caller's may compile)
        with self._unguarded(kind) if owner is not None else contextlib.nullcontext():
            for k in range(first, n):
                h = one(h, k)
                if record is not None:
                    record.append(h)
        return h

    def _thinker(self, owner: Any) -> Any:
        """The kind of ``owner``'s thought graph, made anew when the owner's own weights (those not the model's, e.g.
        CODI's projection) have changed: a graph may hold weights as constants (inductor's freezing)."""
        model_params = {id(p) for p in self.model.parameters()}
        version = weights_version([p for p in owner.parameters() if id(p) not in model_params])
        kind, seen = self._thinkers.get(owner, (None, None))
        if kind is None or seen != version:
            kind = ("think", id(owner))
            self._fns[kind] = self._compiled("think")
            self._warm.discard(kind)
            self._thinkers[owner] = (kind, version)
        return kind

    def decode(self, tok: Tensor, steps: int, eos_id: int, stop_after_eos: int = 1, seen: Tensor | None = None
               ) -> list[Tensor]:
        """Up to ``steps`` greedy positions from input tokens ``tok`` (B,): each step's tokens, until every row has
        seen ``stop_after_eos`` EOS (``seen``: those already seen per row)."""
        self.ids.copy_(tok[:, None])
        self.seen.copy_(seen if seen is not None else torch.zeros_like(self.seen))
        self.eos.fill_(eos_id)
        self.stop.fill_(stop_after_eos)
        args = (self.ids, self.mask, self.pos, self.col, self.seen, self.eos, self.stop)
        out: list[Tensor] = []
        if steps and "greedy" not in self._warm:  # the first call compiles (with its guards)
            nxt, done = self._call("greedy", *args)
            out.append(nxt)
            if bool(done):
                return out
        with self._unguarded("greedy"):
            while len(out) < steps:
                nxt, done = self._call("greedy", *args)
                out.append(nxt)
                if bool(done):
                    break
        return out


@torch.no_grad()
def weights_version(weights: Any) -> tuple[Any, ...]:
    """Each parameter's storage and sum (``weights``: a module or its parameters): a frozen graph is stale when either
    changes. (Version counters are not enough: a fused AdamW step updates the weights in place without bumping them.)
    One pass over the weights per generation call, a few milliseconds for GPT-2 small on a CPU."""
    params = list(weights.parameters() if hasattr(weights, "parameters") else weights)
    sums = torch.stack([p.sum(dtype=torch.float64) for p in params]).tolist() if params else []
    return tuple(p.data_ptr() for p in params), tuple(sums)


def traced_owner(thought_fn: Callable[..., Tensor]) -> Any:
    """The latent method whose own ``thought`` ``thought_fn`` is (a pure function of its inputs and weights, safe to
    trace into a compiled graph), else None."""
    owner = getattr(thought_fn, "__self__", None)
    if isinstance(owner, torch.nn.Module) and getattr(thought_fn, "__func__", None) is getattr(type(owner), "thought", None):
        return owner
    return None


def _own_code(fn: Callable[..., Tensor], owner: Any) -> Callable[..., Tensor]:
    """``fn`` bound to ``owner`` with a copy of its code object."""
    return types.MethodType(types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__), owner)


def compile_seconds(model: Any) -> float:
    """Seconds spent so far in the first (compiling) calls of ``model``'s compiled steps, over every shape."""
    return sum(r.compile_seconds for r in _RUNNERS.get(model, {}).values())


def static_greedy(runner: StaticRunner, start: Tensor, eos_id: int, max_new_tokens: int, stop_after_eos: int = 1,
                  first_known: bool = False) -> list[list[int]]:
    """Greedy decoding on a :class:`StaticRunner` from ``start`` (B,): the first new tokens (``first_known``: the
    prompt's argmax) or the input tokens the first new tokens follow (an ``<eot>``). Every row stays in the batch;
    each row's tokens end at its stopping EOS (included), as :func:`~latentreason.decoding.generate.greedy_continue`."""
    if max_new_tokens <= 0:
        return [[] for _ in range(start.shape[0])]
    steps, seen = [], None
    if first_known:
        steps, seen = [start], (start == eos_id).long()
    if not first_known or (max_new_tokens > 1 and not bool((seen >= stop_after_eos).all())):
        steps += runner.decode(start, max_new_tokens - len(steps), eos_id, stop_after_eos, seen)
    out = []
    for row in torch.stack(steps, 1).tolist():
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
    first = runner.prefill(ids, mask, position_shift=position_shift).argmax(-1)
    tokens = static_greedy(runner, first, eos_id, max_new_tokens, stop_after_eos, first_known=True)
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
    states = [h.clone()] if record_hidden else None
    runner.thoughts(h, n_latent, thought_fn, states)
    hidden: list[list[Tensor]] = [[s[i] for s in states] if states else [] for i in range(b)]
    eot = torch.full((b,), eot_id, dtype=torch.long, device=ids.device)
    tokens = static_greedy(runner, eot, eos_id, max_new_tokens, stop_after_eos)
    return tokens, [n_latent + 1 + len(t) for t in tokens], normal_tensors(hidden) if record_hidden else hidden
