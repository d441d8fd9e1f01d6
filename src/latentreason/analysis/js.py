"""Jensen–Shannon divergence and the per-step soft-input study (SPEC §4.1, §4.2).

``JS(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M)``, ``M = ½ (P + Q)``, natural log, ``ε = 1e-10`` inside the
logs, so ``0 ≤ JS ≤ ln 2``.

:class:`JSProbe` plugs into soft thinking's loop (:func:`latentreason.soft_thinking.loop.soft_generate`): at every
step where a row is fed a soft token with at least two nonzero components it runs, from the same
cache prefix, the one-hot top-1 component and the one-hot top-2 component (each forward pass is
cropped from the cache again), then lets the real soft step run last, so the cache keeps the soft
entry. The three next-token distributions ``P_1``, ``P_2``, ``P_st`` (softmax at the thinking
temperature, full vocabulary) give ``JS(P_st, P_1)``, ``JS(P_st, P_2)`` and ``JS(P_1, P_2)``.
Soft tokens with a single nonzero component are one-hot inputs (all three distributions would be
the top-1's), so they are counted but not logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import mean
from typing import Any, Sequence

import torch
from torch import Tensor

from latentreason.decoding.generate import DecodeState
from latentreason.models.kv_cache import cached_forward

LN2 = math.log(2.0)
EPS = 1e-10
#: bin edges of the top-1 weight for :meth:`JSProbe.by_top1_weight` (the last bin holds weight 1.0)
TOP1_WEIGHT_BINS = (0.0, 0.6, 0.7, 0.8, 0.9, 1.0 + 1e-9)


def kl_divergence(p: Tensor, q: Tensor, eps: float = EPS) -> Tensor:
    """``sum_i p_i ln((p_i + eps) / (q_i + eps))`` over the last dimension (natural log)."""
    p = p.to(torch.float64)
    q = q.to(torch.float64)
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(-1)


def js_divergence(p: Tensor, q: Tensor, eps: float = EPS) -> Tensor:
    """Jensen–Shannon divergence of distributions over the last dimension, in ``[0, ln 2]``."""
    p = p.to(torch.float64)
    q = q.to(torch.float64)
    m = 0.5 * (p + q)
    js = 0.5 * kl_divergence(p, m, eps) + 0.5 * kl_divergence(q, m, eps)
    return js.clamp(0.0, LN2)


def softness(weights: Tensor) -> Tensor:
    """SPEC §4.2 softness of (noised) soft-token weights: their entropy in nats."""
    w = weights.to(torch.float64)
    return torch.special.entr(w).sum(-1)


def randomness(noised: Tensor, clean: Tensor) -> Tensor:
    """SPEC §4.2 randomness: ``JS(st', st)`` on the probability vectors themselves (no softmax)."""
    return js_divergence(noised, clean)


Sparse = Sequence[tuple[Sequence[int], Sequence[float]]]


def _aligned(a: Sparse, b: Sparse) -> tuple[Tensor, Tensor]:
    """Two lists of sparse distributions ``(indices, weights)`` as dense rows over each pair's union of indices."""
    width = max((len(set(ia) | set(ib)) for (ia, _), (ib, _) in zip(a, b)), default=1)
    x = torch.zeros(len(a), max(width, 1), dtype=torch.float64)
    y = torch.zeros_like(x)
    for r, ((ia, wa), (ib, wb)) in enumerate(zip(a, b)):
        slot: dict[int, int] = {}
        for i, w in zip(ia, wa):
            x[r, slot.setdefault(int(i), len(slot))] += w
        for i, w in zip(ib, wb):
            y[r, slot.setdefault(int(i), len(slot))] += w
    return x, y


def soft_input_measures(fed: Sparse, clean: Sparse | None = None) -> tuple[list[float], list[float]]:
    """SPEC §4.2 per soft step: ``(softness, randomness)`` lists.

    ``fed``: the soft inputs actually fed, one ``(indices, weights)`` per step (as recorded by
    ``soft_generate(record_distributions=True)``); ``clean``: the vanilla soft token of the same
    logits per step (None: the inputs were not noised, so randomness is 0). Softness is the
    entropy of the fed weights; randomness is ``JS(fed, clean)`` on the two probability vectors,
    placed on the union of their indices (entries outside a token's support are 0).
    """
    if clean is not None and len(clean) != len(fed):
        raise ValueError(f"{len(fed)} fed soft tokens but {len(clean)} clean ones")
    if not fed:
        return [], []
    x, y = _aligned(fed, clean if clean is not None else fed)
    soft = softness(x).tolist()
    rand = randomness(x, y).tolist() if clean is not None else [0.0] * len(fed)
    return soft, rand


def _probs(logits: Tensor, temperature: float) -> Tensor:
    t = temperature if temperature > 0 else 1.0
    return torch.softmax(logits.to(torch.float64) / t, dim=-1)


@dataclass
class JSProbe:
    """Collects ``JS(P_st,P_1)``, ``JS(P_st,P_2)``, ``JS(P_1,P_2)`` per soft step (see module doc).

    ``temperature`` is the temperature of the three distributions (0 is read as 1).
    ``horizon`` 1 (SPEC §4.1) compares next-token distributions. ``horizon`` h > 1 compares the
    distributions h tokens later: each branch (top-1, top-2, soft) is followed by the same h - 1
    tokens, the greedy continuation of the top-1 branch **[extension]** — on tasks whose next token
    is fixed (a space after a result digit) the effect of the input only shows a few tokens later.
    """

    temperature: float = 0.6
    horizon: int = 1
    records: list[dict[str, Any]] = field(default_factory=list)
    one_component_steps: int = 0
    _pending: tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None] | None = None

    def _run(self, state: DecodeState, x: Tensor) -> Tensor:
        """Logits of every new position after feeding ``x`` (B, n, d); the cache is restored."""
        model = state.model
        n = x.shape[1]
        out, state.cache = cached_forward(model, state.cache, inputs_embeds=x, attention_mask=state.mask_with(n),
                                          position_ids=state.positions(n))
        state.cache.crop(-n)  # remove the probe's positions again
        return out.logits

    def _top1_branch(self, state: DecodeState, x1: Tensor) -> tuple[Tensor, Tensor]:
        """Feed the top-1 input then its greedy continuation; returns (final logits, continuation embeds)."""
        emb = state.model.get_input_embeddings()
        seq = x1
        cont = []
        logits = self._run(state, seq)[:, -1, :]
        for _ in range(self.horizon - 1):
            e = emb(logits.argmax(-1))[:, None, :]
            cont.append(e)
            seq = torch.cat([seq, e], dim=1)
            logits = self._run(state, seq)[:, -1, :]
        tail = torch.cat(cont, dim=1) if cont else x1[:, :0, :]
        return logits, tail

    def before_step(self, state: DecodeState, soft: Tensor, top1: Tensor, top2: Tensor, top2_valid: Tensor,
                    inputs_embeds: Tensor | None = None, top1_weight: Tensor | None = None) -> None:
        if self.horizon < 1:
            raise ValueError(f"JS probe horizon must be >= 1, got {self.horizon}")
        use = soft & top2_valid
        self.one_component_steps += int((soft & ~top2_valid).sum())
        self._pending = None
        if not bool(use.any()):
            return
        emb = state.model.get_input_embeddings()
        l1, tail = self._top1_branch(state, emb(top1)[:, None, :])
        l2 = self._run(state, torch.cat([emb(top2)[:, None, :], tail], dim=1))[:, -1, :]
        lst = None
        if self.horizon > 1:
            if inputs_embeds is None:
                raise ValueError("JS probe with horizon > 1 needs the step's inputs_embeds")
            lst = self._run(state, torch.cat([inputs_embeds[:, None, :], tail], dim=1))[:, -1, :]
        w1 = top1_weight.detach().to("cpu", torch.float64) if top1_weight is not None else None
        self._pending = (use, _probs(l1, self.temperature), _probs(l2, self.temperature), state.rows.clone(),
                         None if lst is None else _probs(lst, self.temperature), w1)

    def after_step(self, next_logits: Tensor) -> None:
        if self._pending is None:
            return
        use, p1, p2, rows, pst, w1 = self._pending
        self._pending = None
        if pst is None:
            pst = _probs(next_logits, self.temperature)
        idx = use.nonzero(as_tuple=True)[0]
        a = js_divergence(pst[idx], p1[idx]).tolist()
        b = js_divergence(pst[idx], p2[idx]).tolist()
        c = js_divergence(p1[idx], p2[idx]).tolist()
        ws = w1[idx.cpu()].tolist() if w1 is not None else [None] * len(a)
        for r, x, y, z, w in zip(rows[idx].tolist(), a, b, c, ws):
            self.records.append({"row": r, "js_st_top1": x, "js_st_top2": y, "js_top1_top2": z, "top1_weight": w})

    def arrays(self) -> dict[str, list[float]]:
        return {k: [r[k] for r in self.records] for k in ("js_st_top1", "js_st_top2", "js_top1_top2")}

    def summary(self) -> dict[str, Any]:
        arr = self.arrays()
        out: dict[str, Any] = {"steps": len(self.records), "one_component_steps": self.one_component_steps}
        for k, v in arr.items():
            out[f"mean_{k}"] = mean(v) if v else None
        if arr["js_st_top2"]:
            out["frac_js_st_top2_above_0.6"] = mean(1.0 if x > 0.6 else 0.0 for x in arr["js_st_top2"])
            out["frac_js_st_top1_below_js_st_top2"] = mean(
                1.0 if x < y else 0.0 for x, y in zip(arr["js_st_top1"], arr["js_st_top2"])
            )
        out["by_top1_weight"] = self.by_top1_weight()
        return out

    def by_top1_weight(self, edges: Sequence[float] = TOP1_WEIGHT_BINS) -> list[dict[str, Any]]:
        """Mean JS per bin of the soft input's top-1 weight ``[lo, hi)`` (steps whose weight was recorded)."""
        bins = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = [r for r in self.records if r.get("top1_weight") is not None and lo <= r["top1_weight"] < hi]
            bins.append({"top1_weight": [lo, hi], "steps": len(sel),
                         **{f"mean_{k}": (mean(r[k] for r in sel) if sel else None)
                            for k in ("js_st_top1", "js_st_top2", "js_top1_top2")}})
        return bins
