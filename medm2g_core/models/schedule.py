"""The noise schedule of the MedM2G denoisers: linear betas 0.00085..0.012 over 1000 steps (DESIGN.md).

Training draws timesteps from a :class:`~diffusers.DDPMScheduler`; sampling builds its scheduler (the paper:
DDIM, 50 steps, eta 1.0) from this one's config (:func:`medm2g_core.models.sampler.make_scheduler`).

The paper's schedule ends at alpha-bar 0.0047, not 0: the last training step still holds 7 % of the clean latent,
so a denoiser learns to read the image's mean brightness from pure noise, and sampling inherits whatever the start
noise's mean says (Lin et al., "Common diffusion noise schedules and sample steps are flawed", WACV 2024).
``rescale_betas_zero_snr`` rescales the betas so the last step is pure noise; its sampler must start at the last
step (``timestep_spacing = "trailing"``) and its denoiser must predict the velocity (eps is undefined at zero
SNR). The spatial path trains that way (:mod:`medm2g_core.training.spatial_stage`); the paper's denoisers keep
the paper's schedule.
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
    rescale_betas_zero_snr: bool = False  # the last step pure noise (needs v_prediction and "trailing")
    timestep_spacing: str = "leading"  # where sampling's steps sit: "leading" (SD's), "trailing" (ends at T)

    def __post_init__(self) -> None:
        if self.rescale_betas_zero_snr and (self.prediction_type == "epsilon" or self.timestep_spacing != "trailing"):
            raise InputError("a zero terminal SNR schedule needs prediction_type v_prediction (or sample) and "
                             "timestep_spacing trailing: eps is undefined at the last step, and sampling must "
                             "start there", option="recipe")


def _schedule_kwargs(config: DiffusionConfig) -> dict:
    # Latents are not bounded to [-1, 1], so no clipping of the predicted sample (as SD).
    return {
        "num_train_timesteps": config.num_train_timesteps, "beta_start": config.beta_start,
        "beta_end": config.beta_end, "beta_schedule": config.beta_schedule,
        "prediction_type": config.prediction_type, "clip_sample": False,
        "rescale_betas_zero_snr": config.rescale_betas_zero_snr, "timestep_spacing": config.timestep_spacing,
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

