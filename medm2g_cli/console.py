"""Where the CLI prints: data to stdout, everything meant for a person to stderr.

This keeps ``medm2g ... | jq`` and other pipelines clean whether or not stdout is a terminal.
"""

import json
import sys
from dataclasses import dataclass

from rich.console import Console


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
    """A progress or status message for a person (stderr; silenced by ``--quiet``)."""
    if not settings.quiet:
        stderr.print(message)


def emit_json(data: object) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
