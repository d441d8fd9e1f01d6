"""Evaluation of sets whose questions may not fit the model's context (SVAMP, GSM-Hard, ... on a small model).

A question that needs more positions before its answer than the model's context has (its prompt
plus whatever the method places before the answer: ``<bot>``, continuous thoughts, ``<eot>``) is
detected by the typed :class:`~latentreason.errors.ContextOverflowError` that
:meth:`Method.generation_budget <latentreason.methods.base.Method.generation_budget>` raises —
asked of the method itself, never guessed from prompt lengths or error messages. Such questions are

* ``count`` (default; the demo's ``--eval-set``, ``latentreason eval``): counted as ``too_long``
  and wrong, so the accuracy stays comparable with the papers' full-set accuracies;
* ``skip`` (``latentreason eval --too-long skip``): left out, the accuracy is over the questions
  that fit (``too_long`` still reports how many were left out).

Used by the benchmark runner (``evaluation.bench``, the demo's extra sets) and ``latentreason eval``.
The benchmark's extra sets (``BenchConfig.eval_sets``, ``demo --eval-set NAME=PATH``) are parsed by
:func:`parse_eval_sets`, loaded by :func:`load_eval_sets` and run for every entry by :func:`run_ood`
into ``results["ood"][SET][ENTRY]``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from latentreason.data.example import Example
from latentreason.data.registry import load_dataset
from latentreason.errors import ConfigError, ContextOverflowError, DataError
from latentreason.evaluation.evaluate import evaluate
from latentreason.experiments.bench_config import BenchConfig, BenchEntry, EvalSet, entry_method
from latentreason.utils import atomic_write_json

TOO_LONG_POLICIES = ("count", "skip")


def fitting_mask(method, examples: list[Example], batch_size: int) -> list[bool]:
    """Which questions the method can answer within its model's context.

    A prompt longer than the context is certainly too long; the rest are checked with the method's
    own generation (limited to one new token, so a check costs a prefill and the method's latent
    steps): a batch that raises :class:`ContextOverflowError` is split in halves until each
    question is classified. This asks the method itself, so positions it reserves (``<bot>``,
    thoughts) count. Any other error propagates.
    """
    limit = method.max_positions
    if limit is None:
        return [True] * len(examples)
    mask = [len(p) + 1 <= limit for p in method.serializer.prompts(examples)]
    cand = [i for i, ok in enumerate(mask) if ok]

    def probe(idx: list[int]) -> bool:
        try:
            method.generate([examples[i] for i in idx])
            return True
        except ContextOverflowError:
            return False

    def classify(idx: list[int]) -> None:
        if probe(idx):
            return
        if len(idx) == 1:
            mask[idx[0]] = False
            return
        classify(idx[: len(idx) // 2])
        classify(idx[len(idx) // 2 :])

    saved = method.config.max_new_tokens
    was_training = method.training
    method.eval()
    method.config.max_new_tokens = 1
    try:
        for i in range(0, len(cand), batch_size):
            classify(cand[i : i + batch_size])
    finally:
        method.config.max_new_tokens = saved
        method.train(was_training)
    return mask


def evaluate_ood(method, examples: list[Example], batch_size: int = 64, progress: bool = False,
                 description: str = "ood", too_long: str = "count") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy of ``method`` on ``examples`` with too-long questions counted (or skipped), never fatal.

    ``too_long="count"``: questions that do not fit are counted as ``too_long`` and wrong in
    ``accuracy`` (= correct / n, n = all questions) and left out of ``accuracy_answerable``
    (= correct / answerable). ``too_long="skip"``: they are left out, ``n`` = ``answerable`` and
    ``accuracy`` = correct / answerable. The answerable questions are decoded in batches of similar
    prompt length: the generation budget of a batch is capped by its longest prompt, so this keeps
    one long question from shortening the others' answers. Latency is the wall-clock time of that
    pass per answered question (after one warm-up batch). Returns the metrics (those of
    :func:`~latentreason.evaluation.evaluate.evaluate` plus ``too_long``, ``answerable``,
    ``accuracy_answerable``, ``too_long_policy``, ``context``) and one record per question in
    input order (too-long ones: ``"too_long": true``, ``"correct": false``, no output).
    """
    if too_long not in TOO_LONG_POLICIES:
        raise ConfigError(f"too_long must be one of {', '.join(TOO_LONG_POLICIES)}, got {too_long!r}")
    n = len(examples)
    mask = fitting_mask(method, examples, batch_size)
    lengths = [len(p) for p in method.serializer.prompts(examples)]
    order = sorted((i for i in range(n) if mask[i]), key=lambda i: lengths[i])
    fit = [examples[i] for i in order]
    records: list[dict[str, Any] | None] = [None] * n
    if fit:
        ev = evaluate(method, fit, batch_size=batch_size, progress=progress, description=description)
        m = dict(ev.metrics)
        for i, rec in zip(order, ev.records):
            records[i] = rec
    else:
        m = {"correct": 0, "unparseable": 0, "latency_ms_per_question": 0.0, "mean_generated_tokens": 0.0,
             "mean_reasoning_tokens": 0.0, "mean_latent_steps": 0.0, "mean_forward_passes": 0.0}
    for i in range(n):
        if records[i] is None:
            ex = examples[i]
            records[i] = {"question": ex.question, "gold": ex.answer, "output": None, "prediction": None,
                          "correct": False, "too_long": True}
    n_long = n - len(fit)
    counted = n if too_long == "count" else len(fit)
    m.update({
        "accuracy": m["correct"] / counted if counted else 0.0,
        "n": counted,
        "too_long": n_long,
        "too_long_policy": too_long,
        "answerable": len(fit),
        "accuracy_answerable": m["correct"] / len(fit) if fit else None,
        "batch_size": batch_size,
        "context": method.max_positions,
    })
    return m, records  # type: ignore[return-value]


