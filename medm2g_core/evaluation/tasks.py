"""The paper's evaluation tasks on any model and manifest, each with baselines in the same harness.

A task reads the held-out cases of a manifest (``split``, default ``test``), runs the model once per seed and the
baselines on the same cases, and returns a :class:`TaskResult`: per method and metric the value of each seed
(tables report mean +/- std over seeds, as the paper's do), per-case values of the first seed (for the
distribution plots), and a few samples (input, output, ground truth) for the figure grids.

- ``mri-to-ct`` (Table 6): MRI T1 volume -> CT; PSNR, SSIM, MAE in HU, and a domain Frechet distance of the
  slices in the model's aligned CT (MRI) encoder space. Both translation tasks also read every volume in three
  planes (:func:`~medm2g_core.metrics.image_metrics.plane_scores`): PSNR/SSIM of its axial slices and of its
  sagittal and coronal reformats, and the through-plane error (the z-gradient's mean absolute error, in the
  target's units), so a translation that jumps between slices shows; the page shows the first case in all three.
  With ``samples`` N >= 2, MedM2G's output is the mean of N samples and its rows add the calibration of their
  per-voxel standard deviation against the error over the truth's foreground (``uncertainty_spearman``,
  ``uncertainty_ause`` in the target's units; :func:`~medm2g_core.metrics.image_metrics.calibration`); the
  sample grids show the uncertainty map beside the error map.
- ``mri-synthesis`` (Table 2): several contrasts -> one (default T2 + FLAIR -> T1); PSNR, SSIM.
  Baselines of both: the mean training slice of the target, and a supervised UNet trained with L1 on the
  training pairs (``baselines.train_regression``: what a user would otherwise train).
- ``report`` (Table 1): X-ray -> report; BLEU-1..4, ROUGE-L (CIDEr, METEOR) as pycocoevalcap, finding F1, and
  two checks the paper does not make: the share of reports that affirm and negate one finding
  (``contradiction_rate``) and the share that state a finding of the other anatomy (``foreign_finding_rate``).
  MedM2G's row is what users get (inconsistent reports redrawn); its first draw alone is a row of its own.
  Baselines: the most common training report (of the most common finding pattern) and the nearest training
  report in the aligned space.
- ``text-to-image`` (Tables 3-4): report -> X-ray; effusion AUC of a classifier trained on real films, Frechet
  distance in the aligned X-ray encoder's space (a domain FD) against real held-out films, NIQE (Table 3).
  Baseline: the mean training film; reference: the real held-out films.
- ``xray-generation`` (Table 5): two films per held-out chest report; FID (Inception pool features) against the
  real held-out films, and MS-SSIM between the two films of a report (diversity: lower is more diverse).
  Reference rows: real training films (the FID floor) and the mean training film.
"""

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medm2g_core.data.cache import Cache, canonical, square_resize
from medm2g_core.data.intensity import intensity_map
from medm2g_core.data.labeler import binary_labels, contradictions, foreign_findings
from medm2g_core.data.manifest import CaseRecord, Manifest
from medm2g_core.errors import InputError
from medm2g_core.evaluation.baselines import RegressionConfig, nearest_report, regress, train_regression
from medm2g_core.io.load import read_volume
from medm2g_core.io.volume import Volume
from medm2g_core.metrics.image_metrics import (
    FOREGROUND,
    calibration,
    fid,
    inception_features,
    ms_ssim,
    niqe,
    plane_scores,
    volume_psnr_ssim,
)
from medm2g_core.metrics.text_metrics import coco_scores, finding_scores, rouge_l
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.generate import GenerateOptions, generate_images
from medm2g_core.sampling.guides import image_guide
from medm2g_core.sampling.report import ReportOptions, write_report
from medm2g_core.sampling.slices import cut, uncut
from medm2g_core.sampling.translate import TranslateOptions, output_mapping, translate_samples
from medm2g_core.vocabulary import EVAL_TASKS, MRI_CONTRASTS, SLICE_NOISE

PAPER_TABLE = {"mri-to-ct": "Table 6", "mri-synthesis": "Table 2", "report": "Table 1", "text-to-image": "Tables 3-4",
               "xray-generation": "Table 5", "ablation": "Table 7", "downstream": "Table 8"}
