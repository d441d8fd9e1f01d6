"""Thought probing (SPEC §4.6-4.7): what do continuous thoughts decode to?

For every question, the last-layer state at ``<bot>`` and after each thought (pre-projection, as
CODI probes it) goes through the LM head; we keep its top-k tokens with probabilities. When the
example records its intermediate results (``meta["values"]`` of the procedural task, or the
``=result`` of equation steps), we also score how often step j's result is the top-1 / in the
top-k of some thought, and of the thought aligned to it. Norms: each thought's L2 norm against the
mean token-embedding norm, and the cosine between consecutive thoughts (collapse check).
"""

from __future__ import annotations

import re
from statistics import mean
from typing import Any

import torch

from latentreason.data.example import Example


def step_results(ex: Example) -> list[str]:
    """Intermediate results of an example's steps (``values`` meta, else text after the last '=')."""
    if "values" in ex.meta:
        return [str(v) for v in ex.meta["values"]]
    out = []
    for s in ex.steps:
        m = re.search(r"=\s*(-?[\d.,]+)\s*(?:>>)?\s*$", s)
        if m:
            out.append(m.group(1).replace(",", ""))
    return out


@torch.no_grad()
def probe_thoughts(method, examples: list[Example], top_k: int = 5, batch_size: int = 64) -> dict[str, Any]:
    """Top-k decodes of every thought plus probing scores and norms; JSON-serialisable."""
    head = method.model.get_output_embeddings()
    emb_norm = float(method.model.get_input_embeddings().weight.norm(dim=-1).mean())
    rows = []
    n_pos = 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        for ex, g in zip(chunk, method.generate(chunk, record_hidden=True)):
            hs = g.extra["hidden"]
            n_pos = max(n_pos, len(hs))
            probs = torch.softmax(head(torch.stack(hs)).float(), dim=-1)
            top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            thoughts = []
            for j in range(len(hs)):
                toks = [method.tokenizer.decode([t]) for t in top.indices[j].tolist()]
                thoughts.append({"position": "<bot>" if j == 0 else f"thought {j}",
                                 "top": [[t, round(p, 4)] for t, p in zip(toks, top.values[j].tolist())],
                                 "norm": float(hs[j].norm())})
            cos = [float(torch.cosine_similarity(hs[j], hs[j + 1], dim=0)) for j in range(len(hs) - 1)]
            rows.append({"question": ex.question, "gold": ex.answer, "output": g.text, "steps": ex.steps,
                         "results": step_results(ex), "thoughts": thoughts, "consecutive_cosine": cos})
    # scores: is step j's result decoded anywhere / at the aligned position j+offset
    offset = getattr(method.config, "align_offset", 1)
    any_top1, any_topk, at_pos = [], [], []
    for r in rows:
        tops = [[t for t, _ in th["top"]] for th in r["thoughts"]]
        for j, v in enumerate(r["results"]):
            any_top1.append(any(t[0].strip() == v for t in tops))
            any_topk.append(any(v in [x.strip() for x in t] for t in tops))
            k = j + offset
            if k < len(tops):
                at_pos.append(tops[k][0].strip() == v)
    by_len: dict[int, list[bool]] = {}
    for r in rows:
        tops = [[x.strip() for x, _ in th["top"]] for th in r["thoughts"]]
        ok = all(any(v in t for t in tops) for v in r["results"]) if r["results"] else False
        by_len.setdefault(len(r["results"]), []).append(ok)
    summary = {
        "n": len(rows),
        "top_k": top_k,
        "positions": n_pos,
        "result_in_any_top1": mean(any_top1) if any_top1 else None,
        "result_in_any_topk": mean(any_topk) if any_topk else None,
        "result_top1_at_aligned_thought": mean(at_pos) if at_pos else None,
        "all_results_in_topk_by_n_steps": {str(k): mean(v) for k, v in sorted(by_len.items())},
        "mean_thought_norm": mean(th["norm"] for r in rows for th in r["thoughts"][1:]) if n_pos > 1 else None,
        "mean_token_embedding_norm": emb_norm,
        "mean_consecutive_cosine": mean(c for r in rows for c in r["consecutive_cosine"]) if n_pos > 1 else None,
    }
    return {"summary": summary, "examples": rows}
