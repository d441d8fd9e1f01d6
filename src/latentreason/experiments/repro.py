"""Reproductions: a paper's finding re-found on the paper's own data, end to end, on every seed.

A reproduction is a YAML file in ``latentreason/experiments/reproductions/`` (``latentreason repro`` lists them):
its paper, the finding in one sentence, the expected numbers (:class:`Expectation`: a row of the
benchmark, a metric, a bound, the paper's own number and its source) and the benchmark that
produces the rows (:class:`~latentreason.experiments.bench_config.BenchConfig`, usually on a named
data set such as ``mult_4x4``: trained from scratch, evaluated on the data set's shipped test file).

:func:`run_repro` runs the benchmark once per seed — one after the other, or ``jobs`` seeds at a
time in separate processes, each with its share of the CPU threads — and writes, in ``OUT``:

* ``results.json`` in the benchmark's shape (``methods[ROW]["per_seed"]``, mean, std, min) plus
  ``reproduction``: every expectation checked on every seed (:func:`check`);
* ``table.md``: the paper's number, the finding and ours side by side, ✓/✗ per seed;
* ``seed-S/ROW/model``: each trained model, a checkpoint ``latentreason eval`` loads.

A run started again reuses every finished row (as the benchmark does); a row cut short is trained again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from latentreason.config import apply_overrides, from_dict, load_yaml, to_dict
from latentreason.errors import ConfigError
from latentreason.experiments.bench import run_bench
from latentreason.experiments.bench_config import BenchConfig
from latentreason.experiments.seeds import aggregate, stats
from latentreason.utils import atomic_write_json, check_writable_dir, code_identity


@dataclass
class Expectation:
    """What one row must show on every seed: ``min <= metric <= max``."""

    row: str
    metric: str = "accuracy"
    min: float | None = None
    max: float | None = None
    #: the paper's number for this row (text: "100 %", "< 1 %")
    paper: str = ""
    #: where the paper's number comes from
    source: str = ""

    def validate(self) -> None:
        if self.min is None and self.max is None:
            raise ConfigError(f"expect.{self.row}.{self.metric}: give min, max or both")

    def bound(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g} ≤ {self.metric} ≤ {self.max:g}"
        return f"{self.metric} ≥ {self.min:g}" if self.min is not None else f"{self.metric} ≤ {self.max:g}"

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass
class Reproduction:
    name: str
    title: str
    #: the finding, in one sentence
    finding: str
    #: the papers (and code) the finding and the numbers come from
    source: str
    bench: BenchConfig
    expect: list[Expectation] = field(default_factory=list)
    #: the measured budget this reproduction is designed for (minutes per seed, all rows, 2-core CPU)
    budget_minutes_per_seed: float = 60.0
    #: what each row is (printed under the table)
    rows: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    def validate(self) -> None:
        names = {e.name for e in self.bench.entries}
        for x in self.expect:
            if x.row not in names:
                raise ConfigError(f"expect: row {x.row!r} is not an entry of the benchmark ({', '.join(sorted(names))})")


def _repro_files() -> dict[str, Any]:
    root = resources.files("latentreason.experiments") / "reproductions"
    return {p.name[: -len(".yaml")].replace("_", "-"): p for p in root.iterdir() if p.name.endswith(".yaml")}


def list_reproductions() -> dict[str, Reproduction]:
    return {name: load_reproduction(name) for name in sorted(_repro_files())}


def load_reproduction(name: str, overrides: list[str] | None = None) -> Reproduction:
    """A reproduction by name (``icot-mult``) or YAML path; ``overrides`` are ``key.sub=value`` settings
    applied to the file (``bench.train.lr=1e-3``; an entry by its name: ``bench.entries.cot.train.max_steps=500``)."""
    files = _repro_files()
    if name in files:
        with resources.as_file(files[name]) as p:
            data = load_yaml(p)
    elif Path(name).suffix in (".yaml", ".yml"):
        data = load_yaml(name)
    else:
        raise ConfigError(f"unknown reproduction {name!r}; valid: {', '.join(sorted(files))} (or a YAML file)")
    # an entry is reached by its name: bench.entries.icot.train.max_steps=100
    entries = (data.get("bench") or {}).get("entries")
    if isinstance(entries, list) and all(isinstance(e, dict) and "name" in e for e in entries):
        data["bench"]["entries"] = {e["name"]: e for e in entries}
        apply_overrides(data, list(overrides or []))
        data["bench"]["entries"] = list(data["bench"]["entries"].values())
    else:
        apply_overrides(data, list(overrides or []))
    return from_dict(Reproduction, data)


# ---------------------------------------------------------------------------- checking
def row_value(row: dict[str, Any], metric: str) -> float | None:
    v = row.get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def check(repro: Reproduction, results: dict[str, Any]) -> dict[str, Any]:
    """Every expectation on every seed: ``{"checks": [...], "holds": bool}`` (holds: every check on every seed)."""
    checks = []
    for x in repro.expect:
        row = results["methods"].get(x.row)
        per_seed = (row or {}).get("per_seed") or ([dict(row, seed=results.get("seed"))] if row else [])
        seeds = []
        for r in per_seed:
            # per_seed keeps a fixed set of fields; a metric outside it is read from the seed's own row
            v = row_value(r, x.metric)
            seeds.append({"seed": r.get("seed"), "value": v, "holds": x.holds(v)})
        checks.append({**to_dict(x), "bound": x.bound(), "seeds": seeds,
                       "holds": bool(seeds) and all(s["holds"] for s in seeds)})
    return {"checks": checks, "holds": bool(checks) and all(c["holds"] for c in checks)}


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if metric == "accuracy" or abs(v) < 10 else f"{v:.1f}"


def _spread(values: list[float | None], metric: str) -> str:
    st = stats([v for v in values if v is not None])
    if not st:
        return "–"
    if st["n"] == 1:
        return _fmt(st["mean"], metric)
    return f"{_fmt(st['mean'], metric)} ± {_fmt(st['std'], metric)} (min {_fmt(st['min'], metric)})"


def table_markdown(repro: Reproduction, results: dict[str, Any], command: str | None = None) -> str:
    """The reproduction table: paper vs ours with ✓/✗ per seed, then every row's accuracy and cost."""
    rep = results.get("reproduction") or check(repro, results)
    seeds = results.get("seeds") or [results.get("seed", 0)]
    lines = [f"### {repro.name}: {repro.title}", "", f"**Finding.** {repro.finding}", "", f"**Source.** {repro.source}", ""]
    if command:
        code = results.get("code") or {}
        lines += [f"`{command}` — git {code.get('git_revision') or '?'}{' (dirty)' if code.get('dirty') else ''}, source {code.get('source_hash', '?')}, "
                  f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}), {results.get('total_seconds', 0) / 60:.1f} min for this "
                  "invocation", ""]
        train = results.get("train_seconds_per_seed") or {}
        if train:
            lines += ["Training time per seed, every row (rows reused from an earlier invocation included): " +
                      ", ".join(f"seed {s} {t / 60:.1f} min" for s, t in train.items()) +
                      f" (budget {repro.budget_minutes_per_seed:g} min per seed, evaluation not included)", ""]
    lines += ["| row | check | paper | ours: mean ± std (min) | per seed | holds |", "|---|---|---|---|---|---|"]
    for c in rep["checks"]:
        per = ", ".join(f"{_fmt(s['value'], c['metric'])} {'✓' if s['holds'] else '✗'}" for s in c["seeds"])
        lines.append(f"| {c['row']} | {c['bound']} | {c['paper'] or '–'} | "
                     f"{_spread([s['value'] for s in c['seeds']], c['metric'])} | {per} | {'✓' if c['holds'] else '✗'} |")
    lines += ["", "| row | what it is | accuracy: mean ± std (min) | reasoning tokens | latent steps | train s (mean) |",
              "|---|---|---|---|---|---|"]
    for name, row in results["methods"].items():
        per = row.get("per_seed") or [row]
        acc = _spread([row_value(r, "accuracy") for r in per], "accuracy")
        train_s = stats([v for v in (row_value(r, "train_seconds") for r in per) if v is not None])
        lines.append(f"| {name} | {repro.rows.get(name, row.get('method', ''))} | {acc} | "
                     f"{_fmt(row_value(row, 'mean_reasoning_tokens'), 'n')} | {_fmt(row_value(row, 'mean_latent_steps'), 'n')} | "
                     + (f"{train_s['mean']:.0f} |" if train_s else "– |"))
    lines += ["", f"**Every check on every seed:** {'✓ holds' if rep['holds'] else '✗ does not hold'}"]
    if repro.notes:
        lines += ["", repro.notes.strip()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- running
def _run_parallel(name: str, overrides: list[str], seeds: list[int], out: Path, jobs: int, threads: int,
                  reuse_stale: bool, log: Callable[[str], None]) -> list[tuple[int, dict[str, Any]]]:
    """Each seed in its own process (``jobs`` at a time, ``threads`` torch threads each), in ``OUT/seed-S``."""
    pending, running, done, failed = list(seeds), {}, [], []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    while pending or running:
        while pending and len(running) < jobs:
            s = pending.pop(0)
            where = out / f"seed-{s}"
            where.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "latentreason", "repro", name, "--seeds", f"{s},", "--out", str(where),
                   "--threads", str(threads), "--no-progress", "--jobs", "1"]
            cmd += [x for o in overrides for x in ("--set", o)] + (["--reuse-stale"] if reuse_stale else [])
            log(f"[seed {s}] in its own process ({threads} thread(s)), log in {where / 'log.txt'}")
            with open(where / "log.txt", "ab") as fh:
                running[s] = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        time.sleep(2)
        for s, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[s]
            # exit 1: the seed ran and a check failed (its results are there); anything else is a crash, reported
            # once the other seeds have finished (their rows stay reusable)
            if proc.returncode not in (0, 1) or not (out / f"seed-{s}" / "seed_results.json").exists():
                failed.append(f"seed {s} failed (exit {proc.returncode}); see {out / f'seed-{s}' / 'log.txt'}")
                log(failed[-1])
                continue
            done.append((s, json.loads((out / f"seed-{s}" / "seed_results.json").read_text())))
    if failed:
        raise RuntimeError("; ".join(failed))
    return sorted(done, key=lambda x: x[0])


