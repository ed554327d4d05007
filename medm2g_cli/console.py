"""Where the CLI prints: data to stdout, everything meant for a person to stderr.

This keeps ``medm2g ... | jq`` and other pipelines clean whether or not stdout is a terminal.
"""

import contextlib
import json
import sys
import time
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
    argv: tuple[str, ...] = ()  # the arguments as run (recorded in results), global options first


settings = Settings()
stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A progress or status message for a person (stderr; silenced by ``--quiet``), printed as plain text."""
    if not settings.quiet:
        stderr.print(message, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    """A warning a person must see (stderr, ``warning: ...``), printed even with ``--quiet``."""
    stderr.print(f"warning: {message}", markup=False, soft_wrap=True)


def emit_json(data: object) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit_json_line(data: object) -> None:
    """One compact JSON document per line on stdout (JSON Lines, for streams of results)."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


PLAIN_EVERY_S = 30.0  # a plain progress line at most this often when stderr is a log, not a terminal


@contextlib.contextmanager
def progress(description: str) -> Iterator[Callable[..., None]]:
    """Progress on stderr (hidden by ``--quiet``); yields ``update(done, total, description=None)``.

    On a terminal: a live bar with elapsed time and ETA. Otherwise (nohup, SLURM logs, pipes): a plain line when
    work starts, at most every ``PLAIN_EVERY_S`` seconds, and when it ends, so a log shows where a run is."""
    if settings.quiet or not stderr.is_terminal:
        plain = _PlainProgress(description)
        yield plain.update
        plain.finish()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: float, total: float, description: str | None = None) -> None:
            bar.update(task, completed=done, total=total, **({"description": description} if description else {}))

        yield update


class _PlainProgress:
    """Progress as plain log lines: "translate to ct: 120/300 (40%), 0:35 elapsed, about 0:52 left"."""

    def __init__(self, description: str) -> None:
        self.description, self.started = description, time.monotonic()
        self.last_time: float | None = None
        self.state: tuple[float, float] | None = None
        self.printed: tuple[float, float] | None = None

    def update(self, done: float, total: float, description: str | None = None) -> None:
        self.description = description or self.description
        self.state = (done, total)
        if self.last_time is None or time.monotonic() - self.last_time >= PLAIN_EVERY_S:
            self._line()

    def finish(self) -> None:
        if self.state is not None and self.state != self.printed:
            self._line()

    def _line(self) -> None:
        self.last_time, self.printed = time.monotonic(), self.state
        done, total = self.state
        elapsed = self.last_time - self.started
        left = f", about {_clock(elapsed * (total - done) / done)} left" if 0 < done < total else ""
        share = f" ({100 * done / total:.0f}%)" if total else ""
        say(f"{self.description}: {done:g}/{total:g}{share}, {_clock(elapsed)} elapsed{left}")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"
