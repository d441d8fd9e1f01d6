"""``latentreason repro``: list the reproductions, or run one on several seeds (:mod:`latentreason.experiments.repro`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from latentreason.experiments.seeds import parse_seeds
from latentreason.reporting.display import err, out

repro_app = typer.Typer()


@repro_app.command("repro")
def repro(
    name: Optional[str] = typer.Argument(None, help="The reproduction to run (none: list them), or a YAML file."),
    seeds: str = typer.Option("1", "--seeds", help="Training seeds: a number N (0..N-1) or a comma-separated list (`0,3`)."),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default runs/repro/NAME)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Seeds run at the same time, each in its own process with its share of the CPU threads."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads per seed (default: all cores / jobs)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory holding the data set (default: ./data, ../shared/data, $LATENTREASON_DATA_DIR)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a field of the reproduction file, e.g. `bench.train.lr=1e-3`; repeatable."),
    fresh: bool = typer.Option(False, "--fresh", help="Retrain every row instead of reusing finished ones."),
    reuse_stale: bool = typer.Option(False, "--reuse-stale", help="Reuse finished rows even when they were trained by other code."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Reproduce a paper's finding on the paper's own data: train every row from scratch on each seed, evaluate on
    the data set's shipped test file, check the expected numbers on every seed.

    Writes `OUT/results.json` (the benchmark's shape, plus `reproduction`: each check per seed), `OUT/table.md`
    (paper vs ours, ✓/✗ per seed) and every trained model (`OUT/seed-S/ROW/model`, loadable by `latentreason eval`).
    Run again, it reuses every finished row (`--fresh` retrains).

    Examples:

    * `latentreason repro` (list the reproductions)
    * `latentreason repro icot-mult --seeds 2 --jobs 2 --out runs/repro/icot-mult`
    * `latentreason repro icot-mult --seeds 0,3 --set bench.train.lr=5e-4`
    """
    # start-up cost (torch, transformers): imported when the command runs, not for `--help`
    import torch

    from latentreason.experiments.repro import list_reproductions, run_repro

    if name is None:
        t = Table(title="reproductions (latentreason repro NAME --seeds N)")
        for col in ("name", "finding", "source", "budget / seed"):
            t.add_column(col)
        for key, r in list_reproductions().items():
            t.add_row(key, r.finding, r.source, f"{r.budget_minutes_per_seed:g} min")
        out.print(t)
        return
    if threads is not None:
        if threads < 1:
            raise typer.BadParameter(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    if jobs < 1:
        raise typer.BadParameter(f"--jobs must be >= 1, got {jobs}")
    if data_dir is not None:
        overrides = [f"bench.data.data_dir={Path(data_dir).resolve()}", *overrides]
    target = out_dir or str(Path("runs") / "repro" / Path(name).stem)
    command = "latentreason " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results = run_repro(name, target, parse_seeds(seeds), jobs=jobs, threads=threads, overrides=overrides, fresh=fresh,
                            reuse_stale=reuse_stale, progress=not no_progress,
                            log=lambda s: err.print(s, highlight=False, markup=False), command=command)
    out.print((Path(target) / "table.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    rep = results["reproduction"]
    err.print(f"results: {Path(target) / 'results.json'}; table: {Path(target) / 'table.md'}; "
              f"{'every check holds on every seed' if rep['holds'] else 'NOT every check holds'}", markup=False)
    if not rep["holds"]:
        raise typer.Exit(1)
