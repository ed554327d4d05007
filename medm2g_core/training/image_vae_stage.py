"""Stage: the image autoencoder on the cached slices of one or more image keys (X-ray, CT and MRI together).

Loss: L1 reconstruction (mean over pixels) + ``kl_weight`` x KL(q(z|x) || N(0, I)) (summed over latent
elements, averaged over the batch), with z sampled from the posterior by the trainer's generator. SD's VAE also
trains with LPIPS and a patch GAN; neither is used here (LPIPS needs downloaded VGG weights, the GAN doubles
the cost), so reconstructions are blurrier than SD's at the same size. The export measures the latent scale
factor on training slices and stores it in the VAE's config, as SD's 0.18215.

Balance: a shared VAE sees one X-ray per chest case but dozens of CT and MRI slices per volume, so sampled
uniformly it hardly learns X-rays (phantom-tiny, 200 cases: 81 X-rays among ~10k slices gave a held-out X-ray
PSNR below the mean-image baseline). With ``balance`` on (the default), training draws each modality (X-ray,
CT, MRI) equally often (:class:`BalancedSlices`).

Also here because the image LDM stage reads the same data: :class:`CacheSlices` (the slices of some keys of
one split with their MRI contrast labels) and :func:`save_image_grid` (the PNG previews).
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.atomic import atomic_path
from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import key_modality
from medm2g_core.errors import InputError
from medm2g_core.models.image_denoiser import contrast_label
from medm2g_core.models.image_vae import ImageVAEConfig, adapt_pretrained_vae, build_image_vae, measure_scaling_factor
from medm2g_core.models.medm2g import export_component

PREVIEW_IMAGES = 8
SCALE_IMAGES = 512  # training slices the latent scale factor is measured on


class CacheSlices(Dataset):
    """The slices of ``keys`` in one split, concatenated: items {"image": [1,R,R] in [-1,1], "label": contrast}."""

    def __init__(self, cache: Cache, split: str, keys: tuple[str, ...]) -> None:
        present = [key for key in keys if f"{split}/{key}" in cache.index["shards"]]
        if not present:
            raise InputError(f"{cache.root}: the cache has no {', '.join(keys)} images in split {split}")
        streams = [cache.stream(split, key)["images"] for key in present]
        self.sizes = {key: len(stream) for key, stream in zip(present, streams, strict=True)}  # in order
        self.images = torch.from_numpy(np.concatenate(streams))[:, None]  # [N,1,R,R]
        self.labels = torch.cat([torch.full((len(s),), contrast_label(key_modality(k)[1]), dtype=torch.long)
                                 for k, s in zip(present, streams, strict=True)])  # [N]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


class BalancedSlices(Dataset):
    """The train slices of :class:`CacheSlices` re-indexed so that each modality group (X-ray, CT, MRI) fills an
    equal share: item ``i`` is slice ``(i // G) % n_g`` of group ``g = i % G``; the length is G x the largest group,
    so one epoch shows every slice at least once and the small groups several times."""

    def __init__(self, slices: CacheSlices) -> None:
        self.images, self.labels = slices.images, slices.labels
        offsets = np.cumsum([0, *slices.sizes.values()])
        groups: dict[str, list[np.ndarray]] = {}
        for key, start, stop in zip(slices.sizes, offsets[:-1], offsets[1:], strict=True):
            groups.setdefault(key_modality(key)[0], []).append(np.arange(start, stop))
        self.groups = [torch.from_numpy(np.concatenate(parts)) for parts in groups.values()]

    def __len__(self) -> int:
        return len(self.groups) * max(len(g) for g in self.groups)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        group = self.groups[index % len(self.groups)]
        n = int(group[(index // len(self.groups)) % len(group)])
        return {"image": self.images[n], "label": self.labels[n]}


def has_split(cache: Cache, split: str, keys: tuple[str, ...]) -> bool:
    return any(f"{split}/{key}" in cache.index["shards"] for key in keys)


def evenly_spaced(count: int, total: int) -> torch.Tensor:
    """``min(count, total)`` indices spread over ``range(total)``."""
    return torch.linspace(0, total - 1, min(count, total)).round().long()


def save_image_grid(images: torch.Tensor, path: Path, columns: int) -> Path:
    """Images [N,1,R,R] in [-1,1] as one greyscale PNG, ``columns`` per row, written atomically."""
    images = ((images[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()  # [N,R,R]
    rows = -(-len(images) // columns)
    padded = np.zeros((rows * columns, *images.shape[1:]), np.uint8)
    padded[:len(images)] = images
    side = images.shape[1]
    grid = padded.reshape(rows, columns, side, side).transpose(0, 2, 1, 3).reshape(rows * side, columns * side)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


@torch.no_grad()
def evaluate_reconstruction(
    vae: AutoencoderKL, images: torch.Tensor, mean_image: torch.Tensor | None = None, batch_size: int = 64
) -> dict[str, float]:
    """Mean PSNR (data range 2.0) of posterior-mean reconstructions of images [N,1,R,R], and of the baseline that
    predicts ``mean_image`` [1,R,R] (the training mean; default: the mean of ``images``, a stronger baseline)."""
    mean_image = images.mean(0) if mean_image is None else mean_image

    def psnr(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # [N]
        mse = ((estimate - target) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        return 10 * torch.log10(4.0 / mse)

    scores = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        posterior = vae.encode(batch.to(vae.device, vae.dtype)).latent_dist
        scores.append(psnr(vae.decode(posterior.mode()).sample.float().cpu().clamp(-1, 1), batch))
    baseline = psnr(mean_image.expand_as(images), images)
    return {"psnr": float(torch.cat(scores).mean()), "mean_baseline_psnr": float(baseline.mean())}


class ImageVAEStage:
    """Trains one AutoencoderKL on the slices of ``keys``; ``init`` adapts an SD-style RGB VAE (folder or Hub id)."""

    def __init__(
        self, cache: Cache, keys: tuple[str, ...], config: ImageVAEConfig, init: str | None = None, seed: int = 0,
        balance: bool = True,
    ) -> None:
        for key in keys:
            key_modality(key)
        self.name = "vae-" + ("image" if len(keys) > 1 else keys[0])
        self.cache, self.keys, self.config, self.balance = cache, tuple(keys), config, balance
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vae = adapt_pretrained_vae(init) if init else build_image_vae(config)
        self._datasets: dict[str, CacheSlices] = {}

    def modules(self) -> dict[str, nn.Module]:
        return {"image_vae": self.vae}

    def trainable(self) -> list[nn.Parameter]:
        return list(self.vae.parameters())

    def ema_modules(self) -> dict[str, nn.Module]:
        return {"image_vae": self.vae}

    def dataset(self, split: str) -> CacheSlices | BalancedSlices:
        """Training data is modality-balanced when ``balance`` is on; other splits are plain."""
        if split not in self._datasets:
            slices = CacheSlices(self.cache, split, self.keys)
            if self.balance and split == "train" and len({key_modality(k)[0] for k in slices.sizes}) > 1:
                slices = BalancedSlices(slices)
            self._datasets[split] = slices
        return self._datasets[split]

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch["image"].to(self.vae.device)  # [B,1,R,R]
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample(generator=generator)).sample
        l1 = F.l1_loss(reconstruction.float(), images.float())
        kl = posterior.kl().mean()
        return l1 + self.config.kl_weight * kl, {"l1": l1.item(), "kl": kl.item()}

    @torch.no_grad()
    def sample(self, folder: Path, step: int) -> None:
        """Originals (top row) over their reconstructions (bottom row), from val slices when there are any."""
        slices = self.dataset("val" if has_split(self.cache, "val", self.keys) else "train")
        images = slices.images[evenly_spaced(PREVIEW_IMAGES, len(slices.images))]  # a balanced set is longer
        posterior = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist
        reconstructions = self.vae.decode(posterior.mode()).sample.float().cpu()
        save_image_grid(torch.cat([images, reconstructions]), Path(folder) / f"{self.name}-{step:06d}.png",
                        columns=len(images))

    def export(self, folder: Path) -> None:
        """``folder/image_vae``: the AutoencoderKL with its measured ``scaling_factor``."""
        train = self.dataset("train").images
        factor = measure_scaling_factor(self.vae, train[evenly_spaced(SCALE_IMAGES, len(train))])
        self.vae.register_to_config(scaling_factor=factor)
        export_component(self.vae, Path(folder) / "image_vae")
