"""The downstream detection head: one box per grid cell over a frozen :class:`FilmEncoder` map (Table 8, RSNA).

MGCA fine-tunes YOLOv3 on RSNA with the encoder frozen; lesions in the phantom's 64-pixel films span a few pixels,
so a single-scale anchor-free head in the style of YOLO/CenterNet on the R/4 map does the job: each cell predicts
an objectness logit, the box centre within the cell (sigmoid) and the box's log width and height in pixels. The
cell that holds a box's centre is responsible for it (:func:`cell_targets`).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DetectionHeadConfig:
    in_channels: int = 64  # the encoder stage it reads (R/4 with the default encoder)
    width: int = 64


class DetectionHead(nn.Module):
    def __init__(self, config: DetectionHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Conv2d(config.in_channels, config.width, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(config.width, 5, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """A feature map [B, C, G, G] -> [B, 5, G, G]: objectness logit, centre x and y logits, log w, log h."""
        return self.net(features)


def cell_targets(boxes: list[torch.Tensor], grid: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (x0, y0, x1, y1 in pixels, [K_b, 4] per film) -> objectness [B, G, G] and regression targets
    [B, 4, G, G] (centre within the cell in (0, 1), log width, log height) at the responsible cells."""
    objectness = torch.zeros(len(boxes), grid, grid)
    regression = torch.zeros(len(boxes), 4, grid, grid)
    for b, film in enumerate(boxes):
        for x0, y0, x1, y1 in film.tolist():
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            i, j = min(int(cy), grid - 1), min(int(cx), grid - 1)
            objectness[b, i, j] = 1.0
            regression[b, :, i, j] = torch.tensor([min(max(cx - j, 0.01), 0.99), min(max(cy - i, 0.01), 0.99),
                                                   math.log(x1 - x0), math.log(y1 - y0)])
    return objectness, regression


def decode(output: torch.Tensor, stride: int, top: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Head output [B, 5, G, G] -> per film the ``top`` most confident boxes [top, 4] (pixels) and scores [top]."""
    batch, _, grid, _ = output.shape
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    cx = (cols + output[:, 1].sigmoid()) * stride  # [B, G, G]
    cy = (rows + output[:, 2].sigmoid()) * stride
    w, h = output[:, 3].exp(), output[:, 4].exp()
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).reshape(batch, -1, 4)
    scores = output[:, 0].sigmoid().reshape(batch, -1)
    best = scores.topk(min(top, grid * grid), dim=1).indices
    return [(boxes[b, best[b]], scores[b, best[b]]) for b in range(batch)]
