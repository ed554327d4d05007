"""Contexts for the denoisers' cross-attention: the null context, and the self guide of the single-modal LDMs.

Self guide: the paper starts every image LDM from SD-1.5, whose cross-attention was pretrained to read text
tokens, so the cross-guided rounds (3.4), which train only the cross-attention and the context encoders, start
from denoisers that already use their context. Our single-modal LDMs are trained from scratch; with only a
constant null context their cross-attention and everything after it learn to ignore it, and a guide trained
later through the cross-attention alone barely changes the loss (measured on the micro recipe: real vs shuffled
partner < 0.1% apart). As a stand-in for that pretraining, a single-modal LDM can read a *self guide*: a
:class:`~medm2g_core.models.context_encoder.ContextEncoder` over its own latent noised to an independent
timestep t' (the same [z_t, t] input a partner's V_B gives in the rounds), dropped to the null context with
probability ``cond_dropout``. The LDM stays unconditional when the guide is dropped (Eq. 2) and learns
cross-attention that reads latent tokens; the rounds initialise each new V_B from the self guide of B.
Switch: ``self_guide`` in the recipe's ``[image_ldm]`` / ``[text_ldm]`` (docs/METHOD.md).
"""

import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from medm2g_core.models.context_encoder import ContextEncoder
from medm2g_core.models.sampler import tile_null


def drop_to_null(
    context: torch.Tensor, denoiser: nn.Module, probability: float, generator: torch.Generator
) -> torch.Tensor:
    """Each sample's context [B, L, D] replaced by the null context with ``probability`` (classifier-free guidance)."""
    dropped = torch.rand(len(context), generator=generator, device=generator.device).to(context.device) < probability
    return torch.where(dropped[:, None, None], tile_null(denoiser, len(context), context.shape[1]), context)


def self_guided_context(
    guide: ContextEncoder, denoiser: nn.Module, scheduler: DDPMScheduler, latents: torch.Tensor,
    generator: torch.Generator, cond_dropout: float,
) -> torch.Tensor:
    """The self guide's context [B, L, D] of clean latents [B, ...], each noised to its own random t'."""
    size = (len(latents),)
    t_guide = torch.randint(0, scheduler.config.num_train_timesteps, size, generator=generator,
                            device=generator.device).to(latents.device)
    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    context = guide(scheduler.add_noise(latents, noise, t_guide), t_guide)
    return drop_to_null(context, denoiser, cond_dropout, generator)


def init_from_self_guide(encoder: ContextEncoder, self_guide: ContextEncoder) -> list[str]:
    """Copy the self guide's weights into a new context encoder where names and shapes agree; the names copied."""
    target = encoder.state_dict()
    shared = {k: v for k, v in self_guide.state_dict().items() if k in target and target[k].shape == v.shape}
    encoder.load_state_dict(shared, strict=False)
    return sorted(shared)
