"""The soft-thinking study: token vs soft vs stochastic-soft thinking on one model (SPEC §3.6, §4).

:func:`soft_thinking_study` decodes the same questions with every mode (``greedy``, ``sampling``,
``vanilla``, ``dirichlet``, ``gumbel``), ``samples`` times per stochastic mode, and measures
accuracy, unbiased Pass@k, ROUGE-L of the visible text against the greedy trace, the mean JS
divergence of the soft step's next-token distribution to its top-1 / top-2 component's, mean
reasoning tokens and latency. With ``out_dir`` it writes ``soft_thinking.json`` (results, the
settings, per-mode details and raw JS arrays, the logit-lens path shares) and PNG plots.

A mode whose run draws no random numbers (``greedy``; ``vanilla`` when the answer phase is
greedy) is decoded once: its samples would be identical, so its Pass@k equals its accuracy.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Iterable, Sequence

import torch

from latentreason.analysis.js import JSProbe, soft_input_measures
from latentreason.analysis.passk import mean_pass_at_k
from latentreason.analysis.rouge import TOKENIZATIONS, mean_rouge_l
from latentreason.data.example import Example
from latentreason.errors import ConfigError
from latentreason.methods.base import Method
from latentreason.soft_thinking.config import MODES, SoftThinkingConfig
from latentreason.soft_thinking.loop import SoftThinkingOutput
from latentreason.soft_thinking.method import soft_think
from latentreason.soft_thinking.path_share import path_share_study
from latentreason.soft_thinking.samplers import SOFT_MODES, derive_seed
from latentreason.utils import atomic_write_json, check_writable_dir, env_info, pyplot

DEFAULT_MODES = ("greedy", "sampling", "vanilla", "dirichlet", "gumbel")
RESULT_KEYS = ("accuracy", "pass_at_k", "rouge_l_vs_greedy", "js_top1", "js_top2", "js_horizon", "mean_thinking_entropy",
               "softness", "randomness", "mean_reasoning_tokens", "latency_ms_per_question")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pooled_mean(per_row: Iterable[Sequence[float]]) -> float | None:
    """Mean over every step of every row (each step weighs the same); None when there is no step."""
    total, count = 0.0, 0
    for vals in per_row:
        total += float(sum(vals))
        count += len(vals)
    return total / count if count else None


def sample_seed(seed: int, sample: int) -> int:
    """Seed of sample ``sample`` of a study with base ``seed`` (rows then add their own index)."""
    return derive_seed(seed, "sample", sample)


def run_mode(
    method: Method, examples: list[Example], config: SoftThinkingConfig, seed: int, batch_size: int = 100,
    record_distributions: bool = False,
) -> tuple[list[SoftThinkingOutput], float]:
    """One pass over ``examples`` (row ids = their indices); returns outputs and wall-clock seconds."""
    outs: list[SoftThinkingOutput] = []
    total = 0.0
    device = method.device
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        _sync(device)
        t0 = time.perf_counter()
        outs.extend(soft_think(method, chunk, config, seed=seed, row_ids=range(i, i + len(chunk)),
                               record_distributions=record_distributions))
        _sync(device)
        total += time.perf_counter() - t0
    return outs, total


def _validate(modes: Sequence[str], samples: int, ks: Sequence[int], rouge_tokens: str, examples: list[Example], batch_size: int) -> None:
    if not examples:
        raise ConfigError("soft-thinking study: no examples")
    if not modes:
        raise ConfigError("soft-thinking study option modes: give at least one mode")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"soft-thinking study option modes: unknown mode {m!r}; valid: {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise ConfigError(f"soft-thinking study option modes: repeated mode in {list(modes)}")
    if not (isinstance(samples, int) and samples >= 1):
        raise ConfigError(f"soft-thinking study option samples: must be an integer >= 1, got {samples!r}")
    if not ks:
        raise ConfigError("soft-thinking study option ks: give at least one k")
    for k in ks:
        if not (isinstance(k, int) and 1 <= k <= samples):
            raise ConfigError(f"soft-thinking study option ks: every k must be in 1..samples={samples}, got {k!r}")
    if rouge_tokens not in TOKENIZATIONS:
        raise ConfigError(f"soft-thinking study option rouge_tokens: must be one of {', '.join(TOKENIZATIONS)}, got {rouge_tokens!r}")
    if batch_size < 1:
        raise ConfigError(f"soft-thinking study option batch_size: must be >= 1, got {batch_size}")


def soft_thinking_study(
    method: Method,
    examples: list[Example],
    modes: Sequence[str] = DEFAULT_MODES,
    samples: int = 8,
    ks: Sequence[int] = (1, 2, 4, 8),
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    config: SoftThinkingConfig | None = None,
    batch_size: int = 100,
    rouge_tokens: str = "whitespace",
    js_limit: int | None = None,
    lens_limit: int = 50,
    horizons: Sequence[int] = (1,),
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
    model_info: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Compare thinking modes on ``examples``; returns ``{mode: {accuracy, pass_at_k, rouge_l_vs_greedy,
    js_top1, js_top2, js_horizon, mean_thinking_entropy, softness, randomness, mean_reasoning_tokens,
    latency_ms_per_question}}``.

    ``mean_thinking_entropy``: mean over every thinking step of every run of the entropy (nats) of
    the model's own next-token distribution ``softmax(z)`` — the model's uncertainty along that
    mode's trajectories (the greedy row: along its own greedy path). ``softness`` / ``randomness``
    (soft modes, SPEC §4.2): mean over every soft input fed of the entropy of its weights, and of
    ``JS(fed weights, the vanilla weights of the same logits)`` (0 for vanilla); None for token modes.
    ``model_info`` is stored in the JSON's settings (which checkpoint was studied).

    ``config`` supplies every sampler setting but the mode (default: :class:`SoftThinkingConfig`).
    ``js_limit`` caps the questions of the JS probe run (default: all), ``lens_limit`` those of the
    logit-lens path-share experiment. ``horizons``: the JS probe and the path share are measured
    at each (1 = next token, SPEC §4.1/§4.3; h > 1 see :class:`~latentreason.analysis.js.JSProbe`);
    ``js_top1`` / ``js_top2`` report the first one and are None for the token modes.
    ``threads`` sets torch's CPU thread count for the study (restored afterwards); on a small
    shared CPU one thread is several times faster for these tiny per-token steps.
    """
    modes = tuple(modes)
    horizons = tuple(int(h) for h in horizons)
    if not horizons or min(horizons) < 1:
        raise ConfigError(f"soft-thinking study option horizons: give integers >= 1, got {list(horizons)}")
    ks = tuple(int(k) for k in ks)
    ks = tuple(sorted(set(ks)))
    _validate(modes, samples, ks, rouge_tokens, examples, batch_size)
    base = (config or SoftThinkingConfig()).validate()
    say = log or (lambda s: None)
    n = len(examples)

    if threads is not None and threads < 1:
        raise ConfigError(f"soft-thinking study option threads: must be >= 1, got {threads}")
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = method.training
    method.eval()
    try:
        runs, seconds = _run_modes(method, examples, base, modes, samples, seed, batch_size, say)
        results, details = _measure(method, examples, base, runs, seconds, samples=samples, ks=ks, rouge_tokens=rouge_tokens,
                                    js_limit=js_limit, horizons=horizons, seed=seed, batch_size=batch_size, say=say)
        lens = {
            str(h): path_share_study(method, examples[: max(0, lens_limit)], batch_size=batch_size, horizon=h)
            if lens_limit > 0 else {"points": 0}
            for h in horizons
        }
        say(f"logit lens: path shares at {lens[str(horizons[0])].get('points', 0)} branching points")
        env_threads = torch.get_num_threads()
    finally:
        method.train(was_training)
        torch.set_num_threads(saved_threads)

    if out_dir is not None:
        write_study(out_dir, results, details, lens, {
            "modes": list(modes), "samples": samples, "ks": list(ks), "seed": seed, "questions": n,
            "batch_size": batch_size, "rouge_tokens": rouge_tokens, "js_limit": js_limit, "lens_limit": lens_limit,
            "horizons": list(horizons), "torch_threads": env_threads,
            "config": dataclasses.asdict(base), "think_end": base.think_end or method.serializer.answer_marker,
            "model": dict(model_info or {}),
        }, method)
    return results