# --------------------------------------------------------------------------- a benchmark's extra sets
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_eval_sets(specs: list[str] | None, data_dir: str | None = None) -> list[EvalSet]:
    """``["svamp=data/SVAMP.json", "gsm_hard"]`` -> :class:`EvalSet` list.

    Each spec is ``NAME=PATH`` (PATH: a file, format detected from its content, or a named set)
    or just the name of a named set (``svamp``, ``gsm_hard``, ``multiarith``, ``asdiv``; resolved in
    the data directory).
    """
    out: list[EvalSet] = []
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep:
            path = name
        if not name or not path:
            raise ConfigError(f"--eval-set {spec!r}: expected NAME=PATH (e.g. svamp=data/svamp/SVAMP.json) or a named set")
        if not _SET_NAME.match(name):
            raise ConfigError(f"--eval-set {spec!r}: the name {name!r} may only contain letters, digits, '_', '.' and '-'")
        if any(e.name == name for e in out):
            raise ConfigError(f"--eval-set: the name {name!r} is given twice")
        out.append(EvalSet(name, path, data_dir=data_dir))
    return out


def load_eval_sets(sets: list[EvalSet]) -> dict[str, list[Example]]:
    """Load every extra evaluation set (its test split for named sets); errors name the set."""
    loaded: dict[str, list[Example]] = {}
    for es in sets:
        try:
            examples = load_dataset(es.path, "test", data_dir=es.data_dir, fmt=es.fmt, limit=es.limit)
        except DataError as e:
            raise DataError(f"evaluation set {es.name!r}: {e}") from e
        if not examples:
            raise DataError(f"evaluation set {es.name!r} ({es.path}): no examples")
        loaded[es.name] = examples
    return loaded


def run_ood(cfg: BenchConfig, sets: dict[str, list[Example]], out: Path, entries: list[BenchEntry], device,
            progress: bool, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Every entry on every extra set: ``{SET: {ENTRY: metrics}}``; predictions in ``OUT/ENTRY/ood-SET.json``."""
    res: dict[str, dict[str, Any]] = {name: {} for name in sets}
    sources = {es.name: es.path for es in cfg.eval_sets}
    for e in entries:
        method = entry_method(out, e, device)
        for name, examples in sets.items():
            metrics, records = evaluate_ood(method, examples, batch_size=cfg.eval_batch_size, progress=progress,
                                            description=f"{name} {e.name}")
            atomic_write_json(out / e.name / f"ood-{name}.json", records)
            metrics["source"] = sources.get(name)
            res[name][e.name] = metrics
            log(f"[{e.name}] {name}: accuracy {metrics['accuracy']:.3f} on {metrics['n']} questions"
                + (f" ({metrics['too_long']} too long for the context, counted wrong)" if metrics["too_long"] else ""))
        del method
    return res
