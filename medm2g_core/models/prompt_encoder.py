"""Prompt encoders C_M: every modality into one shared embedding space (paper 3.2).

MedM2G aligns the modalities before any cross-guided generation: each modality has its own encoder C_M and a
linear head into a common space of width ``embed_dim``, trained contrastively on paired data (InfoNCE,
Eq. 3: L = -log exp(<C_A(x_A), C_B(x_B)> / tau) / sum_j exp(<C_A(x_A), C_B(x_B^j)> / tau), both directions)
and, for the three imaging modalities, with Barlow Twins' redundancy reduction between augmented views
(Eq. 4). The embeddings then seed the guided adaptation f_B of the context encoder (Eq. 5).

* :class:`ImagePromptEncoder` (C_Xray, C_CT, C_MRI): a small ResNet (``transformers.ResNetModel`` with basic
  blocks) over one-channel images [B, 1, R, R] in [-1, 1]; its globally pooled features go through the head.
  The ResNet uses BatchNorm, so embeddings taken in eval mode use the running statistics of training.
* :class:`TextPromptEncoder` (C_T): a BERT encoder (``transformers.BertModel``) whose last hidden states are
  mean-pooled over the real tokens, then the head. :meth:`TextPromptEncoder.from_text_vae` starts it from the
  text VAE's encoder, which already reads reports.

The heads' outputs are not normalised: the losses and the context encoder's callers L2-normalise them.
"""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from transformers import BertConfig, BertModel, ResNetConfig, ResNetModel

from medm2g_core.models.text_vae import TextVAE


@dataclass
class ImagePromptEncoderConfig:
    embed_dim: int = 128  # width of the shared space
    hidden_sizes: tuple[int, ...] = (16, 32, 64, 128)  # channels of the ResNet stages
    depths: tuple[int, ...] = (1, 1, 1, 1)  # basic blocks per stage
    embedding_size: int = 16  # channels of the ResNet stem


class ImagePromptEncoder(ModelMixin, ConfigMixin):
    """ResNet -> global average pool -> linear head; build it with ``ImagePromptEncoder(**asdict(config))``."""

    @register_to_config
    def __init__(
        self, embed_dim: int, hidden_sizes: tuple[int, ...], depths: tuple[int, ...], embedding_size: int,
    ) -> None:
        super().__init__()
        self.resnet = ResNetModel(ResNetConfig(
            num_channels=1, embedding_size=embedding_size, hidden_sizes=list(hidden_sizes), depths=list(depths),
            layer_type="basic",
        ))
        self.head = nn.Linear(hidden_sizes[-1], embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 1, R, R] in [-1, 1] -> embeddings [B, embed_dim] (not normalised)."""
        pooled = self.resnet(pixel_values=images).pooler_output  # [B, C, 1, 1]
        return self.head(pooled.flatten(1))


@dataclass
class TextPromptEncoderConfig:
    embed_dim: int = 128  # width of the shared space
    vocab_size: int = 1500
    max_length: int = 256
    hidden: int = 128
    layers: int = 2
    heads: int = 4


class TextPromptEncoder(ModelMixin, ConfigMixin):
    """BERT -> masked mean over tokens -> linear head; build it with ``TextPromptEncoder(**asdict(config))``."""

    @register_to_config
    def __init__(
        self, embed_dim: int, vocab_size: int, max_length: int, hidden: int, layers: int, heads: int,
    ) -> None:
        super().__init__()
        # Same BERT as the text VAE's encoder (dropout off: a step's randomness comes from explicit generators).
        self.encoder = BertModel(BertConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * hidden, max_position_embeddings=max_length, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, pad_token_id=0,
        ), add_pooling_layer=False)
        self.head = nn.Linear(hidden, embed_dim)

    @classmethod
    def from_text_vae(cls, text_vae: TextVAE, embed_dim: int) -> "TextPromptEncoder":
        """An encoder of the text VAE's sizes holding a copy of its BERT weights (the head stays fresh)."""
        config = text_vae.config
        model = cls(
            embed_dim=embed_dim, vocab_size=config.vocab_size, max_length=config.max_length,
            hidden=config.encoder_hidden, layers=config.encoder_layers, heads=config.encoder_heads,
        )
        weights = {k: v for k, v in text_vae.encoder.state_dict().items() if not k.startswith("pooler.")}
        model.encoder.load_state_dict(weights)
        return model.to(text_vae.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask [B, L] -> embeddings [B, embed_dim] (not normalised)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, H]
        mask = attention_mask[..., None].to(hidden.dtype)  # [B, L, 1]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B, H]
        return self.head(pooled)