DIVERSITY_SIDE = 192  # MS-SSIM's five scales need 176 pixels a side: films are upsampled for it
MODEL = "MedM2G"
MEAN_SLICE = "mean training slice"
SUPERVISED = "supervised UNet (L1)"
NEAREST = "nearest training report (aligned encoders)"
FIRST_DRAW = "MedM2G, first draw (no consistency redraw)"
SAMPLES = 4
CLASSIFIER_SIDE = 32
FILM_BATCH = 16  # reports sampled together
NIQE_SIDE = 256


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"  # a split, or several joined by "+"
    cases: int | None = None  # at most this many cases (None: all)
    seeds: int = 3
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    sources: tuple[str, ...] = ("T2", "FLAIR")  # mri-synthesis
    target: str = "T1"  # mri-synthesis
    baseline_steps: int = 600  # training steps of the supervised UNet baseline
    samples: int = 1  # volume translations: MedM2G's output is the mean of this many samples (>= 2: calibration)
    slice_noise: str = "shared"  # volume translations: one noise for all slices, or one per slice (independent)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise InputError(f"the number of seeds must be at least 1; got {self.seeds}", option="seeds")
        if self.baseline_steps < 1:
            raise InputError(f"baseline training steps must be at least 1; got {self.baseline_steps}",
                             option="baseline_steps")
        if self.samples < 1:
            raise InputError(f"the number of samples must be at least 1; got {self.samples}", option="samples")
        if self.cases is not None and self.cases < 1:
            raise InputError(f"the number of cases must be at least 1; got {self.cases}", option="cases")
        if self.slice_noise not in SLICE_NOISE:
            raise InputError(f"slice noise must be one of {', '.join(SLICE_NOISE)}; got {self.slice_noise!r}",
                             option="slice_noise")
        for contrast in (*self.sources, self.target):
            if contrast not in MRI_CONTRASTS:
                raise InputError(f"MRI contrasts are {', '.join(MRI_CONTRASTS)}; got {contrast!r}")
        if self.target in self.sources:
            raise InputError(f"the target contrast {self.target} cannot also be a source")


@dataclass
class Sample:
    title: str
    images: dict[str, np.ndarray]  # name -> 2D display slice (input, output, truth, ...)


