"""synthesize-dataset: paired synthetic corpora (report + X-ray/CT/MRI per case) for pre-training.

Cases are planned up front (:func:`plan_cases`): case ``i`` has id ``synth-<i>``, seed ``seed * 100003 + i`` and
a prompt (from a file, stdin or a manifest's reports, taken in turn) or none, in which case its report is drawn
from the text LDM first. Each process takes every ``world``-th case from ``rank`` (under ``accelerate launch``:
its own shard); cases run in batches on the device and each finished case is written atomically as a folder
with a ``case.json``, so a kill loses at most the batch in flight and ``resume`` skips finished cases. Because
each case's noise comes from its own seed, a resumed or resharded run makes exactly the same cases.

Layout (readable as a project manifest and by Hugging Face ``datasets``' imagefolder)::

    manifest.jsonl              one CaseRecord per case (medm2g's format)
    README.md                   the corpus card: what made it, how it is marked synthetic
    metadata.jsonl              one row per PNG: file_name, case_id, modality, report, labels, synthetic
    cases/synth-000000/         xray_synthetic.nii.gz  ct_synthetic.nii.gz  *_synthetic.png  report.txt  case.json

Every image is marked synthetic in its header (NIfTI description and extension, PNG text chunks), its file name,
case.json, manifest.jsonl and metadata.jsonl, but not in its pixels: a label burned into training images would be
learned by whatever trains on them.
"""

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medm2g_core.atomic import atomic_dir, write_text
from medm2g_core.data.labeler import binary_labels
from medm2g_core.data.manifest import CaseRecord, read_manifest, write_manifest
from medm2g_core.errors import InputError
from medm2g_core.io.nifti import write_nifti
from medm2g_core.io.preview import write_preview
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.generate import GenerateOptions, as_volume, generate_images, generate_reports
from medm2g_core.sampling.report import HEADER
from medm2g_core.sampling.translate import provenance
from medm2g_core.vocabulary import SEED_STRIDE

OUTPUT_MODALITIES = ("xray", "ct", "mri", "text")
CASE_RECORD = "case.json"
MARK = "_synthetic"  # in every image's file name


@dataclass(frozen=True)
class SynthesisOptions:
    modalities: tuple[str, ...] = OUTPUT_MODALITIES
    contrast: str = "T1"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in OUTPUT_MODALITIES]
        if unknown or not self.modalities:
            raise InputError(f"modalities take values from {', '.join(OUTPUT_MODALITIES)}; got "
                             f"{','.join(self.modalities)}", option="modalities")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1; got {self.batch_size}", option="batch_size")

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(m for m in self.modalities if m != "text")


@dataclass(frozen=True)
class PlannedCase:
    index: int
    prompt: str | None

    @property
    def id(self) -> str:
        return f"synth-{self.index:06d}"


def read_prompts(path: str) -> list[str]:
    """One prompt per non-empty line of a file (``-``: standard input)."""
    import sys

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"{path}: no prompt in it")
    return prompts


def manifest_prompts(path: str | os.PathLike, split: str | None = None) -> list[str]:
    """The reports of a manifest's cases (of ``split`` when given)."""
    reports = [r.report for r in read_manifest(path).records if r.report and (split is None or r.split == split)]
    if not reports:
        raise InputError(f"{path}: no case with a report" + (f" in split {split}" if split else ""))
    return reports


def plan_cases(prompts: list[str] | None, n: int | None) -> list[PlannedCase]:
    """``n`` cases (default: one per prompt), prompts taken in turn; without prompts the reports are generated."""
    if n is None:
        if prompts is None:
            raise InputError("give the number of cases, or prompts to take one case each", option="n")
        n = len(prompts)
    if n < 1:
        raise InputError(f"the number of cases must be at least 1; got {n}", option="n")
    return [PlannedCase(i, prompts[i % len(prompts)] if prompts else None) for i in range(n)]


def finished(out: Path) -> dict[str, CaseRecord]:
    """The cases already written under ``out`` (complete folders only)."""
    records = {}
    for path in sorted((out / "cases").glob(f"*/{CASE_RECORD}")):
        if not path.parent.name.startswith("."):
            data = json.loads(path.read_text(encoding="utf-8"))
            records[data["id"]] = CaseRecord(**data)
    return records


def _batches(cases: list[PlannedCase], size: int) -> Iterator[list[PlannedCase]]:
    for start in range(0, len(cases), size):
        yield cases[start:start + size]


