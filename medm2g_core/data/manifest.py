"""Manifests: JSON Lines, one record per case, the only thing training, evaluation and synthesis read.

A record names its images by key (``xray``, ``ct``, ``mr_t1`` ...; ``mr`` for an MRI of unknown contrast)
with paths relative to the manifest's folder, so a prepared folder can be moved or shared as a whole.

Conventions in ``meta``: ``meta["series"][key]`` is the SeriesInstanceUID to read when the image path is a
DICOM folder holding several series; ``meta["aligned"]`` lists the image keys that share one voxel grid (when
absent, every CT/MR image of the case is expected to).
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from medm2g_core.atomic import write_text
from medm2g_core.errors import InputError
from medm2g_core.vocabulary import IMAGE_KEYS, MRI_CONTRASTS, SPLITS


def image_key(modality: str, contrast: str | None = None) -> str:
    """The manifest key of an image: ``xray``, ``ct``, ``mr_<contrast>`` (``mr_t1ce`` for T1ce) or ``mr``."""
    if modality == "XRAY":
        return "xray"
    if modality == "CT":
        return "ct"
    if modality == "MR" and contrast is None:
        return "mr"
    if modality == "MR" and contrast in MRI_CONTRASTS:
        return f"mr_{contrast.lower()}"
    raise InputError(f"no manifest key for modality {modality!r} with contrast {contrast!r}")


def key_modality(key: str) -> tuple[str, str | None]:
    """Inverse of :func:`image_key`: (modality, contrast)."""
    if key == "xray":
        return "XRAY", None
    if key == "ct":
        return "CT", None
    if key == "mr":
        return "MR", None
    for contrast in MRI_CONTRASTS:
        if key == f"mr_{contrast.lower()}":
            return "MR", contrast
    raise InputError(f"unknown image key {key!r}; known keys: {', '.join(IMAGE_KEYS)}")


@dataclass
class CaseRecord:
    """One case: its images (key -> path relative to the manifest), report, finding labels and origin."""

    id: str
    split: str
    subject: str
    source: str
    images: dict[str, str] = field(default_factory=dict)
    report: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise InputError("a case record needs a non-empty id")
        if self.split not in SPLITS:
            raise InputError(f"case {self.id}: split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        for key in self.images:
            key_modality(key)


@dataclass
class Manifest:
    """The records of a manifest file and the folder their image paths are relative to."""

    root: Path
    records: list[CaseRecord]

    def image_path(self, record: CaseRecord, key: str) -> Path:
        if key not in record.images:
            raise InputError(f"case {record.id} has no {key} image")
        return self.root / record.images[key]

    def image_series(self, record: CaseRecord, key: str) -> str | None:
        """The DICOM series to read for ``key`` when its path is a folder of several series."""
        return (record.meta.get("series") or {}).get(key)

    def split(self, name: str) -> list[CaseRecord]:
        return [r for r in self.records if r.split == name]


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a manifest; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such manifest")
    names = {f.name for f in fields(CaseRecord)}
    records: list[CaseRecord] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(raw, dict):
            raise InputError(f"{path}:{number}: not a case record (expected a JSON object)")
        if unknown := set(raw) - names:
            raise InputError(f"{path}:{number}: unknown keys {sorted(unknown)} in the case record")
        try:
            record = CaseRecord(**raw)
        except TypeError as exc:
            raise InputError(f"{path}:{number}: {exc}") from exc
        if record.id in seen:
            raise InputError(f"{path}:{number}: duplicate case id {record.id!r}")
        seen.add(record.id)
        records.append(record)
    if not records:
        raise InputError(f"{path}: the manifest holds no case")
    return Manifest(path.parent, records)


def write_manifest(path: str | os.PathLike, records: list[CaseRecord], overwrite: bool = False) -> Path:
    """Atomically write ``records`` as JSON Lines."""
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InputError("duplicate case ids in the manifest")
    text = "".join(json.dumps(asdict(r), sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    return write_text(path, text, overwrite=overwrite)


def split_for(subject: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), salt: str = "") -> str:
    """A stable train/val/test split from a hash of the subject id (for datasets without official splits).

    All cases of one subject land in the same split, so no subject leaks between splits.
    """
    digest = hashlib.sha256(f"{salt}{subject}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < fractions[0]:
        return "train"
    return "val" if position < fractions[0] + fractions[1] else "test"
