"""The phantom world on disk: cases written as NIfTI with reports and labels, a manifest, a contact sheet.

Each case comes from one seed (``base seed * 100003 + case index``), so any case can be regenerated on its
own. Brain cases hold CT and five MRI contrasts on one grid and a skull radiograph (the DRR of the whole head);
chest cases hold a CT and its DRR X-ray.
Cases are written one folder each (atomically, with a ``case.json`` record), so an interrupted run resumes
where it stopped; the manifest is written last.
"""

import functools
import json
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medm2g_core.atomic import atomic_dir, atomic_path
from medm2g_core.data.manifest import CaseRecord, split_for, write_manifest
from medm2g_core.errors import InputError
from medm2g_core.io.nifti import write_nifti
from medm2g_core.io.preview import montage
from medm2g_core.io.volume import Volume
from medm2g_core.phantoms.brain import make_brain_case, skull_radiograph
from medm2g_core.phantoms.chest import make_chest_case
from medm2g_core.phantoms.findings import BrainFindings, ChestFindings
from medm2g_core.phantoms.reports import brain_report, chest_report
from medm2g_core.vocabulary import ANATOMIES, SEED_STRIDE

CASE_RECORD = "case.json"


@dataclass(frozen=True)
class PhantomConfig:
    """What ``medm2g prepare phantom`` makes."""

    cases: int = 200
    seed: int = 0
    tasks: tuple[str, ...] = ANATOMIES
    brain_spacing_mm: float = 2.0
    brain_slices: int | None = 24  # an axial slab through the ventricles keeps files small; None = whole head
    chest_spacing_mm: float = 2.5
    xray_pixels: int = 256
    brain_xray: bool = True  # a PA skull radiograph per brain case, so X-ray and MRI meet in one case
    chest_base: str | None = None  # a real chest CT (any format medm2g reads) as the anatomy of every chest case

    def __post_init__(self) -> None:
        if self.cases < 1:
            raise InputError(f"the number of cases must be at least 1; got {self.cases}", option="cases")
        unknown = set(self.tasks) - set(ANATOMIES)
        if unknown or not self.tasks:
            allowed, given = ",".join(ANATOMIES), ",".join(self.tasks)
            raise InputError(f"tasks must be a non-empty subset of {allowed}; got {given!r}", option="tasks")
        if self.chest_base is not None:
            _chest_base(self.chest_base)  # fail before any case is made


@functools.cache
def _chest_base(path: str) -> Volume:
    """The base CT, read once per process; it must be a CT in HU."""
    from medm2g_core.io.load import read_volume

    volume = read_volume(path, modality="CT")  # a DICOM of another modality is refused by the reader
    if volume.is_2d:
        raise InputError(f"chest base {path}: a single slice cannot be a chest volume", option="chest_base")
    return volume


def case_plan(config: PhantomConfig) -> list[tuple[str, str, int]]:
    """(case id, task, seed) for every case: tasks take turns, seeds follow the base seed."""
    plan = []
    for index in range(config.cases):
        task = config.tasks[index % len(config.tasks)]
        plan.append((f"{task}-{config.seed}-{index:05d}", task, config.seed * SEED_STRIDE + index))
    return plan


def make_case(task: str, seed: int, config: PhantomConfig) -> tuple[dict[str, Volume], str, dict[str, int], dict]:
    """Images by manifest key, report text, finding labels and the finding parameters of one case."""
    if task == "brain":
        brain = make_brain_case(seed, spacing_mm=config.brain_spacing_mm, slices=config.brain_slices)
        images = dict(brain.images)
        if config.brain_xray:
            images["xray"] = skull_radiograph(seed, brain.findings, config.brain_spacing_mm, config.xray_pixels)
        return images, _report(brain.findings, seed), brain.findings.labels(), brain.findings.to_dict()
    base = _chest_base(config.chest_base) if config.chest_base else None
    chest = make_chest_case(seed, spacing_mm=config.chest_spacing_mm, base=base, xray_pixels=config.xray_pixels)
    images = {"ct": chest.ct, "xray": chest.xray}
    return images, _report(chest.findings, seed), chest.findings.labels(), chest.findings.to_dict()


def _report(findings: BrainFindings | ChestFindings, seed: int) -> str:
    report_rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    if isinstance(findings, BrainFindings):
        return brain_report(findings, report_rng)
    return chest_report(findings, report_rng)


def case_report(task: str, seed: int) -> str:
    """The report of case ``(task, seed)`` exactly as :func:`make_case` writes it, without drawing any image."""
    findings_rng = np.random.default_rng(seed)  # the stream the case generators draw their findings from
    findings = BrainFindings.sample(findings_rng) if task == "brain" else ChestFindings.sample(findings_rng)
    return _report(findings, seed)


