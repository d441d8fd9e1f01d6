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
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor, nn

from latentreason.decoding.generate import DecodeState, Generation, left_pad, prefill, trim_at_stop
from latentreason.errors import ConfigError

MODES = ("greedy", "sampling", "vanilla", "dirichlet", "gumbel")
SOFT_MODES = ("vanilla", "dirichlet", "gumbel")
ENTROPY_NORMALIZATIONS = ("nats", "log_vocab")
AFTER_THINKING = ("greedy", "sampling")



# ============================================================================ configuration
@dataclass
class SoftThinkingConfig:
    """Settings of one soft-thinking run; defaults follow SPEC §3.6.1 except where noted."""

    #: greedy | sampling (discrete tokens) | vanilla | dirichlet | gumbel (soft tokens)
    mode: str = "vanilla"
    #: thinking-phase temperature T (0 = greedy: the soft token is the one-hot argmax)
    temperature: float = 0.6
    #: top-k filter (0 = off)
    top_k: int = 30
    #: top-p (nucleus) filter, in (0, 1]; 1 = off
    top_p: float = 0.95
    #: min-p filter: drop p_i < min_p * max(p); 0 = off
    min_p: float = 0.001
    #: K: how many entries a soft token keeps (the reference's ``max_topk``)
    max_topk: int = 10
    #: Dirichlet concentration scale gamma (Dir(gamma * p)); the paper's best value
    dirichlet_gamma: float = 4.0
    #: Gumbel-Softmax temperature tau
    gumbel_tau: float = 0.5
    #: Cold Stop entropy threshold tau (0 = Cold Stop off), in the unit of ``entropy_normalization``
    cold_stop_entropy: float = 0.01
    #: Cold Stop: consecutive low-entropy soft steps that end thinking
    cold_stop_steps: int = 256
    #: nats (Soft Thinking's code) | log_vocab (H / ln V, Randomized-Soft-Thinking's code)
    entropy_normalization: str = "nats"
    #: text that ends the thinking phase when it appears in the visible stream (None: the method's answer marker)
    think_end: str | None = None
    #: text injected (one-hot) by Cold Stop / the budget (None: what the serialisation writes
    #: between the last step and the end of the answer marker, e.g. "\n####"; or ``think_end``)
    inject: str | None = None
    #: thinking budget in tokens (None = none); when used up the injection text is fed
    max_thinking_tokens: int | None = None
    #: decoding after thinking: greedy | sampling (with the after_thinking_* settings)
    after_thinking: str = "greedy"
    after_thinking_temperature: float = 0.6
    after_thinking_top_k: int = 30
    after_thinking_top_p: float = 0.95
    after_thinking_min_p: float = 0.0
    #: generation limit (None: the method's ``max_new_tokens``)
    max_new_tokens: int | None = None

    def validate(self) -> "SoftThinkingConfig":
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"soft thinking option {name}: {why}, got {getattr(self, name)!r}")

        if self.mode not in MODES:
            raise bad("mode", f"must be one of {', '.join(MODES)}")
        for pre in ("", "after_thinking_"):
            if not (isinstance(getattr(self, pre + "temperature"), (int, float)) and getattr(self, pre + "temperature") >= 0):
                raise bad(pre + "temperature", "must be a number >= 0")
            if not (isinstance(getattr(self, pre + "top_k"), int) and getattr(self, pre + "top_k") >= 0):
                raise bad(pre + "top_k", "must be an integer >= 0 (0 = off)")
            if not (0.0 < getattr(self, pre + "top_p") <= 1.0):
                raise bad(pre + "top_p", "must be in (0, 1]")
            if not (0.0 <= getattr(self, pre + "min_p") < 1.0):
                raise bad(pre + "min_p", "must be in [0, 1)")
        if not (isinstance(self.max_topk, int) and self.max_topk >= 1):
            raise bad("max_topk", "must be an integer >= 1")
        if not self.dirichlet_gamma > 0:
            raise bad("dirichlet_gamma", "must be > 0")
        if not self.gumbel_tau > 0:
            raise bad("gumbel_tau", "must be > 0")
        if not self.cold_stop_entropy >= 0:
            raise bad("cold_stop_entropy", "must be >= 0 (0 = off)")
        if not (isinstance(self.cold_stop_steps, int) and self.cold_stop_steps >= 1):
            raise bad("cold_stop_steps", "must be an integer >= 1")
        if self.entropy_normalization not in ENTROPY_NORMALIZATIONS:
            raise bad("entropy_normalization", f"must be one of {', '.join(ENTROPY_NORMALIZATIONS)}")
        if self.think_end is not None and not self.think_end:
            raise bad("think_end", "must be a non-empty string")
        if self.inject is not None and not self.inject:
            raise bad("inject", "must be a non-empty string")
        if self.max_thinking_tokens is not None and not (isinstance(self.max_thinking_tokens, int) and self.max_thinking_tokens >= 0):
            raise bad("max_thinking_tokens", "must be an integer >= 0 or None")
        if self.after_thinking not in AFTER_THINKING:
            raise bad("after_thinking", f"must be one of {', '.join(AFTER_THINKING)}")
        if self.max_new_tokens is not None and not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise bad("max_new_tokens", "must be an integer >= 1 or None")
        return self

    @property
    def is_soft(self) -> bool:
        return self.mode in SOFT_MODES

    @property
    def deterministic(self) -> bool:
        """True when a run draws no random numbers (so repeated samples are identical)."""
        thinking_random = self.mode in ("sampling", "dirichlet", "gumbel") and self.temperature > 0
        answer_random = self.after_thinking == "sampling" and self.after_thinking_temperature > 0
        return not (thinking_random or answer_random)

    def replace(self, **changes: Any) -> "SoftThinkingConfig":
        return dataclasses.replace(self, **changes).validate()


