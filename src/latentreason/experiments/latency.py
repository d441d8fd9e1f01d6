"""Latency of a benchmark's rows measured round-robin: every model in turn, several rounds, the median.

With ``latency_protocol: round_robin`` (the default) the runner evaluates every entry once for its
accuracy and then times all of them together (:func:`round_robin_latency`) on the first
``latency_questions`` test questions (default all) at ``latency_batch_size`` (default
``eval_batch_size``, a throughput measure; 1 is SPEC §5's protocol, what one user waits for one
question, and the demo's). At batch 1 the entries take turns *per question*, the order rotated
every question and every round (:func:`turn_order`, which the benchmark scripts use too); at a
larger batch they take turns per pass over the questions, the order reversed every other round;
either way slow drifts and bursts of a shared machine hit every method alike.
:func:`apply_round_robin` writes the median of the ``latency_repeats`` rounds into each row and
keeps the accuracy pass's own time (at ``eval_batch_size``, one pass) as ``batched_ms_per_question``.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any, Callable

from latentreason.evaluation.evaluate import run_generation
from latentreason.experiments.bench_config import BenchConfig, BenchEntry, entry_method, entry_run_config
from latentreason.training.api import load_split


def turn_order(names: list[str], question: int, round_: int) -> list[str]:
    """The order in which ``names`` take their turn on question ``question`` of round ``round_`` at batch 1:
    rotated by one every question and every round, so no entry always runs first (or after the same one)."""
    k = (question + round_) % len(names)
    return names[k:] + names[:k]


def round_robin_latency(cfg: BenchConfig, entries: list[BenchEntry], out: Path, device) -> dict[str, list[float]]:
    """ms/question of every entry in each of ``cfg.latency_repeats`` rounds (module docstring), after
    one warm-up batch each."""
    methods, tests = {}, {}
    bs = cfg.latency_batch_size or cfg.eval_batch_size
    for e in entries:
        test = load_split(entry_run_config(cfg, e, out), "test")
        tests[e.name] = test[: cfg.latency_questions] if cfg.latency_questions else test
        methods[e.name] = entry_method(out, e, device)
        run_generation(methods[e.name], tests[e.name][: min(8, len(tests[e.name]))], bs)
    totals: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for r in range(max(1, cfg.latency_repeats)):
        if bs == 1:  # per question, the order rotated every question and every round
            spent = dict.fromkeys(order, 0.0)
            for i in range(max(len(t) for t in tests.values())):
                for name in turn_order(order, i, r):
                    if i < len(tests[name]):
                        spent[name] += sum(run_generation(methods[name], tests[name][i : i + 1], 1)[1])
            for name in order:
                totals[name].append(spent[name])
        else:
            for name in order if r % 2 == 0 else order[::-1]:  # alternate the order: a drift within a round cancels
                totals[name].append(sum(run_generation(methods[name], tests[name], bs)[1]))
    return {name: [1000.0 * x / max(1, len(tests[name])) for x in t] for name, t in totals.items()}


def apply_round_robin(rows: dict[str, dict[str, Any]], cfg: BenchConfig, entries: list[BenchEntry], out: Path, device,
                      log: Callable[[str], None]) -> None:
    """Time every entry round-robin and set each row's latency (and what derives from it) to the median round."""
    n = f"the first {cfg.latency_questions}" if cfg.latency_questions else "all"
    bs = cfg.latency_batch_size or cfg.eval_batch_size
    log(f"[latency] every model in turn, {cfg.latency_repeats} rounds over {n} test questions at batch {bs}")
    for name, rounds in round_robin_latency(cfg, entries, out, device).items():
        row, ms = rows[name], median(rounds)
        row["batched_ms_per_question"] = row["latency_ms_per_question"]  # the accuracy pass, at eval_batch_size
        row["batched_batch_size"] = row.get("batch_size", cfg.eval_batch_size)
        row["tokens_per_s"] *= row["latency_ms_per_question"] / ms if ms > 0 else 1.0
        row.update(latency_ms_per_question=ms, latency_repeats=len(rounds), latency_protocol="round_robin",
                   latency_rounds_ms=list(rounds), batch_size=bs,
                   latency_questions=min(row["n"], cfg.latency_questions or row["n"]))
        log(f"[latency] {name}: {ms:.2f} ms/question")
