"""MIMIC-CXR-JPG 2.x (PhysioNet): one case per study, its frontal radiograph and its report.

Assumed layout under ``root`` (the folder the PhysioNet download unpacks to)::

    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split (train | validate | test)
    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,...,ViewPosition,...
    mimic-cxr-2.0.0-chexpert.csv.gz   optional: subject_id,study_id,<14 labels> (1.0 / 0.0 / -1.0 / blank)

(uncompressed ``.csv`` files are accepted too). The reports are not part of the JPG release: they come from
the MIMIC-CXR release as ``mimic-cxr-reports.zip`` (members ``files/p10/p10000032/s50414267.txt``). Pass
its path as ``reports`` (a zip or the folder it was extracted to); by default the zip is looked for in
``root`` and then ``files/p10/p10000032/s50414267.txt`` beside the study folders.

Rules: the official split (``validate`` becomes ``val``); per study the frontal images (ViewPosition PA or
AP) are kept, PA preferred, then the smallest dicom_id; the other frontal images are listed in
``meta["other_frontal"]``; studies without a frontal image are skipped (logged). The report keeps the
FINDINGS and IMPRESSION sections (as R2Gen does); a report without either keeps its last paragraph, and
``meta["report_sections"]`` says which. Labels come from the CheXpert file as ints, blanks omitted, names in
snake case (``pleural_effusion``). A ``files/pXX`` group folder that is absent altogether (a partial
download) skips its studies with a logged warning; an image missing inside a present group is an error.
"""

import csv
import gzip
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from medm2g_core.data.adapters.common import Progress, finish, log, manifest_path, relative, tick
from medm2g_core.data.manifest import CaseRecord
from medm2g_core.errors import InputError

DATASET = "mimic-cxr"
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
FRONTAL_VIEWS = ("PA", "AP")
CHEXPERT_LABELS = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Fracture": "fracture",
    "Lung Lesion": "lung_lesion",
    "Lung Opacity": "lung_opacity",
    "No Finding": "no_finding",
    "Pleural Effusion": "pleural_effusion",
    "Pleural Other": "pleural_other",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Support Devices": "support_device",
}
KEPT_SECTIONS = re.compile(r"FINDING|IMPRESSION|CONCLUSION")
SECTION_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 ,/&()'-]{1,60}):", re.MULTILINE)
REPORT_MEMBER = re.compile(r"(?:^|/)p\d+/p(\d+)/s(\d+)\.txt$")


def prepare_mimic_cxr(
    root: Path, out: Path, overwrite: bool = False, progress: Progress | None = None, reports: Path | None = None
) -> Path:
    """Write ``out/manifest.jsonl`` for a MIMIC-CXR-JPG download in ``root``; returns the manifest path."""
    root, out = Path(root), Path(out)
    target = manifest_path(DATASET, root, out, overwrite)
    if not (root / "files").is_dir():
        raise InputError(f"{DATASET}: {root} has no files/ folder (expected files/p10/p10000032/s50414267/*.jpg)")
    splits = _splits(root)
    studies = _frontal_studies(root)
    labels = _chexpert(root)
    records, missing_groups = [], set()
    with _Reports(root, reports) as texts:
        for done, ((subject, study), images) in enumerate(sorted(studies.items()), start=1):
            group = root / "files" / f"p{subject[:2]}"
            if not group.is_dir():
                missing_groups.add(group.name)
            else:
                case_labels = labels.get((subject, study), {})
                records.append(_record(root, out, subject, study, images, splits, case_labels, texts))
            tick(progress, done, len(studies))
    if missing_groups:
        log.warning("%s: skipped the studies of %d absent group folder(s): %s", DATASET, len(missing_groups),
                    ", ".join(sorted(missing_groups)))
    if studies and not records:
        raise InputError(f"{DATASET}: none of the {len(studies)} studies has its files/pXX folder under {root}")
    return finish(DATASET, records, target, overwrite)


def _record(
    root: Path, out: Path, subject: str, study: str, images: list[tuple[str, str]], splits: dict[str, str],
    labels: dict[str, int], texts: "_Reports",
) -> CaseRecord:
    images = sorted(images, key=lambda item: (FRONTAL_VIEWS.index(item[1]), item[0]))
    paths = []
    for dicom_id, _ in images:
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg"
        if not path.is_file():
            raise InputError(f"{DATASET}: study s{study} (subject p{subject}) misses its image {path}")
        paths.append(relative(path, out))
    dicom_id, view = images[0]
    if dicom_id not in splits:
        raise InputError(f"{DATASET}: study s{study}: image {dicom_id} is not in the split file")
    report, sections = report_sections(texts.text(subject, study))
    return CaseRecord(
        id=f"s{study}",
        split=splits[dicom_id],
        subject=f"p{subject}",
        source=DATASET,
        images={"xray": paths[0]},
        report=report,
        labels=labels,
        meta={"dicom_id": dicom_id, "view": view, "other_frontal": paths[1:], "report_sections": sections},
    )


