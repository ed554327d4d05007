"""Integrity check of a prepared dataset, in the spirit of nnU-Net's ``verify_dataset_integrity``.

:func:`verify_manifest` reads a manifest and reports every problem it finds instead of stopping at the
first. Kinds of problem:

* ``manifest``: the manifest cannot be read or validated (nothing else is checked then);
* ``missing_file``: an image path does not exist;
* ``unreadable``: an image exists but cannot be loaded;
* ``nonfinite``: an image holds NaN or infinite values;
* ``geometry``: CT/MRI images of one case that should share a voxel grid differ in shape, spacing (more
  than 1e-3 mm), axis directions or origin (more than 1e-2 mm). The keys compared are ``meta["aligned"]``
  when the record has it, else all its CT and MRI images (never the X-ray);
* ``label_value``: a label that is not an int in {-1, 0, 1};
* ``label_names``: a case whose label names differ from its source's: from the known vocabulary of the
  dataset adapters (names outside it; for a complete vocabulary also names missing), else from the set
  that more than half of the source's cases carry;
* ``split_leakage``: one subject (of one source) in two splits;
* ``duplicate_image``: one image (path, plus DICOM series where given) used twice;
* ``empty_report``: a case without report text while other cases of its source have one.

Images are loaded only with ``check_images``: NIfTI with nibabel directly (so that NaNs are counted rather
than refused), DICOM and PNG/JPEG with :func:`medm2g_core.io.load.read_volume`, passing the series that
``meta["series"][key]`` names.
"""

import os
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from medm2g_core.data.adapters import LABEL_VOCABULARY
from medm2g_core.data.adapters.common import Progress, tick
from medm2g_core.data.manifest import IMAGE_KEYS, CaseRecord, Manifest, read_manifest
from medm2g_core.errors import InputError, Medm2gError
from medm2g_core.io.nifti import is_nifti

KINDS = (
    "manifest", "missing_file", "unreadable", "nonfinite", "geometry", "label_value", "label_names",
    "split_leakage", "duplicate_image", "empty_report",
)
SPACING_TOLERANCE_MM = 1e-3
ORIGIN_TOLERANCE_MM = 1e-2
DIRECTION_TOLERANCE = 1e-4
LABEL_VALUES = (-1, 0, 1)
VOLUMETRIC_KEYS = tuple(key for key in IMAGE_KEYS if key != "xray")
LOAD_ERRORS = (Medm2gError, OSError, EOFError, ValueError, zlib.error, ImageFileError)


@dataclass
class Problem:
    """One finding: the case it concerns (empty for the manifest itself), its kind and a one-line message."""

    case: str
    kind: str
    message: str


@dataclass
class VerifyReport:
    """What :func:`verify_manifest` found, with per-split, per-source and per-label counts."""

    manifest: Path
    cases: int = 0
    problems: list[Problem] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[int, int]] = field(default_factory=dict)  # name -> value -> number of cases
    images_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        """A JSON-ready form (label values as string keys)."""
        return {
            "manifest": str(self.manifest),
            "ok": self.ok,
            "cases": self.cases,
            "images_checked": self.images_checked,
            "splits": self.splits,
            "sources": self.sources,
            "labels": {name: {str(v): n for v, n in values.items()} for name, values in self.labels.items()},
            "problems": [vars(p) for p in self.problems],
        }


@dataclass
class _Grid:
    shape: tuple[int, ...]
    affine: np.ndarray


def verify_manifest(path: Path, check_images: bool = True, progress: Progress | None = None) -> VerifyReport:
    """Check the manifest at ``path`` and (with ``check_images``) every image it names."""
    report = VerifyReport(Path(path))
    try:
        manifest = read_manifest(path)
    except InputError as exc:
        report.problems.append(Problem("", "manifest", str(exc)))
        return report
    records = manifest.records
    report.cases = len(records)
    report.splits = dict(Counter(r.split for r in records))
    report.sources = dict(Counter(r.source for r in records))
    report.labels = _label_counts(records)
    for done, record in enumerate(records, start=1):
        report.problems += _label_values(record)
        problems, checked = _check_images(manifest, record, check_images)
        report.problems += problems
        report.images_checked += checked
        tick(progress, done, len(records))
    report.problems += _label_names(records) + _leakage(records) + _duplicates(manifest) + _empty_reports(records)
    return report


