"""Stage: guided reports and films, X-ray -> report and report -> X-ray (our extension; docs/METHOD.md, "Guided
reports").

The paper's text-X-ray round trains only the context encoders and the cross-attention of the two denoisers. Measured
on the phantom world that is not enough: reports hardly depend on the film and report -> X-ray films hardly on the
report (BENCHMARKS.md, "Guide effect"). This round trains ``guided_text`` and ``guided_xray``: copies of the text
and X-ray denoisers with a *global path* (the guide's context tokens pooled into one vector added to the timestep
embedding, so the guide modulates every block; :func:`~medm2g_core.models.text_denoiser.with_global_path`), and
``guided_context_xray`` and ``guided_context_text``: copies of the context encoders V_xray and V_text that read the
guides for them, clean (t_B = 0) as translation reads them. Every weight of the four copies trains; they start as
the components they come from (the global path's output is zero). The paper's components stay unchanged, bit for
bit, so joint generation and Table 7 are what the multi-flow rounds made them. With probability ``cond_dropout`` a
sample's context is the null context (pooled as well): the unconditional half of classifier-free guidance.
"""

import copy
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.models.image_denoiser import with_global_path as image_with_global_path
from medm2g_core.models.medm2g import MedM2G, export_component
from medm2g_core.models.schedule import DiffusionConfig
from medm2g_core.models.text_denoiser import with_global_path as text_with_global_path
from medm2g_core.training.cross_stage import CrossRecipe, CrossStage
from medm2g_core.training.stage import OptimConfig
from medm2g_core.vocabulary import REPORT_ROUND

SIDES = ("text", "xray")


@dataclass
class ReportRecipe:
    cond_dropout: float = 0.1  # null context (cross-attention and global path): classifier-free guidance
    optim: OptimConfig = field(default_factory=OptimConfig)


def required_components() -> tuple[str, ...]:
    return ("text_vae", "image_vae", *(f"{part}_{m}" for part in ("denoiser", "prompt_encoder", "context_encoder")
                                       for m in SIDES))


class ReportStage(CrossStage):
    """Trains ``guided_text`` (guided by ``guided_context_xray`` of the film), ``guided_xray`` (by
    ``guided_context_text`` of the report) and those two context encoders."""

    def __init__(self, cache: Cache, model: MedM2G, config: ReportRecipe, diffusion: DiffusionConfig,
                 seed: int = 0) -> None:
        missing = [name for name in required_components() if name not in model]
        if missing:
            raise InputError(f"the report round needs {', '.join(missing)} in the model it builds on; train the "
                             "text-xray round first", option="model")
        cross = CrossRecipe(clean_guide_prob=1.0, cond_dropout=config.cond_dropout, optim=config.optim)
        super().__init__(cache, model, "text-xray", cross, diffusion, seed=seed)
        self.name = f"cross-{REPORT_ROUND}"
        copies = {"text": text_with_global_path, "xray": image_with_global_path}
        self.denoisers = {m: model[f"guided_{m}"] if f"guided_{m}" in model else copies[m](model[f"denoiser_{m}"])
                          for m in SIDES}
        self.context = {m: model[f"guided_context_{m}"] if f"guided_context_{m}" in model
                        else copy.deepcopy(model[f"context_encoder_{m}"]) for m in SIDES}
        for module in (*self.denoisers.values(), *self.context.values()):
            module.requires_grad_(True)

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
        return [("text", "xray"), ("xray", "text")]

    def export(self, folder: Path) -> None:
        for name, module in self.ema_modules().items():
            export_component(module, Path(folder) / name)

