"""The samplers of Soft Thinking and Stochastic Soft Thinking (SPEC §3.6.1): per-step primitives.

From one step's logits of a batch of rows: the distribution ``softmax(z / T)`` and its entropy
(:func:`probs_from_logits`, :func:`entropy`), the top-k / top-p / min-p filters
(:func:`filter_probs`, :func:`filter_sorted`), the top-K truncation (:func:`topk_truncate`), the
soft token's embedding (:func:`soft_embedding`), the stochastic variants (:func:`dirichlet_weights`,
:func:`gumbel_softmax_weights`), all of them together (:func:`soft_token`) and discrete sampling
(:func:`sample_token`). Randomness comes from per-row ``torch.Generator`` objects seeded from
``(seed, row id)`` (:func:`derive_seed`, :func:`row_generators`), so a row's draws never depend on
the other rows of its batch. The decoding loop that uses them is
:mod:`latentreason.soft_thinking.loop`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from latentreason.errors import ConfigError

SOFT_MODES = ("vanilla", "dirichlet", "gumbel")


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


__all__ = [
    "SOFT_MODES", "SoftToken", "derive_seed", "dirichlet_weights", "entropy", "filter_probs", "filter_sorted",
    "gumbel_softmax_weights", "model_entropy", "probs_from_logits", "row_generators", "sample_token", "soft_embedding",
    "soft_token", "sort_desc", "topk_truncate",
]
