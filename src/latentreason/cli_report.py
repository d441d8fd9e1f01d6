"""``latentreason report RUN_DIR``: the self-contained HTML report of a benchmark / demo run.

``report_app`` is a typer app holding the one ``report`` command; ``latentreason.cli`` registers
it with ``app.add_typer(report_app)``. Bad input raises a
:class:`~latentreason.errors.LatentReasonError` subclass, which the main entry point prints on
one line (exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

report_app = typer.Typer(help="HTML report of a run directory.", add_completion=False, rich_markup_mode="markdown")


@report_app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A benchmark / demo run directory (holds results.json)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the HTML (default: RUN_DIR/report.html)."),
) -> None:
    """Write one self-contained HTML report of a run: comparison table, plots, training curves,
    soft-thinking and probing results, configuration and library versions.

    Images are embedded (base64 PNG) and there is no script or network reference, so the file
    can be opened anywhere or attached as it is. The report's path is printed.

    Examples:

    * `latentreason report runs/demo` (writes runs/demo/report.html)
    * `latentreason report runs/demo --output /tmp/demo-report.html`
    """
    # startup cost: the report code imports torch (through utils); `--help` should not wait for it
    from latentreason.reporting.report import write_report

    path = write_report(run_dir, output)
    typer.echo(str(path))


__all__ = ["report_app", "report_cmd"]
