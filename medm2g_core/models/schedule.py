"""The noise schedule every MedM2G denoiser shares: linear betas 0.00085..0.012 over 1000 steps (DESIGN.md).

Training draws timesteps from a :class:`~diffusers.DDPMScheduler`; sampling runs a
:class:`~diffusers.DDIMScheduler` (the paper: 50 steps, eta 1.0) built from the same betas.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from medm2g_core.errors import InputError

SAMPLERS = ("ddim", "ddpm")


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"  # the paper's; SD-1.5 itself uses "scaled_linear"
    prediction_type: str = "epsilon"  # Eq. 2; "v_prediction" and "sample" also train


def _schedule_kwargs(config: DiffusionConfig) -> dict:
    # Latents are not bounded to [-1, 1], so no clipping of the predicted sample (as SD).
    return {
        "num_train_timesteps": config.num_train_timesteps, "beta_start": config.beta_start,
        "beta_end": config.beta_end, "beta_schedule": config.beta_schedule,
        "prediction_type": config.prediction_type, "clip_sample": False,
    }


def make_train_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """The forward process q(z_t | z_0) used by every training stage."""
    return DDPMScheduler(**_schedule_kwargs(config))


def make_sampler(config: DiffusionConfig, kind: str = "ddim") -> DDIMScheduler | DDPMScheduler:
    """The reverse process for sampling; DDIM's eta is passed at step time."""
    if kind == "ddim":
        return DDIMScheduler(**_schedule_kwargs(config), set_alpha_to_one=False, steps_offset=1)
    if kind == "ddpm":
        return make_train_scheduler(config)
    raise InputError(f"unknown sampler {kind!r}; use one of {', '.join(SAMPLERS)}")


def training_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the denoiser regresses: the noise (Eq. 2), the velocity, or the clean latent."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise InputError(f"unknown prediction_type {kind!r}; use epsilon, v_prediction or sample")


@torch.no_grad()
def sample_latents(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...],
    sampler: DDIMScheduler | DDPMScheduler, steps: int, generator: torch.Generator, device: torch.device,
    eta: float = 1.0,
) -> torch.Tensor:
    """Run the reverse process from pure noise; ``predict(z_t [B,...], t [B]) -> model output [B,...]``.

    ``eta`` is DDIM's (1.0 as the paper: as stochastic as DDPM); a DDPM sampler has none.
    """
    sampler.set_timesteps(steps, device=device)
    step_kwargs = {"eta": eta} if isinstance(sampler, DDIMScheduler) else {}
    latents = randn_tensor(shape, generator=generator, device=device) * sampler.init_noise_sigma
    for t in sampler.timesteps:
        output = predict(latents, t.expand(shape[0]))
        latents = sampler.step(output, t, latents, generator=generator, **step_kwargs).prev_sample
    return latents
