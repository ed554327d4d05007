"""Baselines that a user would otherwise reach for, trained or fitted on the training split of the same cache.

- :func:`train_regression`: a supervised image-to-image UNet (diffusers ``UNet2DModel``) from paired source
  slices (one channel per source contrast) to the target slice with an L1 loss: the usual answer to MRI -> CT
  (:func:`fit_regression` on any pairs: Table 8 adds synthetic ones).
- :func:`nearest_report`: report retrieval in the model's aligned space: the training report whose text
  embedding is nearest to the image's embedding (central alignment makes the two comparable).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.sampling.guides import image_guide


@dataclass(frozen=True)
class RegressionConfig:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    seed: int = 0


def paired_slices(cache: Cache, split: str, sources: tuple[str, ...], target: str) -> tuple[np.ndarray, np.ndarray]:
    """Source stacks [N, S, R, R] and target slices [N, R, R] of the same (case, slice) in ``split``."""
    streams = [cache.stream(split, key) for key in (*sources, target)]
    keys = [{(int(c), int(s)): n for n, (c, s) in enumerate(zip(st["case"], st["slice"], strict=True))}
            for st in streams]
    common = sorted(set.intersection(*(set(k) for k in keys)))
    if not common:
        raise InputError(f"the cache has no {split} slices with {', '.join((*sources, target))} together")
    x = np.stack([np.stack([streams[i]["images"][keys[i][pair]] for i in range(len(sources))]) for pair in common])
    y = np.stack([streams[-1]["images"][keys[-1][pair]] for pair in common])
    return x, y


def train_regression(cache: Cache, sources: tuple[str, ...], target: str, config: RegressionConfig) -> UNet2DModel:
    """A UNet regressing ``target`` slices from ``sources`` slices of the training split (L1, Adam)."""
    return fit_regression(*paired_slices(cache, "train", sources, target), config)


def fit_regression(x: np.ndarray, y: np.ndarray, config: RegressionConfig) -> UNet2DModel:
    """A UNet regressing target slices ``y`` [N, R, R] from source stacks ``x`` [N, S, R, R] (L1, Adam)."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    levels = len(config.block_out_channels)
    net = UNet2DModel(sample_size=x.shape[-1], in_channels=x.shape[1], out_channels=1,
                      block_out_channels=config.block_out_channels, layers_per_block=1,
                      down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                      norm_num_groups=8)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)[:, None]
    zero = torch.zeros(config.batch_size, dtype=torch.long)
    for _ in range(config.steps):
        rows = torch.randint(0, len(x), (config.batch_size,), generator=generator)
        loss = F.l1_loss(net(inputs[rows], zero).sample, targets[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


@torch.no_grad()
def regress(net: UNet2DModel, sources: np.ndarray) -> np.ndarray:
    """Source stacks [N, S, R, R] -> predicted slices [N, R, R] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float32))
    return net(x, torch.zeros(len(x), dtype=torch.long)).sample[:, 0].clamp(-1, 1).numpy()


@torch.no_grad()
def nearest_report(model: MedM2G, films: np.ndarray, reports: list[str], modality: str = "xray") -> list[str]:
    """For each film [N, R, R] the training report nearest in the aligned space (cosine)."""
    text_vae, encoder = model["text_vae"], model["prompt_encoder_text"]
    embeddings = []
    for start in range(0, len(reports), 64):
        tokens = text_vae.tokenize(reports[start:start + 64])
        embeddings.append(F.normalize(encoder(tokens["input_ids"], tokens["attention_mask"]).float(), dim=-1))
    bank = torch.cat(embeddings)  # [M, E]
    queries = image_guide(model, modality, torch.from_numpy(films).float()).prompt  # [N, E]
    return [reports[int(i)] for i in (queries @ bank.T).argmax(dim=1)]
