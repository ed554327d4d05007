"""The image denoiser eps_theta(z_t, t, context, contrast): a diffusers ``UNet2DConditionModel`` (paper 3.1, 3.4).

Blocks follow SD-1.5's layout (cross-attention at every level but the deepest, a cross-attention mid block), so
an SD UNet loads into it (:func:`adapt_pretrained_unet`). The cross-attention sub-layers (``attn2`` of every
transformer block) read a context of tokens [B, L, D]: in the single-modal LDM that is a learned null context
(the unconditional input of classifier-free guidance); in cross-guided generation it is V_B([z_t^B, f_B]) and
only the ``attn2`` weights train (:meth:`ImageDenoiser.cross_attention_parameters`). MRI contrast enters as
a class embedding added to the timestep embedding: label 0 means "no contrast given", 1.. follow
:data:`~medm2g_core.vocabulary.MRI_CONTRASTS` (T1, T1ce, T2, FLAIR, PD).

Coordinates (``coord_channels``): a UNet has no position embedding, so its cross-attention queries hardly know
where they are, and a guide's patch tokens (which do carry positions) can only pass global information. With
``coord_channels`` two fixed channels (x and y in [-1, 1]) are concatenated to the latent at the input (as
CoordConv), which lets the queries learn to attend to the patch at their own position: what image-to-image
guidance (MRI -> CT) needs. The output keeps the latent's channels.

Spatial path (``spatial_channels``, our extension of the paper, docs/METHOD.md): the latents of the source
images, laid out in fixed slots with a presence plane each (:mod:`medm2g_core.models.spatial_guide`), are
concatenated to the input after the coordinates; with ``spatial_neighbours`` n every slot holds the sources' latents
of the 2n + 1 slices around the target's (2.5D, issue 16). :func:`with_spatial_path` widens a trained denoiser's input
convolution with zero weights for them, so it starts out computing exactly what it computed before.

Global path (``global_condition``, our extension for report -> X-ray, docs/METHOD.md): the context tokens are also
pooled into one vector added to the timestep embedding (diffusers' ``addition_embed_type="text"``:
``TextTimeEmbedding``), so a report steers every resnet block, not only the cross-attention queries.
:func:`~medm2g_core.models.medm2g.with_global_path` copies a trained denoiser with that path's output LayerNorm
zeroed (unchanged output).
"""

import os
from dataclasses import asdict, dataclass, replace

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from torch import nn

from medm2g_core.errors import ModelError
from medm2g_core.vocabulary import MRI_CONTRASTS

NO_CONTRAST = 0


def contrast_label(contrast: str | None) -> int:
    """The class label of an MRI contrast (0 when unknown or not an MRI)."""
    return NO_CONTRAST if contrast is None else 1 + MRI_CONTRASTS.index(contrast)


@dataclass
class ImageDenoiserConfig:
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    # diffusers' legacy name, kept for SD compatibility: in UNet2DConditionModel this is the number of heads.
    attention_head_dim: int = 8
    cross_attention_dim: int = 64
    context_tokens: int = 4  # length of the learned null context
    in_channels: int = 4  # = the image VAE's latent_channels
    sample_size: int = 16  # latent side
    num_contrasts: int = 1 + len(MRI_CONTRASTS)  # 0: no class embedding at all
    norm_num_groups: int = 8
    coord_channels: bool = True  # x/y coordinate channels at the input (spatial cross-attention)
    spatial_channels: int = 0  # source latents + presence planes at the input (the spatial path); 0: none
    spatial_neighbours: int = 0  # slices each side of the target's that every spatial slot also holds (2.5D)
    global_condition: bool = False  # the pooled context is added to the timestep embedding (the global path)


