"""Stage: a single-modal image LDM (paper 3.1, Eq. 2) for X-ray, CT or MRI on the frozen image VAE's latents.

Latents: the VAE is frozen, so each slice's latent (posterior mean x ``scaling_factor``, as SD) never changes;
the stage encodes every slice of a split once, on first use, in batches on the VAE's current device, and keeps
them on the CPU ([N,C,h,w] float32: 1 KiB per slice at 4x8x8, 64 KiB at the paper's 4x64x64, so a corpus of
100k+ paper-size slices wants a latent cache on disk instead).

Conditioning: a single-modal LDM has no partner modality, so the cross-attention always reads the denoiser's
learned null context (which later serves as the unconditional input of classifier-free guidance). The one
condition is the MRI contrast (key "mri" trains one denoiser on every ``mr_*`` stream, labelled by contrast);
with probability ``cond_dropout`` a label is replaced by 0 ("no contrast") so that the same denoiser also
models the contrast-free distribution and classifier-free guidance on the contrast works. For X-ray and CT
every label is 0. Noise, timesteps and the dropout draw come from the trainer's generator.

Self guide (``guide``, on in the shipped recipes): instead of the null context, the cross-attention reads a
context encoder over the slice's own latent noised to an independent t', dropped to the null context with
probability ``cond_dropout`` (see :mod:`medm2g_core.training.guidance` for why); it is exported as
``self_guide_<key>`` and seeds the context encoder V of this modality in the cross-guided rounds.
"""

from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.models.context_encoder import ContextEncoder, ContextEncoderConfig
from medm2g_core.models.image_denoiser import NO_CONTRAST, ImageDenoiser, ImageDenoiserConfig, adapt_pretrained_unet
from medm2g_core.models.image_vae import latent_means
from medm2g_core.models.medm2g import export_component
from medm2g_core.models.sampler import SamplingConfig, Stream, sample
from medm2g_core.models.schedule import DiffusionConfig, make_train_scheduler, training_target
from medm2g_core.training.guidance import self_guided_context
from medm2g_core.training.image_vae_stage import CacheSlices, save_image_grid
from medm2g_core.vocabulary import MODALITY_KEYS, MRI_CONTRASTS

PREVIEWS_PER_LABEL = 8  # X-ray / CT: 8 samples; MRI: a row of this many per contrast


class CachedLatents(Dataset):
    """Items {"latent": [C,h,w] (scaled), "label": contrast}."""

    def __init__(self, latents: torch.Tensor, labels: torch.Tensor) -> None:
        self.latents, self.labels = latents, labels

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"latent": self.latents[index], "label": self.labels[index]}


