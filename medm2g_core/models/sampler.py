"""The one reverse-diffusion loop: every stream denoised together with classifier-free guidance.

User commands, evaluation and the training stages' previews all sample through :func:`sample`, so a preview
shows what a user would get from the same weights. The paper samples with DDIM, 50 steps, eta 1.0 and guidance
scale 2.0 (:class:`SamplingConfig`'s defaults). A guidance scale or eta left unset (None) is the flow's own: a
stream may carry the scale its denoiser was tuned at (the report round's copies: ``REPORT_GUIDANCE``), else the
paper's 2.0 (``PAPER_GUIDANCE``), and the eta it samples best at (eps-trained MRI targets of the spatial path:
``SPATIAL_MRI_ETA``, 0), else the paper's 1.0 (``PAPER_ETA``). A stream may also carry its own training schedule
(the spatial path's zero terminal SNR). The diffusers schedulers in :data:`SCHEDULERS` are options, each built from
the model's training noise schedule (:mod:`medm2g_core.models.schedule`). Guidance takes
one batched forward per stream and step: the conditioned and the null context are stacked into a batch of 2B, and
``eps = eps_null + w (eps_cond - eps_null)``. With ``w = 1`` only the conditioned half runs.

A *stream* is one modality being generated: its denoiser, its latent shape, an optional MRI contrast label, and a
function that gives its context at a timestep from the current latents of all streams. Translation and report
generation have one stream with a fixed context (a clean guide); joint generation runs several streams whose
contexts read each other's current latents (paper 3.5: each denoiser attends to the others through V_B). A
training preview has one stream whose context is the denoiser's null context, sampled at guidance 1.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    SchedulerMixin,
)
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from medm2g_core.errors import InputError
from medm2g_core.vocabulary import PAPER_ETA, PAPER_GUIDANCE, SCHEDULER_NAMES

SCHEDULERS: dict[str, type[SchedulerMixin]] = dict(zip(
    SCHEDULER_NAMES, (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler), strict=True))
STOCHASTIC = ("ddim",)  # schedulers whose step takes DDIM's eta
ZERO_SNR_FLOOR = 1e-6  # DDIM's terminal alpha-bar on a zero terminal SNR schedule (make_scheduler)


@dataclass(frozen=True)
class SamplingConfig:
    steps: int = 50
    eta: float | None = None  # DDIM only: 0 deterministic, 1 as stochastic as DDPM (the paper's); None: the flow's
    guidance: float | None = None  # classifier-free guidance scale w; 1 = no guidance; None: the flow's default
    scheduler: str = "ddim"

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"unknown scheduler {self.scheduler!r}; use one of {', '.join(SCHEDULERS)}",
                             option="scheduler")
        if not 1 <= self.steps <= 1000:
            raise InputError(f"denoising steps must be within 1-1000; got {self.steps}", option="steps")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise InputError(f"eta (DDIM noise) must be within 0-1; got {self.eta}", option="eta")
        if self.guidance is not None and self.guidance < 0:
            raise InputError(f"guidance scale must be >= 0; got {self.guidance}", option="guidance")


def make_scheduler(train_scheduler: SchedulerMixin, name: str) -> SchedulerMixin:
    """A sampler of kind ``name`` on the model's training noise schedule (no clipping: latents are unbounded)."""
    if name not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")
    extra = {"set_alpha_to_one": False, "steps_offset": 1} if name == "ddim" else {}
    scheduler = SCHEDULERS[name].from_config(train_scheduler.config, **extra)
    if name == "ddim" and train_scheduler.config.get("rescale_betas_zero_snr"):
        # DDIM's step takes sqrt(1 - alpha-bar_prev - sigma^2), which at a terminal alpha-bar of exactly 0 and eta 1
        # is the root of a rounding error (about -1e-8: NaN). Floor it at SNR 1e-6, as diffusers' Euler floors it.
        scheduler.alphas_cumprod[-1] = max(float(scheduler.alphas_cumprod[-1]), ZERO_SNR_FLOOR)
    return scheduler


