"""Soft Thinking and Stochastic Soft Thinking (SPEC §3.6) — training-free decoding with soft inputs.

During the *thinking phase* (until the visible top-1 stream contains the think-end string: the
method's answer marker by default, ``</think>`` for reasoning models) the next input of every row
is not a token but a *soft token*: the probability-weighted mix of token embeddings

1. ``p = softmax(z / T)``; the entropy ``H`` is taken here, over the full vocabulary;
2. top-k, top-p, min-p filtering, renormalising after each filter (``filter_probs``);
3. truncation to the ``max_topk`` largest entries and renormalisation -> weights ``w``, indices ``idx``;
4. ``e = sum_j w_j E[idx_j]``, summed in at least fp32 and cast to the embedding dtype
   (``soft_embedding``);
5. the visible text is the top-1 stream ``idx_0``.

Stochastic variants (Wu et al. 2025) randomise the soft token: ``dirichlet`` draws
``Dir(gamma * p)`` on the support of the filtered ``p`` before the top-K truncation
(``dirichlet_weights``); ``gumbel`` applies Gumbel-Softmax with temperature ``tau`` to the top-K
weights and re-sorts (``gumbel_softmax_weights``), so ``idx_0`` is an exact sample of the top-K
distribution. ``greedy`` and ``sampling`` are the discrete-token baselines of the same loop.

Thinking ends when the visible stream contains the think-end string, by **Cold Stop** (entropy
below ``cold_stop_entropy`` for ``cold_stop_steps`` consecutive soft steps) or when the optional
thinking budget is used up; the last two *inject* the think-end text as one-hot inputs in place
of the step's own token. The answer is then decoded discretely: greedy by default, or sampled with
the ``after_thinking_*`` settings (honoured here, unlike the reference sampler).

Randomness is drawn per row from a ``torch.Generator`` seeded from ``(seed, row id)`` and used
only by that row, so a batched run equals the same rows decoded one by one with the same ids.

This module holds the decoding loop (:func:`soft_generate`); the run's settings are in
:mod:`~latentreason.soft_thinking.config`, the per-step samplers in
:mod:`~latentreason.soft_thinking.samplers`, and the entry point for a
trained method's questions is :func:`latentreason.soft_thinking.method.soft_think`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor, nn

from latentreason.decoding.generate import DecodeState, Generation, left_pad, prefill, trim_at_stop
from latentreason.errors import ConfigError
from latentreason.soft_thinking.config import SoftThinkingConfig
from latentreason.soft_thinking.samplers import (
    entropy,
    model_entropy,
    row_generators,
    sample_token,
    soft_embedding,
    soft_token,
)


# ============================================================================ probes
class StepProbe(Protocol):
    """Hook into the decoding loop (used by the JS-divergence study, SPEC §4.1).

    ``before_step`` is called with the state that is about to receive the step's inputs (it may
    run extra forward passes but must leave the cache as it found it); ``after_step`` receives the
    next-token logits the real step produced. ``top1_weight`` is the weight of each row's top-1
    component in its soft input (1 for one-hot inputs).
    """

    def before_step(self, state: DecodeState, soft: Tensor, top1: Tensor, top2: Tensor, top2_valid: Tensor,
                    inputs_embeds: Tensor | None = None, top1_weight: Tensor | None = None) -> None: ...

    def after_step(self, next_logits: Tensor) -> None: ...


# ============================================================================ decoding loop
@dataclass
class SoftThinkingOutput:
    """One row's result."""

    tokens: list[int]  # every generated token (stopping EOS included)
    text: str  # visible stream up to the stop, special tokens removed
    reasoning_tokens: int  # visible tokens before the think-end string (all thinking tokens if it never appears)
    soft_steps: int  # inputs fed as soft tokens
    thinking_tokens: int  # tokens produced in the thinking phase (injected ones excluded)
    forward_passes: int
    ended_by: str  # marker | cold_stop | budget | eos | length
    entropy_normalization: str
    #: per soft step: (indices, weights) of the soft input, nonzero entries only (when recorded)
    distributions: list[tuple[list[int], list[float]]] | None = None
    mode: str = "vanilla"
    #: per thinking step (every mode): entropy in nats of the model's own next-token distribution
    #: softmax(z) (temperature 1, full vocabulary) — the model's uncertainty, not the sampler's
    step_entropy: list[float] = field(default_factory=list)
    #: per soft step, aligned with ``distributions`` (when recorded, noised modes only): the vanilla
    #: soft token of the same logits, i.e. the token before the Dirichlet / Gumbel noise
    clean_distributions: list[tuple[list[int], list[float]]] | None = None

    def generation(self) -> Generation:
        return Generation(
            text=self.text,
            generated_tokens=len(self.tokens),
            reasoning_tokens=self.reasoning_tokens,
            latent_steps=self.soft_steps,
            forward_passes=self.forward_passes,
            extra={"mode": self.mode, "soft_steps": self.soft_steps, "ended_by": self.ended_by},
        )


