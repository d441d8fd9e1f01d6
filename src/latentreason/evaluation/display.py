"""Terminal tables of evaluation results (rich), shared by the CLI and the demo.

Rows that come from several seeds (``n_seeds`` > 1) show their accuracy as ``mean ± std (min)``
and the number of seeds, so a reader sees at a glance how much each row varies.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def console(stderr: bool) -> Console:
    """A console that does not wrap long table rows when the output is not a terminal."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=160)


out = console(False)
err = console(True)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def spread(row: dict[str, Any], key: str, digits: int = 3) -> str:
    """``0.912 ± 0.030 (min 0.880)`` for a row over several seeds, the plain value otherwise."""
    v = row.get(key)
    if v is None or v == "":
        return ""
    if (row.get("n_seeds") or 1) > 1 and f"{key}_std" in row:
        return f"{row[f'{key}_mean']:.{digits}f} ± {row[f'{key}_std']:.{digits}f} (min {row[f'{key}_min']:.{digits}f})"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


HEADS = {"accuracy": "accuracy", "gap_closed": "gap closed", "n": "n", "mean_reasoning_tokens": "reasoning tok",
         "mean_latent_steps": "latent steps", "mean_generated_tokens": "generated tok", "too_long": "too long",
         "latency_ms_per_question": "ms/question", "batch_size": "batch", "train_seconds": "train s",
         "speedup_vs_cot": "speedup vs CoT", "n_seeds": "seeds"}
SPREAD = ("accuracy", "gap_closed")


def print_table(rows: dict[str, dict], title: str) -> None:
    multi = any((r.get("n_seeds") or 1) > 1 for r in rows.values())
    cols = [c for c in HEADS if any(c in r for r in rows.values()) and (c != "n_seeds" or multi)]
    t = Table(title=title)
    t.add_column("method")
    for c in cols:
        t.add_column(HEADS[c] + (" (mean ± std, min)" if multi and c in SPREAD else ""), justify="right")
    for name, r in rows.items():
        t.add_row(name, *[spread(r, c) if c in SPREAD else fmt(r.get(c, "")) for c in cols])
    out.print(t)


def print_soft_table(rows: dict[str, dict]) -> None:
    ks = sorted({k for r in rows.values() if isinstance(r, dict) for k in (r.get("pass_at_k") or {})}, key=int)
    t = Table(title="soft thinking on the CoT model (and noisy continuous thoughts)")
    for c in ["mode", "accuracy", *[f"pass@{k}" for k in ks], "ROUGE-L vs greedy", "JS to top-1", "JS to top-2"]:
        t.add_column(c, justify="left" if c == "mode" else "right")
    for mode, r in rows.items():
        if not isinstance(r, dict):
            continue
        pk = r.get("pass_at_k") or {}
        t.add_row(mode, spread(r, "accuracy"), *[fmt(pk.get(k, "")) for k in ks],
                  *[fmt(r.get(k)) if r.get(k) is not None else "–" for k in ("rouge_l_vs_greedy", "js_top1", "js_top2")])
    out.print(t)
