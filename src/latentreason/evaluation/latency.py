"""Latency of a benchmark's rows measured round-robin: every model in turn, several rounds, the median.

With ``latency_protocol: round_robin`` (the default) the runner evaluates every entry once for its
accuracy and then times all of them together (:func:`round_robin_latency`): in each of
``latency_repeats`` rounds every entry decodes its whole test set once, in turn, the order reversed
every other round, so slow drifts and bursts of a shared machine hit every method alike.
:func:`apply_round_robin` writes the median of the rounds into each row.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any, Callable

from latentreason.evaluation.bench_config import BenchConfig, BenchEntry, entry_method, entry_run_config
from latentreason.evaluation.evaluate import run_generation
from latentreason.training.api import load_split


def round_robin_latency(cfg: BenchConfig, entries: list[BenchEntry], out: Path, device) -> dict[str, list[float]]:
    """ms/question of every entry in each of ``cfg.latency_repeats`` rounds; in each round every entry
    decodes its whole test set once, in turn, the order reversed every other round (one warm-up batch
    each first)."""
    methods, tests = {}, {}
    for e in entries:
        tests[e.name] = load_split(entry_run_config(cfg, e, out), "test")
        methods[e.name] = entry_method(out, e, device)
        run_generation(methods[e.name], tests[e.name][: min(8, len(tests[e.name]))], cfg.eval_batch_size)
    totals: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for r in range(max(1, cfg.latency_repeats)):
        for name in order if r % 2 == 0 else order[::-1]:  # alternate the order: a drift within a round cancels
            totals[name].append(sum(run_generation(methods[name], tests[name], cfg.eval_batch_size)[1]))
    return {name: [1000.0 * x / max(1, len(tests[name])) for x in t] for name, t in totals.items()}


def apply_round_robin(rows: dict[str, dict[str, Any]], cfg: BenchConfig, entries: list[BenchEntry], out: Path, device,
                      log: Callable[[str], None]) -> None:
    """Time every entry round-robin and set each row's latency (and what derives from it) to the median round."""
    log(f"[latency] every model in turn, {cfg.latency_repeats} rounds over the test questions")
    for name, rounds in round_robin_latency(cfg, entries, out, device).items():
        row, ms = rows[name], median(rounds)
        row["tokens_per_s"] *= row["latency_ms_per_question"] / ms if ms > 0 else 1.0
        row.update(latency_ms_per_question=ms, latency_repeats=len(rounds), latency_protocol="round_robin",
                   latency_rounds_ms=list(rounds), eval_seconds=ms * row["n"] / 1000.0)
        log(f"[latency] {name}: {ms:.2f} ms/question")
