"""Stage: guided reports and images, X-ray -> report, report -> X-ray and report -> CT (our extension;
docs/METHOD.md, "Guided reports and films").

The paper's text-X-ray and text-CT rounds train only the context encoders and the cross-attention of the
denoisers. Measured on the phantom world that is not enough: reports hardly depended on the film, report -> X-ray
films hardly on the report, and a chest report drew a brain CT about as often as a chest one (BENCHMARKS.md). This
round trains ``guided_text``, ``guided_xray`` and ``guided_ct``: copies of the text, X-ray and CT denoisers with a
*global path* (the guide's context tokens pooled into one vector added to the timestep embedding, so the guide
modulates every block; :func:`~medm2g_core.models.medm2g.with_global_path`), and ``guided_context_xray``
and ``guided_context_text``: copies of the context encoders V_xray and V_text that read the guides for them (the
report's copy feeds both image copies), clean (t_B = 0) as translation reads them. Directions: text guided by the
film, X-ray and CT guided by the report. Every weight of the copies trains; they start as the components they come
from (the global path's output is zero), or continue where a model already has them. The paper's components stay
unchanged, bit for bit, so Table 7 is what the multi-flow rounds made it. With probability ``cond_dropout`` a
sample's context is the null context (pooled as well): the unconditional half of classifier-free guidance.
"""

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.models.medm2g import MedM2G, export_component, with_global_path
from medm2g_core.models.schedule import DiffusionConfig
from medm2g_core.training.cross_stage import CrossRecipe, CrossStage
from medm2g_core.training.pairs import Store
from medm2g_core.training.stage import OptimConfig
from medm2g_core.vocabulary import REPORT_ROUND

TARGETS = ("text", "xray", "ct")
GUIDES = ("text", "xray")  # the modalities whose context encoders are copied and trained
DIRECTIONS = (("text", "xray"), ("xray", "text"), ("ct", "text"))  # (target, guide)


@dataclass
class ReportRecipe:
    cond_dropout: float = 0.1  # null context (cross-attention and global path): classifier-free guidance
    ct_slices: int = 8  # CT slices per case paired with its report (evenly spaced): a report describes the volume
    optim: OptimConfig = field(default_factory=OptimConfig)


def required_components() -> tuple[str, ...]:
    return ("text_vae", "image_vae", *(f"denoiser_{m}" for m in TARGETS), *(f"prompt_encoder_{m}" for m in TARGETS),
            *(f"context_encoder_{m}" for m in GUIDES))


def spaced(rows: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` evenly spaced entries of ``rows``, the first and last included."""
    if len(rows) <= count:
        return rows
    return rows[np.linspace(0, len(rows) - 1, count).round().astype(int)]


class ReportStage(CrossStage):
    """Trains ``guided_text`` (guided by ``guided_context_xray`` of the film), ``guided_xray`` and ``guided_ct`` (by
    ``guided_context_text`` of the report) and those two context encoders."""

    def __init__(self, cache: Cache, model: MedM2G, config: ReportRecipe, diffusion: DiffusionConfig,
                 seed: int = 0) -> None:
        missing = [name for name in required_components() if name not in model]
        if missing:
            raise InputError(f"the report round needs {', '.join(missing)} in the model it builds on; train the "
                             "text-xray and text-ct rounds first", option="model")
        cross = CrossRecipe(clean_guide_prob=1.0, cond_dropout=config.cond_dropout, optim=config.optim)
        super().__init__(cache, model, "text-xray", cross, diffusion, seed=seed)
        self.name = f"cross-{REPORT_ROUND}"
        self.sides = TARGETS
        self.prompt_encoders = {m: model[f"prompt_encoder_{m}"].eval().requires_grad_(False) for m in TARGETS}
        self.denoisers = {m: model[f"guided_{m}"] if f"guided_{m}" in model
                          else with_global_path(model[f"denoiser_{m}"]) for m in TARGETS}
        self.context = {m: model[f"guided_context_{m}"] if f"guided_context_{m}" in model
                        else copy.deepcopy(model[f"context_encoder_{m}"]) for m in GUIDES}
        for module in (*self.denoisers.values(), *self.context.values()):
            module.requires_grad_(True)
        self.ct_slices = config.ct_slices

    def raw_store(self, split: str, modality: str) -> Store | None:
        """As the paper's rounds, but at most ``ct_slices`` evenly spaced CT slices of each case (only those are
        encoded: a chest CT has hundreds)."""
        store = super().raw_store(split, modality)
        if store is None or modality != "ct":
            return store
        rows = np.concatenate([spaced(np.flatnonzero(store.case == case), self.ct_slices)
                               for case in np.unique(store.case)])
        index = torch.from_numpy(rows)
        return Store(store.modality, {name: value[index] for name, value in store.tensors.items()}, store.case[rows],
                     store.slice[rows])

    def kinds(self) -> tuple[str, ...]:
        return ("text-xray", "text-ct")

    def pair_kind(self, target: str, guide: str) -> str:
        return "text-ct" if "ct" in (target, guide) else "text-xray"

    def modules(self) -> dict[str, nn.Module]:
        frozen = {name: module for name, module in super().modules().items()
                  if not name.startswith(("denoiser_", "context_encoder_"))}
        return {**frozen, **self.ema_modules()}

    def trainable(self) -> list[nn.Parameter]:
        """Every weight of the copies (F_emb of an inversion-mode encoder only initialised f_B: it stays)."""
        context = [p for encoder in self.context.values() for name, p in encoder.named_parameters()
                   if not (encoder.config.adaptation == "inversion" and name.startswith("f_emb."))]
        return [p for denoiser in self.denoisers.values() for p in denoiser.parameters()] + context

    def ema_modules(self) -> dict[str, nn.Module]:
        return {**{f"guided_{m}": d for m, d in self.denoisers.items()},
                **{f"guided_context_{m}": v for m, v in self.context.items()}}

    def directions(self) -> list[tuple[str, str]]:
        return list(DIRECTIONS)

    def export(self, folder: Path) -> None:
        for name, module in self.ema_modules().items():
            export_component(module, Path(folder) / name)
