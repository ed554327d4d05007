"""Report: an X-ray (or a CT/MRI slice or volume) -> report text through the text LDM and the text VAE's decoder.

A volume guides with a few evenly spaced slices at once (their context tokens concatenated, as multi-source
guidance does); a radiograph is one slice. The text latent is sampled under that guide, decoded (greedy, or beam
search), labelled by the project's finding labeler, and always headed as AI-generated and unverified.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

import medm2g_core
from medm2g_core.data.labeler import label_report
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.guides import decode_reports, image_guide, image_resolution
from medm2g_core.sampling.routes import follow
from medm2g_core.sampling.slices import cut
from medm2g_core.sampling.translate import source_modality
from medm2g_core.vocabulary import SEED_STRIDE

HEADER = "AI-GENERATED REPORT - UNVERIFIED - NOT FOR DIAGNOSIS"


@dataclass(frozen=True)
class ReportOptions:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    n: int = 1  # reports per input (different seeds)
    slices: int = 3  # guiding slices of a volume
    num_beams: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError(f"the number of reports must be at least 1; got {self.n}", option="n")
        if self.slices < 1:
            raise InputError(f"guiding slices must be at least 1; got {self.slices}", option="slices")
        if self.num_beams < 1:
            raise InputError(f"beam width must be at least 1; got {self.num_beams}", option="beams")


@dataclass
class Report:
    text: str
    labels: dict[str, int | None]
    seed: int
    model: str
    source: dict = field(default_factory=dict)

    def as_text(self) -> str:
        """The report as a user reads it: the header first."""
        return f"{HEADER}\n(medm2g {medm2g_core.__version__}, model {self.model}, seed {self.seed})\n\n{self.text}\n"

    def as_json(self) -> dict:
        return {"header": HEADER, "synthetic": True, "text": self.text, "labels": self.labels, "model": self.model,
                "seed": self.seed, "medm2g": medm2g_core.__version__, "source": self.source}


def guiding_slices(volume: Volume, resolution: int, count: int) -> np.ndarray:
    """Up to ``count`` evenly spaced foreground slices [K, R, R] of ``volume`` (a radiograph: its one image)."""
    stack = cut(volume, resolution)
    picks = np.unique(np.linspace(0, len(stack.kept) - 1, min(count, len(stack.kept)) + 2).round().astype(int)[1:-1])
    return stack.images[picks if len(picks) else [len(stack.kept) // 2]]


def write_report(model: MedM2G, volume: Volume, options: ReportOptions) -> list[Report]:
    """``options.n`` reports of one image, seeds ``seed .. seed+n-1``."""
    source = source_modality(volume)
    slices = guiding_slices(volume, image_resolution(model), 1 if volume.is_2d else options.slices)
    device = model["image_vae"].device
    guides = [image_guide(model, source, torch.from_numpy(s[None]).to(device)).repeat(options.n) for s in slices]
    seeds = [options.seed + k for k in range(options.n)]
    generators = [torch.Generator().manual_seed(seed * SEED_STRIDE) for seed in seeds]
    latents = follow(model, [(source, g) for g in guides], "text", options.sampling, generators)
    texts = decode_reports(model, latents, options.num_beams)
    name = str(model.info.get("model_id", "medm2g"))
    described = {"modality": volume.modality, "contrast": volume.contrast, "shape": list(volume.shape),
                 "guiding_slices": len(slices)}
    return [Report(text, label_report(text), seed, name, described) for text, seed in zip(texts, seeds, strict=True)]