def _block_types(levels: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """SD-1.5's layout: no attention at the deepest level."""
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    return down, up


class ImageDenoiser(ModelMixin, ConfigMixin):
    """UNet2DConditionModel + a learned null context; build it with ``ImageDenoiser(**asdict(config))``."""

    GLOBAL_PATH = "unet.add_embedding"  # the global path's module (models.medm2g.with_global_path)

    @register_to_config
    def __init__(
        self, block_out_channels: tuple[int, ...], layers_per_block: int, attention_head_dim: int,
        cross_attention_dim: int, context_tokens: int, in_channels: int, sample_size: int, num_contrasts: int,
        norm_num_groups: int, coord_channels: bool = False, spatial_channels: int = 0, global_condition: bool = False,
        spatial_neighbours: int = 0,
    ) -> None:
        super().__init__()
        down, up = _block_types(len(block_out_channels))
        self.unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels + (2 if coord_channels else 0) + spatial_channels,
            out_channels=in_channels,
            down_block_types=down,
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=up,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            norm_num_groups=norm_num_groups,
            num_class_embeds=num_contrasts or None,
            addition_embed_type="text" if global_condition else None,
            addition_embed_type_num_heads=attention_head_dim,
        )
        self.null_context = nn.Parameter(torch.randn(context_tokens, cross_attention_dim) * 0.02)  # [T, D]

    def null(self, batch_size: int) -> torch.Tensor:
        """The unconditional context [B, T, D]."""
        return self.null_context.unsqueeze(0).expand(batch_size, -1, -1)

    def forward(
        self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
        contrast: torch.LongTensor | None = None, spatial: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latents [B,C,h,w], timesteps [B], context [B,L,D] or None (null), contrast [B] or None (0), spatial
        [B,S,h,w] or None (no source: zeros) -> [B,C,h,w]."""
        batch = latents.shape[0]
        context = self.null(batch) if context is None else context
        extra = self.config.spatial_channels
        if spatial is not None and spatial.shape[1] != extra:
            raise ValueError(f"this denoiser takes {extra} spatial channels, got {spatial.shape[1]}")
        inputs = [latents]
        if self.config.coord_channels:
            inputs.append(coordinates(latents))  # [B, 2, h, w]
        if extra:
            inputs.append(latents.new_zeros(batch, extra, *latents.shape[2:]) if spatial is None
                          else spatial.to(latents.dtype))  # [B, S, h, w]
        latents = torch.cat(inputs, dim=1) if len(inputs) > 1 else latents
        labels = None
        if self.config.num_contrasts:
            labels = torch.zeros(batch, dtype=torch.long, device=latents.device) if contrast is None else contrast
        elif contrast is not None:
            raise ValueError("this denoiser has no contrast embedding (num_contrasts=0)")
        return self.unet(latents, timesteps, encoder_hidden_states=context.to(latents.dtype),
                         class_labels=labels).sample

    def cross_attention_parameters(self) -> list[nn.Parameter]:
        """The parameters of every cross-attention sub-layer (``attn2``): what cross-guided training updates."""
        return [p for name, module in self.unet.named_modules() if name.endswith(".attn2")
                for p in module.parameters()]


@torch.no_grad()
def with_spatial_path(denoiser: ImageDenoiser, channels: int, neighbours: int = 0) -> ImageDenoiser:
    """A copy of ``denoiser`` that also reads ``channels`` spatial channels (slots of ``neighbours`` slices each side
    of the target's), their input weights zero: before training it computes exactly what ``denoiser`` computes,
    whatever the spatial input."""
    if denoiser.config.spatial_channels:
        raise ValueError("the denoiser already has a spatial path")
    config = {k: v for k, v in denoiser.config.items() if not k.startswith("_")}
    widened = ImageDenoiser(**{**config, "spatial_channels": channels, "spatial_neighbours": neighbours})
    state = denoiser.state_dict()
    old = state["unet.conv_in.weight"]  # [out, in, k, k]
    new = old.new_zeros(old.shape[0], old.shape[1] + channels, *old.shape[2:])
    new[:, :old.shape[1]] = old
    widened.load_state_dict({**state, "unet.conv_in.weight": new})
    return widened.to(denoiser.device, denoiser.dtype)


def coordinates(latents: torch.Tensor) -> torch.Tensor:
    """Fixed x and y coordinate channels [B, 2, h, w] in [-1, 1] for latents [B, C, h, w]."""
    batch, _, height, width = latents.shape
    y = torch.linspace(-1, 1, height, device=latents.device, dtype=latents.dtype)
    x = torch.linspace(-1, 1, width, device=latents.device, dtype=latents.dtype)
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"))  # [2, h, w]
    return grid.unsqueeze(0).expand(batch, -1, -1, -1)


def adapt_pretrained_unet(
    folder: str | os.PathLike, config: ImageDenoiserConfig, subfolder: str | None = None
) -> ImageDenoiser:
    """An ImageDenoiser initialised from an SD-style UNet2DConditionModel (local folder or Hub id).

    The architecture (channels, layers, heads, norm groups) is the pretrained one; ``config`` sets the latent
    channels, cross-attention width, context length and contrasts. Weights whose shapes differ (``conv_in`` /
    ``conv_out`` for other latent channels, ``attn2.to_k`` / ``to_v`` for another context width) and the new
    class embedding are freshly initialised; everything else is copied.
    """
    try:
        pretrained = UNet2DConditionModel.from_pretrained(folder, subfolder=subfolder, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load a UNet2DConditionModel from {folder}: {error}") from error
    source = pretrained.config
    down, up = _block_types(len(source.block_out_channels))
    if tuple(source.down_block_types) != down or tuple(source.up_block_types) != up:
        raise ModelError(f"{folder}: the UNet's blocks {source.down_block_types} / {source.up_block_types} "
                         f"are not SD-1.5's layout {down} / {up}")
    if not isinstance(source.attention_head_dim, int) or not isinstance(source.layers_per_block, int):
        raise ModelError(f"{folder}: per-block attention heads or layers are not supported")
    merged = replace(
        config, block_out_channels=tuple(source.block_out_channels), layers_per_block=source.layers_per_block,
        attention_head_dim=source.attention_head_dim, norm_num_groups=source.norm_num_groups,
    )
    model = ImageDenoiser(**asdict(merged))
    target = model.unet.state_dict()
    kept = {k: v for k, v in pretrained.state_dict().items() if k in target and target[k].shape == v.shape}
    model.unet.load_state_dict(kept, strict=False)
    return model