class ImageLDMStage:
    """Trains ``denoiser_<key>`` on the latents of a frozen VAE; ``init`` is an SD-style UNet folder to adapt."""

    def __init__(
        self, cache: Cache, key: str, vae: AutoencoderKL, config: ImageDenoiserConfig, diffusion: DiffusionConfig,
        cond_dropout: float = 0.1, init: str | None = None, seed: int = 0, preview_steps: int = 20,
        guide: ContextEncoderConfig | None = None,
    ) -> None:
        if key not in MODALITY_KEYS:
            raise InputError(f"image LDM key must be one of {', '.join(MODALITY_KEYS)}; got {key!r}")
        if key == "mri" and config.num_contrasts < 1 + len(MRI_CONTRASTS):
            raise InputError(f"the MRI denoiser needs num_contrasts = {1 + len(MRI_CONTRASTS)} (none + contrasts)")
        if config.in_channels != vae.config.latent_channels:
            raise InputError(f"denoiser in_channels {config.in_channels} != VAE latent_channels "
                             f"{vae.config.latent_channels}")
        self.name = f"ldm-{key}"
        self.cache, self.key = cache, key
        self.cond_dropout, self.preview_steps = cond_dropout, preview_steps
        self.vae = vae.requires_grad_(False).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.denoiser = adapt_pretrained_unet(init, config) if init else ImageDenoiser(**asdict(config))
            self.guide = None if guide is None else ContextEncoder(**asdict(replace(
                guide, latent_shape=(config.in_channels, config.sample_size, config.sample_size),
                context_dim=self.denoiser.config.cross_attention_dim, adaptation="none", use_latent=True)))
        self.scheduler = make_train_scheduler(diffusion)
        self._datasets: dict[str, CachedLatents] = {}

    def _trained(self) -> dict[str, nn.Module]:
        guide = {} if self.guide is None else {f"self_guide_{self.key}": self.guide}
        return {f"denoiser_{self.key}": self.denoiser, **guide}

    def modules(self) -> dict[str, nn.Module]:
        return {**self._trained(), "image_vae": self.vae}

    def trainable(self) -> list[nn.Parameter]:
        return [p for module in self._trained().values() for p in module.parameters()]

    def ema_modules(self) -> dict[str, nn.Module]:
        return self._trained()

    def dataset(self, split: str) -> CachedLatents:
        if split not in self._datasets:
            slices = CacheSlices(self.cache, split, MODALITY_KEYS[self.key])
            latents = latent_means(self.vae, slices.images) * self.vae.config.scaling_factor  # [N,C,h,w]
            self._datasets[split] = CachedLatents(latents, slices.labels)
        return self._datasets[split]

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        device = self.denoiser.device
        latents, labels = batch["latent"].to(device), batch["label"].to(device)  # [B,C,h,w], [B]
        size = (len(latents),)
        noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, size, generator=generator,
                                  device=generator.device).to(device)
        dropped = torch.rand(size, generator=generator, device=generator.device).to(device) < self.cond_dropout
        contrast = labels.masked_fill(dropped, NO_CONTRAST) if self.denoiser.config.num_contrasts else None
        context = None if self.guide is None else self_guided_context(
            self.guide, self.denoiser, self.scheduler, latents, generator, self.cond_dropout)
        prediction = self.denoiser(self.scheduler.add_noise(latents, noise, timesteps), timesteps, context=context,
                                   contrast=contrast)
        target = training_target(self.scheduler, latents, noise, timesteps)
        loss = F.mse_loss(prediction.float(), target.float())
        return loss, {"mse": loss.item()}

    def _preview_labels(self) -> torch.Tensor:
        labels = range(1, 1 + len(MRI_CONTRASTS)) if self.key == "mri" else [NO_CONTRAST]
        return torch.tensor(labels).repeat_interleave(PREVIEWS_PER_LABEL)  # [N]

    @torch.no_grad()
    def sample(self, folder: Path, step: int) -> None:
        """Samples from fixed noise by the users' loop (DDIM, ``preview_steps``, eta 1, null context, no guidance):
        X-ray/CT one row, MRI a row per contrast."""
        device = self.denoiser.device
        labels = self._preview_labels().to(device)
        contrast = labels if self.denoiser.config.num_contrasts else None
        side = self.cache.resolution // 2 ** (len(self.vae.config.block_out_channels) - 1)
        shape = (len(labels), self.vae.config.latent_channels, side, side)
        stream = Stream(self.denoiser, shape, lambda t, z: self.denoiser.null(len(labels)), contrast=contrast)
        latents = sample({self.key: stream}, self.scheduler, SamplingConfig(self.preview_steps, guidance=1.0),
                         torch.Generator().manual_seed(0), device)[self.key]
        images = self.vae.decode(latents.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor).sample
        save_image_grid(images, Path(folder) / f"{self.name}-{step:06d}.png", columns=PREVIEWS_PER_LABEL)

    def export(self, folder: Path) -> None:
        """``folder/denoiser_<key>``, ``folder/self_guide_<key>`` (if any) and ``folder/scheduler``."""
        for name, module in self._trained().items():
            export_component(module, Path(folder) / name)
        export_component(self.scheduler, Path(folder) / "scheduler")
