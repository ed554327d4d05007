"""The context encoder V_B with the guided adaptation f_B: what a guiding modality tells a denoiser (paper 3.4).

In cross-guided generation the denoiser of a target modality A reads, through its cross-attention layers, the
context of a guiding modality B (Eq. 6):

    eps_theta(z_t^A, t, V_B([z_t^B, f_B])),    f_B = F_emb(phi_s(z_B)),  z_B = C_B(x_B)   (Eq. 5)

* **latent tokens** z_t^B: B's latent, noised to the guide's timestep t_B (0 for a clean guide in translation,
  t for joint generation), cut into tokens: an image latent [C, h, w] into ``patch_size`` x ``patch_size``
  patches (a strided convolution, as a ViT's patch embedding), a text latent [D] into ``text_tokens`` pieces.
  Each token gets a learned position embedding and the embedding of t_B (diffusers' ``Timesteps`` and
  ``TimestepEmbedding``).
* **adaptation tokens** f_B: K tokens made by F_emb, a linear map from the prompt encoders' shared space.
  ``adaptation="embedding"`` applies it per sample to the (L2-normalised) prompt embedding of the guiding
  input; ``adaptation="inversion"`` is the literal textual-inversion reading, one learned set of K tokens for
  all samples, initialised by :meth:`ContextEncoder.init_adaptation` as F_emb of randomly sampled prompt
  embeddings (phi_s = uniform sampling); ``adaptation="none"`` leaves f_B out.
  ``use_latent=False`` leaves the latent tokens out instead (the LCAG ablation: f_B alone).

The tokens [z_t^B, f_B] pass through a bidirectional pre-norm transformer and a final LayerNorm and linear
projection to the denoisers' ``cross_attention_dim``; the output [B, L + K, context_dim] is their context.
"""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

ADAPTATIONS = ("embedding", "inversion", "none")


@dataclass
class ContextEncoderConfig:
    latent_shape: tuple[int, ...] = (4, 16, 16)  # image [C, h, w] or text [D]
    patch_size: int = 4  # image latents are cut into patch_size x patch_size patches
    text_tokens: int = 8  # a text latent [D] is cut into this many pieces
    embed_dim: int = 128  # width of the prompt encoders' shared space (input of F_emb)
    adaptation_tokens: int = 4  # K, tokens of f_B
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    context_dim: int = 128  # cross_attention_dim of the denoisers it guides
    use_latent: bool = True  # False: the LCAG ablation, only f_B is given (no z_t^B tokens)
    adaptation: str = "embedding"  # "embedding" | "inversion" | "none"


