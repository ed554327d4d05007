"""The one safe way medm2g writes anything: temporary file in the target folder, fsync, rename.

An existing output is refused unless ``overwrite=True``; an exception inside the ``with`` block
leaves neither a partial output nor a temporary file behind.
"""

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from medm2g_core.errors import InputError, OutputError, OutputExistsError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # a write fails for the destination, wherever it happens


def _exists(path: Path) -> OutputExistsError:
    return OutputExistsError(f"output {path} already exists; ask for overwrite to replace it", option="overwrite")


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early (before any work) if ``path`` exists without ``overwrite`` or its folder is missing or not
    writable (a read-only mount, /sys, no permission): a file is created there and removed at once to find out."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise _exists(path)
    if not path.parent.exists():
        raise InputError(f"output folder {path.parent} does not exist")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write into {path.parent} ({exc.strerror or exc})") from exc
    return path


def check_folder_writable(folder: str | os.PathLike) -> Path:
    """Fail early if the output folder ``folder`` cannot be made or written into: its nearest existing folder
    (itself, or the one it would be made in) must be a folder this process may write (not a file, a read-only
    mount, /sys, or a folder without permission)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"output folder {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write into {existing} ({exc.strerror or exc})") from exc
    return folder


@contextlib.contextmanager
def _output_errors(path: Path, tmp: Path) -> Iterator[None]:
    """Turn an OSError about writing ``tmp`` for ``path`` (or a full disk) into a one-line OutputError."""
    try:
        yield
    except OSError as exc:
        about = exc.filename is not None and str(exc.filename).startswith(str(tmp))
        if about or exc.errno in FULL:
            raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from exc
        raise


def _normal_mode(folder: Path) -> None:
    """Give a mkdtemp folder (created 0700) the mode a plain mkdir would: 0777 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)


def _temp_name(path: Path) -> str:
    # The temporary file keeps the full suffix (".nii.gz") so that libraries that pick a format
    # from the extension (nibabel) write the right thing.
    suffix = "".join(path.suffixes)
    return f".{path.name.removesuffix(suffix)}.partial-{os.getpid()}-{os.urandom(4).hex()}{suffix}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``."""
    path = check_writable(path, overwrite)
    tmp = path.parent / _temp_name(path)
    try:
        with _output_errors(path, tmp):
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"nothing was written to the temporary file for {path}")
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            if path.exists() and not overwrite:  # appeared while we were writing
                raise _exists(path)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = False, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write supports mode 'w' or 'wb'")
    with atomic_path(path, overwrite) as tmp:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Atomically write a UTF-8 text file."""
    with atomic_write(path, overwrite, mode="w") as handle:
        handle.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    Used for outputs that are folders (a DICOM series, a model folder). With ``overwrite`` an
    existing folder is moved aside first and deleted only after the new one is in place.
    """
    path = check_writable(path, overwrite)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from exc
    _normal_mode(tmp)
    old: Path | None = None
    try:
        with _output_errors(path, tmp):
            yield tmp
            for file in tmp.rglob("*"):
                if file.is_file():
                    with open(file, "rb+") as handle:
                        os.fsync(handle.fileno())
            if path.exists():
                if not overwrite:
                    raise _exists(path)
                old = path.parent / _temp_name(path)
                os.replace(path, old)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
