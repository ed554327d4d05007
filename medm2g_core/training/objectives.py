"""The alignment objectives of the prompt encoders (paper 3.2, 3.3) and the views they are trained on.

* :func:`info_nce` (Eq. 3): the symmetric contrastive loss of CLIP between paired embeddings of two modalities,
  L = -1/2N sum_i [log softmax_j(<a_i, b_j> / tau)_i + log softmax_j(<b_i, a_j> / tau)_i] on unit vectors.
  A case drawn twice in one batch is not its own negative: off-diagonal pairs with equal ``ids`` are masked.
* :func:`barlow_twins` (Eq. 4): visual invariance (VI) of an imaging encoder, the redundancy reduction of
  Barlow Twins (Zbontar et al. 2021) between two augmented views of the same images: the cross-correlation
  matrix C of the batch-normalised embeddings is pulled towards the identity.
* :func:`augment`: the anatomy-preserving views of VI, a small random affine and crop in one resampling, then
  gamma, contrast and brightness jitter and Gaussian noise. Every random number comes from the generator.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def info_nce(
    a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor, ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of paired embeddings a, b [N, E] (row i of each is a pair); ``ids`` [N] name the cases."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"info_nce needs two [N, E] batches of the same shape, not {tuple(a.shape)}, {tuple(b.shape)}")
    if len(a) < 2:
        raise ValueError("info_nce needs at least 2 pairs: a single pair has no negatives")
    if torch.as_tensor(temperature).le(0).any():
        raise ValueError(f"the temperature must be positive, not {temperature}")
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # [N, N]
    if ids is not None:
        same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
        logits = logits.masked_fill(same.to(logits.device), float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> torch.Tensor:
    """Redundancy reduction between two views' embeddings z1, z2 [N, D] (Eq. 4)."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"barlow_twins needs two [N, D] batches of the same shape, not {tuple(z1.shape)}, "
                         f"{tuple(z2.shape)}")
    if len(z1) < 2:
        raise ValueError("barlow_twins needs at least 2 samples to normalise along the batch")
    count, dim = z1.shape
    c = _batch_norm(z1, eps).T @ _batch_norm(z2, eps) / count  # [D, D]
    diagonal = c.diagonal()
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    # Dividing by D is the paper's Eq. 4 (its 1/D'); Barlow Twins itself does not. lambd is Barlow Twins' default.
    return (on + lambd * off) / dim


def _batch_norm(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero mean, unit variance along the batch: Barlow Twins' BatchNorm without affine parameters."""
    return (z - z.mean(0)) / (z.var(0, unbiased=False) + eps).sqrt()


@dataclass
class AugmentConfig:
    max_rotation_deg: float = 8.0
    max_scale: float = 0.1  # isotropic zoom factor in [1 - max_scale, 1 + max_scale]
    max_shift: float = 0.06  # fraction of the side, each axis
    min_crop: float = 0.85  # fraction of the side kept by a random crop (resized back)
    max_gamma: float = 0.25  # gamma in [1 - max_gamma, 1 + max_gamma] on intensities in [0, 1]
    max_contrast: float = 0.15  # contrast factor 1 +- max_contrast and brightness offset +- max_contrast
    noise_std: float = 0.03  # Gaussian noise, in units of the [-1, 1] range


def augment(images: torch.Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """A random view [B, 1, R, R] in [-1, 1] of each image [B, 1, R, R] in [-1, 1], its own parameters per sample.

    The random numbers are drawn on the generator's device (the CPU for a CPU generator) and then moved to the
    images' device, so a seed gives the same views anywhere.
    """
    batch = len(images)
    draw = torch.rand(batch, 10, generator=generator, device=generator.device).to(images.device)  # U(0, 1)
    noise = torch.randn(images.shape, generator=generator, device=generator.device).to(images.device)
    grid = F.affine_grid(_geometry(draw[:, :7], config).to(images.dtype), list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    return _intensity(views, draw[:, 7:], noise, config)


def _geometry(u: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """Sampling matrices theta [B, 2, 3] (output -> input coordinates in [-1, 1]) from uniforms u [B, 7].

    An input point p = s * (R(angle) x / zoom + shift) + centre: the rotated, zoomed and shifted output point x,
    mapped into a crop of side s (a fraction of the image) centred anywhere the crop stays inside the image.
    """
    angle = math.radians(config.max_rotation_deg) * (2 * u[:, 0] - 1)  # [B]
    zoom = 1 + config.max_scale * (2 * u[:, 1] - 1)
    shift = 2 * config.max_shift * (2 * u[:, 2:4] - 1)  # [B, 2], normalised coordinates span 2 per side
    side = config.min_crop + (1 - config.min_crop) * u[:, 4]
    centre = (1 - side)[:, None] * (2 * u[:, 5:7] - 1)  # [B, 2]
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)  # [B, 2, 2]
    matrix = (side / zoom)[:, None, None] * rotation
    offset = side[:, None] * shift + centre  # [B, 2]
    return torch.cat([matrix, offset[..., None]], dim=2)


def _intensity(views: torch.Tensor, u: torch.Tensor, noise: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """Gamma, contrast, brightness and noise on views [B, 1, R, R] from uniforms u [B, 3] and noise [B, 1, R, R]."""
    gamma = (1 + config.max_gamma * (2 * u[:, 0] - 1))[:, None, None, None]
    contrast = (1 + config.max_contrast * (2 * u[:, 1] - 1))[:, None, None, None]
    brightness = (config.max_contrast * (2 * u[:, 2] - 1))[:, None, None, None]
    unit = ((views + 1) / 2).clamp(0, 1) ** gamma  # [B, 1, R, R] in [0, 1]
    jittered = (2 * unit - 1) * contrast + brightness
    return (jittered + config.noise_std * noise).clamp(-1, 1).to(views.dtype)
