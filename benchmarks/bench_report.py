"""Shared by the benchmark scripts: write a result section into BENCHMARKS.md with its command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# Benchmarks\n\nEvery figure here comes from a script in benchmarks/, with the command that made it.\n"


def write_section(section: str, body: str, command: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) ``section`` of BENCHMARKS.md (or another Markdown file at ``path``) with ``body`` and the
    command that produced it."""
    text = path.read_text() if path.exists() else HEADER
    block = f"{section}\n\nCommand: `{command}`\n\n{body}\n"
    if section in text:
        head, _, rest = text.partition(section)
        tail = rest.split("\n## ", 1)
        text = head + block + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