def report_corpus(count: int, seed: int, tasks: tuple[str, ...] = ANATOMIES) -> list[str]:
    """The reports of a ``count``-case world with base seed ``seed``, made without images (thousands a second).

    Text-only training data in the world's own distribution of anatomies, findings, phrasing and measurements:
    the text VAE's pretraining corpus. Choose a ``seed`` that no image world uses, so that no held-out case's
    report is drawn from the same seed.
    """
    return [case_report(task, case_seed) for _, task, case_seed in case_plan(PhantomConfig(count, seed, tasks))]


def _write_case(out: Path, case_id: str, task: str, seed: int, config: PhantomConfig) -> CaseRecord:
    folder = out / "cases" / case_id
    record_file = folder / CASE_RECORD
    if record_file.is_file():  # finished by an earlier run: resume
        return CaseRecord(**json.loads(record_file.read_text()))
    images, report, labels, findings = make_case(task, seed, config)
    record = CaseRecord(
        id=case_id, split=split_for(case_id), subject=case_id, source=f"phantom-{task}",
        images={key: f"cases/{case_id}/{key}.nii.gz" for key in images},
        report=report, labels=labels, meta={"seed": seed, "task": task, "findings": findings},
    )
    with atomic_dir(folder, overwrite=True) as tmp:
        for key, volume in images.items():
            write_nifti(volume, tmp / f"{key}.nii.gz", quantize=True)  # CT HU are integers and stay exact
        (tmp / "report.txt").write_text(report + "\n", encoding="utf-8")
        (tmp / CASE_RECORD).write_text(json.dumps(asdict(record), indent=1), encoding="utf-8")
    return record


def _write_case_star(args: tuple) -> CaseRecord:
    return _write_case(*args)


def prepare_phantom(
    out: str | os.PathLike, config: PhantomConfig, workers: int = 1, overwrite: bool = False, resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``config.cases`` phantom cases, ``manifest.jsonl`` and ``contact_sheet.png`` into ``out``."""
    out = Path(out)
    manifest = out / "manifest.jsonl"
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise InputError(f"output folder {out} is not empty; ask for resume to continue it, or overwrite",
                         option="resume")
    (out / "cases").mkdir(parents=True, exist_ok=True)
    jobs = [(out, case_id, task, seed, config) for case_id, task, seed in case_plan(config)]
    records: list[CaseRecord] = []
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for record in pool.imap(_write_case_star, jobs):
                records.append(record)
                if progress:
                    progress(len(records), len(jobs))
    else:
        for job in jobs:
            records.append(_write_case(*job))
            if progress:
                progress(len(records), len(jobs))
    write_manifest(manifest, records, overwrite=True)
    write_contact_sheet(out, records, out / "contact_sheet.png", overwrite=True)
    return manifest


def _tile(volume: Volume, size: int) -> Image.Image:
    image = Image.fromarray(montage(volume, n_slices=1))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def write_contact_sheet(
    root: Path, records: list[CaseRecord], path: Path, per_task: int = 3, tile: int = 160, overwrite: bool = False
) -> Path:
    """A PNG grid: a few cases of each task, one row per case, one labelled tile per image."""
    from medm2g_core.io.nifti import read_nifti

    rows: list[tuple[str, list[tuple[str, Image.Image]]]] = []
    for task in ANATOMIES:
        for record in [r for r in records if r.meta.get("task") == task][:per_task]:
            tiles = [(key, _tile(read_nifti(root / rel), tile)) for key, rel in sorted(record.images.items())]
            positives = ", ".join(k for k, v in record.labels.items() if v == 1) or "normal"
            rows.append((f"{record.id}: {positives}", tiles))
    if not rows:
        raise InputError("no case to show on the contact sheet")
    columns = max(len(tiles) for _, tiles in rows)
    header = 14
    sheet = Image.new("L", (columns * (tile + 4), len(rows) * (tile + 2 * header)), 24)
    draw = ImageDraw.Draw(sheet)
    for r, (title, tiles) in enumerate(rows):
        top = r * (tile + 2 * header)
        draw.text((4, top + 1), title[:120], fill=255)
        for c, (key, image) in enumerate(tiles):
            sheet.paste(image, (c * (tile + 4), top + 2 * header - 2))
            draw.text((c * (tile + 4) + 3, top + header), key, fill=200)
    draw.text((4, sheet.height - 12), "SYNTHETIC phantom images - not patient data", fill=255)
    with atomic_path(path, overwrite) as tmp:
        sheet.save(tmp, format="PNG")
    return path