def _label_counts(records: list[CaseRecord]) -> dict[str, dict[int, int]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        if isinstance(record.labels, dict):
            for name, value in record.labels.items():
                counts[name][value] += 1
    return {name: dict(sorted(values.items(), key=str)) for name, values in sorted(counts.items())}


def _label_values(record: CaseRecord) -> list[Problem]:
    if not isinstance(record.labels, dict):
        return [Problem(record.id, "label_value", f"labels must be an object of name -> -1/0/1, not {record.labels!r}")]
    return [
        Problem(record.id, "label_value", f"label {name!r} is {value!r}; a label is -1, 0 or 1")
        for name, value in record.labels.items()
        if type(value) is not int or value not in LABEL_VALUES
    ]


def _series(record: CaseRecord, key: str) -> str | None:
    series = record.meta.get("series") if isinstance(record.meta, dict) else None
    return series.get(key) if isinstance(series, dict) else None


def _check_images(manifest: Manifest, record: CaseRecord, load: bool) -> tuple[list[Problem], int]:
    """Missing, unreadable and non-finite images of one case, and its geometry; (problems, images loaded)."""
    problems, grids = [], {}
    for key, relative in record.images.items():
        path = manifest.root / relative
        if not path.exists():
            problems.append(Problem(record.id, "missing_file", f"{key} image {relative} does not exist"))
        elif load:
            try:
                grid, nonfinite, size = _load(path, _series(record, key))
            except (ImportError, *LOAD_ERRORS) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                problems.append(Problem(record.id, "unreadable", f"{key} image {relative}: {reason}"))
                continue
            grids[key] = grid
            if nonfinite:
                problems.append(Problem(
                    record.id, "nonfinite", f"{key} image {relative}: {nonfinite} of {size} values are NaN or infinite"
                ))
    return problems + _geometry(record, grids), len(grids)


def _load(path: Path, series: str | None) -> tuple[_Grid, int, int]:
    """(grid, number of non-finite values, number of values) of one image."""
    if is_nifti(path):
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
        affine = image.affine
        if data.ndim == 2:
            data = data[:, :, None]
    else:
        from medm2g_core.io.load import read_volume  # DICOM and raster readers load only when needed

        volume = read_volume(path, series=series)
        data, affine = volume.data, volume.affine
    return _Grid(tuple(data.shape), np.asarray(affine, float)), int(data.size - np.isfinite(data).sum()), data.size


def _aligned_keys(record: CaseRecord, grids: dict[str, _Grid]) -> list[str]:
    declared = record.meta.get("aligned") if isinstance(record.meta, dict) else None
    keys = declared if isinstance(declared, list) else VOLUMETRIC_KEYS
    return [key for key in IMAGE_KEYS if key in keys and key in grids]


def _geometry(record: CaseRecord, grids: dict[str, _Grid]) -> list[Problem]:
    keys = _aligned_keys(record, grids)
    if not keys:
        return []
    first = keys[0]
    return [
        Problem(record.id, "geometry", message)
        for key in keys[1:]
        for message in _grid_differences(first, grids[first], key, grids[key])
    ]


def _numbers(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _grid_differences(ref_key: str, ref: _Grid, key: str, other: _Grid) -> list[str]:
    if ref.shape != other.shape:
        return [f"{key} shape {other.shape} differs from {ref_key} shape {ref.shape}"]
    messages = []
    ref_spacing = np.linalg.norm(ref.affine[:3, :3], axis=0)
    spacing = np.linalg.norm(other.affine[:3, :3], axis=0)
    if np.abs(spacing - ref_spacing).max() > SPACING_TOLERANCE_MM:
        messages.append(
            f"{key} spacing {_numbers(spacing)} mm differs from {ref_key} spacing {_numbers(ref_spacing)} mm"
        )
    elif np.abs(other.affine[:3, :3] / spacing - ref.affine[:3, :3] / ref_spacing).max() > DIRECTION_TOLERANCE:
        messages.append(f"{key} axis directions differ from {ref_key}'s (orientation {_orientation(other)} vs "
                        f"{_orientation(ref)})")
    offset = float(np.linalg.norm(other.affine[:3, 3] - ref.affine[:3, 3]))
    if offset > ORIGIN_TOLERANCE_MM:
        messages.append(f"{key} origin {_numbers(other.affine[:3, 3])} mm is {offset:.3g} mm from {ref_key} origin "
                        f"{_numbers(ref.affine[:3, 3])} mm")
    return messages


def _orientation(grid: _Grid) -> str:
    return "".join(nib.orientations.aff2axcodes(grid.affine))


def _by_source(records: list[CaseRecord]) -> dict[str, list[CaseRecord]]:
    groups: dict[str, list[CaseRecord]] = defaultdict(list)
    for record in records:
        groups[record.source].append(record)
    return groups


def _expected_names(source: str, records: list[CaseRecord]) -> tuple[frozenset[str], bool] | None:
    """(names, complete) for a source: its adapter's vocabulary, else the majority's set; None if unclear."""
    if source in LABEL_VOCABULARY:
        return LABEL_VOCABULARY[source]
    names, count = Counter(frozenset(r.labels) for r in records).most_common(1)[0]
    return (names, True) if count * 2 > len(records) else None


def _label_names(records: list[CaseRecord]) -> list[Problem]:
    problems = []
    for source, group in _by_source(records).items():
        group = [r for r in group if isinstance(r.labels, dict)]
        expected = _expected_names(source, group) if group else None
        if expected is None:
            continue
        names, complete = expected
        for record in group:
            unknown = sorted(set(record.labels) - names)
            missing = sorted(names - set(record.labels)) if complete else []
            if unknown or missing:
                parts = [f"unknown {unknown}"] * bool(unknown) + [f"missing {missing}"] * bool(missing)
                problems.append(Problem(
                    record.id, "label_names", f"label names differ from the other {source} cases: {', '.join(parts)}"
                ))
    return problems


def _leakage(records: list[CaseRecord]) -> list[Problem]:
    cases: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        cases[(record.source, record.subject)][record.split].append(record.id)
    problems = []
    for (source, subject), splits in cases.items():
        if len(splits) > 1:
            listed = "; ".join(f"{split}: {', '.join(ids[:5])}" for split, ids in sorted(splits.items()))
            first = sorted(ids[0] for ids in splits.values())[0]
            message = f"subject {subject} ({source}) is in {len(splits)} splits: {listed}"
            problems.append(Problem(first, "split_leakage", message))
    return problems


def _duplicates(manifest: Manifest) -> list[Problem]:
    users: dict[tuple[str, str | None], list[tuple[str, str]]] = defaultdict(list)
    for record in manifest.records:
        for key, relative in record.images.items():
            where = os.path.normpath(os.path.abspath(manifest.root / relative))
            users[(where, _series(record, key))].append((record.id, key))
    return [
        Problem(uses[0][0], "duplicate_image",
                f"{where} is used {len(uses)} times: {', '.join(f'{case} ({key})' for case, key in uses)}")
        for (where, _), uses in users.items()
        if len(uses) > 1
    ]


def _empty_reports(records: list[CaseRecord]) -> list[Problem]:
    problems = []
    for source, group in _by_source(records).items():
        with_report = sum(1 for r in group if r.report and str(r.report).strip())
        if with_report:
            problems += [
                Problem(r.id, "empty_report", f"no report text while {with_report} other {source} cases have one")
                for r in group
                if not (r.report and str(r.report).strip())
            ]
    return problems