def _run_modes(method: Method, examples: list[Example], base: SoftThinkingConfig, modes: Sequence[str], samples: int,
               seed: int, batch_size: int, say: Callable[[str], None],
               ) -> tuple[dict[str, list[list[SoftThinkingOutput]]], dict[str, float]]:
    """Every mode's runs over the questions (one for a mode without randomness, ``samples`` otherwise) and their
    wall-clock seconds, after an untimed warm-up."""
    n = len(examples)
    # warm-up (not timed): a few questions with a soft and a token mode
    warm = examples[: min(n, 8)]
    soft_think(method, warm, base.replace(mode="greedy"))
    soft_think(method, warm, base.replace(mode="vanilla"))
    runs: dict[str, list[list[SoftThinkingOutput]]] = {}
    seconds: dict[str, float] = {}
    for mode in modes:
        cfg = base.replace(mode=mode)
        n_runs = 1 if cfg.deterministic else samples
        runs[mode], seconds[mode] = [], 0.0
        for s in range(n_runs):
            outs, dt = run_mode(method, examples, cfg, sample_seed(seed, s), batch_size, record_distributions=cfg.is_soft)
            runs[mode].append(outs)
            seconds[mode] += dt
        say(f"{mode}: {n_runs} run(s) of {n} questions in {seconds[mode]:.1f} s")
    return runs, seconds