def _tokens_before(tokenizer: Any, tokens: list[int], marker: str) -> int | None:
    """Number of leading tokens whose text ends before the first ``marker`` (None if absent)."""
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    pos = text.find(marker)
    if pos < 0:
        return None
    lo, hi = 0, len(tokens)  # smallest n with len(decode(tokens[:n])) > pos
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(tokens[:mid], skip_special_tokens=False)) > pos:
            hi = mid
        else:
            lo = mid + 1
    return max(lo - 1, 0)


def _nonzero(indices: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
    """The entries of a soft token with a nonzero weight."""
    keep = [k for k, w in enumerate(weights) if w > 0]
    return [indices[k] for k in keep], [weights[k] for k in keep]


@dataclass
class _Row:
    tokens: list[int] = field(default_factory=list)
    thinking: bool = True
    forced: list[int] = field(default_factory=list)
    low: int = 0
    soft_steps: int = 0
    thinking_tokens: int = 0
    eos: int = 0
    ended_by: str = "length"
    dists: list[tuple[list[int], list[float]]] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    clean: list[tuple[list[int], list[float]]] = field(default_factory=list)


@dataclass
class _Picks:
    """What one decoding step chose for the active rows (``j`` indexes the active batch)."""

    #: (n_act,) token ids on the CPU: every row's visible token of this step
    tokens: Tensor
    #: active rows in the thinking phase that are not injecting; soft tensors below are in this order
    think: list[int]
    soft_w: Tensor | None = None
    soft_i: Tensor | None = None
    #: entropy of each thinking row's softmax(z / T), in the unit of ``entropy_normalization``
    soft_h: Tensor | None = None
    #: the un-noised soft tokens (recorded for noised modes only)
    clean_w: Tensor | None = None
    clean_i: Tensor | None = None


class _SoftDecoder:
    """The per-step work of :func:`soft_generate` on one batch: every row's phase, its choices, what is recorded."""

    def __init__(self, cfg: SoftThinkingConfig, tokenizer: Any, *, think_end: str, inject: list[int], eos_id: int,
                 stop_after_eos: int, gens: list[torch.Generator], n_rows: int, vocab: int, record: bool,
                 probe: StepProbe | None):
        self.cfg, self.tokenizer, self.think_end, self.inject = cfg, tokenizer, think_end, inject
        self.eos_id, self.stop_after_eos, self.gens, self.record, self.probe = eos_id, stop_after_eos, gens, record, probe
        self.rows = [_Row() for _ in range(n_rows)]
        self.log_v = math.log(vocab)
        self.cold_on = cfg.is_soft and cfg.cold_stop_entropy > 0

    # ------------------------------------------------------------------ 1-4: this step's tokens
    def pick(self, logits: Tensor, active: list[int]) -> _Picks:
        cfg, rows, budget = self.cfg, self.rows, self.cfg.max_thinking_tokens
        tokens = torch.zeros(len(active), dtype=torch.long)
        # 1. rows whose budget is used up start the injection now (replacing this step's token)
        for j, r in enumerate(active):
            row = rows[r]
            if row.thinking and not row.forced and budget is not None and row.thinking_tokens >= budget:
                row.forced, row.thinking, row.ended_by = list(self.inject), False, "budget"
        forced = [j for j, r in enumerate(active) if rows[r].forced]
        think = [j for j, r in enumerate(active) if rows[r].thinking and not rows[r].forced]
        answer = [j for j, r in enumerate(active) if not rows[r].thinking and not rows[r].forced]
        picks = _Picks(tokens, think)
        # 2. thinking rows
        if think:
            self._pick_thinking(picks, logits[think], active)
        # 3. answer rows
        if answer:
            sub = logits[answer]
            if cfg.after_thinking == "greedy":
                tokens[answer] = sub.argmax(-1).cpu()
            else:
                tokens[answer] = sample_token(sub, cfg.after_thinking_temperature, cfg.after_thinking_top_k,
                                              cfg.after_thinking_top_p, cfg.after_thinking_min_p,
                                              [self.gens[active[j]] for j in answer]).cpu()
        # 4. forced (injected) rows
        for j in forced:
            tokens[j] = rows[active[j]].forced.pop(0)
        return picks

    def _pick_thinking(self, picks: _Picks, sub: Tensor, active: list[int]) -> None:
        cfg, think = self.cfg, picks.think
        g_think = [self.gens[active[j]] for j in think]
        for j, h in zip(think, model_entropy(sub).tolist()):
            self.rows[active[j]].entropy.append(h)
        if cfg.is_soft:
            st = soft_token(sub, cfg.mode, cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.max_topk,
                            cfg.dirichlet_gamma, cfg.gumbel_tau, generator=g_think if cfg.mode != "vanilla" else None)
            picks.soft_w, picks.soft_i, picks.soft_h = st.weights, st.indices, st.entropy
            picks.tokens[think] = st.top1.cpu()
            if self.record and cfg.mode != "vanilla":
                picks.clean_w, picks.clean_i = st.clean_weights, st.clean_indices
        elif cfg.mode == "greedy":
            picks.tokens[think] = sub.argmax(-1).cpu()
        else:
            picks.tokens[think] = sample_token(sub, cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, g_think).cpu()

    # ------------------------------------------------------------------ 5: bookkeeping
    def advance(self, picks: _Picks, active: list[int], last: bool) -> tuple[Tensor, Tensor, dict[int, int]]:
        """Cold Stop, think-end detection, stops; returns which rows feed a soft input next (``feed_soft``),
        which are done, and each thinking row's position among the soft tokens (``soft_pos``)."""
        cfg, tokens, n_act = self.cfg, picks.tokens, len(active)
        feed_soft = torch.zeros(n_act, dtype=torch.bool)
        soft_pos = {j: k for k, j in enumerate(picks.think)} if cfg.is_soft else {}
        soft_h = picks.soft_h
        if soft_h is not None and cfg.entropy_normalization == "log_vocab":
            soft_h = soft_h / self.log_v
        done = torch.zeros(n_act, dtype=torch.bool)
        rec: list[list[list[Any]]] = []  # one host copy per step of what is recorded (not one per row)
        if self.record and picks.soft_w is not None:
            rec = [picks.soft_i.tolist(), picks.soft_w.tolist()]
            if picks.clean_w is not None:
                rec += [picks.clean_i.tolist(), picks.clean_w.tolist()]
        for j, r in enumerate(active):
            row = self.rows[r]
            was_thinking = row.thinking
            if j in soft_pos and self.cold_on:
                k = soft_pos[j]
                row.low = row.low + 1 if float(soft_h[k]) < cfg.cold_stop_entropy else 0
                if row.low >= cfg.cold_stop_steps:
                    tokens[j] = self.inject[0]
                    row.forced, row.thinking, row.ended_by = list(self.inject[1:]), False, "cold_stop"
            tok = int(tokens[j])
            row.tokens.append(tok)
            if was_thinking and row.thinking:
                row.thinking_tokens += 1
                if j in soft_pos:
                    feed_soft[j] = True
            if row.thinking and self.think_end in self.tokenizer.decode(row.tokens, skip_special_tokens=False):
                row.thinking, row.ended_by = False, "marker"
                feed_soft[j] = False  # the token that completes the marker enters as a token
            if tok == self.eos_id:
                row.eos += 1
                if row.eos >= self.stop_after_eos:
                    done[j] = True
                    if row.thinking:
                        row.ended_by = "eos"
            if done[j] or last:
                feed_soft[j] = False  # nothing more is fed to this row
            if feed_soft[j]:
                row.soft_steps += 1
                if self.record:
                    row.dists.append(_nonzero(rec[0][soft_pos[j]], rec[1][soft_pos[j]]))
                    if picks.clean_w is not None:
                        row.clean.append(_nonzero(rec[2][soft_pos[j]], rec[3][soft_pos[j]]))
        return feed_soft, done, soft_pos

    # ------------------------------------------------------------------ 6: next inputs
    def feed(self, state: DecodeState, emb: nn.Module, picks: _Picks, feed_soft: Tensor, done: Tensor,
             soft_pos: dict[int, int]) -> Tensor:
        """Feed every row that goes on its next input (token or soft token); returns the next logits."""
        probe, soft_w, soft_i, tokens = self.probe, picks.soft_w, picks.soft_i, picks.tokens
        device = emb.weight.device
        n_act = tokens.shape[0]
        keep = ~done
        x = emb(tokens.to(device))
        if bool(feed_soft.any()):
            js = feed_soft.nonzero(as_tuple=True)[0].tolist()
            ks = [soft_pos[j] for j in js]
            x[js] = soft_embedding(soft_w[ks], soft_i[ks], emb)
        top2 = tokens.clone()
        top2_valid = torch.zeros(n_act, dtype=torch.bool)
        top1_w = torch.ones(n_act, dtype=torch.float64)
        if probe is not None and soft_w is not None and soft_w.shape[-1] > 1:
            for j, k in soft_pos.items():
                if feed_soft[j] and float(soft_w[k, 1]) > 0:
                    top2[j], top2_valid[j], top1_w[j] = int(soft_i[k, 1]), True, float(soft_w[k, 0])
        keep_dev = keep.to(device)
        state.keep(keep_dev)
        x, tokens, feed_soft, top2, top2_valid = x[keep_dev], tokens[keep], feed_soft[keep], top2[keep], top2_valid[keep]
        top1_w = top1_w[keep]
        if probe is not None and bool(feed_soft.any()):
            probe.before_step(state, feed_soft.to(device), tokens.to(device), top2.to(device), top2_valid.to(device), x,
                              top1_weight=top1_w)
        logits = state.step(inputs_embeds=x[:, None, :]).logits[:, -1, :]
        if probe is not None and bool(feed_soft.any()):
            probe.after_step(logits)
        return logits

    # ------------------------------------------------------------------ results
    def outputs(self, state: DecodeState) -> list[SoftThinkingOutput]:
        cfg, tokenizer = self.cfg, self.tokenizer
        passes = state.row_passes.tolist()
        outs = []
        for r, row in enumerate(self.rows):
            body = trim_at_stop(row.tokens, self.eos_id, self.stop_after_eos)
            before = _tokens_before(tokenizer, body, self.think_end)
            outs.append(
                SoftThinkingOutput(
                    tokens=row.tokens,
                    text=tokenizer.decode(body, skip_special_tokens=True),
                    reasoning_tokens=before if before is not None else row.thinking_tokens,
                    soft_steps=row.soft_steps,
                    thinking_tokens=row.thinking_tokens,
                    forward_passes=int(passes[r]),
                    ended_by=row.ended_by,
                    entropy_normalization=cfg.entropy_normalization,
                    distributions=row.dists if self.record else None,
                    mode=cfg.mode,
                    step_entropy=row.entropy,
                    clean_distributions=row.clean if self.record and cfg.mode in ("dirichlet", "gumbel") else None,
                )
            )
        return outs


@torch.inference_mode()
def soft_generate(
    model: nn.Module,
    prompts: list[list[int]],
    tokenizer: Any,
    *,
    config: SoftThinkingConfig,
    eos_id: int,
    pad_id: int,
    think_end: str,
    inject_ids: list[int] | None = None,
    max_new_tokens: int = 64,
    stop_after_eos: int = 1,
    seed: int = 0,
    row_ids: Sequence[int] | None = None,
    record_distributions: bool = False,
    probe: StepProbe | None = None,
) -> list[SoftThinkingOutput]:
    """Batched, KV-cached soft-thinking decoding of token prompts (left-padded internally).

    ``think_end`` ends the thinking phase when it appears in a row's visible stream;
    ``inject_ids`` (default: ``think_end`` tokenised) are fed one-hot by Cold Stop and the budget.
    Row ``i`` draws its noise from a generator seeded by ``(seed, row_ids[i])`` (default
    ``row_ids = range(len(prompts))``). Each step: (1) rows whose thinking budget is used up start
    injecting, (2) thinking rows pick a soft token (or a token), (3) answer rows a token, (4)
    injecting rows their next forced token; (5) Cold Stop, think-end and stop checks; (6) every row
    still running is fed its next input.
    """
    cfg = config.validate()
    if not prompts:
        return []
    if not think_end:
        raise ConfigError("soft thinking option think_end: must be a non-empty string")
    if row_ids is None:
        row_ids = list(range(len(prompts)))
    if len(row_ids) != len(prompts):
        raise ValueError(f"row_ids has {len(row_ids)} entries for {len(prompts)} prompts")
    inject = list(inject_ids) if inject_ids else tokenizer(think_end, add_special_tokens=False).input_ids
    if not inject:
        raise ConfigError("soft thinking option inject: tokenises to nothing")
    device = next(model.parameters()).device
    emb = model.get_input_embeddings()
    vocab = int(emb.weight.shape[0])
    dec = _SoftDecoder(cfg, tokenizer, think_end=think_end, inject=inject, eos_id=eos_id, stop_after_eos=stop_after_eos,
                       gens=row_generators(seed, row_ids), n_rows=len(prompts), vocab=vocab, record=record_distributions,
                       probe=probe)
    ids, mask = left_pad(prompts, pad_id, device)
    state, out = prefill(model, ids, mask, reserve=max_new_tokens, grouped=True)
    logits = out.logits[:, -1, :]
    for t in range(max_new_tokens):
        active = state.rows.tolist()
        logits = logits[:, :vocab] if logits.shape[-1] > vocab else logits
        picks = dec.pick(logits, active)
        last = t == max_new_tokens - 1
        feed_soft, done, soft_pos = dec.advance(picks, active, last)
        if last or bool(done.all()):
            break
        logits = dec.feed(state, emb, picks, feed_soft, done, soft_pos)
    return dec.outputs(state)


__all__ = ["SoftThinkingOutput", "StepProbe", "soft_generate"]