def tile_null(denoiser: nn.Module, batch: int, length: int) -> torch.Tensor:
    """The denoiser's null context [B, length, D], its T tokens repeated length/T times (same attention output)."""
    null = denoiser.null_context  # [T, D]
    if length % len(null):
        raise InputError(f"a context of {length} tokens cannot stand in for the {len(null)}-token null context; "
                         "make the context encoder's token count a multiple of the denoiser's context_tokens")
    return null.repeat(length // len(null), 1).unsqueeze(0).expand(batch, -1, -1)


ContextFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class Stream:
    """One modality being generated."""

    denoiser: nn.Module
    shape: tuple[int, ...]  # [B, C, h, w] or [B, D]
    context: ContextFn  # (t, current latents by stream name) -> [B, L, D]
    contrast: torch.Tensor | None = None  # [B] MRI contrast labels
    spatial: torch.Tensor | None = None  # [B, S, h, w] the spatial guide (zeros in the unconditional half)
    guidance: float | None = None  # the scale when the sampling config leaves it unset (None: PAPER_GUIDANCE)
    eta: float | None = None  # DDIM's eta when the sampling config leaves it unset (None: PAPER_ETA)
    schedule: SchedulerMixin | None = None  # the denoiser's own training schedule (None: the model's shared one)

    def scale(self, config: SamplingConfig) -> float:
        """The guidance scale this stream samples at under ``config``."""
        if config.guidance is not None:
            return config.guidance
        return PAPER_GUIDANCE if self.guidance is None else self.guidance

    def noise(self, config: SamplingConfig) -> float:
        """DDIM's eta for this stream under ``config``."""
        if config.eta is not None:
            return config.eta
        return PAPER_ETA if self.eta is None else self.eta

    def predict(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor, guidance: float) -> torch.Tensor:
        """The guided model output for ``latents`` [B, ...] at timestep ``t``: one forward of 2B (or B at w = 1)."""
        batch = latents.shape[0]
        kwargs = {} if self.contrast is None else {"contrast": self.contrast}
        if self.spatial is not None:
            kwargs["spatial"] = self.spatial
        if guidance == 1.0:
            return self.denoiser(latents, t.expand(batch), context=context, **kwargs)
        null = tile_null(self.denoiser, batch, context.shape[1]).to(context.dtype)
        if self.contrast is not None:
            kwargs["contrast"] = self.contrast.repeat(2)
        if self.spatial is not None:
            kwargs["spatial"] = torch.cat([self.spatial, torch.zeros_like(self.spatial)])
        both = self.denoiser(torch.cat([latents, latents]), t.expand(2 * batch), context=torch.cat([context, null]),
                             **kwargs)
        conditioned, unconditioned = both.chunk(2)
        return unconditioned + guidance * (conditioned - unconditioned)


@torch.inference_mode()
def sample(
    streams: dict[str, Stream], train_scheduler: SchedulerMixin, config: SamplingConfig,
    generator: torch.Generator | list[torch.Generator], device: torch.device,
    progress: Callable[[int, int], None] | None = None,
    start: dict[str, torch.Tensor] | None = None, strength: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Denoise every stream from pure noise together; the final latents by stream name (on ``device``).

    Each stream has its own scheduler instance (multistep solvers keep state), built from its own training
    schedule when it has one (the spatial path's zero terminal SNR) and from ``train_scheduler`` otherwise; streams
    sampled together must share their timesteps. Noise is drawn from ``generator``
    in stream order; with a list (one generator per batch row) every row's draws depend on its own generator
    only, so a row's result does not depend on what else is in the batch.

    ``start`` (clean latents for every stream) and ``strength`` in (0, 1] begin the reverse process part way
    (SDEdit, Meng et al. 2022, as diffusers' image-to-image pipelines): the start is noised to the timestep
    ``strength`` of the way up the schedule and only the last ``ceil(strength * steps)`` steps run, so the
    result keeps the start's layout and the model supplies what a sample of its modality looks like.
    """
    if not 0.0 < strength <= 1.0:
        raise InputError(f"strength must be within (0, 1]; got {strength}", option="strength")
    if start is not None and set(start) != set(streams):
        raise InputError(f"a start latent is needed for every stream ({', '.join(streams)})")
    schedulers = {name: make_scheduler(s.schedule or train_scheduler, config.scheduler) for name, s in streams.items()}
    for scheduler in schedulers.values():
        scheduler.set_timesteps(config.steps, device=device)
    timesteps = next(iter(schedulers.values())).timesteps
    if any(not torch.equal(s.timesteps, timesteps) for s in schedulers.values()):
        raise InputError("streams sampled together must share their timesteps (one has its own schedule)")
    noise = {name: randn_tensor(s.shape, generator=generator, device=device) for name, s in streams.items()}
    if start is None:
        latents = {name: noise[name] * schedulers[name].init_noise_sigma for name in streams}
    else:
        timesteps = timesteps[len(timesteps) - math.ceil(strength * len(timesteps)):]
        for scheduler in schedulers.values():
            if hasattr(scheduler, "set_begin_index"):  # index-stepping schedulers start at the first kept step
                scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
        latents = {name: schedulers[name].add_noise(start[name].to(device), noise[name], timesteps[:1])
                   for name in streams}
    for number, t in enumerate(timesteps):
        contexts = {name: s.context(t, latents) for name, s in streams.items()}  # all read the same latents
        for name, stream in streams.items():
            scheduler = schedulers[name]
            model_input = scheduler.scale_model_input(latents[name], t)
            output = stream.predict(model_input, t, contexts[name], stream.scale(config))
            step_kwargs = {"eta": stream.noise(config)} if config.scheduler in STOCHASTIC else {}
            latents[name] = scheduler.step(output, t, latents[name], generator=generator, **step_kwargs).prev_sample
        if progress:
            progress(number + 1, len(timesteps))
    return latents