#: Named settings. ``default`` is this project's (SPEC §3.6.1 values, greedy answer phase);
#: ``soft_thinking`` the Soft Thinking paper's (answer sampled at T 0.6 / top-p 0.95 / top-k 30);
#: ``stochastic`` / ``stochastic_k15`` the Randomized-Soft-Thinking scripts (min-p 0 in both phases,
#: Cold Stop off, K 10 / 15, Gumbel tau 0.5, Dirichlet gamma 4).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "soft_thinking": {
        "temperature": 0.6, "top_p": 0.95, "top_k": 30, "min_p": 0.001, "max_topk": 10,
        "cold_stop_entropy": 0.01, "cold_stop_steps": 256, "entropy_normalization": "nats",
        "after_thinking": "sampling", "after_thinking_temperature": 0.6, "after_thinking_top_p": 0.95,
        "after_thinking_top_k": 30, "after_thinking_min_p": 0.0,
    },
    "stochastic": {
        "temperature": 0.6, "top_p": 0.95, "top_k": 30, "min_p": 0.0, "max_topk": 10,
        "dirichlet_gamma": 4.0, "gumbel_tau": 0.5, "cold_stop_entropy": 0.0, "entropy_normalization": "log_vocab",
        "after_thinking": "sampling", "after_thinking_temperature": 0.6, "after_thinking_top_p": 0.95,
        "after_thinking_top_k": 30, "after_thinking_min_p": 0.0,
    },
    "stochastic_k15": {
        "temperature": 0.6, "top_p": 0.95, "top_k": 30, "min_p": 0.0, "max_topk": 15,
        "dirichlet_gamma": 4.0, "gumbel_tau": 0.5, "cold_stop_entropy": 0.0, "entropy_normalization": "log_vocab",
        "after_thinking": "sampling", "after_thinking_temperature": 0.6, "after_thinking_top_p": 0.95,
        "after_thinking_top_k": 30, "after_thinking_min_p": 0.0,
    },
}


def soft_config(preset: str | None = None, **overrides: Any) -> SoftThinkingConfig:
    """A validated config from a preset name (see :data:`PRESETS`) plus field overrides."""
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"soft thinking option preset: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        base = dict(PRESETS[preset])
    from latentreason.config import from_dict

    base.update(overrides)
    return from_dict(SoftThinkingConfig, base, "soft")


# ============================================================================ seeding
def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (``derive_seed(seed, row)``) — stable across runs and platforms."""
    h = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def row_generators(seed: int, row_ids: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per row, seeded from ``(seed, row id)``."""
    return [torch.Generator(device="cpu").manual_seed(derive_seed(seed, int(r))) for r in row_ids]


