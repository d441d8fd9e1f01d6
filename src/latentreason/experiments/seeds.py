"""Several training seeds of one benchmark: the seed list, and the spread of every result over seeds.

A benchmark run with seeds ``[s1, s2, ...]`` runs the whole pipeline once per seed (data order,
initialisation, the CoT teacher and every model derived from it) and :func:`aggregate` merges
the per-seed ``results.json`` objects into one:

* ``results["seeds"]`` lists the seeds;
* every row of ``methods`` holds the **mean** over seeds of each numeric field (so the top-level
  ``accuracy``, ``mean_latent_steps``, ``speedup_vs_cot`` are means), ``per_seed`` (one object per
  seed with its ``seed``, ``accuracy``, ``gap_closed``, ``mean_latent_steps``, ``speedup_vs_cot``, ...)
  and the summaries ``accuracy_mean``, ``accuracy_std`` (sample standard deviation, 0 for one
  seed), ``accuracy_min``, ``accuracy_max``, ``n_seeds`` — likewise for ``gap_closed`` and
  ``speedup_vs_cot``;
* ``gap_closed`` = (accuracy − No-CoT's) / (CoT's − No-CoT's) of the **same seed**: the share of
  the No-CoT→CoT gap a row closes;
* the other sections (soft thinking, adaptive thinking, out-of-distribution sets, the System-1.5
  grid) are averaged leaf by leaf, and their rows keep a ``per_seed`` list too.
"""

from __future__ import annotations

import math
from statistics import mean, stdev
from typing import Any

from latentreason.errors import ConfigError

#: fields of a method row copied into each ``per_seed`` object (when present)
PER_SEED_KEYS = ("accuracy", "gap_closed", "mean_latent_steps", "mean_reasoning_tokens", "mean_generated_tokens",
                 "mean_forward_passes", "latency_ms_per_question", "batched_ms_per_question", "speedup_vs_cot", "mean_layers_per_latent_step", "flops_per_step_vs_cot",
                 "train_seconds", "train_steps", "unparseable")
#: fields summarised with mean / std / min / max
SUMMARY_KEYS = ("accuracy", "gap_closed", "speedup_vs_cot")


