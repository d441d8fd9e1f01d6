"""Plots for the run report (matplotlib, Agg backend); every function returns PNG bytes.

Each function takes plain data (the ``methods`` section of ``results.json``, metrics rows read
from ``metrics.jsonl``, a 2-D grid) and returns the encoded PNG, or ``None`` when there is
nothing to draw, so the report can embed the images inline without touching the disk.
"""

from __future__ import annotations

import io
import math
from statistics import mean
from typing import Any, Sequence

import numpy as np
import torch

from latentreason.utils import pyplot

_DPI = 100


def _plt():
    return pyplot()


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    return buf.getvalue()


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def seed_std(row: dict[str, Any], key: str) -> float | None:
    """Sample standard deviation of ``key`` over a row's ``per_seed`` values (None for fewer than two)."""
    vals = [_num(p.get(key)) for p in row.get("per_seed") or [] if isinstance(p, dict)]
    vals = [v for v in vals if v is not None]
    if len(vals) < 2:
        return None
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def accuracy_latency_scatter(methods: dict[str, dict[str, Any]]) -> bytes | None:
    """Accuracy against ms/question, one labelled point per method (log-scaled latency axis); rows
    measured over several seeds get error bars of ± one standard deviation on both axes."""
    pts = [(name, _num(r.get("latency_ms_per_question")), _num(r.get("accuracy"))) for name, r in methods.items()]
    pts = [(n, x, y) for n, x, y in pts if x is not None and y is not None and x > 0]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, x, y) in enumerate(pts):
        ax.scatter([x], [y], s=60, color=f"C{i % 10}", zorder=3)
        ex, ey = seed_std(methods[name], "latency_ms_per_question"), seed_std(methods[name], "accuracy")
        if ex is not None or ey is not None:
            ax.errorbar([x], [y], xerr=[[min(ex or 0.0, 0.9 * x)], [ex or 0.0]], yerr=ey, color=f"C{i % 10}",
                        capsize=3, lw=1, zorder=2)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
    xs = [x for _, x, _ in pts]
    ax.set_xscale("log")
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 1.6, hi * 1.6)
    label = plt.FuncFormatter(lambda v, _: f"{v:g}")  # matplotlib.ticker.FuncFormatter, exported by pyplot
    ax.xaxis.set_major_formatter(label)
    ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}" if hi / lo < 20 else ""))
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("latency (ms / question, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy vs latency (same run, same batch size)")
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


COST_KEYS = (
    ("mean_reasoning_tokens", "reasoning tokens"),
    ("mean_latent_steps", "latent steps"),
    ("mean_generated_tokens", "generated tokens"),
    ("mean_forward_passes", "forward passes"),
)


def cost_bars(methods: dict[str, dict[str, Any]]) -> bytes | None:
    """Grouped bars per method: reasoning tokens, latent steps, generated tokens, forward passes."""
    keys = [(k, label) for k, label in COST_KEYS if any(_num(r.get(k)) is not None for r in methods.values())]
    if not methods or not keys:
        return None
    plt = _plt()
    names = list(methods)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names) + 2), 4))
    w = 0.8 / len(keys)
    for j, (k, label) in enumerate(keys):
        vals = [_num(methods[n].get(k)) or 0.0 for n in names]
        xs = [i - 0.4 + w * (j + 0.5) for i in range(len(names))]
        errs = [seed_std(methods[n], k) for n in names]
        bars = ax.bar(xs, vals, w, label=label, color=f"C{j}",
                      yerr=[e or 0.0 for e in errs] if any(e for e in errs) else None, capsize=2)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("mean per question")
    ax.set_title("reasoning length and cost per question")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def seed_strip(methods: dict[str, dict[str, Any]]) -> bytes | None:
    """Test accuracy of every seed per method (dots) with the mean ± one standard deviation (bar)."""
    rows = {n: [_num(p.get("accuracy")) for p in r.get("per_seed") or [] if isinstance(p, dict)] for n, r in methods.items()}
    rows = {n: [v for v in vals if v is not None] for n, vals in rows.items()}
    rows = {n: v for n, v in rows.items() if v}
    if not rows or max(len(v) for v in rows.values()) < 2:
        return None
    plt = _plt()
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4))
    for i, n in enumerate(names):
        vals = rows[n]
        xs = [i + (j - (len(vals) - 1) / 2) * 0.06 for j in range(len(vals))]
        ax.scatter(xs, vals, s=22, color=f"C{i % 10}", alpha=0.8, zorder=3)
        m = sum(vals) / len(vals)
        sd = seed_std(methods[n], "accuracy") or 0.0
        ax.errorbar([i + 0.25], [m], yerr=[sd], fmt="_", color="k", capsize=4, ms=14, zorder=4)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(-0.03, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"accuracy of each seed ({max(len(v) for v in rows.values())} seeds); bar: mean ± std")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def exit_histogram(hist: dict[str, Any], title: str = "") -> bytes | None:
    """System-1.5: share of critical / non-critical thoughts leaving before each layer (last bar: ran all)."""
    counts = hist.get("counts") if isinstance(hist, dict) else None
    if not isinstance(counts, dict) or not counts:
        return None
    L = int(hist.get("num_layers") or max(len(v) for v in counts.values()) - 1)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    kinds = [k for k in ("critical", "noncritical") if isinstance(counts.get(k), list) and sum(counts[k]) > 0]
    w = 0.8 / max(1, len(kinds))
    for i, k in enumerate(kinds):
        total = sum(counts[k])
        xs = [l - 0.4 + w * (i + 0.5) for l in range(L + 1)]
        ax.bar(xs, [c / total for c in counts[k]], w, label=f"{k} ({total:g} thoughts)", color=f"C{i}")
    ax.set_xticks(range(L + 1), [f"before {l}" for l in range(L)] + ["ran all"])
    ax.set_xlabel("exit (layers run = exit layer)")
    ax.set_ylabel("share of thoughts")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title or "where thoughts leave the layer stack")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _train_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("type", "train") == "train" and _num(r.get("step")) is not None]


