"""What every dataset adapter shares: relative paths, progress, natural sorting and writing the manifest.

Adapters reference the publisher's files in place: a manifest path is ``os.path.relpath(raw_file, out)``, so
nothing is copied and the prepared folder stays small. Moving the raw data or the output folder afterwards
breaks those paths; ``medm2g prepare verify`` finds that.
"""

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from medm2g_core.atomic import check_writable
from medm2g_core.data.manifest import CaseRecord, write_manifest
from medm2g_core.errors import InputError

Progress = Callable[[int, int], None]
MANIFEST_NAME = "manifest.jsonl"
log = logging.getLogger("medm2g.data.adapters")


def manifest_path(dataset: str, root: Path, out: Path, overwrite: bool) -> Path:
    """Check, before any scanning, that the raw folder exists and the manifest may be written."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise InputError(f"{dataset}: raw data folder {root} does not exist")
    if out.exists() and not out.is_dir():
        raise InputError(f"{dataset}: output {out} exists and is not a folder")
    if out.is_dir():
        check_writable(out / MANIFEST_NAME, overwrite)
    return out / MANIFEST_NAME


def relative(path: Path, out: Path) -> str:
    """``path`` relative to the output folder, with forward slashes (the manifest's path form)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(out))).as_posix()


def tick(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def natural_key(text: str) -> tuple:
    """Sort key that orders ``img (2)`` before ``img (10)``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


def find_dirs(root: Path, pattern: re.Pattern, depth: int = 3) -> list[Path]:
    """Folders 1 to ``depth`` levels below ``root`` whose name matches ``pattern`` (not searched further)."""
    found, level = [], sorted(d for d in Path(root).iterdir() if d.is_dir())
    for _ in range(depth):
        found += [d for d in level if pattern.search(d.name)]
        level = sorted(child for d in level if not pattern.search(d.name) for child in d.iterdir() if child.is_dir())
    return sorted(found, key=lambda d: natural_key(d.name))


def finish(dataset: str, records: Iterable[CaseRecord], path: Path, overwrite: bool) -> Path:
    """Write the records (sorted by id) as the manifest, creating its folder; an empty dataset is an error."""
    records = sorted(records, key=lambda r: natural_key(r.id))
    if not records:
        raise InputError(f"{dataset}: no case found")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(path, records, overwrite=overwrite)
    log.info("%s: wrote %d cases to %s", dataset, len(records), path)
    return path
