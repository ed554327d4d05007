"""Translate: one imaging modality to another (MRI -> CT, CT -> MRI contrast, several MRI contrasts -> one,
CT -> X-ray), volumes slice-batched on the input grid.

The source is cut into the model's axial slices (:mod:`medm2g_core.sampling.slices`); slices without foreground
are not generated (they hold the target's background: air for CT, 0 for MRI). Each batch of slices follows
:func:`~medm2g_core.sampling.routes.route` to the target, and the outputs go back onto the input's grid with its
affine unchanged: CT in HU (through the model's CT window), MRI in arbitrary units (the first MRI source's scale,
or 0..1000). An X-ray is a projection, not a slice: a CT volume gives one radiograph that starts from a projection
of that CT (a noise-free DRR, :mod:`medm2g_core.phantoms.drr`) which the X-ray denoiser refines over the last
``drr_strength`` of its schedule (:func:`~medm2g_core.sampling.routes.refine`), so the film shows this patient;
an MRI volume, a single CT slice or a CT slab too thin to project (:func:`covers_film`) gives one guided by its
middle slice.
Every slice draws the same noise (``slice_noise='shared'``, the default): the initial latent and every DDIM step's
noise are one draw of the seed for all slices, so neighbouring slices differ only as their sources do and the
volume reads as a volume in sagittal and coronal views (through-plane error below the supervised UNet's; with a
draw per slice, ``'independent'``, it was twice the UNet's: docs/METHOD.md, "Slice consistency"). Either way
each slice has its own generator, so the result does not depend on the batch size.

Several samples (``samples`` N, seeds SEED .. SEED+N-1) are drawn together: each batch holds every sample of its
slices, so one network pass per denoising step serves all N (the slices per batch shrink to ``batch_size // N``).
The output is their voxel-wise mean, and :func:`translate_samples` also gives their voxel-wise standard deviation
on the output's grid in the output's units (HU for CT): where the model is unsure, its samples disagree. One sample
is the output of that seed alone, as before samples existed.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

import medm2g_core
from medm2g_core.data.intensity import DEFAULT_CT_CLIP_HU, IntensityMap
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume, canonical_contrast, canonical_target
from medm2g_core.models.image_denoiser import contrast_label
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.models.spatial_guide import slab_rows
from medm2g_core.phantoms.drr import drr
from medm2g_core.sampling.guides import decode_images, image_guide, image_resolution
from medm2g_core.sampling.routes import follow, refine
from medm2g_core.sampling.slices import SliceStack, cut, standardise, uncut
from medm2g_core.vocabulary import (
    DETECTOR_SIZE_MM,
    DRR_STRENGTH,
    MODALITY_OF_FILE,
    MRI_CONTRASTS,
    SEED_STRIDE,
    SKULL_DETECTOR_MM,
    SLICE_NOISE,
    TRANSLATE_TARGETS,
)

MR_OUTPUT_RANGE = (0.0, 1000.0)
DRR_PIXELS = 256  # the phantom world's film size: the DRR is made as the training films were, then resized
HEAD_PARTS = ("HEAD", "BRAIN", "SKULL")


@dataclass(frozen=True)
class TranslateOptions:
    target: str  # ct | mri | xray
    contrast: str | None = None  # MRI target contrast (T1, T1ce, T2, FLAIR, PD)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    batch_size: int = 32  # slices per batch (x2 with guidance)
    drr_strength: float = DRR_STRENGTH  # CT volume -> X-ray: share of the schedule the denoiser redraws the DRR
    samples: int = 1  # samples drawn (seeds seed .. seed + samples - 1); the output is their mean
    slice_noise: str = "shared"  # shared: one noise draw for all slices of a sample; independent: one per slice

    def __post_init__(self) -> None:  # any spelling of the names (CT, Mri, t1ce, flair) is taken
        object.__setattr__(self, "target", canonical_target(self.target))
        object.__setattr__(self, "contrast", canonical_contrast(self.contrast))
        if self.target not in TRANSLATE_TARGETS:
            raise InputError(f"translation target must be one of {', '.join(TRANSLATE_TARGETS)}; got {self.target!r}",
                             option="to")
        if self.contrast is not None and self.contrast not in MRI_CONTRASTS:
            raise InputError(f"MRI contrast must be one of {', '.join(MRI_CONTRASTS)}; got {self.contrast!r}",
                             option="contrast")
        if self.contrast is not None and self.target != "mri":
            raise InputError(f"a contrast applies to an MRI target only; the target is {self.target}",
                             option="contrast")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1; got {self.batch_size}", option="batch_size")
        if not 0.0 < self.drr_strength <= 1.0:
            raise InputError(f"DRR strength must be within (0, 1]; got {self.drr_strength}", option="drr_strength")
        if self.samples < 1:
            raise InputError(f"the number of samples must be at least 1; got {self.samples}", option="samples")
        if self.slice_noise not in SLICE_NOISE:
            raise InputError(f"slice noise must be one of {', '.join(SLICE_NOISE)}; got {self.slice_noise!r}",
                             option="slice_noise")

    @property
    def seeds(self) -> list[int]:
        """The seed of each sample."""
        return [self.seed + n for n in range(self.samples)]


def assume_modality(volume: Volume) -> Volume:
    """A volume whose file does not say its modality (NIfTI without medm2g's header, PNG) with the likely one:
    a single image is an X-ray, values below -200 are CT in HU, anything else MR. The guess is noted."""
    if volume.modality != "OT":
        return volume
    if volume.is_2d:
        modality, units = "XRAY", "a.u."
    elif float(volume.data.min()) < -200.0:
        modality, units = "CT", "HU"
    else:
        modality, units = "MR", "a.u."
    meta = replace(volume.meta, notes=[*volume.meta.notes, f"modality not stored in the file: taken as {modality}"])
    return replace(volume, modality=modality, units=units, meta=meta)


def source_modality(volume: Volume) -> str:
    if volume.modality not in MODALITY_OF_FILE:
        raise InputError(f"cannot translate a {volume.modality} image; give CT, MR or an X-ray, and name the modality "
                         "of a NIfTI/PNG input, whose file does not say", option="modality")
    return MODALITY_OF_FILE[volume.modality]


def check_sources(sources: list[Volume]) -> str:
    """The one modality of ``sources`` (several must be MRI contrasts on one grid); InputError otherwise."""
    if not sources:
        raise InputError("give at least one input image")
    kinds = {source_modality(v) for v in sources}
    if len(kinds) > 1:
        raise InputError(f"several inputs must be of one modality (MRI contrasts); got {', '.join(sorted(kinds))}")
    first = sources[0]
    for other in sources[1:]:
        if other.shape != first.shape or not np.allclose(other.affine, first.affine, atol=1e-4):
            raise InputError("several inputs must share one grid (shape and affine); resample them first")
    return kinds.pop()


def _generators(seed: int, indices: np.ndarray, shared: bool) -> list[torch.Generator]:
    """A generator per slice: all seeded alike when ``shared`` (one noise for the volume), else by slice index."""
    return [torch.Generator().manual_seed(seed * SEED_STRIDE + (0 if shared else int(i))) for i in indices]


def translate_slices(
    model: MedM2G, images: list[np.ndarray], source: str, options: TranslateOptions,
    generators: list[torch.Generator], progress: Callable[[int, int], None] | None = None,
    contrasts: list[str | None] | None = None, slabs: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Slices of one or several sources (each [B, R, R] in [-1, 1]; MRI ``contrasts`` per source, if known) ->
    target slices [B, R, R] in [-1, 1]. ``slabs`` (each [B, K, R, R]: the slices around each, 2.5D) feed a spatial
    path that reads neighbouring slices; without them a lone slice stands for its neighbours."""
    device = model["image_vae"].device
    contrasts = contrasts or [None] * len(images)
    slabs = slabs or [None] * len(images)
    guides = [(source, image_guide(model, source, torch.from_numpy(x).to(device), c,
                                   None if near is None else torch.from_numpy(near)))
              for x, c, near in zip(images, contrasts, slabs, strict=True)]
    label = contrast_label(options.contrast) if options.target == "mri" else None
    latents = follow(model, guides, options.target, options.sampling, generators, label, progress)
    return decode_images(model, latents).cpu().numpy()


def translate_volume(
    model: MedM2G, sources: list[Volume], options: TranslateOptions,
    progress: Callable[[int, int], None] | None = None,
) -> Volume:
    """The target image of ``sources`` (one volume, or several MRI contrasts on one grid), marked synthetic: the
    mean of ``options.samples`` samples. ``progress(done, total)`` counts denoising steps over all batches."""
    return translate_samples(model, sources, options, progress)[0]


def translate_samples(
    model: MedM2G, sources: list[Volume], options: TranslateOptions,
    progress: Callable[[int, int], None] | None = None, seeds: list[int] | None = None,
) -> tuple[Volume, Volume]:
    """The mean of the samples of ``seeds`` (default ``options.seeds``) and their per-voxel standard deviation, on
    the output's grid in its units (zero everywhere for one sample)."""
    seeds = options.seeds if seeds is None else list(seeds)
    if not seeds:
        raise InputError("give at least one seed to sample with", option="samples")
    source = check_sources(sources)
    contrasts = [v.contrast for v in sources]
    resolution = image_resolution(model)
    stacks = [cut(v, resolution) for v in sources]
    kept = stacks[0].kept
    if any(not np.array_equal(s.kept, kept) for s in stacks[1:]):
        stacks = [replace(s, images=s.images[np.isin(s.kept, kept)], kept=kept) for s in stacks]
    if options.target == "xray" and source == "ct" and covers_film(sources[0]):
        return spread(drr_radiographs(model, sources[0], options, seeds, progress))
    if options.target == "xray":
        middle = [len(kept) // 2]
        images = [np.concatenate([s.images[middle]] * len(seeds)) for s in stacks]
        generators = _seeded(seeds, kept[middle], options)
        out = translate_slices(model, images, source, options, generators, progress, contrasts)
        return spread([_radiograph(film, sources[0], model, options) for film in out])
    frame = standardise(model, source, stacks[0].images, contrasts[0])  # sources share a grid: one frame for all
    stacks = [replace(s, images=frame.forward(s.images)) for s in stacks]
    neighbours = spatial_neighbours(model, options.target, source)
    around = slab_rows(len(kept), neighbours) if neighbours else None  # [S, 2n+1] rows of each slice's slab
    outputs, per_batch = [], max(1, options.batch_size // len(seeds))
    starts = range(0, len(kept), per_batch)
    steps = options.sampling.steps
    for number, start in enumerate(starts):
        rows = slice(start, start + per_batch)
        slabs = None if around is None else [np.concatenate([s.images[around[rows]]] * len(seeds)) for s in stacks]
        made = translate_slices(model, [np.concatenate([s.images[rows]] * len(seeds)) for s in stacks], source, options,
                                _seeded(seeds, kept[rows], options), _steps(progress, number, len(starts), steps),
                                contrasts, slabs)
        outputs.append(made.reshape(len(seeds), -1, *made.shape[1:]))  # [N, slices, R, R]: sample-major rows
    images = np.concatenate(outputs, axis=1)
    return spread([_on_grid(frame.inverse(sample), stacks[0], sources, model, options) for sample in images])


def spatial_neighbours(model: MedM2G, target: str, source: str) -> int:
    """How many slices each side of a slice the spatial path from ``source`` to ``target`` reads (0: one slice, or
    no spatial path)."""
    denoiser = model.get(f"spatial_{target}")
    return denoiser.config.spatial_neighbours if denoiser is not None and source in ("ct", "mri") else 0


def _seeded(seeds: list[int], indices: np.ndarray, options: TranslateOptions) -> list[torch.Generator]:
    """The generators of every sample's slices, sample-major (the rows of a batch holding all samples)."""
    shared = options.slice_noise == "shared"
    return [generator for seed in seeds for generator in _generators(seed, indices, shared)]


def spread(samples: list[Volume]) -> tuple[Volume, Volume]:
    """The voxel-wise mean of samples on one grid (marked with their count) and their standard deviation, a
    synthetic volume of the same modality and units whose description says what it is."""
    data = np.stack([v.data for v in samples]).astype(np.float64)
    first = samples[0]
    count = {"samples": str(len(samples))} if len(samples) > 1 else {}
    mean = first.with_data(data.mean(axis=0).astype(np.float32), provenance=first.provenance | count)
    std = data.std(axis=0).astype(np.float32)
    top = float(np.percentile(std, 99.5)) or None  # shown black (0) to white (the 99.5th percentile)
    description = f"SYNTHETIC uncertainty: std of {len(samples)} samples, {first.units}"
    meta = replace(first.meta, series_description=description, notes=[*first.meta.notes, description],
                   window_center=top and top / 2, window_width=top)
    deviation = first.with_data(std, meta=meta, provenance=first.provenance | count
                                | {"map": f"uncertainty (std of {len(samples)} samples, {first.units})"})
    return mean, deviation


def detector_of(ct: Volume) -> float:
    """The detector side (mm) of a film of this CT: a skull film's for a head CT (by its body part), else a chest's."""
    return SKULL_DETECTOR_MM if (ct.meta.body_part or "").upper() in HEAD_PARTS else DETECTOR_SIZE_MM


def head_to_foot_mm(volume: Volume) -> float:
    """How far the grid reaches along the body's long axis (RAS z), in mm."""
    columns = volume.affine[:3, :3]
    return float(sum(abs(columns[2, axis]) * (size - 1) for axis, size in enumerate(volume.data.shape[:3])))


def covers_film(ct: Volume) -> bool:
    """Whether a CT reaches at least half of its film's height head to foot, so that its projection is a film: a
    chest CT, a whole-head CT; not a single slice or a thin slab (a 48 mm slab through a head is not a skull film).
    """
    return not ct.is_2d and head_to_foot_mm(ct) >= 0.5 * detector_of(ct)


def plain_drr(ct: Volume) -> Volume:
    """The noise-free PA projection of a CT volume on the detector of :func:`detector_of`."""
    detector = detector_of(ct)
    return drr(ct, pixels=DRR_PIXELS, photons=math.inf, detector_size_mm=detector,
               body_part="SKULL" if detector == SKULL_DETECTOR_MM else "CHEST")


def drr_radiographs(model: MedM2G, ct: Volume, options: TranslateOptions, seeds: list[int],
                    progress: Callable[[int, int], None] | None = None) -> list[Volume]:
    """Frontal radiographs of this CT, one per seed: its DRR, redrawn by the X-ray denoiser over the last
    ``options.drr_strength`` of the schedule (1.0 keeps nothing of the DRR but what the noise leaves)."""
    stack = cut(plain_drr(ct), image_resolution(model))
    guide = image_guide(model, "xray", torch.from_numpy(stack.images))
    latents = refine(model, "xray", guide.latent.repeat(len(seeds), *[1] * (guide.latent.ndim - 1)), options.sampling,
                     _seeded(seeds, np.zeros(1), options), options.drr_strength, progress)
    images = decode_images(model, latents).cpu().numpy()
    return [_radiograph(image, ct, model, options, detector_of(ct)) for image in images]


def _steps(progress: Callable[[int, int], None] | None, batch: int, batches: int, steps: int,
           ) -> Callable[[int, int], None] | None:
    """Denoising-step progress of one batch of slices as progress over every batch of the volume."""
    if progress is None:
        return None
    return lambda done, _: progress(batch * steps + done, batches * steps)


def output_mapping(target: str, sources: list[Volume], stack: SliceStack) -> tuple[IntensityMap, float]:
    """How model outputs of ``target`` map to units, and the background value."""
    if target == "ct":
        return IntensityMap(*DEFAULT_CT_CLIP_HU), DEFAULT_CT_CLIP_HU[0]
    if target == "mri" and sources[0].modality == "MR":
        return stack.mapping, 0.0
    return IntensityMap(*MR_OUTPUT_RANGE), 0.0


def provenance(model: MedM2G, sampling: SamplingConfig, seed: int) -> dict[str, str]:
    """What a synthetic image's header says made it."""
    return {"model": str(model.info.get("model_id", "medm2g")), "model_version": f"medm2g {medm2g_core.__version__}",
            "seed": str(seed), "sampler": f"{sampling.scheduler} {sampling.steps} steps eta "
            f"{'default' if sampling.eta is None else format(sampling.eta, 'g')} "
            f"guidance {'default' if sampling.guidance is None else format(sampling.guidance, 'g')}"}


def _meta(first: Volume, description: str, body_part: str | None) -> SourceMeta:
    meta = replace(first.meta, series_description=description, notes=[*first.meta.notes, description])
    return replace(meta, body_part=body_part or meta.body_part, window_center=None, window_width=None,
                   photometric_interpretation=None)


def _on_grid(images: np.ndarray, stack: SliceStack, sources: list[Volume], model: MedM2G,
             options: TranslateOptions) -> Volume:
    mapping, background = output_mapping(options.target, sources, stack)
    data = uncut(stack, images, mapping, background)
    first = sources[0]
    modality = "CT" if options.target == "ct" else "MR"
    names = "+".join(v.contrast or v.modality for v in sources)
    target_name = options.contrast or ("CT" if modality == "CT" else "MRI")
    meta = _meta(first, f"SYNTHETIC {target_name} from {names} by medm2g", first.meta.body_part)
    meta = replace(meta, window_center=40.0, window_width=400.0) if modality == "CT" else meta
    return Volume(data=data, affine=first.affine.copy(), modality=modality, units="HU" if modality == "CT" else "a.u.",
                  contrast=options.contrast if modality == "MR" else None, meta=meta, synthetic=True,
                  provenance=provenance(model, options.sampling, options.seed))


def radiograph_affine(pixel_mm: float) -> np.ndarray:
    """RAS+ affine of a frontal film: columns toward the patient's left, rows toward the feet (as the DRR's)."""
    return np.array([[-pixel_mm, 0, 0, 0], [0, 0, -1, 0], [0, -pixel_mm, 0, 0], [0, 0, 0, 1]], dtype=float)


def _radiograph(image: np.ndarray, first: Volume, model: MedM2G, options: TranslateOptions,
                detector_mm: float = DETECTOR_SIZE_MM) -> Volume:
    """A generated frontal radiograph [R, R] in [-1, 1] as a 2D Volume in [0, 1], columns toward the patient's left,
    rows toward the feet, on a nominal detector (the model's X-rays are detector-sized, not the input's grid)."""
    affine = radiograph_affine(detector_mm / image.shape[0])
    meta = _meta(first, f"SYNTHETIC X-ray from {first.modality} by medm2g", first.meta.body_part)
    meta = replace(meta, photometric_interpretation="MONOCHROME2")
    return Volume(data=((image.T + 1.0) / 2.0)[:, :, None], affine=affine, modality="XRAY", units="a.u.",
                  meta=meta, synthetic=True, provenance=provenance(model, options.sampling, options.seed))
