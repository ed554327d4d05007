"""Generate: report text -> X-ray, CT or MRI slices, one modality or several jointly; and reports from nothing.

One modality follows the trained route from text (:func:`~medm2g_core.sampling.routes.follow`; MRI goes through
CT). Joint generation (paper 3.5) denoises the requested modalities together: the text is a clean guide of
X-ray and CT, and the images guide each other through their context encoders at the current step's noise level
(V_B reads z_t^B with t_B = t): CT reads MRI's current latent besides the text, MRI reads CT's. The adaptation
tokens f_B of a modality still being generated come from the text's prompt embedding: central alignment put
paired inputs of every modality at one point of the shared space, so the text's embedding stands in for the
embedding of the image not yet drawn (docs/METHOD.md). With the report round's copies (``guided_xray``,
``guided_ct``), X-ray and CT are drawn by them from the report alone (what they were trained on) at their own
guidance scale, and MRI still reads CT's current latent: CT follows the report, MRI follows CT.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from medm2g_core.data.intensity import DEFAULT_CT_CLIP_HU, IntensityMap
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume, canonical_contrast, canonical_target
from medm2g_core.models.image_denoiser import contrast_label
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig, Stream, sample
from medm2g_core.sampling.guides import (
    decode_images,
    decode_reports,
    guide_context,
    require,
    text_guide,
)
from medm2g_core.sampling.routes import follow, hop_denoiser, latent_shape
from medm2g_core.sampling.translate import radiograph_affine
from medm2g_core.vocabulary import IMAGE_MODALITIES, MRI_CONTRASTS, REPORT_GUIDANCE, SEED_STRIDE

NOMINAL_FOV_MM = {"xray": 430.0, "ct": 256.0, "mri": 256.0}  # generated slices carry no patient geometry


@dataclass(frozen=True)
class GenerateOptions:
    modalities: tuple[str, ...] = ("xray",)
    contrast: str = "T1"  # MRI output contrast
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    joint: bool = True  # several modalities: denoise them together (False: each on its own from the text)

    def __post_init__(self) -> None:  # any spelling of the names (CT, MRI, X-ray, flair) is taken
        object.__setattr__(self, "modalities", tuple(canonical_target(m) for m in self.modalities))
        object.__setattr__(self, "contrast", canonical_contrast(self.contrast))
        unknown = [m for m in self.modalities if m not in IMAGE_MODALITIES]
        if unknown or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise InputError(f"modalities must be distinct values from {', '.join(IMAGE_MODALITIES)}; "
                             f"got {','.join(self.modalities)}", option="modality")
        if self.contrast not in MRI_CONTRASTS:
            raise InputError(f"MRI contrast must be one of {', '.join(MRI_CONTRASTS)}; got {self.contrast!r}",
                             option="contrast")


def case_generators(seeds: list[int], stream: int = 0) -> list[torch.Generator]:
    """One generator per sample: seed ``s`` draws the same noise whatever else is in the batch."""
    return [torch.Generator().manual_seed(s * SEED_STRIDE + stream) for s in seeds]


@torch.inference_mode()
def generate_images(
    model: MedM2G, reports: list[str], options: GenerateOptions, seeds: list[int],
) -> dict[str, np.ndarray]:
    """Slices [B, R, R] in [-1, 1] per modality, row b guided by ``reports[b]`` with seed ``seeds[b]``."""
    if len(reports) != len(seeds) or not reports:
        raise InputError("give one seed per report, and at least one report")
    require(model, "image_vae", "text_vae", *(f"denoiser_{m}" for m in options.modalities))
    guide = text_guide(model, reports)
    if len(options.modalities) == 1 or not options.joint:
        out = {}
        for number, modality in enumerate(options.modalities):
            latents = follow(model, [("text", guide)], modality, options.sampling, case_generators(seeds, number),
                             contrast_label(options.contrast) if modality == "mri" else None)
            out[modality] = decode_images(model, latents).cpu().numpy()
        return out
    return _joint(model, guide, options, seeds)


def _joint(model: MedM2G, guide, options: GenerateOptions, seeds: list[int]) -> dict[str, np.ndarray]:
    wanted = set(options.modalities)
    if "mri" in wanted and "ct" not in wanted:
        raise InputError("joint MRI generation needs CT with it (MRI is guided by CT); add ct to the modalities",
                         option="modality")
    device = model["image_vae"].device
    generators = case_generators(seeds)
    prompt = guide.prompt.to(device)
    # In the modalities' order, not the set's: each context draws its guide noise from the generators in turn.
    names = {m: hop_denoiser(model, "text", m) if m != "mri" else ("denoiser_mri", "") for m in options.modalities}
    texts = {encoder: guide_context(model, "text", guide.latent.to(device), prompt, 0, generators, encoder)
             for _, encoder in names.values() if encoder}

    def context_of(target: str):
        denoiser, encoder = names[target]
        guided = denoiser.startswith("guided_")  # the report round's copy reads the report alone
        partners = () if guided else {"ct": ("mri",), "mri": ("ct",), "xray": ()}[target]

        def context(t: torch.Tensor, latents: dict[str, torch.Tensor]) -> torch.Tensor:
            parts = [texts[encoder]] if encoder else []
            parts += [guide_context(model, m, latents[m], prompt, t) for m in partners if m in wanted]
            return torch.cat(parts, dim=1)

        return context

    batch = len(seeds)
    streams = {}
    for modality in options.modalities:
        contrast = (torch.full((batch,), contrast_label(options.contrast), dtype=torch.long, device=device)
                    if modality == "mri" else None)
        denoiser = names[modality][0]
        streams[modality] = Stream(model[denoiser], latent_shape(model, modality, batch), context_of(modality),
                                   contrast, guidance=REPORT_GUIDANCE if denoiser.startswith("guided_") else None)
    latents = sample(streams, model["scheduler"], options.sampling, generators, device)
    return {m: decode_images(model, z).cpu().numpy() for m, z in latents.items()}


@torch.inference_mode()
def generate_reports(model: MedM2G, seeds: list[int], sampling: SamplingConfig, num_beams: int = 1) -> list[str]:
    """Reports drawn from the text LDM alone (the null context: no guide), one per seed."""
    require(model, "text_vae", "denoiser_text", "scheduler")
    denoiser = model["denoiser_text"]
    null = denoiser.null(len(seeds))
    stream = Stream(denoiser, latent_shape(model, "text", len(seeds)), lambda t, latents: null)
    unguided = SamplingConfig(sampling.steps, sampling.eta, 1.0, sampling.scheduler)  # nothing to guide towards
    latents = sample({"text": stream}, model["scheduler"], unguided, case_generators(seeds, 7), denoiser.device)
    return decode_reports(model, latents["text"], num_beams)


def as_volume(image: np.ndarray, modality: str, contrast: str, provenance: dict[str, str], prompt: str) -> Volume:
    """A generated slice [R, R] in [-1, 1] as a Volume: CT in HU, MRI and X-ray in a.u. (X-ray 0..1), on a nominal
    grid (pixel = the modality's usual field of view / R)."""
    pixel = NOMINAL_FOV_MM[modality] / image.shape[0]
    data = image.T[:, :, None]  # model rows run along array axis 1
    description = f"SYNTHETIC {contrast if modality == 'mri' else modality.upper()} from text by medm2g"
    meta = SourceMeta(format="synthetic", series_description=description, notes=[f"prompt: {prompt[:200]}"])
    if modality == "xray":
        affine = radiograph_affine(pixel)
        meta.photometric_interpretation = "MONOCHROME2"
        return Volume((data + 1.0) / 2.0, affine, "XRAY", "a.u.", meta=meta, synthetic=True, provenance=provenance)
    affine = np.diag([pixel, pixel, pixel, 1.0])  # the canonical (RAS) axial slice the model was trained on
    if modality == "ct":
        meta.window_center, meta.window_width = 40.0, 400.0
        hu = IntensityMap(*DEFAULT_CT_CLIP_HU).inverse(data)
        return Volume(hu, affine, "CT", "HU", meta=meta, synthetic=True, provenance=provenance)
    return Volume((data + 1.0) * 500.0, affine, "MR", "a.u.", contrast=contrast, meta=meta, synthetic=True,
                  provenance=provenance)
