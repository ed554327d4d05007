"""Kaggle "Brain tumor multimodal image (CT & MRI)": 2D CT and MRI slices in healthy and tumor folders.

Assumed layout (``root`` is the download, ``Dataset/`` may or may not be there)::

    Dataset/Brain Tumor CT scan Images/Healthy/ct_healthy (1).jpg
    Dataset/Brain Tumor CT scan Images/Tumor/ct_tumor (1).jpg
    Dataset/Brain Tumor MRI images/Healthy/mri_healthy (1).jpg
    Dataset/Brain Tumor MRI images/Tumor/mri_tumor (1).jpg

The modality folders are found by the words "CT" and "MRI" in their names, the classes by ``Healthy`` and
``Tumor`` (any case); ``.jpg``, ``.jpeg`` and ``.png`` files are read.

Pairing: the publisher provides no subject ids and no pairing, so a CT and an MRI image of one case are
not known to show the same patient. Within a class, images are paired by the number in their file name
(``ct_tumor (12).jpg`` with ``mri_tumor (12).jpg``) when every file has a distinct one, otherwise by
natural sort order; ``meta["pairing"]`` says which. An image left without a partner is an error naming
it; with ``allow_incomplete=True`` unpaired images are dropped (logged). Labels: ``{"tumor": 0 | 1}`` from
the class folder. Split: the hash split on the case id (no patient ids, so slices of one patient may land
in different splits). The slices are not co-registered (``meta["aligned"] = []``).

The MRI contrast is not given (the slices mix contrasts), so they are stored under the manifest's key for
an MRI of unknown contrast, ``mr``.
"""

import re
from pathlib import Path

from medm2g_core.data.adapters.common import (
    Progress,
    find_dirs,
    finish,
    log,
    manifest_path,
    natural_key,
    relative,
    tick,
)
from medm2g_core.data.manifest import CaseRecord, split_for
from medm2g_core.errors import InputError

DATASET = "brain-ct-mri"
MRI_KEY = "mr"
CLASSES = {"healthy": 0, "tumor": 1}
SUFFIXES = (".jpg", ".jpeg", ".png")
CT_FOLDER = re.compile(r"\bct\b", re.IGNORECASE)
MRI_FOLDER = re.compile(r"\bmri\b", re.IGNORECASE)
NUMBER = re.compile(r"(\d+)\D*$")
BY_NUMBER = "by the number in the file name within class; the publisher provides no subject ids"
BY_ORDER = "by sorted order within class; the publisher provides no subject ids"


def prepare_brain_ct_mri(
    root: Path, out: Path, overwrite: bool = False, progress: Progress | None = None, allow_incomplete: bool = False
) -> Path:
    """Write ``out/manifest.jsonl`` for the Kaggle brain CT/MRI folders under ``root``; returns the manifest path."""
    root, out = Path(root), Path(out)
    target = manifest_path(DATASET, root, out, overwrite)
    ct_root, mri_root = _modality_folder(root, CT_FOLDER, "CT"), _modality_folder(root, MRI_FOLDER, "MRI")
    pairs = []
    for name, tumor in CLASSES.items():
        ct_images, mri_images = _images(ct_root, name), _images(mri_root, name)
        if ct_images or mri_images:
            pairs += [(name, tumor, *pair) for pair in _pairs(name, ct_images, mri_images, allow_incomplete)]
    if not pairs:
        raise InputError(f"{DATASET}: no Healthy/Tumor images in {ct_root} and {mri_root}")
    records = []
    for done, (name, tumor, number, ct, mri, how) in enumerate(pairs, start=1):
        case = f"{name}-{number:04d}"
        records.append(CaseRecord(
            id=case,
            split=split_for(case),
            subject=case,
            source=DATASET,
            images={"ct": relative(ct, out), MRI_KEY: relative(mri, out)},
            labels={"tumor": tumor},
            meta={"pairing": how, "mr_contrast": "unknown", "aligned": []},
        ))
        tick(progress, done, len(pairs))
    return finish(DATASET, records, target, overwrite)


def _modality_folder(root: Path, pattern: re.Pattern, what: str) -> Path:
    found = find_dirs(root, pattern)
    if len(found) != 1:
        raise InputError(
            f"{DATASET}: expected one {what} folder (like 'Brain Tumor {what} ...') under {root}, found {len(found)}"
        )
    return found[0]


def _images(modality_root: Path, name: str) -> list[Path]:
    folders = [d for d in modality_root.iterdir() if d.is_dir() and d.name.lower() == name]
    files = [p for d in folders for p in d.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _numbers(images: list[Path]) -> list[int] | None:
    """The number in each file name, or None when one lacks it or two share it."""
    numbers = [int(m.group(1)) if (m := NUMBER.search(p.stem)) else None for p in images]
    return numbers if None not in numbers and len(set(numbers)) == len(numbers) else None


def _pairs(
    name: str, ct_images: list[Path], mri_images: list[Path], allow_incomplete: bool
) -> list[tuple[int, Path, Path, str]]:
    """(case number, CT, MRI, how) for one class; unpaired images are an error unless ``allow_incomplete``."""
    ct_numbers, mri_numbers = _numbers(ct_images), _numbers(mri_images)
    if ct_numbers is not None and mri_numbers is not None:
        ct_by = dict(zip(ct_numbers, ct_images, strict=True))
        mri_by = dict(zip(mri_numbers, mri_images, strict=True))
        how = BY_NUMBER
    else:
        ct_by = dict(enumerate(ct_images, start=1))
        mri_by = dict(enumerate(mri_images, start=1))
        how = BY_ORDER
    unpaired = sorted(set(ct_by) ^ set(mri_by))
    if unpaired:
        first = ct_by.get(unpaired[0]) or mri_by[unpaired[0]]
        if not allow_incomplete:
            raise InputError(
                f"{DATASET}: {first.parent.name}/{first.name} has no partner of the other modality "
                f"({len(unpaired)} unpaired {name} image(s)); allow incomplete data to drop them"
            )
        log.warning("%s: dropped %d unpaired %s image(s), e.g. %s", DATASET, len(unpaired), name, first)
    return [(n, ct_by[n], mri_by[n], how) for n in sorted(set(ct_by) & set(mri_by))]