def _generators(generator: Any, rows: int) -> list[torch.Generator | None] | None:
    """``None`` / one shared generator -> None-or-[g]; a sequence -> per-row list (checked)."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    if len(gens) != rows:
        raise ValueError(f"got {len(gens)} generators for {rows} rows")
    return gens


def _draw(kind: str, shape: tuple[int, ...], generator: Any, device: torch.device, dtype: torch.dtype,
          alpha: Tensor | None = None) -> Tensor:
    """Uniform (``rand``) or Gamma (``gamma``, concentration ``alpha``) noise of ``shape``.

    With a sequence of generators, row ``i`` of the flattened leading dimensions is drawn from
    generator ``i`` only, so a row's noise does not depend on the other rows.
    """
    rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
    gens = _generators(generator, rows)

    def one(g: torch.Generator | None, shp: tuple[int, ...], a: Tensor | None) -> Tensor:
        dev = g.device if g is not None else torch.device("cpu")
        if kind == "rand":
            x = torch.rand(shp, generator=g, device=dev, dtype=torch.float64)
        else:
            x = torch._standard_gamma(a.to(dev, torch.float64), generator=g)
        return x.to(device=device, dtype=dtype)

    if gens is None:
        return one(generator, shape, alpha)
    width = shape[-1]
    flat_alpha = alpha.reshape(rows, width) if alpha is not None else None
    parts = [one(g, (width,), flat_alpha[i] if flat_alpha is not None else None) for i, g in enumerate(gens)]
    return torch.stack(parts).reshape(shape)


# ============================================================================ primitives
def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def probs_from_logits(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` in at least fp32; ``T = 0`` gives the one-hot argmax (first on ties)."""
    z = logits.to(_compute_dtype(logits))
    if temperature == 0:
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)
    return torch.softmax(z / temperature, dim=-1)


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats over the last dimension (0 log 0 = 0)."""
    return torch.special.entr(probs).sum(-1)


def model_entropy(logits: Tensor) -> Tensor:
    """Entropy in nats of the model's own next-token distribution ``softmax(logits)`` (temperature 1)."""
    return entropy(torch.softmax(logits.to(_compute_dtype(logits)), dim=-1))


def _renorm(p: Tensor) -> Tensor:
    return p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)


