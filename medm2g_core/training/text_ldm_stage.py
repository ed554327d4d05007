"""Stage: the text LDM (paper 3.1, Eq. 2) on the frozen text VAE's latent vectors.

Latents: the posterior means of the reports, encoded once per split on first use (the text VAE is frozen) and
kept on the CPU, scaled by ``scaling_factor`` = 1 / std of the training latent means (as the image VAE's),
which is stored in the denoiser's config so that samples are divided by it before ``text_vae.decode``. The
cross-attention reads the null context (no partner modality here); noise and timesteps come from the trainer's
generator. Reports come from the cache's cases of each split, or from a plain list used for every split.

Self guide (``guide``): as for the image LDMs, the cross-attention reads a context encoder over the report's own
latent noised to an independent t' (dropped to the null context with probability ``cond_dropout``), exported
as ``self_guide_text`` (:mod:`medm2g_core.training.guidance`).
"""

from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.atomic import write_text
from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.models.context_encoder import ContextEncoder, ContextEncoderConfig
from medm2g_core.models.medm2g import export_component
from medm2g_core.models.sampler import SamplingConfig, Stream, sample
from medm2g_core.models.schedule import DiffusionConfig, make_train_scheduler, training_target
from medm2g_core.models.text_denoiser import TextDenoiser, TextDenoiserConfig
from medm2g_core.models.text_vae import TextVAE
from medm2g_core.training.guidance import self_guided_context

ENCODE_BATCH = 64
PREVIEW_REPORTS = 4


class LatentVectors(Dataset):
    """Items {"latent": [latent_dim] (scaled)}."""

    def __init__(self, latents: torch.Tensor) -> None:
        self.latents = latents

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"latent": self.latents[index]}


class TextLDMStage:
    """Trains ``denoiser_text`` on the latents of a frozen :class:`TextVAE`."""

    def __init__(
        self, cache_or_reports: Cache | list[str], text_vae: TextVAE, config: TextDenoiserConfig,
        diffusion: DiffusionConfig, seed: int = 0, preview_steps: int = 20,
        guide: ContextEncoderConfig | None = None, cond_dropout: float = 0.1,
    ) -> None:
        if config.latent_dim != text_vae.config.latent_dim:
            raise InputError(f"denoiser latent_dim {config.latent_dim} != text VAE latent_dim "
                             f"{text_vae.config.latent_dim}")
        self.name = "ldm-text"
        self.source, self.preview_steps = cache_or_reports, preview_steps
        self.text_vae = text_vae.requires_grad_(False).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.denoiser = TextDenoiser(**asdict(config))
            self.guide = None if guide is None else ContextEncoder(**asdict(replace(
                guide, latent_shape=(config.latent_dim,), context_dim=config.cross_attention_dim, adaptation="none",
                use_latent=True)))
        self.cond_dropout = cond_dropout
        self.scheduler = make_train_scheduler(diffusion)
        self._means: dict[str, torch.Tensor] = {}
        self._factor: float | None = None
        self._datasets: dict[str, LatentVectors] = {}

    def reports(self, split: str) -> list[str]:
        if isinstance(self.source, list):
            reports = self.source
        else:
            cases = self.source.index["cases"]
            reports = [case["report"] for case in cases if case["split"] == split and case["report"]]
        if not reports:
            raise InputError(f"no reports in split {split}")
        return reports

    @torch.no_grad()
    def _latent_means(self, split: str) -> torch.Tensor:
        if split not in self._means:
            reports = self.reports(split)
            chunks = [self.text_vae.encode(reports[i:i + ENCODE_BATCH])[0].float().cpu()
                      for i in range(0, len(reports), ENCODE_BATCH)]
            self._means[split] = torch.cat(chunks)  # [N, D]
        return self._means[split]

    def scaling_factor(self) -> float:
        """1 / std of the training latent means, measured on first use and written into the denoiser's config."""
        if self._factor is None:
            self._factor = float(1.0 / self._latent_means("train").std())
            self.denoiser.register_to_config(scaling_factor=self._factor)
        return self._factor

    def _trained(self) -> dict[str, nn.Module]:
        return {"denoiser_text": self.denoiser, **({} if self.guide is None else {"self_guide_text": self.guide})}

    def modules(self) -> dict[str, nn.Module]:
        return {**self._trained(), "text_vae": self.text_vae}

    def trainable(self) -> list[nn.Parameter]:
        return [p for module in self._trained().values() for p in module.parameters()]

    def ema_modules(self) -> dict[str, nn.Module]:
        return self._trained()

    def dataset(self, split: str) -> LatentVectors:
        if split not in self._datasets:
            self._datasets[split] = LatentVectors(self._latent_means(split) * self.scaling_factor())
        return self._datasets[split]

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        device = self.denoiser.device
        latents = batch["latent"].to(device)  # [B, D]
        noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(latents),), generator=generator,
                                  device=generator.device).to(device)
        context = None if self.guide is None else self_guided_context(
            self.guide, self.denoiser, self.scheduler, latents, generator, self.cond_dropout)
        prediction = self.denoiser(self.scheduler.add_noise(latents, noise, timesteps), timesteps, context=context)
        loss = F.mse_loss(prediction.float(), training_target(self.scheduler, latents, noise, timesteps).float())
        return loss, {"mse": loss.item()}

    @torch.no_grad()
    def sample(self, folder: Path, step: int) -> None:
        """Reports decoded (greedy) from samples of fixed noise by the users' loop (DDIM, null context, no
        guidance), one per line, in a .txt file."""
        shape = (PREVIEW_REPORTS, self.denoiser.config.latent_dim)
        stream = Stream(self.denoiser, shape, lambda t, z: self.denoiser.null(PREVIEW_REPORTS))
        latents = sample({"text": stream}, self.scheduler, SamplingConfig(self.preview_steps, guidance=1.0),
                         torch.Generator().manual_seed(0), self.denoiser.device)["text"]
        reports = self.text_vae.decode(latents / self.scaling_factor(), num_beams=1)
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_text(Path(folder) / f"{self.name}-{step:06d}.txt", "\n".join(reports) + "\n", overwrite=True)

    def export(self, folder: Path) -> None:
        """``folder/denoiser_text`` (with its ``scaling_factor``) and ``folder/scheduler``."""
        self.scaling_factor()  # measured before saving, even if training never asked for it
        for name, module in self._trained().items():
            export_component(module, Path(folder) / name)
        export_component(self.scheduler, Path(folder) / "scheduler")