def loss_curves(curves: dict[str, list[dict[str, Any]]]) -> bytes | None:
    """Training loss per method (one panel, log y) plus one panel per method with loss parts.

    Stage changes (rows carrying ``stage``) are marked with dotted vertical lines.
    """
    series = {name: [r for r in _train_rows(rows) if _num(r.get("loss")) is not None] for name, rows in curves.items()}
    series = {n: s for n, s in series.items() if s}
    if not series:
        return None
    parts = {n: sorted({k for r in s for k in r if k.startswith("loss_") and _num(r.get(k)) is not None}) for n, s in series.items()}
    parts = {n: p for n, p in parts.items() if p}
    plt = _plt()
    n_panels = 1 + len(parts)
    cols = min(n_panels, 3)
    nrows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    flat = [a for row in axes for a in row]
    ax = flat[0]
    for i, (name, s) in enumerate(series.items()):
        ax.plot([r["step"] for r in s], [r["loss"] for r in s], label=name, color=f"C{i % 10}", marker=_marker(s))
    _positive_log(ax, [r["loss"] for s in series.values() for r in s])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for ax, (name, keys) in zip(flat[1:], parts.items()):
        s = series[name]
        ax.plot([r["step"] for r in s], [r["loss"] for r in s], label="loss (total)", color="k", lw=1.2, marker=_marker(s))
        vals = [r["loss"] for r in s]
        for j, k in enumerate(keys):
            pts = [(r["step"], r[k]) for r in s if _num(r.get(k)) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, color=f"C{j % 10}", lw=1, marker=_marker(pts))
            vals += [p[1] for p in pts]
        _mark_stages(ax, s)
        _positive_log(ax, vals)
        ax.set_xlabel("step")
        ax.set_title(f"{name}: loss parts", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in flat[n_panels:]:
        ax.axis("off")
    return _png(fig)


def _marker(points: Sequence[Any]) -> str | None:
    """Markers for short series, so that a curve of one or two logged points is still visible."""
    return "o" if len(points) < 8 else None


def _positive_log(ax, vals: Sequence[float]) -> None:
    if vals and min(vals) > 0:
        ax.set_yscale("log")


def _mark_stages(ax, rows: list[dict[str, Any]]) -> None:
    prev = None
    for r in rows:
        st = r.get("stage")
        if st is not None and prev is not None and st != prev:
            ax.axvline(r["step"], color="grey", ls=":", lw=0.8)
        prev = st if st is not None else prev


def validation_curves(curves: dict[str, list[dict[str, Any]]]) -> bytes | None:
    """Validation accuracy against step, one panel per method that has stages or several points.

    Points are coloured by ``stage``; ``stage_end`` rows (the accuracy when a stage finishes) are
    drawn as squares and separated by dashed lines, so a curriculum's stages read left to right.
    """
    panels = {}
    for name, rows in curves.items():
        val = [r for r in rows if r.get("type") in ("eval", "stage_end", "final") and _num(r.get("valid_accuracy")) is not None
               and _num(r.get("step")) is not None]
        if len(val) >= 2 or any(r.get("stage") is not None for r in val):
            panels[name] = val
    if not panels:
        return None
    plt = _plt()
    cols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.6 * nrows), squeeze=False)
    flat = [a for row in axes for a in row]
    for ax, (name, val) in zip(flat, panels.items()):
        stages = list(dict.fromkeys(str(r.get("stage")) for r in val))
        colour = {s: f"C{i % 10}" for i, s in enumerate(stages)}
        ax.plot([r["step"] for r in val], [r["valid_accuracy"] for r in val], color="grey", lw=0.8, zorder=1)
        seen = set()
        for r in val:
            st = str(r.get("stage"))
            marker = "s" if r.get("type") == "stage_end" else ("*" if r.get("type") == "final" else "o")
            label = f"stage {st}" if st not in seen and r.get("stage") is not None else None
            seen.add(st)
            ax.scatter([r["step"]], [r["valid_accuracy"]], color=colour[st], marker=marker, s=40 if marker != "*" else 90,
                       zorder=3, label=label)
            if r.get("type") == "stage_end":
                ax.axvline(r["step"], color="grey", ls="--", lw=0.7)
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlabel("step")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{name}: validation (■ stage end, ★ final)", fontsize=10)
        if any(r.get("stage") is not None for r in val):
            ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    for ax in flat[len(panels):]:
        ax.axis("off")
    return _png(fig)


