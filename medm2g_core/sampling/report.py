"""Report: an X-ray (or a CT/MRI slice or volume) -> report text through the text LDM and the text VAE's decoder.

A volume guides with a few evenly spaced slices at once (their context tokens concatenated, as multi-source
guidance does); a radiograph is one slice. The text latent is sampled under that guide, decoded (greedy, or beam
search), labelled by the project's finding labeler, and always headed as AI-generated and unverified.

A report that affirms and negates one finding, or (when the image says its body part) states a finding of the
other anatomy, is redrawn from a new seed, up to ``redraws`` times (the labeler's ``contradictions`` and
``foreign_findings`` are the check). The report says how many draws it took; one still inconsistent after the
last draw is returned with a warning line naming the problem, never silently.

Several samples (``samples`` N) per report say how sure the model is of each finding: report k is chosen among N
drawn reports (seeds ``seed + k*N .. seed + k*N + N-1``, each checked as above) as the one that agrees best with
their majority, and carries ``agreement``: for every finding that any of them states, the fraction of the N that
state it (1.0: all samples state it; 0.125: one in eight).
"""

from dataclasses import dataclass, field, replace

import numpy as np
import torch

import medm2g_core
from medm2g_core.data.labeler import contradictions, foreign_findings, label_report
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.guides import decode_reports, image_guide, image_resolution
from medm2g_core.sampling.routes import follow
from medm2g_core.sampling.slices import cut
from medm2g_core.sampling.translate import source_modality
from medm2g_core.vocabulary import REPORT_REDRAWS, SEED_STRIDE

HEADER = "AI-GENERATED REPORT - UNVERIFIED - NOT FOR DIAGNOSIS"


@dataclass(frozen=True)
class ReportOptions:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    n: int = 1  # reports per input (different seeds)
    slices: int = 3  # guiding slices of a volume
    num_beams: int = 1
    redraws: int = REPORT_REDRAWS  # new draws for a report that contradicts itself or names the other anatomy's
    samples: int = 1  # reports drawn for each report given: its per-finding agreement comes from them

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError(f"the number of reports must be at least 1; got {self.n}", option="n")
        if self.slices < 1:
            raise InputError(f"guiding slices must be at least 1; got {self.slices}", option="slices")
        if self.num_beams < 1:
            raise InputError(f"beam width must be at least 1; got {self.num_beams}", option="beams")
        if self.redraws < 0:
            raise InputError(f"redraws must be at least 0; got {self.redraws}", option="redraws")
        if self.samples < 1:
            raise InputError(f"the number of samples must be at least 1; got {self.samples}", option="samples")


@dataclass
class Report:
    text: str
    labels: dict[str, int | None]
    seed: int
    model: str
    source: dict = field(default_factory=dict)
    draws: int = 1  # draws it took to pass the consistency check (or all of them, when it did not)
    problems: list[str] = field(default_factory=list)  # what the check still finds, when no draw passed
    first_draw: str = ""  # the text of draw 1, what the model gives without the check (for evaluation)
    samples: int = 1  # reports drawn to choose this one (``agreement`` is over them)
    agreement: dict[str, float] = field(default_factory=dict)  # finding -> fraction of the samples stating it

    def as_text(self) -> str:
        """The report as a user reads it: the header first, a warning when the check still fails, and with several
        samples the share of them that state each finding."""
        warning = f"WARNING: {'; '.join(self.problems)}\n" if self.problems else ""
        agreement = ""
        if self.samples > 1:
            shares = ", ".join(f"{name} {round(share * self.samples)}/{self.samples}"
                               for name, share in self.agreement.items()) or "none stated"
            agreement = f"Findings stated by the {self.samples} samples: {shares}\n"
        return (f"{HEADER}\n(medm2g {medm2g_core.__version__}, model {self.model}, seed {self.seed}, "
                f"draws {self.draws})\n{warning}{agreement}\n{self.text}\n")

    def as_json(self) -> dict:
        return {"header": HEADER, "synthetic": True, "text": self.text, "labels": self.labels, "model": self.model,
                "seed": self.seed, "draws": self.draws, "problems": self.problems, "medm2g": medm2g_core.__version__,
                "source": self.source} | ({"samples": self.samples, "agreement": self.agreement}
                                          if self.samples > 1 else {})