def filter_sorted(probs: Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """:func:`filter_probs` in sorted form: ``(values, indices)``, descending along the last dim.

    The sort is stable, so among equal probabilities the lower token id comes first.
    """
    sp, si = torch.sort(probs, dim=-1, descending=True, stable=True)
    sp = sp.clone()
    n = sp.shape[-1]
    if top_k and top_k < n:
        sp[..., top_k:] = 0
        sp = _renorm(sp)
    if top_p < 1.0:
        before = torch.cumsum(sp, dim=-1) - sp  # mass of the tokens ranked above
        keep = before < top_p
        keep[..., 0] = True
        sp = _renorm(sp * keep)
    if min_p > 0.0:
        keep = sp >= min_p * sp[..., :1]
        sp = _renorm(sp * keep)
    return sp, si


def filter_probs(probs: Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> Tensor:
    """Filter a distribution (last dim) in order top-k, top-p, min-p, renormalising after each.

    * top-k keeps the ``top_k`` largest entries (0 = off; ties broken towards the lower index);
    * top-p keeps the smallest prefix of the sorted distribution whose mass is >= ``top_p``
      (a token is kept iff the mass ranked above it is < ``top_p``; the top token always stays);
    * min-p drops entries ``< min_p * max(p)`` (the maximum always stays).

    Returns the filtered distribution in the original layout (zeros where dropped).
    """
    sp, si = filter_sorted(probs, top_k, top_p, min_p)
    return torch.zeros_like(sp).scatter(-1, si, sp)


def topk_truncate(sorted_probs: Tensor, sorted_idx: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep the first ``k`` entries of a sorted distribution and renormalise: ``(weights, indices)``."""
    k = min(k, sorted_probs.shape[-1])
    return _renorm(sorted_probs[..., :k]), sorted_idx[..., :k]


def sort_desc(weights: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Re-sort ``(weights, indices)`` by descending weight (stable)."""
    w, order = torch.sort(weights, dim=-1, descending=True, stable=True)
    return w, torch.gather(indices, -1, order)


def soft_embedding(weights: Tensor, indices: Tensor, embedding_matrix: Tensor | nn.Module) -> Tensor:
    """``sum_j weights[..., j] * E[indices[..., j]]`` summed in at least fp32, cast to E's dtype.

    ``weights`` and ``indices`` have shape ``(..., K)``; the result has shape ``(..., d)``.
    ``embedding_matrix`` is the ``(V, d)`` matrix or the input-embedding module itself (then its
    forward is applied to the indices, so embedding modules that scale their output are honoured).
    """
    if isinstance(embedding_matrix, Tensor):
        vecs = embedding_matrix[indices]
    else:
        vecs = embedding_matrix(indices)
    acc = torch.float64 if vecs.dtype == torch.float64 or weights.dtype == torch.float64 else torch.float32
    out = (weights.to(acc).unsqueeze(-1) * vecs.to(acc)).sum(-2)
    return out.to(vecs.dtype)


def dirichlet_weights(probs: Tensor, gamma: float, generator: Any = None) -> Tensor:
    """A sample of ``Dir(gamma * p)`` on the support ``p > 0`` (zeros stay zero), same layout as ``probs``.

    Each component is drawn in log space as ``ln G + ln(U) / alpha`` with ``G ~ Gamma(alpha + 1)``
    and ``U ~ U(0, 1)`` (so tiny concentrations do not underflow), then normalised by a softmax.
    ``generator``: None (global RNG), one ``torch.Generator``, or one per row of the leading dims.
    """
    if not gamma > 0:
        raise ConfigError(f"soft thinking option dirichlet_gamma: must be > 0, got {gamma!r}")
    p = probs.to(torch.float64)
    support = p > 0
    alpha = gamma * p
    shape = tuple(p.shape)
    gens = _generators(generator, math.prod(shape[:-1]) if len(shape) > 1 else 1)
    if gens is None:
        g1 = _draw("gamma", shape, generator, p.device, torch.float64, alpha=torch.where(support, alpha + 1, torch.ones_like(alpha)))
        u = _draw("rand", shape, generator, p.device, torch.float64)
    else:  # per row: gamma then uniform from the row's own generator
        width = shape[-1]
        a1 = torch.where(support, alpha + 1, torch.ones_like(alpha)).reshape(-1, width)
        g_rows, u_rows = [], []
        for i, g in enumerate(gens):
            g_rows.append(_draw("gamma", (1, width), g, p.device, torch.float64, alpha=a1[i : i + 1])[0])
            u_rows.append(_draw("rand", (1, width), g, p.device, torch.float64)[0])
        g1 = torch.stack(g_rows).reshape(shape)
        u = torch.stack(u_rows).reshape(shape)
    u = u.clamp_min(torch.finfo(torch.float64).tiny)
    logw = torch.log(g1) + torch.log(u) / torch.where(support, alpha, torch.ones_like(alpha))
    logw = torch.where(support, logw, torch.full_like(logw, -math.inf))
    out = torch.softmax(logw, dim=-1)
    bad = ~torch.isfinite(out).all(-1, keepdim=True)
    if bool(bad.any()):  # every support entry underflowed (not reachable for a valid p): fall back to p
        out = torch.where(bad, _renorm(p), out)
    return out.to(_compute_dtype(probs))


def gumbel_softmax_weights(weights: Tensor, tau: float, generator: Any = None) -> Tensor:
    """Gumbel-Softmax of a distribution: ``softmax((ln w + g) / tau)``, ``g = -ln(-ln U)``.

    Same layout as ``weights`` (not re-sorted; see :func:`sort_desc`); zero weights stay zero.
    The argmax of the result is an exact sample of ``weights`` (Gumbel-max trick).
    """
    if not tau > 0:
        raise ConfigError(f"soft thinking option gumbel_tau: must be > 0, got {tau!r}")
    w = weights.to(torch.float64)
    u = _draw("rand", tuple(w.shape), generator, w.device, torch.float64).clamp(torch.finfo(torch.float64).tiny, 1.0)
    g = -torch.log(-torch.log(u))
    logw = torch.where(w > 0, torch.log(w.clamp_min(torch.finfo(torch.float64).tiny)), torch.full_like(w, -math.inf))
    y = torch.softmax((logw + g) / tau, dim=-1)
    return y.to(_compute_dtype(weights))


@dataclass
class SoftToken:
    """A (possibly randomised) soft token per row: descending ``weights`` over ``indices``."""

    weights: Tensor  # (B, K)
    indices: Tensor  # (B, K)
    entropy: Tensor  # (B,) nats of softmax(z / T) before filtering
    #: the vanilla (un-noised) token of the same logits; the same tensors as weights / indices for vanilla
    clean_weights: Tensor | None = None
    clean_indices: Tensor | None = None

    @property
    def top1(self) -> Tensor:
        return self.indices[..., 0]


def soft_token(
    logits: Tensor,
    mode: str = "vanilla",
    temperature: float = 0.6,
    top_k: int = 30,
    top_p: float = 0.95,
    min_p: float = 0.001,
    max_topk: int = 10,
    dirichlet_gamma: float = 4.0,
    gumbel_tau: float = 0.5,
    generator: Any = None,
) -> SoftToken:
    """Steps 1–3 of SPEC §3.6.1 (plus the Dirichlet / Gumbel noise) for logits of shape ``(B, V)``."""
    if mode not in SOFT_MODES:
        raise ConfigError(f"soft thinking option mode: soft_token needs one of {', '.join(SOFT_MODES)}, got {mode!r}")
    p = probs_from_logits(logits, temperature)
    h = entropy(p)
    sp, si = filter_sorted(p, top_k, top_p, min_p)
    cw, ci = topk_truncate(sp, si, max_topk)  # the vanilla token
    if mode == "dirichlet":
        width = top_k if 0 < top_k < sp.shape[-1] else sp.shape[-1]  # the support never extends beyond top_k
        d = dirichlet_weights(sp[..., :width], dirichlet_gamma, generator)
        w, idx = topk_truncate(*sort_desc(d, si[..., :width]), max_topk)
    elif mode == "gumbel":
        w, idx = sort_desc(gumbel_softmax_weights(cw, gumbel_tau, generator), ci)
    else:
        w, idx = cw, ci
    return SoftToken(w, idx, h, cw, ci)


def sample_token(logits: Tensor, temperature: float, top_k: int, top_p: float, min_p: float, generator: Any = None) -> Tensor:
    """Discrete sampling from the filtered ``softmax(z / T)`` (``T = 0``: argmax), one token per row."""
    if temperature == 0:
        return logits.argmax(-1)
    sp, si = filter_sorted(probs_from_logits(logits, temperature), top_k, top_p, min_p)
    width = top_k if 0 < top_k < sp.shape[-1] else sp.shape[-1]
    sp, si = sp[..., :width], si[..., :width]
    u = _draw("rand", tuple(sp.shape[:-1]) + (1,), generator, sp.device, sp.dtype)
    cdf = torch.cumsum(sp, dim=-1)
    pos = torch.searchsorted(cdf, u * cdf[..., -1:], right=True).clamp(max=width - 1)
    # never pick a dropped entry (rounding at the top of the cdf)
    last = (sp > 0).sum(-1, keepdim=True) - 1
    pos = torch.minimum(pos, last)
    return torch.gather(si, -1, pos)[..., 0]


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


@torch.no_grad()
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
    ``row_ids = range(len(prompts))``).
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
    E = emb.weight
    vocab = int(E.shape[0])
    log_v = math.log(vocab)
    gens = row_generators(seed, row_ids)
    rows = [_Row() for _ in prompts]

    ids, mask = left_pad(prompts, pad_id, device)
    state, out = prefill(model, ids, mask)
    logits = out.logits[:, -1, :]
    budget = cfg.max_thinking_tokens
    cold_on = cfg.is_soft and cfg.cold_stop_entropy > 0

    for t in range(max_new_tokens):
        active = state.rows.tolist()
        n_act = len(active)
        logits = logits[:, :vocab] if logits.shape[-1] > vocab else logits
        tokens = torch.zeros(n_act, dtype=torch.long)
        # 1. rows whose budget is used up start the injection now (replacing this step's token)
        for j, r in enumerate(active):
            row = rows[r]
            if row.thinking and not row.forced and budget is not None and row.thinking_tokens >= budget:
                row.forced, row.thinking, row.ended_by = list(inject), False, "budget"
        forced = [j for j, r in enumerate(active) if rows[r].forced]
        think = [j for j, r in enumerate(active) if rows[r].thinking and not rows[r].forced]
        answer = [j for j, r in enumerate(active) if not rows[r].thinking and not rows[r].forced]
        soft_w: Tensor | None = None
        soft_i: Tensor | None = None
        soft_h: Tensor | None = None
        clean_w: Tensor | None = None
        clean_i: Tensor | None = None
        # 2. thinking rows
        if think:
            sub = logits[think]
            g_think = [gens[active[j]] for j in think]
            for j, h in zip(think, model_entropy(sub).tolist()):
                rows[active[j]].entropy.append(h)
            if cfg.is_soft:
                st = soft_token(sub, cfg.mode, cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.max_topk,
                                cfg.dirichlet_gamma, cfg.gumbel_tau, generator=g_think if cfg.mode != "vanilla" else None)
                soft_w, soft_i, soft_h = st.weights, st.indices, st.entropy
                tokens[think] = st.top1.cpu()
                if record_distributions and cfg.mode != "vanilla":
                    clean_w, clean_i = st.clean_weights, st.clean_indices
            elif cfg.mode == "greedy":
                tokens[think] = sub.argmax(-1).cpu()
            else:
                tokens[think] = sample_token(sub, cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, g_think).cpu()
        # 3. answer rows
        if answer:
            sub = logits[answer]
            if cfg.after_thinking == "greedy":
                tokens[answer] = sub.argmax(-1).cpu()
            else:
                tokens[answer] = sample_token(sub, cfg.after_thinking_temperature, cfg.after_thinking_top_k,
                                              cfg.after_thinking_top_p, cfg.after_thinking_min_p,
                                              [gens[active[j]] for j in answer]).cpu()
        # 4. forced (injected) rows
        for j in forced:
            tokens[j] = rows[active[j]].forced.pop(0)
        # 5. bookkeeping: Cold Stop, think-end detection, stops; which rows feed a soft input
        feed_soft = torch.zeros(n_act, dtype=torch.bool)
        soft_pos = {j: k for k, j in enumerate(think)} if cfg.is_soft else {}
        if soft_h is not None and cfg.entropy_normalization == "log_vocab":
            soft_h = soft_h / log_v
        done = torch.zeros(n_act, dtype=torch.bool)
        rec: list[list[list[Any]]] = []  # one host copy per step of what is recorded (not one per row)
        if record_distributions and soft_w is not None:
            rec = [soft_i.tolist(), soft_w.tolist()]
            if clean_w is not None:
                rec += [clean_i.tolist(), clean_w.tolist()]
        for j, r in enumerate(active):
            row = rows[r]
            was_thinking = row.thinking
            if j in soft_pos and cold_on:
                k = soft_pos[j]
                row.low = row.low + 1 if float(soft_h[k]) < cfg.cold_stop_entropy else 0
                if row.low >= cfg.cold_stop_steps:
                    tokens[j] = inject[0]
                    row.forced, row.thinking, row.ended_by = list(inject[1:]), False, "cold_stop"
            tok = int(tokens[j])
            row.tokens.append(tok)
            if was_thinking and row.thinking:
                row.thinking_tokens += 1
                if j in soft_pos:
                    feed_soft[j] = True
            if row.thinking and think_end in tokenizer.decode(row.tokens, skip_special_tokens=False):
                row.thinking, row.ended_by = False, "marker"
                feed_soft[j] = False  # the token that completes the marker enters as a token
            if tok == eos_id:
                row.eos += 1
                if row.eos >= stop_after_eos:
                    done[j] = True
                    if row.thinking:
                        row.ended_by = "eos"
            if done[j] or t == max_new_tokens - 1:
                feed_soft[j] = False  # nothing more is fed to this row
            if feed_soft[j]:
                row.soft_steps += 1
                if record_distributions:
                    row.dists.append(_nonzero(rec[0][soft_pos[j]], rec[1][soft_pos[j]]))
                    if clean_w is not None:
                        row.clean.append(_nonzero(rec[2][soft_pos[j]], rec[3][soft_pos[j]]))
        if t == max_new_tokens - 1 or bool(done.all()):
            break
        # 6. next inputs
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

    passes = state.row_passes.tolist()
    outs = []
    for r, row in enumerate(rows):
        body = trim_at_stop(row.tokens, eos_id, stop_after_eos)
        before = _tokens_before(tokenizer, body, think_end)
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
                distributions=row.dists if record_distributions else None,
                mode=cfg.mode,
                step_entropy=row.entropy,
                clean_distributions=row.clean if record_distributions and cfg.mode in ("dirichlet", "gumbel") else None,
            )
        )
    return outs


__all__ = [
    "MODES", "SOFT_MODES", "PRESETS", "SoftThinkingConfig", "SoftThinkingOutput", "SoftToken", "StepProbe",
    "derive_seed", "dirichlet_weights", "entropy", "filter_probs", "model_entropy", "filter_sorted", "gumbel_softmax_weights",
    "probs_from_logits", "row_generators", "sample_token", "soft_config",
    "soft_embedding", "soft_generate", "soft_token", "sort_desc", "topk_truncate",
]
