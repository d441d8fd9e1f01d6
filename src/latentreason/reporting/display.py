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


def soft_row_label(mode: str, row: dict) -> str:
    """A soft-thinking table's row label; rows of this project's own extension say so (``(ext.)``)."""
    return f"{mode} (ext.)" if row.get("extension") else mode


def print_soft_table(rows: dict[str, dict]) -> None:
    rows = {k: r for k, r in rows.items() if isinstance(r, dict)}
    ks = sorted({k for r in rows.values() for k in (r.get("pass_at_k") or {})}, key=int)
    models = list(dict.fromkeys(r["model"] for r in rows.values() if r.get("model") and not r.get("extension")))
    hs = sorted({r["js_horizon"] for r in rows.values() if r.get("js_horizon")})
    h = f" (h={hs[0]})" if len(hs) == 1 else ""
    t = Table(title="soft thinking" + (f" on {models[0]}" if len(models) == 1 else " on the CoT model")
              + " (and noisy continuous thoughts)")
    cols = ["mode", "accuracy", *[f"pass@{k}" for k in ks], "ROUGE-L vs greedy", f"JS to top-1{h}", f"JS to top-2{h}",
            "thinking entropy", "softness", "randomness"]
    for c in cols:
        t.add_column(c, justify="left" if c == "mode" else "right", no_wrap=c == "mode")
    for mode, r in rows.items():
        pk = r.get("pass_at_k") or {}
        t.add_row(soft_row_label(mode, r), spread(r, "accuracy"), *[fmt(pk.get(k, "")) for k in ks],
                  *[fmt(r.get(k)) if r.get(k) is not None else "–"
                    for k in ("rouge_l_vs_greedy", "js_top1", "js_top2", "mean_thinking_entropy", "softness", "randomness")])
    out.print(t)
    out.print("JS: divergence of the next-token distribution h tokens after a soft input from the one after its top-1 / "
              "top-2 component; thinking entropy: mean entropy (nats) of the model's own next-token distribution over the "
              "thinking steps; softness / randomness (SPEC §4.2): entropy of the soft inputs' weights / their JS to the "
              "un-noised soft token. (ext.): this project's extension, not a paper's method — noise on a latent "
              "model's continuous thoughts (docs/soft_thinking.md).", highlight=False, markup=False)
