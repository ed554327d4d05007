"""What Table 8's harness reads: real chest films with their phantom ground truth, and synthetic corpora.

Real films come from the cache of a phantom world: per film the report, the finding labels, and, regenerated from
the case's seed (:func:`chest_truth`), the projected mask of the segmented finding and the boxes of nodules and
masses. A phantom case is one seed, so its CT is painted again, the structure labels are projected along the DRR's
rays (:func:`~medm2g_core.phantoms.drr.project_mask`) and mapped onto the film exactly as the cache maps the film;
the regenerated film must match the cached one, or the world was not made by this phantom (a ``chest_base``
world, another version) and the harness refuses it rather than score against wrong masks.

Synthetic corpora are ``synthesize-dataset`` folders (or their ``manifest.jsonl``). :func:`open_corpus` refuses a
corpus with a record not marked synthetic (``meta.synthetic``), an empty one, and one without a chest X-ray case
with a report (another anatomy only), before anything is written. Their chest films and reports join pre-training;
their brain cases' MRI and CT slices join the supervised MRI -> CT baseline of the generation half.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medm2g_core.data.cache import Cache, CacheConfig, case_images, square_resize
from medm2g_core.data.intensity import intensity_map
from medm2g_core.data.labeler import report_anatomy
from medm2g_core.data.manifest import CaseRecord, Manifest, read_manifest
from medm2g_core.errors import InputError
from medm2g_core.phantoms.chest import LABEL, make_chest_case
from medm2g_core.phantoms.drr import project_mask
from medm2g_core.vocabulary import CHEST_LABELS

DETECTED = ("nodule", "mass")  # one class: RSNA's boxes are one class too
MASKED = ("pneumothorax", "pleural_effusion", "consolidation", "atelectasis", "nodule", "mass")
STRUCTURE = {"pleural_effusion": "effusion"}  # label-map names that differ from the finding labels
MIN_BOX_PX = 3.0  # boxes are at least this wide at the film's resolution: a 6 mm nodule spans ~1 pixel at 64
REGENERATION_TOLERANCE = 0.05  # mean |regenerated - cached| film difference in [-1, 1] units
MRI_SOURCE = "mr_t1"  # the generation half regresses CT from T1, the contrast synthesize-dataset makes by default


@dataclass
class Films:
    """Chest films at the cache's resolution: [N, R, R] in [-1, 1], reports, labels [N, len(CHEST_LABELS)], and
    for real films the ground truth: masks [N, R, R] of the segmented finding and boxes ([K, 4] x0 y0 x1 y1 in
    pixels, per film)."""

    ids: list[str]
    images: np.ndarray
    reports: list[str]
    labels: np.ndarray
    masks: np.ndarray | None = None
    boxes: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Corpus:
    name: str
    path: Path
    films: Films  # chest X-rays with reports: pre-training pairs
    pairs: tuple[np.ndarray, np.ndarray] | None  # (MRI T1 [N, 1, R, R], CT [N, R, R]) of brain cases, if any


def parse_synthetic(specs: list[str]) -> dict[str, Path]:
    """``--synthetic CORPUS`` or ``NAME=CORPUS`` options -> name -> path (a bare corpus is named by its folder)."""
    parsed: dict[str, Path] = {}
    if not specs:
        raise InputError("downstream needs at least one --synthetic CORPUS (a synthesize-dataset folder)")
    for spec in specs:
        name, sep, path = (part.strip() for part in spec.partition("="))
        if not sep:
            name, path = "", spec.strip()
        if not path or (sep and not name):
            raise InputError(f"--synthetic {spec!r}: write CORPUS or NAME=CORPUS")
        name = name or (Path(path).parent.name if path.endswith(".jsonl") else Path(path).name)
        if name in parsed:
            raise InputError(f"--synthetic names must differ; {name!r} is given twice")
        parsed[name] = Path(path)
    return parsed


def open_corpus(name: str, path: Path) -> Manifest:
    """A corpus's manifest, checked: every record marked synthetic and at least one chest X-ray case with a report."""
    label = f"--synthetic {name}={path}"
    manifest_path = path / "manifest.jsonl" if path.is_dir() else path
    if not manifest_path.is_file():
        raise InputError(f"{label}: no such corpus (a synthesize-dataset folder or its manifest.jsonl)")
    if not manifest_path.read_text(encoding="utf-8").strip():
        raise InputError(f"{label}: the corpus is empty")
    manifest = read_manifest(manifest_path)
    unmarked = [r.id for r in manifest.records if r.meta.get("synthetic") is not True]
    if unmarked:
        raise InputError(f"{label}: {len(unmarked)} of {len(manifest.records)} cases are not marked synthetic "
                         f"(meta.synthetic), first {unmarked[0]}; real and synthetic data must not mix unknowingly")
    if not chest_cases(manifest):
        anatomies = sorted({report_anatomy(r.report or "") or "unknown" for r in manifest.records})
        raise InputError(f"{label}: no chest X-ray case with a report (the corpus holds {', '.join(anatomies)} "
                         "cases); the downstream tasks are chest tasks")
    return manifest