def synthesize(
    model: MedM2G, out: Path, cases: list[PlannedCase], options: SynthesisOptions, rank: int = 0, world: int = 1,
    on_case: Callable[[CaseRecord], None] | None = None, progress: Callable[[int, int], None] | None = None,
) -> int:
    """Make this process's share of ``cases`` that are not finished yet; the number made."""
    done = finished(out)
    mine = [c for c in cases[rank::world] if c.id not in done]
    made = 0
    for batch in _batches(mine, options.batch_size):
        seeds = [options.seed * SEED_STRIDE + c.index for c in batch]
        texts = [c.prompt for c in batch]
        missing = [k for k, t in enumerate(texts) if t is None]
        if missing:
            drawn = generate_reports(model, [seeds[k] for k in missing], options.sampling)
            for k, text in zip(missing, drawn, strict=True):
                texts[k] = text
        images = {}
        if options.images:
            images = generate_images(model, texts, GenerateOptions(options.images, options.contrast,
                                                                   options.sampling, options.seed), seeds)
        for row, case in enumerate(batch):
            record = _write_case(out, case, texts[row], {m: v[row] for m, v in images.items()}, seeds[row], model,
                                 options)
            made += 1
            if on_case:
                on_case(record)
        if progress:
            progress(made, len(mine))
    return made


def _write_case(out: Path, case: PlannedCase, text: str, images: dict, seed: int, model: MedM2G,
                options: SynthesisOptions) -> CaseRecord:
    origin = provenance(model, options.sampling, seed)
    files = {}
    folder = out / "cases" / case.id
    with atomic_dir(folder, overwrite=True) as tmp:
        for modality, image in images.items():
            volume = as_volume(image, modality, options.contrast, origin, text)
            key = modality if modality != "mri" else f"mr_{options.contrast.lower()}"
            write_nifti(volume, tmp / f"{key}{MARK}.nii.gz")
            write_preview(volume, tmp / f"{key}{MARK}.png", min_side=0, label=False)  # resolution kept, no label
            files[key] = f"cases/{case.id}/{key}{MARK}.nii.gz"
        record = CaseRecord(
            id=case.id, split="train", subject=case.id, source="medm2g-synthetic", images=files,
            report=text if "text" in options.modalities else None,
            labels=binary_labels(text) if "text" in options.modalities else {},
            meta={"seed": seed, "prompt_given": case.prompt is not None, "synthetic": True, **origin},
        )
        if "text" in options.modalities:
            write_text(tmp / "report.txt", f"{HEADER}\n\n{text}\n")
        write_text(tmp / CASE_RECORD, json.dumps(asdict(record), indent=1) + "\n")
    return record


def write_index(out: Path) -> Path:
    """manifest.jsonl and metadata.jsonl from every finished case (what the main process does last)."""
    records = sorted(finished(out).values(), key=lambda r: r.id)
    rows = []
    for record in records:
        for key in record.images:
            rows.append({"file_name": f"cases/{record.id}/{key}{MARK}.png", "case_id": record.id, "modality": key,
                         "report": record.report or "", "labels": json.dumps(record.labels), "synthetic": True})
    write_text(out / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows), overwrite=True)
    write_text(out / "README.md", corpus_card(records), overwrite=True)
    return write_manifest(out / "manifest.jsonl", records, overwrite=True)


def corpus_card(records: list[CaseRecord]) -> str:
    """The corpus card (README.md): what is in the corpus, what made it, and where it says that it is synthetic."""
    models = sorted({str(r.meta.get("model", "?")) for r in records})
    samplers = sorted({str(r.meta.get("sampler", "?")) for r in records})
    keys = sorted({key for r in records for key in r.images})
    return f"""# Synthetic corpus (medm2g synthesize-dataset)

**Every image and report here is synthetic**: generated by {", ".join(models)} ({"; ".join(samplers)}). Not patient
data, not for diagnosis; for pre-training and research only.

- Cases: {len(records)}; images: {", ".join(keys)}; reports: {sum(r.report is not None for r in records)}.
- Layout: `manifest.jsonl` (medm2g's manifest, `source` = medm2g-synthetic), `metadata.jsonl` (Hugging Face
  imagefolder rows), `cases/<id>/` with the images, `report.txt` and `case.json` (seed, prompt, model).

## How the corpus is marked synthetic
- NIfTI: the header description begins with "SYNTHETIC" and medm2g's header extension holds `"synthetic": true`
  and the provenance (model, seed, sampler).
- PNG: the Description and Comment text chunks say SYNTHETIC and hold the provenance.
- File names end in `{MARK}` (`xray{MARK}.png`, `ct{MARK}.nii.gz`); case ids begin with `synth-`.
- `case.json`, `manifest.jsonl` and `metadata.jsonl` carry `"synthetic": true` for every case and image.
- Reports begin with the AI-generated, unverified header.
- The pixels carry **no** burned-in label: a label drawn into training images would be learned by the models
  trained on them. Previews made by `medm2g translate`/`generate` for people to look at do carry one.
"""
