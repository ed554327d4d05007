"""Gold Atlas male pelvis (Nyholm et al. 2018, Zenodo 583096): CT and T2 MRI of 19 patients, DICOM.

Assumed layout: one folder per patient, named like ``1_01_P`` (site, number, ``P``), at most three levels
below ``root``. The published archives put every DICOM file of a patient flat into that folder (CT, T1 and
T2 MR, the CT deformed onto the T2 MR, RT structure sets); folders per series (``CT/``, ``MR_T2/``,
``deformed CT/``) work too. Series are told apart by their headers, not by file names:

* the CT: Modality ``CT``; a series whose SeriesDescription or folder says ``CTtoMR``, "deformed" or
  "registered" is the CT deformed onto the MR and is preferred over the planning CT;
* the MR: Modality ``MR`` with "T2" in its SeriesDescription or folder name.

A patient without a CT or a T2 MR series, or with two candidates for one, is an error naming the patient.
A manifest path is the folder holding the series' files and ``meta["series"]`` names the SeriesInstanceUID
to read from it (``read_volume(path, series=uid)``), since one folder usually holds several series. Only the
deformed CT shares the MR grid: ``meta["aligned"]`` is ``["ct", "mr_t2"]`` then, empty for the planning CT,
and ``meta["ct_registered"]`` says which was used. No official split: the hash split of
:func:`split_for` on the patient folder name.
"""

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom

from medm2g_core.data.adapters.common import Progress, find_dirs, finish, manifest_path, relative, tick
from medm2g_core.data.manifest import CaseRecord, split_for
from medm2g_core.errors import InputError

DATASET = "gold-atlas"
PATIENT_FOLDER = re.compile(r"^\d+_\d+_P$", re.IGNORECASE)
DEFORMED = re.compile(r"deform|ct\W*to\W*mr|regist", re.IGNORECASE)
T2 = re.compile(r"t2", re.IGNORECASE)
HEADER_TAGS = ["Modality", "SeriesInstanceUID", "SeriesDescription"]


@dataclass
class _Series:
    uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(os.path.commonpath([f.parent for f in self.files]))

    def names(self, patient: Path) -> str:
        """Description and folder path, the text the series is classified by."""
        return f"{self.description} {self.folder.relative_to(patient).as_posix()}"


def prepare_gold_atlas(root: Path, out: Path, overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Write ``out/manifest.jsonl`` for the Gold Atlas patient folders under ``root``; returns the manifest path."""
    root, out = Path(root), Path(out)
    target = manifest_path(DATASET, root, out, overwrite)
    patients = find_dirs(root, PATIENT_FOLDER)
    if not patients:
        raise InputError(f"{DATASET}: no patient folders like 1_01_P under {root}")
    records = []
    for done, patient in enumerate(patients, start=1):
        records.append(_record(patient, out))
        tick(progress, done, len(patients))
    return finish(DATASET, records, target, overwrite)


def _series(patient: Path) -> list[_Series]:
    """The series of a patient folder from the headers of its DICOM files (searched recursively)."""
    found: dict[str, _Series] = {}
    for path in sorted(p for p in patient.rglob("*") if p.is_file()):
        if not is_dicom(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise InputError(f"{DATASET}: patient {patient.name}: unreadable DICOM file {path} ({exc})") from exc
        uid = str(ds.get("SeriesInstanceUID", ""))
        series = found.setdefault(uid, _Series(uid, str(ds.get("Modality", "")), str(ds.get("SeriesDescription", ""))))
        series.files.append(path)
    return list(found.values())


def _one(patient: Path, what: str, candidates: list[_Series]) -> _Series:
    if len(candidates) > 1:
        listed = "; ".join(f"'{s.description}' in {s.folder}" for s in candidates)
        raise InputError(f"{DATASET}: patient {patient.name} has {len(candidates)} {what} series: {listed}")
    return candidates[0]


def _record(patient: Path, out: Path) -> CaseRecord:
    by_kind = defaultdict(list)
    for series in _series(patient):
        names = series.names(patient)
        if series.modality == "CT":
            by_kind["deformed CT" if DEFORMED.search(names) else "CT"].append(series)
        elif series.modality == "MR" and T2.search(names):
            by_kind["MR T2"].append(series)
    if not by_kind["CT"] and not by_kind["deformed CT"]:
        raise InputError(f"{DATASET}: patient {patient.name} has no CT series")
    if not by_kind["MR T2"]:
        raise InputError(f"{DATASET}: patient {patient.name} has no MR T2 series")
    registered = bool(by_kind["deformed CT"])
    ct = _one(patient, "deformed CT" if registered else "CT", by_kind["deformed CT"] or by_kind["CT"])
    mr = _one(patient, "MR T2", by_kind["MR T2"])
    return CaseRecord(
        id=patient.name,
        split=split_for(patient.name),
        subject=patient.name,
        source=DATASET,
        images={"ct": relative(ct.folder, out), "mr_t2": relative(mr.folder, out)},
        meta={
            "series": {"ct": ct.uid, "mr_t2": mr.uid},
            "ct_registered": registered,
            "aligned": ["ct", "mr_t2"] if registered else [],
        },
    )