def _table(root: Path, stem: str, required: bool = True) -> Path | None:
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        if (root / name).is_file():
            return root / name
    if required:
        raise InputError(f"{DATASET}: {root} has no {stem}.csv.gz (part of the MIMIC-CXR-JPG release)")
    return None


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The rows of a CSV table, streamed (the metadata table has 377k rows)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{DATASET}: {path.name} lacks the column(s) {', '.join(missing)}")
            yield from reader
    except (OSError, EOFError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{DATASET}: cannot read {path} ({exc})") from exc


def _splits(root: Path) -> dict[str, str]:
    """dicom_id -> train | val | test."""
    splits = {}
    for row in _rows(_table(root, "mimic-cxr-2.0.0-split"), ("dicom_id", "split")):
        if row["split"] not in SPLIT_NAMES:
            raise InputError(f"{DATASET}: image {row['dicom_id']} has an unknown split {row['split']!r}")
        splits[row["dicom_id"]] = SPLIT_NAMES[row["split"]]
    return splits


def _frontal_studies(root: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(subject_id, study_id) -> [(dicom_id, view)] of the frontal images; other studies are logged."""
    studies: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    all_studies = set()
    columns = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    for row in _rows(_table(root, "mimic-cxr-2.0.0-metadata"), columns):
        key = (row["subject_id"], row["study_id"])
        all_studies.add(key)
        if row["ViewPosition"] in FRONTAL_VIEWS:
            studies[key].append((row["dicom_id"], row["ViewPosition"]))
    if skipped := len(all_studies) - len(studies):
        log.warning("%s: skipped %d stud(ies) without a frontal (PA/AP) image", DATASET, skipped)
    return studies


def _chexpert(root: Path) -> dict[tuple[str, str], dict[str, int]]:
    """(subject_id, study_id) -> labels; empty when the CheXpert file is absent."""
    path = _table(root, "mimic-cxr-2.0.0-chexpert", required=False)
    if path is None:
        return {}
    labels = {}
    for row in _rows(path, ("subject_id", "study_id", *CHEXPERT_LABELS)):
        try:
            values = {name: int(float(row[column])) for column, name in CHEXPERT_LABELS.items() if row[column]}
        except ValueError as exc:
            raise InputError(f"{DATASET}: study s{row['study_id']}: bad CheXpert value ({exc})") from exc
        labels[(row["subject_id"], row["study_id"])] = values
    return labels


class _Reports:
    """Report texts from ``mimic-cxr-reports.zip`` or from ``sNNN.txt`` files under a folder."""

    def __init__(self, root: Path, reports: Path | None) -> None:
        source = Path(reports) if reports is not None else root
        if reports is None and (root / "mimic-cxr-reports.zip").is_file():
            source = root / "mimic-cxr-reports.zip"
        if not source.exists():
            raise InputError(f"{DATASET}: reports {source} do not exist")
        self.source = source
        self.zip: zipfile.ZipFile | None = None
        self.members: dict[tuple[str, str], str] = {}
        if source.is_file():
            try:
                self.zip = zipfile.ZipFile(source)
            except (OSError, zipfile.BadZipFile) as exc:
                raise InputError(f"{DATASET}: {source} is not a readable zip ({exc})") from exc
            for name in self.zip.namelist():
                if match := REPORT_MEMBER.search(name):
                    self.members[match.groups()] = name

    def __enter__(self) -> "_Reports":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.zip is not None:
            self.zip.close()

    def text(self, subject: str, study: str) -> str:
        relative_name = f"files/p{subject[:2]}/p{subject}/s{study}.txt"
        if self.zip is not None and (subject, study) in self.members:
            return self.zip.read(self.members[(subject, study)]).decode("utf-8", "replace")
        if self.zip is None:
            for candidate in (self.source / relative_name, self.source / relative_name.removeprefix("files/")):
                if candidate.is_file():
                    return candidate.read_text(encoding="utf-8", errors="replace")
        raise InputError(
            f"{DATASET}: study s{study} (subject p{subject}) has no report {relative_name} in {self.source}; "
            "the reports come from mimic-cxr-reports.zip of the MIMIC-CXR release (pass it as reports)"
        )


def report_sections(text: str) -> tuple[str | None, list[str]]:
    """The FINDINGS and IMPRESSION text of a report (whitespace collapsed) and the section names used."""
    headers = list(SECTION_HEADER.finditer(text))
    kept, names = [], []
    for number, header in enumerate(headers):
        end = headers[number + 1].start() if number + 1 < len(headers) else len(text)
        body = " ".join(text[header.end():end].split())
        name = " ".join(header.group(1).split())
        if KEPT_SECTIONS.search(name) and body:
            kept.append(body)
            names.append(name.lower())
    if kept:
        return " ".join(kept), names
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if p and p != "FINAL REPORT"]
    return (paragraphs[-1], ["last paragraph"]) if paragraphs else (None, [])
