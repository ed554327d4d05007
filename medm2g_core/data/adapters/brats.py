"""BraTS 2020: four co-registered MRI contrasts per case (1 mm, SRI24 space, 240x240x155).

Assumed layout (``root`` holds the unpacked challenge folders, or is one of them)::

    MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz
    MICCAI_BraTS2020_ValidationData/BraTS20_Validation_001/BraTS20_Validation_001_{flair,t1,t1ce,t2}.nii.gz

``.nii`` works as well as ``.nii.gz`` (the Kaggle copy is uncompressed). A training case needs its
segmentation; the one training case whose segmentation the publisher misnamed (``BraTS20_Training_355``:
``W39_1998.09.19_Segm.nii``) is found as the only other NIfTI in the folder whose name contains "seg".

Splits: the training data have no official train/val/test partition, so training cases get the stable hash
split of :func:`split_for`; the official validation cases (no segmentation) get ``val`` and
``meta["official_split"] = "validation"``. The segmentation path is in ``meta["seg"]``; every case is a
glioma, so ``labels = {"tumor": 1}``. The four contrasts share one grid, which verify checks.
"""

import re
from pathlib import Path

from medm2g_core.data.adapters.common import Progress, find_dirs, finish, manifest_path, relative, tick
from medm2g_core.data.manifest import CaseRecord, split_for
from medm2g_core.errors import InputError

DATASET = "brats"
CONTRASTS = {"flair": "mr_flair", "t1": "mr_t1", "t1ce": "mr_t1ce", "t2": "mr_t2"}
CASE_FOLDER = re.compile(r"^BraTS20_(Training|Validation)_\d+$")
NIFTI = (".nii.gz", ".nii")


def prepare_brats(root: Path, out: Path, overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Write ``out/manifest.jsonl`` for the BraTS 2020 case folders under ``root``; returns the manifest path."""
    root, out = Path(root), Path(out)
    target = manifest_path(DATASET, root, out, overwrite)
    folders = find_dirs(root, CASE_FOLDER)
    if not folders:
        raise InputError(f"{DATASET}: no case folders like BraTS20_Training_001 under {root}")
    records = []
    for done, folder in enumerate(folders, start=1):
        records.append(_record(folder, out))
        tick(progress, done, len(folders))
    if len({r.id for r in records}) < len(records):
        raise InputError(f"{DATASET}: a case folder appears twice under {root}")
    return finish(DATASET, records, target, overwrite)


def _nifti(folder: Path, suffix: str) -> Path | None:
    for extension in NIFTI:
        path = folder / f"{folder.name}_{suffix}{extension}"
        if path.is_file():
            return path
    return None


def _seg(folder: Path) -> Path | None:
    if path := _nifti(folder, "seg"):
        return path
    known = {f"{folder.name}_{name}{ext}" for name in CONTRASTS for ext in NIFTI}
    others = [
        p for p in folder.iterdir()
        if p.name.lower().endswith(NIFTI) and p.name not in known and "seg" in p.name.lower()
    ]
    return others[0] if len(others) == 1 else None


def _record(folder: Path, out: Path) -> CaseRecord:
    case = folder.name
    training = "_Training_" in case
    images = {}
    for contrast, key in CONTRASTS.items():
        path = _nifti(folder, contrast)
        if path is None:
            raise InputError(f"{DATASET}: case {case} has no {contrast} file ({case}_{contrast}.nii.gz in {folder})")
        images[key] = relative(path, out)
    meta: dict = {"official_split": "training" if training else "validation"}
    seg = _seg(folder)
    if training and seg is None:
        raise InputError(f"{DATASET}: case {case} has no seg file ({case}_seg.nii.gz in {folder})")
    meta["seg"] = relative(seg, out) if seg is not None else None
    return CaseRecord(
        id=case,
        split=split_for(case) if training else "val",
        subject=case,
        source=DATASET,
        images=images,
        labels={"tumor": 1},
        meta=meta,
    )