def parse_seeds(spec: str | int | list[int] | None, default: int = 0) -> list[int]:
    """``3`` -> [0, 1, 2]; ``"0,4,7"`` (or a list) -> [0, 4, 7]; None -> [default].

    A single number is a count of seeds starting at 0; a comma-separated list names the seeds
    (``"7,"`` is seed 7 alone).
    """
    if spec is None:
        return [default]
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            raise ConfigError(f"--seeds: expected a number of seeds >= 1 or a comma-separated list, got {spec}")
        return list(range(spec))
    if isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        text = str(spec).strip()
        if "," not in text:
            try:
                return parse_seeds(int(text), default)
            except ValueError:
                raise ConfigError(f"--seeds: expected a number of seeds or a comma-separated list of seeds, got {spec!r}") from None
        items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        seeds = [int(x) for x in items]
    except (TypeError, ValueError):
        raise ConfigError(f"--seeds: seeds must be integers, got {spec!r}") from None
    if not seeds:
        raise ConfigError(f"--seeds: no seed in {spec!r}")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds: seeds must be >= 0, got {spec!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is given twice in {spec!r}")
    return seeds


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def stats(values: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value), min, max and count."""
    vals = [float(v) for v in values if _is_num(v)]
    if not vals:
        return {}
    return {"mean": mean(vals), "std": stdev(vals) if len(vals) > 1 else 0.0, "min": min(vals), "max": max(vals),
            "n": len(vals)}


def mean_tree(items: list[Any]) -> Any:
    """Leaf-by-leaf mean of objects of the same shape: numbers are averaged, dicts merged key by key
    (keys in first-seen order), equal-length lists element by element; anything else is taken from
    the first item that has it."""
    present = [x for x in items if x is not None]
    if not present:
        return None
    if all(_is_num(x) for x in present):
        return mean(float(x) for x in present) if any(isinstance(x, float) for x in present) or \
            len({x for x in present}) > 1 else present[0]
    if all(isinstance(x, dict) for x in present):
        keys = list(dict.fromkeys(k for x in present for k in x))
        return {k: mean_tree([x.get(k) for x in present]) for k in keys}
    if all(isinstance(x, list) for x in present) and len({len(x) for x in present}) == 1:
        return [mean_tree([x[i] for x in present]) for i in range(len(present[0]))]
    return present[0]


def gap_closed(acc: float | None, cot: float | None, nocot: float | None) -> float | None:
    """Share of the No-CoT → CoT gap closed by accuracy ``acc`` (None when there is no gap)."""
    if not (_is_num(acc) and _is_num(cot) and _is_num(nocot)) or cot <= nocot:
        return None
    return (acc - nocot) / (cot - nocot)


def add_gap_closed(methods: dict[str, dict[str, Any]]) -> None:
    """Set ``gap_closed`` on every row of one seed's ``methods``: against the row's own ``baseline`` rows
    (the CoT and No-CoT entries of its task variant), else the rows named ``cot`` and ``nocot``."""
    for row in methods.values():
        ref = row.get("baseline") if isinstance(row.get("baseline"), dict) else {}
        cot = methods.get(ref.get("cot", "cot"), {}).get("accuracy")
        nocot = methods.get(ref.get("nocot", "nocot"), {}).get("accuracy")
        g = gap_closed(row.get("accuracy"), cot, nocot)
        if g is not None:
            row["gap_closed"] = g


def _summarise(row: dict[str, Any], per_seed: list[dict[str, Any]]) -> None:
    row["per_seed"] = per_seed
    row["n_seeds"] = len(per_seed)
    for key in SUMMARY_KEYS:
        st = stats([p.get(key) for p in per_seed])
        if st:
            for k in ("mean", "std", "min", "max"):
                row[f"{key}_{k}"] = st[k]


def _rows_with_seeds(runs: list[tuple[int, dict[str, Any]]], keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Merge ``{name: row}`` mappings of several seeds: means + ``per_seed`` + summaries per row."""
    names = list(dict.fromkeys(n for _, rows in runs for n, r in rows.items() if isinstance(r, dict)))
    out: dict[str, Any] = {}
    for name in names:
        present = [(s, rows[name]) for s, rows in runs if isinstance(rows.get(name), dict)]
        row = mean_tree([r for _, r in present])
        per = []
        for s, r in present:
            picked = {k: r[k] for k in (keys or tuple(r)) if k in r and not isinstance(r[k], (dict, list))}
            per.append({"seed": s, **picked})
        _summarise(row, per)
        out[name] = row
    # scalar entries beside the rows (e.g. the adaptive section's thought_reduction): mean + per seed
    scalars = list(dict.fromkeys(k for _, rows in runs for k, v in rows.items() if _is_num(v)))
    for k in scalars:
        vals = [(s, rows.get(k)) for s, rows in runs]
        out[k] = mean_tree([v for _, v in vals])
        out[f"{k}_per_seed"] = [{"seed": s, k: v} for s, v in vals]
        st = stats([v for _, v in vals])
        if st:
            out[f"{k}_min"], out[f"{k}_max"], out[f"{k}_std"] = st["min"], st["max"], st["std"]
    return out


def aggregate(runs: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """One ``results.json`` object from the per-seed results ``[(seed, results), ...]`` (see the module doc)."""
    if not runs:
        raise ValueError("aggregate: no runs")
    for _, res in runs:
        add_gap_closed(res.get("methods") or {})
    first = runs[0][1]
    out: dict[str, Any] = {"seeds": [s for s, _ in runs]}
    for key, value in first.items():
        if key == "methods":
            out["methods"] = _rows_with_seeds([(s, r.get("methods") or {}) for s, r in runs], PER_SEED_KEYS)
        elif key in ("soft_thinking", "adaptive"):
            out[key] = _rows_with_seeds([(s, r.get(key) or {}) for s, r in runs])
        elif key == "ood":
            sets = list(dict.fromkeys(n for _, r in runs for n in (r.get("ood") or {})))
            out["ood"] = {n: _rows_with_seeds([(s, (r.get("ood") or {}).get(n) or {}) for s, r in runs]) for n in sets}
        elif key == "system15_grid":
            grids = [(s, r.get(key)) for s, r in runs if isinstance(r.get(key), dict)]
            merged = mean_tree([g for _, g in grids])
            if isinstance(merged, dict) and len(grids) > 1:
                # each seed picks its own best cell: keep the cells, average only what they scored
                per = [{"seed": s, **(g.get("best") or {})} for s, g in grids]
                merged["best_per_seed"] = per
                merged["best"] = {k: mean_tree([p.get(k) for p in per]) for k in per[0]
                                  if k.startswith("test_") or k == "chosen_on"}
            out[key] = merged
        elif key == "total_seconds":
            out[key] = round(sum(float(r.get(key) or 0.0) for _, r in runs), 1)
        else:
            out[key] = value
    return out


def seed_note(res: dict[str, Any]) -> str:
    """``"3 seeds (0, 1, 2)"`` / ``"seed 0"`` for tables and headings."""
    seeds = res.get("seeds") or []
    if len(seeds) > 1:
        return f"{len(seeds)} seeds ({', '.join(str(s) for s in seeds)})"
    return f"seed {seeds[0]}" if seeds else "one seed"
