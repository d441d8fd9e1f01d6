"""Progress display shared by training and evaluation (rich; plain log lines when not a terminal)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None, total: int, description: str, plain_every: float):
        self.progress, self.task, self.total, self.description = progress, task, total, description
        self.done = 0
        self.info = ""
        self._last_plain = time.monotonic()
        self._plain_every = plain_every

    def update(self, advance: int = 1, info: str | None = None) -> None:
        self.done += advance
        if info is not None:
            self.info = info
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=advance, info=self.info)
        elif self._plain_every > 0 and (time.monotonic() - self._last_plain >= self._plain_every or self.done >= self.total):
            self._last_plain = time.monotonic()
            print(f"[{self.description}] {self.done}/{self.total} {self.info}", file=sys.stderr, flush=True)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True, plain_every: float = 30.0) -> Iterator[_Bar]:
    """A progress bar on a terminal, periodic plain lines otherwise, nothing when disabled."""
    if not enabled:
        yield _Bar(None, None, total, description, 0)
        return
    if not console.is_terminal:
        yield _Bar(None, None, total, description, plain_every)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as p:
        task = p.add_task(description, total=total, info="")
        yield _Bar(p, task, total, description, 0)