def heatmap(values: list[list[float | None]], row_labels: Sequence[Any], col_labels: Sequence[Any], *,
            row_name: str = "", col_name: str = "", value_name: str = "", title: str = "") -> bytes | None:
    """A 2-D grid (e.g. System-1.5's λ_depth × λ_step accuracy) with the values written in the cells."""
    if not values or not values[0]:
        return None
    plt = _plt()
    arr = np.array([[np.nan if _num(v) is None else float(v) for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 * arr.shape[1] + 3, 0.7 * arr.shape[0] + 2))
    im = ax.imshow(arr, cmap="viridis", aspect="auto")
    ax.set_xticks(range(arr.shape[1]), [str(c) for c in col_labels])
    ax.set_yticks(range(arr.shape[0]), [str(r) for r in row_labels])
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    finite = arr[np.isfinite(arr)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if np.isfinite(arr[i, j]):
                ax.text(j, i, f"{arr[i, j]:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if arr[i, j] < mid else "black")
    fig.colorbar(im, ax=ax, label=value_name)
    ax.set_title(title, fontsize=10)
    return _png(fig)


__all__ = ["COST_KEYS", "accuracy_latency_scatter", "cost_bars", "exit_histogram", "heatmap", "loss_curves", "seed_std", "seed_strip",
           "validation_curves"]


def thoughts_plot(rows: dict[str, list[tuple[int, int]]], fixed_n: int, n_max: int,
                  accuracy: dict[str, dict[str, dict[str, float]]] | None = None) -> bytes:
    """PNG: latent thoughts used against the problem's true number of steps (means, jittered points),
    and, when ``accuracy`` (row -> ``by_true_steps``) is given, accuracy by true steps beside it."""
    plt = _plt()
    if accuracy:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    else:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax2 = None
    all_true = sorted({t for pts in rows.values() for t, _ in pts})
    for i, (name, pts) in enumerate(rows.items()):
        g = torch.Generator().manual_seed(i)
        jit = (torch.rand(len(pts), generator=g) - 0.5) * 0.25
        off = (i - (len(rows) - 1) / 2) * 0.12
        ax.scatter([t + off + float(j) for (t, _), j in zip(pts, jit)], [u + off for _, u in pts], s=6, alpha=0.15,
                   color=f"C{i}")
        means = [(t, mean(u for tt, u in pts if tt == t)) for t in all_true if any(tt == t for tt, _ in pts)]
        ax.plot([t + off for t, _ in means], [m for _, m in means], "o-", color=f"C{i}", label=f"{name} (mean)")
    ax.axhline(fixed_n, color="grey", ls="--", lw=1, label=f"codi_fixed (n = {fixed_n})")
    if all_true:
        ax.plot(all_true, [t + 1 for t in all_true], ":", color="black", lw=1, label="true steps + 1")
    ax.set_xlabel("true number of steps of the problem")
    ax.set_ylabel("latent thoughts used")
    ax.set_xticks(all_true)
    ax.set_yticks(range(0, n_max + 2))
    ax.set_ylim(0, n_max + 1.5)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("thoughts used vs difficulty")
    if ax2 is not None:
        names = list(accuracy)
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            by = accuracy[name]
            ks = sorted(int(k) for k in by)
            ax2.bar([k + (i - (len(names) - 1) / 2) * width for k in ks], [by[str(k)]["accuracy"] for k in ks],
                    width=width, color="grey" if name == "codi_fixed" else f"C{i - 1}", label=name)
        ax2.set_xlabel("true number of steps of the problem")
        ax2.set_ylabel("test accuracy")
        ax2.set_ylim(0, 1.2)
        ax2.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax2.set_xticks(all_true)
        ax2.legend(fontsize=8, loc="upper center", ncol=3)
        ax2.set_title("accuracy by difficulty")
    return _png(fig)