def anatomy_of(volume: Volume) -> str | None:
    """The anatomy an image's body part names (chest, or brain for a head or skull), None when it says nothing."""
    part = (volume.meta.body_part or "").upper()
    if part in ("CHEST", "THORAX", "LUNG"):
        return "chest"
    return "brain" if part in ("HEAD", "BRAIN", "SKULL") else None


def problems_of(text: str, anatomy: str | None) -> list[str]:
    """What makes a report inconsistent: findings it affirms and negates, findings of the other anatomy."""
    found = [f"states and negates {label}" for label in contradictions(text)]
    if anatomy is not None:
        found += [f"names {label}, a finding of the other anatomy" for label in foreign_findings(text, anatomy)]
    return found


def guiding_slices(volume: Volume, resolution: int, count: int) -> np.ndarray:
    """Up to ``count`` evenly spaced foreground slices [K, R, R] of ``volume`` (a radiograph: its one image)."""
    stack = cut(volume, resolution)
    picks = np.unique(np.linspace(0, len(stack.kept) - 1, min(count, len(stack.kept)) + 2).round().astype(int)[1:-1])
    return stack.images[picks if len(picks) else [len(stack.kept) // 2]]


def write_report(model: MedM2G, volume: Volume, options: ReportOptions) -> list[Report]:
    """``options.n`` reports of one image, seeds ``seed .. seed+n-1``; inconsistent ones redrawn; with several
    ``samples`` each is the most typical of its samples, with their per-finding agreement (module doc)."""
    if options.samples == 1:
        return draw_reports(model, volume, options)
    drawn = draw_reports(model, volume, replace(options, n=options.n * options.samples, samples=1))
    return [consensus(drawn[k:k + options.samples]) for k in range(0, len(drawn), options.samples)]


def consensus(drawn: list[Report]) -> Report:
    """The report of ``drawn`` whose findings agree best with their majority (the first on ties), with the share
    of ``drawn`` that states each finding any of them states."""
    stated = [{name for name, value in r.labels.items() if value == 1} for r in drawn]
    agreement = {name: sum(name in s for s in stated) / len(drawn) for name in sorted(set().union(*stated))}
    majority = {name for name, share in agreement.items() if share > 0.5}
    best = min(range(len(drawn)), key=lambda k: len(stated[k] ^ majority))
    return replace(drawn[best], samples=len(drawn), agreement=agreement)


def draw_reports(model: MedM2G, volume: Volume, options: ReportOptions) -> list[Report]:
    """``options.n`` reports, one draw each, redrawn while inconsistent."""
    source = source_modality(volume)
    slices = guiding_slices(volume, image_resolution(model), 1 if volume.is_2d else options.slices)
    device = model["image_vae"].device
    guides = [image_guide(model, source, torch.from_numpy(s[None]).to(device)) for s in slices]
    seeds = [options.seed + k for k in range(options.n)]
    anatomy = anatomy_of(volume)
    texts: list[str] = [""] * options.n
    problems: list[list[str]] = [[] for _ in range(options.n)]
    draws, pending = [0] * options.n, list(range(options.n))
    for attempt in range(options.redraws + 1):
        # Draw ``attempt`` of report k: its own generator, seed * SEED_STRIDE + attempt (attempt 0 as before).
        generators = [torch.Generator().manual_seed(seeds[k] * SEED_STRIDE + attempt) for k in pending]
        rows = [(source, g.repeat(len(pending))) for g in guides]
        latents = follow(model, rows, "text", options.sampling, generators)
        for k, text in zip(pending, decode_reports(model, latents, options.num_beams), strict=True):
            texts[k], draws[k], problems[k] = text, attempt + 1, problems_of(text, anatomy)
        if attempt == 0:
            first = list(texts)
        pending = [k for k in pending if problems[k]]
        if not pending:
            break
    name = str(model.info.get("model_id", "medm2g"))
    described = {"modality": volume.modality, "contrast": volume.contrast, "shape": list(volume.shape),
                 "guiding_slices": len(slices), "anatomy": anatomy}
    return [Report(texts[k], label_report(texts[k]), seeds[k], name, described, draws[k], problems[k], first[k])
            for k in range(options.n)]