def run_repro(name: str, out_dir: str | Path, seeds: list[int], *, jobs: int = 1, threads: int | None = None,
              overrides: list[str] | None = None, fresh: bool = False, reuse_stale: bool = False, progress: bool = True,
              log: Callable[[str], None] = print, command: str | None = None) -> dict[str, Any]:
    """Run reproduction ``name`` on ``seeds``; write ``OUT/results.json`` and ``OUT/table.md``; return the results."""
    repro = load_reproduction(name, overrides)
    out = check_writable_dir(out_dir)
    jobs = max(1, min(jobs, len(seeds)))
    t0 = time.perf_counter()
    code = code_identity()  # read before training, as each seed's benchmark does
    if jobs > 1:
        if fresh:
            raise ConfigError("--fresh with --jobs > 1: remove the run directory instead")
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        runs = _run_parallel(name, list(overrides or []), seeds, out, jobs, threads, reuse_stale, log)
        results = aggregate(runs)
        results["seed_dirs"] = {str(s): f"seed-{s}" for s in seeds}
        results["parallel"] = {"jobs": jobs, "threads_per_seed": threads}
    else:
        results = run_bench(repro.bench, out, fresh=fresh, progress=progress, log=log, seeds=seeds, reuse_stale=reuse_stale)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    # each seed's training time summed over its rows (whichever invocation trained them: reused rows count too)
    results["train_seconds_per_seed"] = {str(s): round(sum(float(r.get("train_seconds") or 0) for r in _seed_rows(results, s)), 1)
                                         for s in seeds}
    # each seed's wall-clock time in this invocation, training and evaluation of every row (its run's total_seconds)
    results["seconds_per_seed"] = {}
    for s in seeds:
        f = (out if len(seeds) == 1 else out / f"seed-{s}") / "seed_results.json"
        if f.exists():
            results["seconds_per_seed"][str(s)] = json.loads(f.read_text()).get("total_seconds")
    results.setdefault("code", code)
    results["reproduction"] = {"name": repro.name, "title": repro.title, "finding": repro.finding, "source": repro.source,
                               "budget_minutes_per_seed": repro.budget_minutes_per_seed, **check(repro, results)}
    atomic_write_json(out / "results.json", results)
    (out / "table.md").write_text(table_markdown(repro, results, command), encoding="utf-8")
    return results


def _seed_rows(results: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    return [r for row in results["methods"].values()
            for r in (row.get("per_seed") or [dict(row, seed=results.get("seed"))]) if r.get("seed") == seed]
