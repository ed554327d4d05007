"""IXI (brain-development.org): T1, T2 and PD images of healthy subjects, paired by subject id.

Assumed layout: the unpacked ``IXI-T1.tar``, ``IXI-T2.tar`` and ``IXI-PD.tar``, either in one folder per
contrast or all in one folder, anywhere under ``root``::

    IXI-T1/IXI002-Guys-0828-T1.nii.gz
    IXI-T2/IXI002-Guys-0828-T2.nii.gz
    IXI-PD/IXI002-Guys-0828-PD.nii.gz

The subject is the name's prefix (``IXI002-Guys-0828``); its hospital goes to ``meta["site"]``. Other IXI
files (MRA, DTI) are ignored. A subject missing a contrast is an error naming it; with
``allow_incomplete=True`` subjects with at least two contrasts are kept and the others skipped (logged).
No official split: the stable hash split of :func:`split_for`.

Geometry: T2 and PD come from one dual-echo acquisition and share a grid; T1 is a separate sagittal
acquisition on its own grid. ``meta["aligned"]`` therefore lists only ``mr_t2`` and ``mr_pd``: verify
checks those two against each other, and voxelwise T1 pairing needs a registration first.
"""

import re
from collections import defaultdict
from pathlib import Path

from medm2g_core.data.adapters.common import Progress, finish, log, manifest_path, relative, tick
from medm2g_core.data.manifest import CaseRecord, split_for
from medm2g_core.errors import InputError

DATASET = "ixi"
CONTRASTS = {"T1": "mr_t1", "T2": "mr_t2", "PD": "mr_pd"}
ALIGNED = ("mr_t2", "mr_pd")
FILE_NAME = re.compile(r"^(IXI\d{3}-([A-Za-z]+)-\d+)-(T1|T2|PD)\.nii(\.gz)?$")


def prepare_ixi(
    root: Path, out: Path, overwrite: bool = False, progress: Progress | None = None, allow_incomplete: bool = False
) -> Path:
    """Write ``out/manifest.jsonl`` for the IXI images under ``root``; returns the manifest path."""
    root, out = Path(root), Path(out)
    target = manifest_path(DATASET, root, out, overwrite)
    subjects = _subjects(root)
    records, skipped = [], []
    for done, (subject, files) in enumerate(sorted(subjects.items()), start=1):
        missing = [c for c in CONTRASTS if c not in files]
        if not missing or (allow_incomplete and len(files) >= 2):
            records.append(_record(subject, files, out))
        elif allow_incomplete:
            skipped.append(subject)
        else:
            raise InputError(
                f"{DATASET}: subject {subject} has no {'/'.join(missing)} image (has {', '.join(sorted(files))}); "
                "allow incomplete subjects to keep those with at least two contrasts"
            )
        tick(progress, done, len(subjects))
    if skipped:
        log.warning("%s: skipped %d subject(s) with fewer than two contrasts: %s", DATASET, len(skipped),
                    ", ".join(skipped))
    return finish(DATASET, records, target, overwrite)


def _subjects(root: Path) -> dict[str, dict[str, Path]]:
    """subject -> contrast -> file; the same contrast twice for one subject is an error."""
    subjects: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(root.rglob("IXI*.nii*")):
        match = FILE_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        subject, contrast = match.group(1), match.group(3)
        if contrast in subjects[subject]:
            raise InputError(
                f"{DATASET}: subject {subject} has two {contrast} images: {subjects[subject][contrast]} and {path}"
            )
        subjects[subject][contrast] = path
    if not subjects:
        raise InputError(f"{DATASET}: no IXI images (IXI002-Guys-0828-T1.nii.gz ...) under {root}")
    return subjects


def _record(subject: str, files: dict[str, Path], out: Path) -> CaseRecord:
    images = {CONTRASTS[c]: relative(files[c], out) for c in CONTRASTS if c in files}
    return CaseRecord(
        id=subject,
        split=split_for(subject),
        subject=subject,
        source=DATASET,
        images=images,
        meta={"site": subject.split("-")[1], "aligned": [k for k in ALIGNED if k in images]},
    )
