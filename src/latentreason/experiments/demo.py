"""``latentreason demo``: the benchmark runner on the embedded default task.

The demo trains a tiny GPT-2-style model from scratch for every method on the procedural
modular-arithmetic task (``data/procedural.py``), evaluates all methods on the same 500 test
questions and writes ``OUT/results.json`` plus one run directory per method. Latent methods start
from the demo's CoT-SFT model where their papers do, so nothing is trained twice.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

from latentreason.config import from_dict, load_yaml
from latentreason.errors import ConfigError
from latentreason.experiments.bench import run_bench
from latentreason.experiments.bench_config import BenchConfig
from latentreason.experiments.ood import parse_eval_sets
from latentreason.experiments.seeds import seed_note
from latentreason.reporting.display import err, print_soft_table, print_table
from latentreason.reporting.report import write_report

#: the demo's benchmark (``configs/bench_default.yaml`` links to it) and the overlay of ``demo --quick``
DEMO_YAML = "demo.yaml"
QUICK_YAML = "demo_quick.yaml"


def _package_yaml(name: str) -> dict[str, Any]:
    with resources.as_file(resources.files("latentreason.experiments") / name) as path:
        return load_yaml(path)


def overlay(base: dict[str, Any], over: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``base`` with ``over`` laid over it: mappings merge key by key, other values are replaced; under
    ``entries``, ``over`` maps an entry's name to what changes in that entry."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = f"{where}.{key}" if where else key
        if key == "entries" and not where:
            by_name = {e["name"]: e for e in out.get("entries", [])}
            for name, change in value.items():
                if name not in by_name:
                    raise ConfigError(f"{path}.{name}: no such entry in the demo ({', '.join(by_name)})")
                by_name[name].update(overlay(by_name[name], change, f"{path}.{name}"))
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def demo_config(quick: bool = False) -> BenchConfig:
    """The demo's settings: ``demo.yaml``; ``quick`` lays ``demo_quick.yaml`` over it (the tests' smaller run)."""
    data = _package_yaml(DEMO_YAML)
    if quick:
        data = overlay(data, _package_yaml(QUICK_YAML))
    return from_dict(BenchConfig, data)


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, only: list[str] | None = None,
             fresh: bool = False, progress: bool = True, eval_sets: list[str] | None = None,
             data_dir: str | None = None, seeds: list[int] | None = None, reuse_stale: bool = False) -> dict[str, Any]:
    """``eval_sets``: extra evaluation sets as ``NAME=PATH`` (or a named set), see ``bench.parse_eval_sets``;
    ``seeds``: training seeds, each running the whole pipeline (default: one seed, 0)."""
    cfg = demo_config(quick)
    cfg.eval_sets = parse_eval_sets(eval_sets, data_dir)
    results = run_bench(cfg, out_dir, only=only, fresh=fresh, progress=progress,
                        log=lambda s: err.print(s, highlight=False, markup=False), seeds=seeds, reuse_stale=reuse_stale)
    print_table(results["methods"], f"demo on the embedded default task ({results['task']['n_steps']}-step modular chains), "
                f"{seed_note(results)}")
    if "soft_thinking" in results:
        print_soft_table(results["soft_thinking"])

    err.print(f"results: {Path(out_dir) / 'results.json'} (total {results['total_seconds']:.0f} s)", markup=False)
    err.print(f"report: {write_report(out_dir)}", markup=False)
    return results