def _measure(method: Method, examples: list[Example], base: SoftThinkingConfig,
             runs: dict[str, list[list[SoftThinkingOutput]]], seconds: dict[str, float], *, samples: int, ks: Sequence[int],
             rouge_tokens: str, js_limit: int | None, horizons: Sequence[int], seed: int, batch_size: int,
             say: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every mode's row (:data:`RESULT_KEYS`) and details, with the JS probe runs of the soft modes."""
    if "greedy" in runs:
        greedy_texts = [o.text for o in runs["greedy"][0]]
    else:
        greedy_texts = [o.text for o in run_mode(method, examples, base.replace(mode="greedy"), 0, batch_size)[0]]
    results: dict[str, dict[str, Any]] = {}
    details: dict[str, dict[str, Any]] = {}
    for mode in runs:
        cfg = base.replace(mode=mode)
        results[mode], details[mode] = _mode_results(method, examples, cfg, runs[mode], seconds[mode], samples, ks,
                                                     greedy_texts, rouge_tokens)
        js1, js2, js_detail = None, None, None
        if mode in SOFT_MODES:
            subset = examples if js_limit is None else examples[:js_limit]
            js1, js2, js_detail = _js_probe(method, subset, cfg, horizons, seed, batch_size, say)
        results[mode].update(js_top1=js1, js_top2=js2, js_horizon=horizons[0] if mode in SOFT_MODES else None)
        results[mode] = {k: results[mode][k] for k in RESULT_KEYS}  # the documented order
        details[mode]["js"] = js_detail
        details[mode]["example_texts"] = details[mode].pop("example_texts")
    return results, details


def js_study(
    method: Method,
    examples: list[Example],
    config: SoftThinkingConfig,
    *,
    seed: int = 0,
    row_ids: Sequence[int] | None = None,
    batch_size: int = 100,
    horizon: int = 1,
) -> tuple[JSProbe, list[SoftThinkingOutput]]:
    """Run soft thinking with a :class:`JSProbe` (at ``horizon``) attached; returns the probe and the outputs.

    The probe does not change the trajectory (same seed, same outputs as a run without it).
    """
    cfg = config.validate()
    probe = JSProbe(temperature=cfg.temperature, horizon=horizon)
    ids = list(row_ids) if row_ids is not None else list(range(len(examples)))
    outs: list[SoftThinkingOutput] = []
    for i in range(0, len(examples), batch_size):
        outs.extend(soft_think(method, examples[i : i + batch_size], cfg, seed=seed, row_ids=ids[i : i + batch_size], probe=probe))
    return probe, outs


def _js_probe(method: Method, subset: list[Example], cfg: SoftThinkingConfig, horizons: Sequence[int], seed: int,
              batch_size: int, say: Callable[[str], None]) -> tuple[float | None, float | None, dict[str, Any]]:
    """JS probe runs of a soft mode at every horizon: (JS to top-1, JS to top-2) at the first horizon, and the details."""
    js1 = js2 = None
    js_detail: dict[str, Any] = {}
    for h in horizons:
        probe, _ = js_study(method, subset, cfg, seed=sample_seed(seed, 0), batch_size=batch_size, horizon=h)
        summ = probe.summary()
        if h == horizons[0]:
            js1, js2 = summ["mean_js_st_top1"], summ["mean_js_st_top2"]
        js_detail[str(h)] = {**summ, "horizon": h, "questions": len(subset), **probe.arrays()}
        say(f"{cfg.mode}: JS probe (horizon {h}) on {len(subset)} questions, {summ['steps']} mixed soft steps")
    return js1, js2, js_detail


def _soft_input_stats(all_outs: list[SoftThinkingOutput]) -> tuple[float | None, float | None, float | None, dict[str, Any]]:
    """Softness, randomness, the share of mixed soft inputs, and softness / randomness where the model is unsure."""
    measures = [soft_input_measures(o.distributions or [], o.clean_distributions) for o in all_outs]
    soft_vals = pooled_mean(m[0] for m in measures)
    rand_vals = pooled_mean(m[1] for m in measures)
    mixed = pooled_mean([1.0 if len(d[0]) > 1 else 0.0 for d in o.distributions or []] for o in all_outs)
    # the same means over the steps where the un-noised token mixes >= 2 tokens (the model is unsure)
    sel = [[len(d[0]) > 1 for d in (o.distributions if o.clean_distributions is None else o.clean_distributions) or []]
           for o in all_outs]
    on_mixed = {
        "softness_where_unsure": pooled_mean([x for x, k in zip(m[0], ks_) if k] for m, ks_ in zip(measures, sel)),
        "randomness_where_unsure": pooled_mean([x for x, k in zip(m[1], ks_) if k] for m, ks_ in zip(measures, sel)),
    }
    return soft_vals, rand_vals, mixed, on_mixed


def _mode_results(method: Method, examples: list[Example], cfg: SoftThinkingConfig,
                  mode_runs: list[list[SoftThinkingOutput]], seconds: float, samples: int, ks: Sequence[int],
                  greedy_texts: list[str], rouge_tokens: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One mode's row (accuracy, Pass@k, ROUGE-L, entropies, lengths, latency; JS is added by the caller) and details."""
    n = len(examples)
    correct_runs = [[bool(method.judge(ex, o.generation()).correct) for ex, o in zip(examples, outs)] for outs in mode_runs]
    # a deterministic mode's samples are its single run repeated
    full = correct_runs if len(correct_runs) == samples else [correct_runs[0]] * samples
    counts = [sum(run[q] for run in full) for q in range(n)]
    acc = float(mean(float(mean(run)) for run in full))
    rouge = mean(mean_rouge_l([o.text for o in outs], greedy_texts, rouge_tokens) for outs in mode_runs)
    other = "char" if rouge_tokens == "whitespace" else "whitespace"
    rouge_other = mean(mean_rouge_l([o.text for o in outs], greedy_texts, other) for outs in mode_runs)
    all_outs = [o for outs in mode_runs for o in outs]
    soft_vals = rand_vals = mixed = None
    on_mixed: dict[str, float | None] = {}
    if cfg.mode in SOFT_MODES:
        soft_vals, rand_vals, mixed, on_mixed = _soft_input_stats(all_outs)
    result = {
        "accuracy": acc,
        "pass_at_k": {str(k): mean_pass_at_k(counts, samples, k) for k in ks},
        "rouge_l_vs_greedy": rouge,
        "mean_thinking_entropy": pooled_mean(o.step_entropy for o in all_outs),
        "softness": soft_vals,
        "randomness": rand_vals,
        "mean_reasoning_tokens": float(mean(o.reasoning_tokens for o in all_outs)),
        "latency_ms_per_question": 1000.0 * seconds / (n * len(mode_runs)),
    }
    detail = {
        "runs": len(mode_runs),
        "deterministic": cfg.deterministic,
        f"rouge_l_vs_greedy_{rouge_tokens}": rouge,
        f"rouge_l_vs_greedy_{other}": rouge_other,
        "per_sample_accuracy": [float(mean(run)) for run in correct_runs],
        "mean_generated_tokens": mean(len(o.tokens) for o in all_outs),
        "mean_soft_steps": mean(o.soft_steps for o in all_outs),
        "thinking_steps": sum(len(o.step_entropy) for o in all_outs),
        "frac_thinking_steps_entropy_above_0.1": pooled_mean(
            [1.0 if h > 0.1 else 0.0 for h in o.step_entropy] for o in all_outs),
        "frac_soft_inputs_mixed": mixed,
        **on_mixed,
        "mean_forward_passes": mean(o.forward_passes for o in all_outs),
        "ended_by": dict(Counter(o.ended_by for o in all_outs)),
        "distinct_texts_per_question": mean(len({outs[q].text for outs in mode_runs}) for q in range(n)),
        "seconds": seconds,
        "example_texts": [outs[0].text for outs in mode_runs][:3],
    }
    return result, detail


def write_study(out_dir: str | Path, results: dict, details: dict, lens: dict, settings: dict, method: Method | None = None) -> Path:
    """``soft_thinking.json`` plus the PNG plots; returns the JSON path."""
    out = check_writable_dir(out_dir, "soft-thinking study output directory")
    env = env_info(method.device if method is not None else None)
    path = out / "soft_thinking.json"
    atomic_write_json(path, {"results": results, "settings": settings, "details": details, "logit_lens": lens, "env": env})
    plot_study(out, results, details, lens, settings)
    return path


def plot_study(out: Path, results: dict, details: dict, lens: dict, settings: dict) -> list[Path]:
    """Pass@k curves, JS histograms, logit-lens path shares, ROUGE-L bars (matplotlib, Agg)."""
    plt = pyplot()
    files = [_plot_pass_at_k(plt, out, results, settings)]
    # JS histograms: one row per horizon, one column per soft mode
    soft = [m for m in results if details.get(m, {}).get("js")]
    if soft:
        files.append(_plot_js(plt, out, soft, details))
    # logit lens: path shares per layer, one line style per horizon
    pts = {h: v for h, v in lens.items() if v.get("points")}
    if pts:
        files.append(_plot_lens(plt, out, pts))
    files.append(_plot_rouge(plt, out, results, details))
    return files


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_pass_at_k(plt: Any, out: Path, results: dict, settings: dict) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for mode, r in results.items():
        ks = [int(k) for k in r["pass_at_k"]]
        ax.plot(ks, [r["pass_at_k"][str(k)] for k in ks], marker="o", label=mode)
    ax.set_xscale("log", base=2)
    all_ks = sorted({int(k) for r in results.values() for k in r["pass_at_k"]})
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.minorticks_off()
    ax.set_xlabel("k")
    ax.set_ylabel("Pass@k")
    ax.set_title(f"Pass@k ({settings['questions']} questions, {settings['samples']} samples)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, out / "pass_at_k.png")


def _plot_js(plt: Any, out: Path, soft: list[str], details: dict) -> Path:
    hs = list(details[soft[0]]["js"])
    fig, axes = plt.subplots(len(hs), len(soft), figsize=(4.2 * len(soft), 3.2 * len(hs)), squeeze=False)
    bins = [i * 0.7 / 35 for i in range(36)]
    for row, h in enumerate(hs):
        for ax, mode in zip(axes[row], soft):
            js = details[mode]["js"][h]
            for key, label in (("js_st_top1", "JS(soft, top-1)"), ("js_st_top2", "JS(soft, top-2)"), ("js_top1_top2", "JS(top-1, top-2)")):
                vals = js.get(key) or []
                if vals:
                    ax.hist(vals, bins=bins, alpha=0.5, label=f"{label}: mean {mean(vals):.3f}")
            ax.axvline(0.6931, color="k", lw=0.8, ls="--")
            ax.set_yscale("log")
            ax.set_title(f"{mode}, horizon {h} ({js['steps']} mixed steps)", fontsize=9)
            ax.set_xlabel("JS divergence (nats)")
            ax.legend(fontsize=7)
    return _save(plt, fig, out / "js_divergence.png")


def _plot_lens(plt: Any, out: Path, pts: dict) -> Path:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = ["-", "--", ":", "-."]
    for i, (h, lv) in enumerate(pts.items()):
        ls = styles[i % len(styles)]
        ax.plot(lv["layers"], lv["share_a"], ls=ls, marker="o", color="C0", label=f"share of a (top-1), h={h}")
        ax.plot(lv["layers"], lv["share_b"], ls=ls, marker="s", color="C1", label=f"share of b (top-2), h={h}")
        ax2.plot(lv["layers"], lv["top1_is_a"], ls=ls, marker="o", color="C0", label=f"soft top-1 = a-run top-1, h={h}")
        ax2.plot(lv["layers"], lv["top1_is_b"], ls=ls, marker="s", color="C1", label=f"soft top-1 = b-run top-1, h={h}")
    first = next(iter(pts.values()))
    for a in (ax, ax2):
        a.set_xticks(first["layers"])
        a.set_xlabel("layer (0 = embeddings)")
        a.set_ylim(-0.05, 1.05)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax.set_ylabel("|top-10(soft) ∩ top-5(single)| / 5")
    ax2.set_ylabel("fraction of branching points")
    ax.set_title(f"logit lens: {first['weight_a']:.1f}·E[a] + {1 - first['weight_a']:.1f}·E[b] ({first['points']} points)", fontsize=9)
    ax2.set_title("top-1 agreement of the soft run", fontsize=9)
    return _save(plt, fig, out / "logit_lens.png")


def _plot_rouge(plt: Any, out: Path, results: dict, details: dict) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    modes = list(results)
    xs = range(len(modes))
    w = 0.38
    ax.bar([x - w / 2 for x in xs], [details[m].get("rouge_l_vs_greedy_whitespace", 0.0) for m in modes], w, label="whitespace tokens")
    ax.bar([x + w / 2 for x in xs], [details[m].get("rouge_l_vs_greedy_char", 0.0) for m in modes], w, label="character tokens")
    ax.set_xticks(list(xs), modes)
    ax.set_ylabel("ROUGE-L F vs greedy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return _save(plt, fig, out / "rouge_l.png")


__all__ = ["DEFAULT_MODES", "RESULT_KEYS", "plot_study", "pooled_mean", "run_mode", "sample_seed", "soft_thinking_study",
           "write_study"]
