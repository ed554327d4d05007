"""The image autoencoder: a one-channel diffusers ``AutoencoderKL`` shared by X-ray, CT and MRI slices.

The paper builds every image LDM on Stable Diffusion 1.5's VAE; here one VAE serves all imaging modalities
(train the VAE stage on a single key for a per-modality VAE). It is either trained from scratch
(:func:`build_image_vae`) or adapted from an SD-style RGB VAE (:func:`adapt_pretrained_vae`). As in SD, the
latent is scaled by ``config.scaling_factor`` (1 / std of the latent means, measured on training images the
way SD's 0.18215 was) before diffusion.
"""

import os
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL

from medm2g_core.errors import ModelError


@dataclass
class ImageVAEConfig:
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # one level per entry; latent = image / 2**(levels-1)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    sample_size: int = 64
    kl_weight: float = 1e-6  # training only: weight of the KL term next to the L1 reconstruction


def build_image_vae(config: ImageVAEConfig) -> AutoencoderKL:
    """A fresh one-channel AutoencoderKL (images [B,1,R,R] in [-1,1] -> latents [B,C,R/f,R/f])."""
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
    )


@torch.no_grad()
def latent_means(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Posterior means [N,C,h,w] (unscaled, on the CPU) of images [N,1,R,R], encoded in batches on the VAE's device."""
    chunks = [vae.encode(images[i:i + batch_size].to(vae.device, vae.dtype)).latent_dist.mean.float().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


def measure_scaling_factor(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """1 / std of the latent means of ``images`` [N,1,R,R]: the factor that gives diffusion unit-variance latents."""
    return float(1.0 / latent_means(vae, images).std())


def adapt_pretrained_vae(folder_or_hub_id: str | os.PathLike, subfolder: str | None = None) -> AutoencoderKL:
    """An SD-style RGB AutoencoderKL turned into a one-channel one; a one-channel VAE is returned as loaded.

    ``conv_in`` sums its weights over the RGB inputs, so a grey image gives exactly the latents the RGB VAE
    gives for that grey repeated in three channels; ``conv_out`` averages its RGB weights and biases, so the
    decoder outputs the mean of the RGB VAE's three output channels. Offline, pass a local folder.
    """
    try:
        rgb = AutoencoderKL.from_pretrained(folder_or_hub_id, subfolder=subfolder, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load an AutoencoderKL from {folder_or_hub_id}: {error}") from error
    if rgb.config.in_channels == 1 and rgb.config.out_channels == 1:
        return rgb
    if rgb.config.in_channels != 3 or rgb.config.out_channels != 3:
        raise ModelError(f"{folder_or_hub_id}: expected an RGB (3-channel) AutoencoderKL, "
                         f"got {rgb.config.in_channels} in / {rgb.config.out_channels} out channels")
    grey = AutoencoderKL.from_config({**rgb.config, "in_channels": 1, "out_channels": 1})
    state = rgb.state_dict()
    conv_in, conv_out = "encoder.conv_in.weight", "decoder.conv_out"
    state[conv_in] = state[conv_in].sum(dim=1, keepdim=True)  # [C,3,k,k] -> [C,1,k,k]
    state[f"{conv_out}.weight"] = state[f"{conv_out}.weight"].mean(dim=0, keepdim=True)  # [3,C,k,k] -> [1,C,k,k]
    state[f"{conv_out}.bias"] = state[f"{conv_out}.bias"].mean(dim=0, keepdim=True)  # [3] -> [1]
    grey.load_state_dict(state)
    return grey
