"""The downstream segmentation decoder: a UNet's upward half over a frozen :class:`FilmEncoder` (Table 8, SIIM).

As MGCA's SIIM protocol, the pre-trained encoder stays frozen and only the decoder learns. From the coarsest feature
map up, each step upsamples by two (bilinear), concatenates the next finer map and mixes them with a 3x3 conv; a
last upsampling returns to the film's side and a 1x1 conv gives one logit per pixel.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SegmentationDecoderConfig:
    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)  # the encoder's stages, finest first
    width: int = 32  # channels of every decoder step
    groups: int = 8


class SegmentationDecoder(nn.Module):
    def __init__(self, config: SegmentationDecoderConfig) -> None:
        super().__init__()
        self.config = config
        coarsest, *finer = reversed(config.encoder_channels)
        self.start = nn.Conv2d(coarsest, config.width, 1)
        self.steps = nn.ModuleList(nn.Sequential(
            nn.Conv2d(config.width + channels, config.width, 3, padding=1), nn.GroupNorm(config.groups, config.width),
            nn.GELU()) for channels in finer)
        self.out = nn.Conv2d(config.width, 1, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Encoder feature maps (finest first, the finest at R/2) -> mask logits [B, R, R]."""
        x = self.start(features[-1])  # [B, W, R/16, R/16]
        for step, skip in zip(self.steps, reversed(features[:-1]), strict=True):
            x = step(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear"), skip], dim=1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear")  # [B, W, R, R]
        return self.out(x)[:, 0]
