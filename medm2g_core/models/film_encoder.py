"""The downstream image encoder: a small CNN over films that contrastive pre-training shapes (Table 8's harness).

MGCA and ConVIRT pre-train a ResNet-50/ViT on MIMIC-CXR; at the phantom world's 64-pixel films and on two CPU cores
a four-stage CNN plays that part. Each stage halves the side (stride-2 conv, GroupNorm, GELU, then a 3x3 conv), so
a [B, 1, R, R] film gives feature maps at R/2, R/4, R/8 and R/16: the segmentation decoder reads all four, the
detection head one, and the classifier the globally pooled last one. :meth:`FilmEncoder.embed` projects the pooled
features into the space shared with the report encoder (not normalised: the loss normalises).
"""

import itertools
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FilmEncoderConfig:
    channels: tuple[int, ...] = (32, 64, 128, 256)  # per stage; each stage halves the side
    embed_dim: int = 128  # the shared image-report space
    groups: int = 8  # GroupNorm groups: batch-size independent, as heads train on a few films


def _stage(in_channels: int, out_channels: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.GroupNorm(groups, out_channels), nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(groups, out_channels), nn.GELU(),
    )


class FilmEncoder(nn.Module):
    def __init__(self, config: FilmEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.stages = nn.ModuleList(_stage(a, b, config.groups) for a, b in itertools.pairwise((1, *config.channels)))
        self.head = nn.Linear(config.channels[-1], config.embed_dim)

    def forward(self, films: torch.Tensor) -> list[torch.Tensor]:
        """Films [B, 1, R, R] in [-1, 1] -> feature maps [B, C_i, R / 2^(i+1), R / 2^(i+1)], finest first."""
        features, x = [], films
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    @staticmethod
    def pooled(features: list[torch.Tensor]) -> torch.Tensor:
        """The last feature map averaged over space: [B, C_last], what the classifier reads."""
        return features[-1].mean(dim=(2, 3))

    def embed(self, films: torch.Tensor) -> torch.Tensor:
        """Films [B, 1, R, R] -> [B, embed_dim] in the shared space."""
        return self.head(self.pooled(self(films)))
