"""The noise schedule every MedM2G denoiser shares: linear betas 0.00085..0.012 over 1000 steps (DESIGN.md).

Training draws timesteps from a :class:`~diffusers.DDPMScheduler`; sampling builds its scheduler (the paper:
DDIM, 50 steps, eta 1.0) from this one's config (:func:`medm2g_core.models.sampler.make_scheduler`).
"""

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from medm2g_core.errors import InputError


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

