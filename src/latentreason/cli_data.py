"""``latentreason data list | download | show``: the named data sets, fetching them, parsed examples.

``data_app`` is registered by :mod:`latentreason.cli` as ``latentreason data``. The data layer it
reads (:mod:`latentreason.data.registry`) does not import torch, so these commands start fast.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from latentreason.data.registry import NAMED, PROCEDURAL, data_dirs, load_dataset
from latentreason.reporting.display import err, out

data_app = typer.Typer(help="Data sets: list the named ones, download them, show parsed examples.", no_args_is_help=True)


@data_app.command("list")
def data_list(
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Look only in this data directory."),
) -> None:
    """List the named data sets, which splits are present and where.

    A set marked missing is fetched from its public source by `latentreason data download NAME`.

    Example: `latentreason data list`
    """
    dirs = data_dirs(data_dir)
    t = Table(title=f"named data sets (searched: {', '.join(str(d) for d in dirs)})")
    t.add_column("name")
    t.add_column("splits")
    t.add_column("where")
    t.add_column("description")
    for name in sorted(PROCEDURAL):
        t.add_row(name, "train, valid, test", "generated", "procedural modular-arithmetic chains")
    for name, spec in sorted(NAMED.items()):
        found = {s: next((d for d in dirs if (d / f).is_file()), None) for s, f in spec.files.items()}
        where = sorted({str(d) for d in found.values() if d is not None})
        if not where:
            where_txt = f"latentreason data download {name}"
        else:
            where_txt = ", ".join(where)
        t.add_row(name, ", ".join(f"{s}{'' if found[s] else ' (missing)'}" for s in spec.files), where_txt, spec.note)
    out.print(t)


@data_app.command("download")
def data_download(
    names: list[str] = typer.Argument(..., help="Named data sets (see `data list`), or `all`."),
    to: Optional[str] = typer.Option(
        None, "--to", help="Data directory to put them in (default: $LATENTREASON_DATA_DIR, else ~/.cache/latentreason/data)."),
    mirror: Optional[str] = typer.Option(
        None, "--mirror",
        help="Read the files from this local directory instead of the internet, laid out like their URLs: "
             "DIR/raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH and DIR/huggingface.co/datasets/OWNER/NAME/...",
    ),
    force: bool = typer.Option(False, "--force", help="Fetch files again even when present."),
) -> None:
    """Fetch named data sets from their public sources into the user data directory.

    GitHub files come at the pinned commits documented in shared/data/README.md and are checked
    against their SHA-256; the papers' full GSM8k-Aug train sets (`gsm8k_aug_full`,
    `gsm8k_aug_nl_full`) are read from the Hugging Face Hub with `datasets`. Named sets then
    resolve there from any directory.

    Examples:

    * `latentreason data download gsm8k_aug`
    * `latentreason data download svamp gsm_hard multiarith asdiv`
    * `latentreason data download all --to /data/latentreason` (then `--data-dir /data/latentreason`
      or `export LATENTREASON_DATA_DIR=/data/latentreason`)
    * `latentreason data download prosqa --mirror /media/usb/mirror` (a machine without internet)
    """
    # data.download imports torch (through utils); only this command needs it
    from latentreason.data.download import download

    wanted = sorted(NAMED) if "all" in names else list(dict.fromkeys(names))
    for name in wanted:
        root = download(name, to=to, mirror=mirror, force=force,
                        log=lambda msg, n=name: err.print(f"[{n}] {msg}", markup=False, highlight=False, soft_wrap=True))
        err.print(f"{name}: ready in {root}", markup=False, highlight=False, soft_wrap=True)


@data_app.command("show")
def data_show(
    source: str = typer.Argument(..., help="A named data set (see `data list`) or a file path."),
    split: str = typer.Option("test", "--split", help="train | valid | test (named sets)."),
    limit: Optional[int] = typer.Option(5, "--limit", "-n", help="Show the first N examples (all with --limit 0)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per example."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force a file format (default: detected from content)."),
    data_dir: Optional[str] = typer.Option(
        None, "--data-dir",
        help="Where named data sets live (default: $LATENTREASON_DATA_DIR, else ./data, ../shared/data or "
             "~/.cache/latentreason/data, where `latentreason data download` puts them)."),
) -> None:
    """Parse a data set and print its examples and count.

    Examples:

    * `latentreason data show ../shared/data/gsm8k_aug/test.txt --limit 2`
    * `latentreason data show gsm8k --split test --json --limit 3`
    * `latentreason data show modchain --split train`
    """
    examples = load_dataset(source, split, data_dir=data_dir, fmt=fmt)
    shown = examples if not limit else examples[:limit]
    if as_json:
        for ex in shown:
            sys.stdout.write(json.dumps({"question": ex.question, "steps": ex.steps, "answer": ex.answer}, ensure_ascii=False) + "\n")
        return
    for i, ex in enumerate(shown):
        out.print(f"[bold]#{i}[/bold] [cyan]question:[/cyan] {escape(ex.question)}", markup=True, highlight=False)
        out.print(f"   [cyan]steps ({len(ex.steps)}):[/cyan] {escape(' | '.join(ex.steps))}", markup=True, highlight=False)
        out.print(f"   [cyan]answer:[/cyan] {escape(ex.answer)}", markup=True, highlight=False)
    out.print(f"{len(examples)} examples ({len(shown)} shown)")


__all__ = ["data_app", "data_download", "data_list", "data_show"]