class ContextEncoder(ModelMixin, ConfigMixin):
    """V_B([z_t^B, f_B]) -> context tokens; build it with ``ContextEncoder(**asdict(config))``."""

    @register_to_config
    def __init__(
        self, latent_shape: tuple[int, ...], patch_size: int, text_tokens: int, embed_dim: int,
        adaptation_tokens: int, hidden: int, layers: int, heads: int, context_dim: int, use_latent: bool,
        adaptation: str,
    ) -> None:
        super().__init__()
        self.latent_tokens = _check(tuple(latent_shape), patch_size, text_tokens, use_latent, adaptation)
        self.adaptation_count = 0 if adaptation == "none" else adaptation_tokens
        if use_latent:  # image latents: a ViT's patch embedding; text latents: a linear map of each piece
            self.patchify = (nn.Conv2d(latent_shape[0], hidden, patch_size, stride=patch_size)
                             if len(latent_shape) == 3 else nn.Linear(latent_shape[0] // text_tokens, hidden))
            self.position = nn.Parameter(torch.randn(self.latent_tokens, hidden) * 0.02)  # [L, H]
        self.time_proj = Timesteps(hidden, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(hidden, hidden)
        if adaptation != "none":
            self.f_emb = nn.Linear(embed_dim, adaptation_tokens * hidden)  # F_emb of Eq. 5
        if adaptation == "inversion":
            self.inverted = nn.Parameter(torch.randn(adaptation_tokens, hidden) * 0.02)  # f_B [K, H]
        # torch's encoder layer: the library piece for a plain bidirectional transformer.
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 4 * hidden, dropout=0.0, batch_first=True, norm_first=True, activation="gelu",
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(hidden)
        # Default init, not a small one: a single-modal denoiser's cross-attention only ever saw its constant null
        # context, so the case-specific part of a new guide's tokens must be large enough for it to pick up
        # (measured: at std 0.02 the real and a shuffled guide changed the loss by < 0.1% after 150 steps).
        self.proj_out = nn.Linear(hidden, context_dim)

    @property
    def num_tokens(self) -> int:
        """Length L + K of the context it produces."""
        return self.latent_tokens + self.adaptation_count

    @torch.no_grad()
    def init_adaptation(self, embeddings: torch.Tensor, generator: torch.Generator) -> None:
        """Inversion mode: set f_B to F_emb(phi_s(z_B)), phi_s drawing K of the prompt embeddings [N, embed_dim].

        Token k is the k-th slice of F_emb's output for the k-th drawn embedding; the draw is without
        replacement when N >= K.
        """
        if self.config.adaptation != "inversion":
            raise ValueError(f"init_adaptation needs adaptation='inversion', not {self.config.adaptation!r}")
        count, k = len(embeddings), self.config.adaptation_tokens
        if count >= k:
            drawn = torch.randperm(count, generator=generator, device=generator.device)[:k]
        else:
            drawn = torch.randint(count, (k,), generator=generator, device=generator.device)
        tokens = self.f_emb(embeddings[drawn.to(embeddings.device)].to(self.f_emb.weight))  # [K, K * H]
        tokens = tokens.view(k, k, -1)  # [drawn embedding, token, H]
        self.inverted.copy_(tokens[torch.arange(k), torch.arange(k)])  # [K, H]

    def forward(
        self, latents: torch.Tensor, timesteps: torch.Tensor, prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The context [B, L + K, context_dim] of a guide.

        ``latents`` [B, C, h, w] or [B, D] are B's latents noised to ``timesteps`` t_B ([B] or a scalar);
        ``prompt`` [B, embed_dim] is the prompt embedding of the guiding input, needed in embedding mode only.
        """
        batch = latents.shape[0]
        time = self.time_embedding(self.time_proj(timesteps.reshape(-1).expand(batch)).to(self.dtype))  # [B, H]
        tokens = []
        if self.config.use_latent:
            tokens.append(self._latent_tokens(latents.to(self.dtype)))
        if self.config.adaptation != "none":
            tokens.append(self._adaptation(batch, prompt))
        hidden = torch.cat(tokens, dim=1) + time[:, None]  # [B, L + K, H]
        return self.proj_out(self.norm_out(self.transformer(hidden)))

    def _latent_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """z_t^B as tokens: [B, C, h, w] or [B, D] -> [B, L, H]."""
        if latents.ndim == 4:
            tokens = self.patchify(latents).flatten(2).transpose(1, 2)  # [B, (h/p)(w/p), H]
        else:
            tokens = self.patchify(latents.reshape(len(latents), self.config.text_tokens, -1))  # [B, T, H]
        return tokens + self.position

    def _adaptation(self, batch: int, prompt: torch.Tensor | None) -> torch.Tensor:
        """f_B [B, K, H]: per sample from the prompt embedding, or the shared inverted tokens."""
        if self.config.adaptation == "inversion":
            return self.inverted.unsqueeze(0).expand(batch, -1, -1)
        if prompt is None:
            raise ValueError("adaptation='embedding' needs the prompt embedding of the guiding input")
        return self.f_emb(prompt.to(self.dtype)).view(batch, self.config.adaptation_tokens, -1)


def _check(latent_shape: tuple[int, ...], patch_size: int, text_tokens: int, use_latent: bool, adaptation: str) -> int:
    """Validate the configuration; the number L of latent tokens."""
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"adaptation must be one of {ADAPTATIONS}, not {adaptation!r}")
    if not use_latent and adaptation == "none":
        raise ValueError("use_latent=False with adaptation='none' leaves the context encoder no tokens")
    if len(latent_shape) == 3:
        _, height, width = latent_shape
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the latent's sides {height} x {width}")
        count = (height // patch_size) * (width // patch_size)
    elif len(latent_shape) == 1:
        if latent_shape[0] % text_tokens:
            raise ValueError(f"text_tokens {text_tokens} must divide the latent's size {latent_shape[0]}")
        count = text_tokens
    else:
        raise ValueError(f"latent_shape must be an image latent [C, h, w] or a text latent [D], not {latent_shape}")
    return count if use_latent else 0