def chest_cases(manifest: Manifest) -> list[CaseRecord]:
    return [r for r in manifest.records if "xray" in r.images and r.report and report_anatomy(r.report) == "chest"]


def load_corpus(name: str, manifest: Manifest, resolution: int) -> Corpus:
    """The corpus's chest films and reports, and its brain MRI -> CT slice pairs, at ``resolution``."""
    config = CacheConfig(resolution)
    chest = chest_cases(manifest)
    images = np.stack([case_images(manifest, r, ("xray",), config)["xray"].images[0] for r in chest])
    labels = np.array([[r.labels.get(k, 0) for k in CHEST_LABELS] for r in chest], np.int64)
    films = Films([r.id for r in chest], images, [r.report or "" for r in chest], labels)
    brain = [r for r in manifest.records if {MRI_SOURCE, "ct"} <= set(r.images) and r.report
             and report_anatomy(r.report) == "brain"]
    pairs = None
    if brain:
        slices = [case_images(manifest, r, (MRI_SOURCE, "ct"), config) for r in brain]
        pairs = (np.concatenate([s[MRI_SOURCE].images for s in slices])[:, None],
                 np.concatenate([s["ct"].images for s in slices]))
    return Corpus(name, Path(manifest.root), films, pairs)


def chest_truth(manifest: Manifest, record: CaseRecord, resolution: int, segment: str,
                film: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask [R, R] of ``segment`` and nodule/mass boxes [K, 4] of one phantom chest case, regenerated from its
    seed and checked against its cached ``film``."""
    seed = record.meta.get("seed")
    if record.meta.get("task") != "chest" or not isinstance(seed, int):
        raise InputError(f"--data: case {record.id} is not a phantom chest case (no chest seed in its meta); "
                         "masks and boxes come from regenerating phantom cases")
    spacing = float(nib.load(manifest.image_path(record, "ct")).header.get_zooms()[0])
    pixels = int(nib.load(manifest.image_path(record, "xray")).shape[0])
    case = make_chest_case(seed, spacing_mm=spacing, xray_pixels=pixels)
    xray = case.xray.data[:, :, 0]
    regenerated = square_resize(intensity_map(xray, "XRAY").forward(xray).T, resolution, -1.0)
    if float(np.abs(regenerated - film).mean()) > REGENERATION_TOLERANCE:
        raise InputError(f"--data: case {record.id} does not regenerate from its seed {seed} (a world made from a "
                         "real chest base or by another medm2g version); its masks and boxes are unknown")

    def projected(*names: str) -> np.ndarray:  # [pixels, pixels] thickness along the rays, as the film: [v, u]
        return project_mask(case.ct, np.isin(case.labels, [LABEL[STRUCTURE.get(n, n)] for n in names]), pixels).T

    mask = square_resize((projected(segment) > 0).astype(np.float32), resolution, 0.0) > 0.5
    return mask, _boxes(projected(*DETECTED) > 0, resolution / pixels)


def _boxes(mask: np.ndarray, scale: float) -> np.ndarray:
    """Boxes [K, 4] (x0, y0, x1, y1 at the film's resolution) of the connected parts of a projected mask."""
    parts, _ = ndimage.label(mask)
    boxes = []
    for rows, cols in ndimage.find_objects(parts):
        cx, cy = (cols.start + cols.stop) / 2 * scale, (rows.start + rows.stop) / 2 * scale
        w, h = (max((s.stop - s.start) * scale, MIN_BOX_PX) for s in (cols, rows))
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return np.array(boxes, np.float32).reshape(-1, 4)


def real_films(cache: Cache, manifest: Manifest, split: str, segment: str,
               progress: Callable[[int, int], None] | None = None) -> Films:
    """The chest films of ``split`` in the cache with reports, labels, masks and boxes."""
    try:
        stream = cache.stream(split, "xray")
    except InputError as exc:
        raise InputError(f"--data: no {split} X-ray films in {cache.root}") from exc
    cases = cache.index["cases"]
    keep = [n for n, c in enumerate(stream["case"]) if set(CHEST_LABELS) <= set(cases[c]["labels"])
            and cases[c]["report"]]
    if not keep:
        raise InputError(f"--data: no {split} chest film with a report and chest labels")
    records = {r.id: r for r in manifest.records}
    ids = [cases[stream["case"][n]]["id"] for n in keep]
    images = stream["images"][keep]
    masks, boxes = [], []
    for number, (case_id, film) in enumerate(zip(ids, images, strict=True)):
        mask, found = chest_truth(manifest, records[case_id], cache.resolution, segment, film)
        masks.append(mask)
        boxes.append(found)
        if progress:
            progress(number + 1, len(ids))
    labels = np.array([[cases[stream["case"][n]]["labels"][k] for k in CHEST_LABELS] for n in keep], np.int64)
    return Films(ids, images, [cases[stream["case"][n]]["report"] for n in keep], labels, np.stack(masks), boxes)
