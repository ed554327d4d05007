"""Where the CLI prints: data to stdout, everything meant for a person to stderr.

This keeps ``medm2g ... | jq`` and other pipelines clean whether or not stdout is a terminal.
"""

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class Settings:
    """Global options of one ``medm2g`` invocation."""

    device: str = "auto"
    debug: bool = False
    quiet: bool = False


settings = Settings()
stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A progress or status message for a person (stderr; silenced by ``--quiet``), printed as plain text."""
    if not settings.quiet:
        stderr.print(message, markup=False, soft_wrap=True)


def emit_json(data: object) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit_json_line(data: object) -> None:
    """One compact JSON document per line on stdout (JSON Lines, for streams of results)."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (hidden by ``--quiet``); yields ``update(done, total)``."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=stderr, disable=settings.quiet, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
