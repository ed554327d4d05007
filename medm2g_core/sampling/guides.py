"""What a guiding input tells a denoiser: its latent, its prompt embedding, and the context V_B makes of them.

An image guide is a batch of model-ready slices [N, R, R] in [-1, 1]; a text guide is a list of reports. Both
become a :class:`Guide`: the scaled latent the LDMs work in and the L2-normalised prompt embedding (the prompt
encoders' shared space, paper 3.2). :func:`guide_context` turns a guide into the context tokens of Eq. 5-6,
V_B([z_t^B, f_B]), with the guide's latent noised to t_B (0: a clean guide, as translation and report generation
use; the target's t: joint generation). Decoding goes the other way: latents to slices or to report text.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from medm2g_core.errors import ModelError
from medm2g_core.models.medm2g import MedM2G


@dataclass
class Guide:
    latent: torch.Tensor  # [N, C, h, w] or [N, D], scaled for diffusion
    prompt: torch.Tensor  # [N, E], L2-normalised
    contrast: str | None = None  # an MRI guide's contrast, when known (its slot in the spatial path)
    slab: torch.Tensor | None = None  # [N, (2n+1) C, h, w]: the latents of the slices -n..n around each (2.5D)

    def repeat(self, count: int) -> "Guide":
        """Each row repeated ``count`` times in place (row i -> rows i*count .. i*count+count-1)."""
        slab = None if self.slab is None else self.slab.repeat_interleave(count, 0)
        return Guide(self.latent.repeat_interleave(count, 0), self.prompt.repeat_interleave(count, 0), self.contrast,
                     slab)

    def rows(self, start: int, stop: int) -> "Guide":
        slab = None if self.slab is None else self.slab[start:stop]
        return Guide(self.latent[start:stop], self.prompt[start:stop], self.contrast, slab)


def require(model: MedM2G, *names: str) -> None:
    """A clear error when ``model`` lacks a component a pipeline needs."""
    missing = [name for name in names if name not in model]
    if missing:
        have = ", ".join(model.components) or "nothing"
        raise ModelError(f"the model lacks {', '.join(missing)} for this task (it has: {have}); "
                         "use a complete MedM2G model (`medm2g train cross --all`) or the default")


def image_resolution(model: MedM2G) -> int:
    """The side of the slices the image VAE reads."""
    require(model, "image_vae")
    return int(model["image_vae"].config.sample_size)


@torch.inference_mode()
def image_guide(model: MedM2G, modality: str, images: torch.Tensor, contrast: str | None = None,
                slabs: torch.Tensor | None = None) -> Guide:
    """Slices [N, R, R] in [-1, 1] as a guide of ``modality`` (xray, ct, mri; an MRI's ``contrast`` if known);
    ``slabs`` [N, K, R, R], the K slices around each in slice order, give the guide its 2.5D slab latents."""
    require(model, "image_vae")
    vae = model["image_vae"]
    pixels = images[:, None].to(vae.device, vae.dtype)  # [N, 1, R, R]
    latent = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    slab = None
    if slabs is not None:
        around = slabs.flatten(0, 1)[:, None].to(vae.device, vae.dtype)  # [N*K, 1, R, R]
        slab = (vae.encode(around).latent_dist.mean * vae.config.scaling_factor).float()
        slab = slab.reshape(len(images), -1, *slab.shape[2:])  # [N, K*C, h, w]
    if f"prompt_encoder_{modality}" in model:
        encoder = model[f"prompt_encoder_{modality}"]
        prompt = F.normalize(encoder(pixels.to(encoder.dtype)).float(), dim=-1)
    else:  # a model without central alignment (the spatial path alone needs no prompt embedding): [N, 0]
        prompt = latent.new_zeros(len(latent), 0)
    return Guide(latent.float(), prompt, contrast, slab)


@torch.inference_mode()
def text_guide(model: MedM2G, reports: list[str]) -> Guide:
    """Reports as a text guide: the text VAE's posterior mean and the text prompt embedding."""
    require(model, "text_vae", "denoiser_text", "prompt_encoder_text")
    text_vae, encoder = model["text_vae"], model["prompt_encoder_text"]
    tokens = text_vae.tokenize(reports)
    ids, mask = tokens["input_ids"].to(text_vae.device), tokens["attention_mask"].to(text_vae.device)
    latent = text_vae.moments(ids, mask)[0].float() * model["denoiser_text"].config.scaling_factor
    prompt = F.normalize(encoder(ids, mask).float(), dim=-1)
    return Guide(latent, prompt)


@torch.inference_mode()
def guide_context(
    model: MedM2G, modality: str, latent: torch.Tensor, prompt: torch.Tensor, t: torch.Tensor | int,
    generator: torch.Generator | None = None, encoder_name: str | None = None,
) -> torch.Tensor:
    """V_B's context [N, L, D]. ``latent`` is clean when ``generator`` is given (it is noised to ``t`` here, as in
    training) and already at ``t`` otherwise (joint generation). ``encoder_name``: another context encoder of B than
    ``context_encoder_<B>`` (the report round's ``guided_context_<B>``)."""
    encoder_name = encoder_name or f"context_encoder_{modality}"
    require(model, encoder_name)
    encoder = model[encoder_name]
    if encoder.config.adaptation == "embedding" and prompt.shape[-1] == 0:
        require(model, f"prompt_encoder_{modality}")
    t = torch.as_tensor(t, device=latent.device).reshape(-1).expand(len(latent))
    if generator is not None:
        noise = randn_tensor(latent.shape, generator=generator, device=latent.device, dtype=latent.dtype)
        latent = model["scheduler"].add_noise(latent, noise, t.long())
    return encoder(latent.to(encoder.device), t.to(encoder.device), prompt.to(encoder.device))


@torch.inference_mode()
def decode_images(model: MedM2G, latents: torch.Tensor) -> torch.Tensor:
    """Scaled image latents [N, C, h, w] -> slices [N, R, R] in [-1, 1] (on the VAE's device)."""
    vae = model["image_vae"]
    pixels = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
    return pixels[:, 0].float().clamp(-1.0, 1.0)


@torch.inference_mode()
def decode_reports(model: MedM2G, latents: torch.Tensor, num_beams: int = 1) -> list[str]:
    """Scaled text latents [N, D] -> report texts through the text VAE's decoder."""
    text_vae = model["text_vae"]
    return text_vae.decode(latents.to(text_vae.device) / model["denoiser_text"].config.scaling_factor,
                           num_beams=num_beams)
