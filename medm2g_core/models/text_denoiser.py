"""The text denoiser: eps_theta(z_t, t, context) on the text VAE's latent vector (paper 3.1; 768-d there).

Like Versatile Diffusion's "flat" text diffuser it works on a vector, not an image: the latent is cut into
``tokens`` pieces [B, T, latent_dim/T], each projected to ``hidden_dim`` with a learned position embedding,
and passed through residual transformer blocks. Each block is diffusers' ``BasicTransformerBlock`` in its
PixArt-alpha form (``norm_type="ada_norm_single"``): timestep-modulated (adaLN) self-attention and MLP, and a
cross-attention sub-layer (``attn2``) that reads the context tokens [B, L, D]. As in :class:`ImageDenoiser`,
a learned null context stands in when no condition is given, and cross-guided training updates only ``attn2``.

Global path (``global_condition``, our extension for guided reports, docs/METHOD.md): the context tokens are also
pooled into one vector (diffusers' ``TextTimeEmbedding``: attention pooling, a projection and a LayerNorm) that is
added to the timestep embedding, so the guide modulates every block (adaLN), as a class label does in DiT,
besides being read through cross-attention. :func:`~medm2g_core.models.medm2g.with_global_path` copies a trained
denoiser with that path's output LayerNorm zeroed: the copy starts out computing exactly what the original computes.
"""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import TextTimeEmbedding
from diffusers.models.normalization import AdaLayerNormSingle
from torch import nn


@dataclass
class TextDenoiserConfig:
    latent_dim: int = 768
    tokens: int = 12  # the latent is reshaped to [tokens, latent_dim / tokens]
    hidden_dim: int = 256
    layers: int = 4
    heads: int = 4
    cross_attention_dim: int = 64
    context_tokens: int = 4  # length of the learned null context
    scaling_factor: float = 1.0  # 1 / std of the text VAE's latent means; set by the text LDM stage
    global_condition: bool = False  # the pooled context is added to the timestep embedding (the global path)


class TextDenoiser(ModelMixin, ConfigMixin):
    """Build it with ``TextDenoiser(**asdict(config))``."""

    GLOBAL_PATH = "global_embedding"  # the global path's module (models.medm2g.with_global_path)

    @register_to_config
    def __init__(
        self, latent_dim: int, tokens: int, hidden_dim: int, layers: int, heads: int, cross_attention_dim: int,
        context_tokens: int, scaling_factor: float, global_condition: bool = False,
    ) -> None:
        super().__init__()
        if latent_dim % tokens or hidden_dim % heads:
            raise ValueError("latent_dim must divide into tokens and hidden_dim into heads")
        token_dim = latent_dim // tokens
        self.proj_in = nn.Linear(token_dim, hidden_dim)
        self.position = nn.Parameter(torch.randn(tokens, hidden_dim) * 0.02)  # [T, H]
        # Timesteps (sinusoidal) -> TimestepEmbedding -> SiLU -> Linear: the 6 adaLN vectors of every block.
        self.time = AdaLayerNormSingle(hidden_dim)
        self.blocks = nn.ModuleList(
            BasicTransformerBlock(hidden_dim, heads, hidden_dim // heads, cross_attention_dim=cross_attention_dim,
                                  activation_fn="gelu-approximate", norm_type="ada_norm_single",
                                  norm_elementwise_affine=False, norm_eps=1e-6)
            for _ in range(layers)
        )
        # PixArt's output layer: a shift/scale of the final norm from the timestep embedding.
        self.norm_out = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_dim) / hidden_dim**0.5)
        self.proj_out = nn.Linear(hidden_dim, token_dim)
        self.null_context = nn.Parameter(torch.randn(context_tokens, cross_attention_dim) * 0.02)  # [T_c, D]
        self.global_embedding = TextTimeEmbedding(cross_attention_dim, hidden_dim, heads) if global_condition else None

    def null(self, batch_size: int) -> torch.Tensor:
        """The unconditional context [B, T_c, D]."""
        return self.null_context.unsqueeze(0).expand(batch_size, -1, -1)

    def forward(
        self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """latents [B, latent_dim], timesteps [B], context [B, L, D] or None (null) -> prediction [B, latent_dim]."""
        batch = latents.shape[0]
        context = self.null(batch) if context is None else context
        tokens = latents.reshape(batch, self.config.tokens, -1)  # [B, T, latent_dim/T]
        hidden = self.proj_in(tokens) + self.position  # [B, T, H]
        modulation, embedded = self._modulation(timesteps, context, hidden.dtype)  # [B, 6H], [B, H]
        for block in self.blocks:
            hidden = block(hidden, encoder_hidden_states=context.to(hidden.dtype), timestep=modulation)
        shift, scale = (self.scale_shift_table[None] + embedded[:, None]).chunk(2, dim=1)  # [B, 1, H] each
        hidden = self.norm_out(hidden) * (1 + scale) + shift
        return self.proj_out(hidden).reshape(batch, -1)  # [B, latent_dim]

    def _modulation(self, timesteps: torch.Tensor, context: torch.Tensor, dtype: torch.dtype
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The adaLN vectors [B, 6H] and the embedding [B, H] of the timestep (plus the pooled context, global path)."""
        batch = len(context)
        if self.global_embedding is None:
            return self.time(timesteps, batch_size=batch, hidden_dtype=dtype)
        embedded = self.time.emb(timesteps, resolution=None, aspect_ratio=None, batch_size=batch, hidden_dtype=dtype)
        embedded = embedded + self.global_embedding(context.to(dtype))  # [B, H]
        return self.time.linear(self.time.silu(embedded)), embedded

    def cross_attention_parameters(self) -> list[nn.Parameter]:
        """The parameters of every cross-attention sub-layer (``attn2``): what cross-guided training updates."""
        return [p for block in self.blocks for p in block.attn2.parameters()]