@dataclass
class TaskResult:
    task: str
    cases: int
    seeds: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # method -> metric -> per seed
    per_case: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # method -> metric -> per case
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> fixed column -> text (Table 7)
    paired: dict[str, dict[str, dict]] = field(default_factory=dict)  # method -> metric -> paired test (Table 8)

    def add(self, method: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.seeds.setdefault(method, {}).setdefault(name, []).append(float(value))

    def add_case(self, method: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.per_case.setdefault(method, {}).setdefault(name, []).append(float(value))

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """method -> metric -> (mean, std) over seeds."""
        return {m: {k: (float(np.mean(v)), float(np.std(v))) for k, v in metrics.items()}
                for m, metrics in self.seeds.items()}

    def as_json(self) -> dict:
        return {"task": self.task, "paper_table": PAPER_TABLE[self.task], "cases": self.cases,
                "seeds": self.seeds, "summary": self.summary(), "per_case": self.per_case, "notes": self.notes,
                "columns": self.columns, "paired": self.paired}


def held_out(manifest: Manifest, split: str, keys: tuple[str, ...], limit: int | None, report: bool = False) -> list:
    """Records of ``split`` with every image key in ``keys`` (and a report when asked), at most ``limit``."""
    splits = split.split("+")
    records = [r for r in manifest.records if r.split in splits and all(k in r.images for k in keys)
               and (r.report or not report)]
    if not records:
        raise InputError(f"the manifest has no {split} case with {', '.join(keys) or 'a report'}")
    return records[:limit]


def _mean_slice(cache: Cache, key: str, source: str | None = None) -> np.ndarray:
    stream = cache.stream("train", key)
    keep = np.array([source is None or cache.index["cases"][c]["source"] == source for c in stream["case"]])
    if not keep.any():
        raise InputError(f"the cache has no training {key} images to average")
    return stream["images"][keep].mean(axis=0)


def _flat(volume: Volume, mean_slice: np.ndarray, target: str, sources: list[Volume]) -> Volume:
    """The mean training slice on every kept slice of ``volume``'s grid, in the target's units."""
    stack = cut(volume, mean_slice.shape[0])
    mapping, background = output_mapping(target, sources, stack)
    data = uncut(stack, np.repeat(mean_slice[None], len(stack.kept), 0), mapping, background)
    return volume.with_data(data, modality="CT" if target == "ct" else "MR", units="HU" if target == "ct" else "a.u.")


def middle_slice(volume: Volume, resolution: int = 64) -> np.ndarray:
    """The middle foreground slice of a volume (a film: itself) as the model sees it, [R, R] in [-1, 1]."""
    stack = cut(volume, resolution)
    return stack.images[len(stack.kept) // 2]


def reformats(volume: Volume, resolution: int = 64) -> dict[str, np.ndarray]:
    """The middle sagittal and coronal images of a volume in [-1, 1] (its own intensity map), superior up, with
    square pixels (the slice thickness stretched), padded square at ``resolution``: the views a radiologist reads
    a volume in besides the axial slices."""
    data = intensity_map(volume.data, volume.modality).forward(canonical(volume))  # [x, y, z]
    ornt = nib.orientations.io_orientation(volume.affine)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = volume.spacing
    views = {}
    for plane, axis in (("sagittal", 0), ("coronal", 1)):
        image = np.take(data, data.shape[axis] // 2, axis=axis).T[::-1]  # [z, in-plane], superior first
        pixel = min(spacing[2], spacing[1 - axis])
        size = (max(1, round(image.shape[0] * spacing[2] / pixel)), max(1, round(image.shape[1] * spacing[1 - axis]
                                                                                 / pixel)))
        square = F.interpolate(torch.from_numpy(image.copy())[None, None], size=size, mode="bilinear",
                               align_corners=False)[0, 0].numpy()
        views[plane] = square_resize(square, resolution, -1.0)
    return views


def _regressed(net, sources: list[Volume], target: str) -> Volume:
    """The supervised baseline's output on the first source's grid (its kept slices; the rest background)."""
    resolution = net.config.sample_size
    stacks = [cut(v, resolution) for v in sources]
    kept = stacks[0].kept
    channels = np.stack([s.images[np.isin(s.kept, kept)] for s in stacks], axis=1)  # [S, C, R, R]
    if channels.shape[0] != len(kept):
        raise InputError("the source contrasts do not share their foreground slices")
    mapping, background = output_mapping(target, sources, stacks[0])
    data = uncut(stacks[0], regress(net, channels), mapping, background)
    return sources[0].with_data(data, modality="CT" if target == "ct" else "MR",
                                units="HU" if target == "ct" else "a.u.")


def image_scores(made: Volume, truth: Volume) -> dict[str, float]:
    scores = volume_psnr_ssim(made, truth)
    if truth.modality == "CT":
        scores["mae_hu"] = float(np.abs(made.data - truth.data).mean())
    return scores if truth.is_2d else scores | plane_scores(made, truth)


def uncertainty_scores(made: Volume, deviation: Volume, truth: Volume) -> dict[str, float]:
    """How well the samples' standard deviation ranks the mean's absolute error over the truth's foreground."""
    inside = intensity_map(truth.data, truth.modality).forward(truth.data) > FOREGROUND
    scores = calibration(deviation.data[inside], made.data[inside] - truth.data[inside])
    return {"uncertainty_spearman": scores["spearman"], "uncertainty_ause": scores["ause"]}


def uncertainty_slice(deviation: Volume, made: Volume, resolution: int = 64) -> np.ndarray:
    """The uncertainty map at ``made``'s middle foreground slice (as :func:`middle_slice` shows it), in [-1, 1]:
    no spread black, the map's 99.5th percentile white."""
    stack = cut(made, resolution)
    k = stack.kept[len(stack.kept) // 2]
    top = float(np.percentile(deviation.data, 99.5)) or 1.0
    data = deviation.data if deviation.is_2d else canonical(deviation)
    return square_resize(np.clip(data[:, :, k] / top, 0, 1).T * 2 - 1, resolution, -1.0)


def _mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the rows that have it (a volume too thin for a reformat's SSIM has none)."""
    names = dict.fromkeys(name for row in rows for name in row)
    return {name: float(np.mean([row[name] for row in rows if name in row])) for name in names}


def _slices(volume: Volume, resolution: int) -> np.ndarray:
    return cut(volume, resolution).images


def domain_features(model: MedM2G, modality: str, slices: list[np.ndarray]) -> np.ndarray:
    """Slices [N, R, R] in [-1, 1] in the space of the model's aligned ``modality`` encoder (a network trained on
    that modality): the features of the domain Frechet distance."""
    images = torch.from_numpy(np.concatenate(slices)).float()
    return np.concatenate([image_guide(model, modality, images[i:i + 64]).prompt.cpu().numpy()
                           for i in range(0, len(images), 64)])


def _translation(
    task: str, model: MedM2G, manifest: Manifest, cache: Cache, options: EvalOptions, source_keys: tuple[str, ...],
    target_key: str, progress: Callable[[int, int], None] | None,
) -> TaskResult:
    target = "ct" if target_key == "ct" else "mri"
    contrast = None if target == "ct" else options.target
    records = held_out(manifest, options.split, (*source_keys, target_key), options.cases)
    mean_slice = _mean_slice(cache, target_key, "phantom-brain" if target == "ct" else None)
    result = TaskResult(task, len(records))
    net = train_regression(cache, source_keys, target_key, RegressionConfig(steps=options.baseline_steps))
    baselines: dict[str, dict[str, dict[str, float]]] = {MEAN_SLICE: {}, SUPERVISED: {}}
    slices: dict[str, list[np.ndarray]] = {"truth": [], MEAN_SLICE: [], SUPERVISED: []}
    for seed in range(options.seeds):
        per_seed, made_slices = [], []
        for number, record in enumerate(records):
            sources = [read_volume(manifest.image_path(record, k)) for k in source_keys]
            truth = read_volume(manifest.image_path(record, target_key))
            made, deviation = translate_samples(model, sources, TranslateOptions(
                target, contrast, options.sampling, seed, samples=options.samples, slice_noise=options.slice_noise))
            scores = image_scores(made, truth) | (uncertainty_scores(made, deviation, truth) if options.samples > 1
                                                  else {})
            per_seed.append(scores)
            made_slices.append(_slices(made, cache.resolution))
            if seed == 0:
                result.add_case(MODEL, scores)
                slices["truth"].append(_slices(truth, cache.resolution))
                made_by = {MEAN_SLICE: _flat(sources[0], mean_slice, target, sources),
                           SUPERVISED: _regressed(net, sources, target)}
                for method, volume in made_by.items():
                    baselines[method][record.id] = image_scores(volume, truth)
                    slices[method].append(_slices(volume, cache.resolution))
                    result.add_case(method, baselines[method][record.id])
                if number < SAMPLES:
                    shown = {"input": middle_slice(sources[0]), "output": middle_slice(made),
                             "truth": middle_slice(truth)}
                    if options.samples > 1:
                        shown["uncertainty"] = uncertainty_slice(deviation, made)
                    result.samples.append(Sample(record.id, shown))
                if number == 0 and not truth.is_2d:
                    views = {name: reformats(volume) for name, volume in (
                        ("input", sources[0]), ("output", made), ("truth", truth),
                        ("UNet", made_by[SUPERVISED]))}
                    result.samples += [Sample(f"{record.id} {plane}", {name: v[plane] for name, v in views.items()})
                                       for plane in ("sagittal", "coronal")]
            if progress:
                progress(seed * len(records) + number + 1, options.seeds * len(records))
        if seed == 0:
            real = domain_features(model, target, slices["truth"])
            domain = {m: fid(domain_features(model, target, slices[m]), real) for m in baselines}
        made_domain = fid(domain_features(model, target, made_slices), real)
        result.add(MODEL, _mean_scores(per_seed) | {"fd_domain": made_domain})
        for method, values in baselines.items():  # deterministic once trained: the same value every seed
            result.add(method, _mean_scores(list(values.values())) | {"fd_domain": domain[method]})
    result.notes.append(f"axial/sagittal/coronal psnr and ssim: the mean over the images of that plane with "
                        f"foreground; through_plane_error: mean |z-gradient error| between neighbouring axial "
                        f"slices in {'HU' if target == 'ct' else 'the truth volume units'}")
    result.notes.append(f"fd_domain: Frechet distance of all foreground slices to the real ones in the model's "
                        f"aligned {target.upper()} encoder space (a network trained on {target.upper()})")
    return result


def mri_to_ct(model: MedM2G, manifest: Manifest, cache: Cache, options: EvalOptions,
              progress: Callable[[int, int], None] | None = None) -> TaskResult:
    return _translation("mri-to-ct", model, manifest, cache, options, ("mr_t1",), "ct", progress)


def mri_synthesis(model: MedM2G, manifest: Manifest, cache: Cache, options: EvalOptions,
                  progress: Callable[[int, int], None] | None = None) -> TaskResult:
    sources = tuple(f"mr_{c.lower()}" for c in options.sources)
    result = _translation("mri-synthesis", model, manifest, cache, options, sources, f"mr_{options.target.lower()}",
                          progress)
    result.notes.append(f"{' + '.join(options.sources)} -> {options.target}")
    return result


def most_common_report(cache: Cache) -> str:
    train = [c["report"] for c in cache.index["cases"] if c["split"] == "train" and c.get("report")]
    if not train:
        raise InputError("the cache has no training report")
    patterns = Counter(json.dumps(binary_labels(r), sort_keys=True) for r in train)
    pattern = patterns.most_common(1)[0][0]
    return Counter(r for r in train if json.dumps(binary_labels(r), sort_keys=True) == pattern).most_common(1)[0][0]


def text_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """pycocoevalcap's BLEU-1..4 and ROUGE-L (CIDEr, METEOR when available) and the findings' F1."""
    findings = finding_scores(hypotheses, references)
    return coco_scores(hypotheses, references) | {"f1_micro": findings["f1_micro"], "f1_macro": findings["f1_macro"]}


def consistency_scores(reports: list[str], anatomies: list[str]) -> dict[str, float]:
    """The share of reports that affirm and negate one finding, and the share that state a finding of the other
    anatomy (``anatomies``: each report's case). Finding F1 barely sees either, yet a report that says "no
    pneumothorax ... right pneumothorax" or finds an effusion on a skull film cannot be trusted at all."""
    foreign = [bool(foreign_findings(text, anatomy)) for text, anatomy in zip(reports, anatomies, strict=True)]
    return {"contradiction_rate": float(np.mean([bool(contradictions(text)) for text in reports])),
            "foreign_finding_rate": float(np.mean(foreign))}


def case_anatomy(record: CaseRecord) -> str:
    """The anatomy of a case with an X-ray: a phantom case names it in its source ("phantom-brain" has a skull
    film); the X-ray datasets (MIMIC-CXR, IU X-ray) are chest films."""
    return "brain" if record.source == "phantom-brain" else "chest"


def report(model: MedM2G, manifest: Manifest, cache: Cache, options: EvalOptions,
           progress: Callable[[int, int], None] | None = None) -> TaskResult:
    records = held_out(manifest, options.split, ("xray",), options.cases, report=True)
    truth, anatomies = [r.report for r in records], [case_anatomy(r) for r in records]
    result = TaskResult("report", len(records))
    constant = [most_common_report(cache)] * len(records)
    films = [read_volume(manifest.image_path(r, "xray"), modality="XRAY") for r in records]
    training_reports = [c["report"] for c in cache.index["cases"] if c["split"] == "train" and c.get("report")]
    nearest = nearest_report(model, np.stack([middle_slice(f, cache.resolution) for f in films]), training_reports)
    for seed in range(options.seeds):
        made, first = [], []
        for number, film in enumerate(films):
            written = write_report(model, film, ReportOptions(options.sampling, seed))[0]
            made.append(written.text)
            first.append(written.first_draw)
            if progress:
                progress(seed * len(films) + number + 1, options.seeds * len(films))
        for method, reports in ((MODEL, made), (FIRST_DRAW, first), ("most common training report", constant),
                                (NEAREST, nearest)):
            result.add(method, text_scores(reports, truth) | consistency_scores(reports, anatomies))
        if seed == 0:
            for hypothesis, reference in zip(made, truth, strict=True):
                result.add_case(MODEL, {"rouge_l": rouge_l([hypothesis], [reference])})
            result.notes += [f"{records[k].id}: {made[k]}" for k in range(min(SAMPLES, len(made)))]
            result.samples += [Sample(records[k].id, {"input": middle_slice(films[k])}) for k in range(min(SAMPLES,
                                                                                                       len(films)))]
    return result


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN without both classes."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    if not len(positive) or not len(negative):
        return float("nan")
    return float((positive[:, None] > negative[None]).mean() + 0.5 * (positive[:, None] == negative[None]).mean())


def _pixels(images: np.ndarray) -> torch.Tensor:
    small = F.interpolate(torch.from_numpy(images).float()[:, None], size=(CLASSIFIER_SIDE,) * 2, mode="area")
    return small.flatten(1)


def effusion_classifier(cache: Cache) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic-regression pleural effusion scorer trained on the real training chest films of ``cache``."""
    stream = cache.stream("train", "xray")
    cases = [cache.index["cases"][c] for c in stream["case"]]
    keep = np.array(["pleural_effusion" in c["labels"] for c in cases])
    x = _pixels(stream["images"][keep])
    y = torch.tensor([c["labels"]["pleural_effusion"] for c, k in zip(cases, keep, strict=True) if k]).float()
    if not 0 < y.mean() < 1:
        raise InputError("training films need both effusion and no effusion to train the judge")
    mean, std = x.mean(0), x.std(0) + 1e-6
    classifier = torch.nn.Linear(x.shape[1], 1)
    optimiser = torch.optim.LBFGS(classifier.parameters(), max_iter=200)
    weight = (1 - y.mean()) / y.mean()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = classifier((x - mean) / std)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=weight)
        loss = loss + 1e-2 * classifier.weight.square().sum()  # ridge: 1024 pixels, a few hundred films
        loss.backward()
        return loss

    optimiser.step(closure)

    def score(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return classifier((_pixels(images) - mean) / std)[:, 0].numpy()

    return score


def _encoder_features(model: MedM2G, images: np.ndarray) -> np.ndarray:
    return image_guide(model, "xray", torch.from_numpy(images).float()).prompt.cpu().numpy()


def films_from_reports(model: MedM2G, reports: list[str], sampling: SamplingConfig, seeds: list[int],
                       on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
    """One X-ray [N, R, R] per report (row i with seed ``seeds[i]``), sampled FILM_BATCH at a time;
    ``on_chunk(count)`` after each batch."""
    films = []
    for start in range(0, len(reports), FILM_BATCH):
        chunk = reports[start:start + FILM_BATCH]
        films.append(generate_images(model, chunk, GenerateOptions(("xray",), sampling=sampling),
                                     seeds[start:start + FILM_BATCH])["xray"])
        if on_chunk:
            on_chunk(len(chunk))
    return np.concatenate(films)


def _niqe(films: np.ndarray) -> float:
    """Mean NIQE of films [N, R, R] in [-1, 1], upsampled to NIQE_SIDE, in grey levels 0-255."""
    return float(np.mean([niqe(image * 255) for image in unit_range(films, NIQE_SIDE)]))


def text_to_image(model: MedM2G, manifest: Manifest, cache: Cache, options: EvalOptions,
                  progress: Callable[[int, int], None] | None = None) -> TaskResult:
    records = [r for r in held_out(manifest, options.split, ("xray",), None, report=True)
               if "pleural_effusion" in r.labels][:options.cases]
    if not records:
        raise InputError(f"no {options.split} chest case with an effusion label")
    score = effusion_classifier(cache)
    real = np.stack([middle_slice(read_volume(manifest.image_path(r, "xray"), modality="XRAY")) for r in records])
    labels = np.array([r.labels["pleural_effusion"] for r in records])
    real_features = _encoder_features(model, real)
    mean_film = np.repeat(_mean_slice(cache, "xray", "phantom-chest")[None], len(records), 0)
    result = TaskResult("text-to-image", len(records))
    real_niqe = _niqe(real)
    result.notes.append(f"niqe: films upsampled to {NIQE_SIDE} px (NIQE's 96-px patches); the real films' row is "
                        "the reference: the judge's AUC on them and their naturalness")
    reports = [r.report for r in records]
    for seed in range(options.seeds):
        done = seed * len(records)

        def tick(count: int) -> None:
            nonlocal done
            done += count
            if progress:
                progress(done, options.seeds * len(records))

        made = films_from_reports(model, reports, options.sampling, [seed * 100_003 + i for i in range(len(records))],
                                  tick)
        result.add(MODEL, {"effusion_auc": auc(score(made), labels),
                           "fd_aligned": fid(_encoder_features(model, made), real_features), "niqe": _niqe(made)})
        jitter = mean_film + np.random.default_rng(seed).normal(0, 1e-3, mean_film.shape).astype(np.float32)
        result.add("mean training film", {"effusion_auc": 0.5, "fd_aligned": fid(
            _encoder_features(model, jitter), real_features), "niqe": _niqe(jitter[:1])})
        result.add("real held-out films", {"effusion_auc": auc(score(real), labels), "niqe": real_niqe})
        if seed == 0:
            for value in score(made):
                result.add_case(MODEL, {"effusion_score": value})
            result.samples += [Sample(records[k].id, {"output": made[k], "truth": real[k]})
                               for k in range(min(SAMPLES, len(records)))]
    return result


def unit_range(films: np.ndarray, side: int | None = None) -> np.ndarray:
    """Films [N, R, R] in [-1, 1] -> [0, 1], optionally resized to ``side``."""
    images = torch.from_numpy((np.clip(films, -1, 1) + 1) / 2).float()
    if side is not None:
        images = F.interpolate(images[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    return images.numpy()


def _diversity(a: np.ndarray, b: np.ndarray) -> float:
    return ms_ssim(unit_range(a, DIVERSITY_SIDE), unit_range(b, DIVERSITY_SIDE), data_range=1.0)


def xray_generation(model: MedM2G, manifest: Manifest, cache: Cache, options: EvalOptions,
                    progress: Callable[[int, int], None] | None = None) -> TaskResult:
    records = [r for r in held_out(manifest, options.split, ("xray",), None, report=True)
               if r.source == "phantom-chest" or "pleural_effusion" in r.labels][:options.cases]
    if len(records) < 2:
        raise InputError("xray-generation needs at least two held-out chest cases")
    real = np.stack([middle_slice(read_volume(manifest.image_path(r, "xray"), modality="XRAY")) for r in records])
    real_features = inception_features(unit_range(real))
    training = cache.stream("train", "xray")
    chest = np.array([cache.index["cases"][c]["source"] == "phantom-chest" for c in training["case"]])
    reference = training["images"][chest][:len(records) * 2]
    result = TaskResult("xray-generation", len(records))
    for seed in range(options.seeds):
        pairs = []
        for k in range(2):
            seeds = [(seed * 2 + k) * 100_003 + i for i in range(len(records))]
            pairs.append(films_from_reports(model, [r.report for r in records], options.sampling, seeds))
            if progress:
                progress(seed * 2 + k + 1, options.seeds * 2)
        made = np.concatenate(pairs)
        result.add(MODEL, {"fid": fid(inception_features(unit_range(made)), real_features),
                           "ms_ssim": _diversity(pairs[0], pairs[1])})
        if seed == 0:
            half = len(reference) // 2
            result.add("real training films", {"fid": fid(inception_features(unit_range(reference)), real_features),
                                               "ms_ssim": _diversity(reference[:half], reference[half:2 * half])})
            mean_film = np.repeat(reference.mean(0, keepdims=True), len(made), 0)
            mean_film = mean_film + np.random.default_rng(0).normal(0, 1e-3, mean_film.shape).astype(np.float32)
            result.add("mean training film", {"fid": fid(inception_features(unit_range(mean_film)), real_features),
                                              "ms_ssim": 1.0})
            result.samples += [Sample(records[k].id, {"output a": pairs[0][k], "output b": pairs[1][k],
                                                      "truth": real[k]}) for k in range(min(SAMPLES, len(records)))]
            for a, b in zip(pairs[0], pairs[1], strict=True):
                result.add_case(MODEL, {"ms_ssim": _diversity(a[None], b[None])})
    result.notes.append("the reference rows do not depend on the seed: computed once")
    return result


RUNNERS = {"mri-to-ct": mri_to_ct, "mri-synthesis": mri_synthesis, "report": report, "text-to-image": text_to_image,
           "xray-generation": xray_generation}


def evaluate(task: str, model: MedM2G, manifest: Manifest, cache: Cache, options: EvalOptions,
             progress: Callable[[int, int], None] | None = None) -> TaskResult:
    """Run ``task`` (one of :data:`~medm2g_core.vocabulary.EVAL_TASKS`) and its baselines."""
    if task not in RUNNERS:
        raise InputError(f"unknown task {task!r}; tasks: {', '.join(EVAL_TASKS)}")
    return RUNNERS[task](model, manifest, cache, options, progress)
