"""The text VAE: a report <-> one latent vector, the space the text LDM denoises (Optimus, Li et al. 2020).

Encoder: a BERT encoder (``transformers.BertModel``) over ``[BOS] tokens [EOS]``; its last hidden states are
mean-pooled over the real tokens and a linear layer gives the posterior's mean and log-variance
``[B, latent_dim]`` (768 in the paper, as Versatile Diffusion's Optimus VAE).

Decoder: a GPT-2 language model (``transformers.GPT2LMHeadModel``) conditioned on ``z`` in Optimus' two ways:

* **memory**: ``z`` is projected to ``latent_prefix_tokens`` soft-prompt embeddings placed before the token
  embeddings, so every layer attends to them;
* **embedding**: ``z`` is projected to one vector added to every token embedding.

Both projections start at GPT-2's embedding scale (std 0.02 for ``z ~ N(0, I)``): with PyTorch's default
initialisation the injected noise was ~25x larger than the token embeddings and the decoder learned to ignore
``z`` (identical reconstructions for every report after 600 steps on phantom reports).

Training is teacher forced: the decoder reads ``[prefix] [BOS] t1 .. tn`` and predicts ``t1 .. tn [EOS]``; the
reconstruction term is the cross-entropy summed over the tokens of a report (averaged over the batch), the KL
term is summed over latent dimensions, with optional free bits per dimension (Optimus' hinge on the batch-mean
KL of each dimension). Optional word dropout (Bowman et al. 2016) replaces decoder inputs by ``[MASK]`` so the
decoder has to read ``z``. The KL weight's warm-up belongs to the training stage. BERT's and GPT-2's dropout
is off: all randomness of a training step comes from the generator handed to :meth:`TextVAE.loss`.

Decoding is our own loop over GPT-2 with its KV cache (greedy, or beam search with the cache reordered per
step), because ``generate`` would embed new tokens without the added ``z``.

Saved like every diffusers component: ``save_pretrained(folder)`` writes ``config.json``,
``diffusion_pytorch_model.safetensors`` and the tokenizer (``tokenizer.json``) into one folder;
``TextVAE.from_pretrained(folder)`` (or ``(root, subfolder="text_vae")``) loads the three back.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from tokenizers import Tokenizer
from torch import nn
from transformers import BertConfig, BertModel, Cache, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from medm2g_core.errors import InputError, ModelError
from medm2g_core.models.tokenizer import TOKENIZER_FILE, load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class TextVAEConfig:
    vocab_size: int = 2000  # a stage sets it to the size of the tokenizer it trains or loads
    max_length: int = 96  # tokens per report, [BOS] and [EOS] included; longer reports are truncated
    latent_dim: int = 768
    encoder_hidden: int = 256
    encoder_layers: int = 4
    encoder_heads: int = 4
    decoder_hidden: int = 256
    decoder_layers: int = 4
    decoder_heads: int = 4
    kl_weight: float = 0.5  # the final weight; the stage anneals it from 0
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not penalised
    latent_prefix_tokens: int = 4
    word_dropout: float = 0.0  # training only: share of decoder input tokens replaced by [MASK] (Bowman et al.)


class TextVAE(ModelMixin, ConfigMixin):
    """BERT encoder -> ``z [B, latent_dim]`` -> GPT-2 decoder, with its tokenizer attached (``self.tokenizer``)."""

    ignore_for_config: ClassVar[list[str]] = ["tokenizer"]

    @register_to_config
    def __init__(
        self,
        vocab_size: int = TextVAEConfig.vocab_size,
        max_length: int = TextVAEConfig.max_length,
        latent_dim: int = TextVAEConfig.latent_dim,
        encoder_hidden: int = TextVAEConfig.encoder_hidden,
        encoder_layers: int = TextVAEConfig.encoder_layers,
        encoder_heads: int = TextVAEConfig.encoder_heads,
        decoder_hidden: int = TextVAEConfig.decoder_hidden,
        decoder_layers: int = TextVAEConfig.decoder_layers,
        decoder_heads: int = TextVAEConfig.decoder_heads,
        kl_weight: float = TextVAEConfig.kl_weight,
        free_bits: float = TextVAEConfig.free_bits,
        latent_prefix_tokens: int = TextVAEConfig.latent_prefix_tokens,
        word_dropout: float = TextVAEConfig.word_dropout,
        tokenizer: PreTrainedTokenizerFast | None = None,
    ) -> None:
        super().__init__()
        if tokenizer is not None and len(tokenizer) > vocab_size:
            raise InputError(f"the tokenizer has {len(tokenizer)} tokens but vocab_size is {vocab_size}")
        self.tokenizer = tokenizer
        self.encoder = BertModel(BertConfig(
            vocab_size=vocab_size, hidden_size=encoder_hidden, num_hidden_layers=encoder_layers,
            num_attention_heads=encoder_heads, intermediate_size=4 * encoder_hidden, max_position_embeddings=max_length,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0,
        ), add_pooling_layer=False)
        self.to_moments = nn.Linear(encoder_hidden, 2 * latent_dim)
        self.decoder = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab_size, n_positions=latent_prefix_tokens + max_length, n_embd=decoder_hidden,
            n_layer=decoder_layers, n_head=decoder_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False,
        ))  # untied LM head: safetensors refuses shared tensors and diffusers does not re-tie them
        self.to_prefix = nn.Linear(latent_dim, latent_prefix_tokens * decoder_hidden)  # memory injection
        self.to_embedding = nn.Linear(latent_dim, decoder_hidden)  # embedding injection
        for layer in (self.to_prefix, self.to_embedding):  # z ~ N(0, I) enters at GPT-2's embedding scale (0.02)
            nn.init.normal_(layer.weight, std=0.02 / latent_dim**0.5)
            nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------------------------------ saving

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' ``save_pretrained`` (config + safetensors weights) plus the tokenizer in the same folder."""
        super().save_pretrained(save_directory, **kwargs)
        self._tokenizer().save_pretrained(str(save_directory))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "TextVAE":
        """A local folder written by :meth:`save_pretrained` (``subfolder=`` as in diffusers); safetensors only."""
        kwargs.setdefault("use_safetensors", True)
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        model.tokenizer = load_tokenizer(Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or ""))
        return model

    def adapt_pretrained(
        self, encoder_folder: str | os.PathLike | None = None, decoder_folder: str | os.PathLike | None = None,
    ) -> list[str]:
        """Initialise the encoder from a BERT folder and the decoder from a GPT-2 folder (transformers format).

        The layer sizes must match this model's config. Position embeddings are cut to this model's length.
        Token embeddings and the LM head (tied in GPT-2, untied here) are copied only when the folder holds a
        tokenizer with this model's vocabulary; otherwise they keep their fresh initialisation, which is logged.
        Returns the names of the parameters left as they were.
        """
        kept = []
        if encoder_folder is not None:
            source = BertModel.from_pretrained(str(encoder_folder), add_pooling_layer=False)
            self._check_sizes(source.config, "encoder", {
                "hidden_size": self.config.encoder_hidden, "num_hidden_layers": self.config.encoder_layers,
                "num_attention_heads": self.config.encoder_heads, "intermediate_size": 4 * self.config.encoder_hidden,
            })
            skip = () if self._same_vocab(encoder_folder) else ("embeddings.word_embeddings.weight",)
            kept += [f"encoder.{name}" for name in _copy_weights(self.encoder, source, skip)]
        if decoder_folder is not None:
            source = GPT2LMHeadModel.from_pretrained(str(decoder_folder))
            self._check_sizes(source.config, "decoder", {
                "n_embd": self.config.decoder_hidden, "n_layer": self.config.decoder_layers,
                "n_head": self.config.decoder_heads, "n_inner": None,
            })
            skip = () if self._same_vocab(decoder_folder) else ("transformer.wte.weight", "lm_head.weight")
            kept += [f"decoder.{name}" for name in _copy_weights(self.decoder, source, skip)]
        if any(name.endswith(("word_embeddings.weight", "wte.weight")) for name in kept):
            logger.warning("pretrained vocabulary differs from the tokenizer: token embeddings and LM head kept fresh")
        return kept

    def _check_sizes(self, config: BertConfig | GPT2Config, part: str, expected: dict) -> None:
        wrong = {key: getattr(config, key) for key, value in expected.items() if getattr(config, key) != value}
        if wrong:
            raise InputError(f"the pretrained {part} has {wrong}; set the text VAE's {part}_* sizes to match")

    def _same_vocab(self, folder: str | os.PathLike) -> bool:
        path = Path(folder) / TOKENIZER_FILE
        return path.is_file() and Tokenizer.from_file(str(path)).get_vocab() == self._tokenizer().get_vocab()

    # ------------------------------------------------------------------------------------------ encoding

    def _tokenizer(self) -> PreTrainedTokenizerFast:
        if self.tokenizer is None:
            raise ModelError("this text VAE has no tokenizer; load it with TextVAE.from_pretrained(folder)")
        return self.tokenizer

    def tokenize(self, texts: list[str], padding: str = "longest") -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` [B, T], ``[BOS] .. [EOS]``, truncated to ``max_length``."""
        return self._tokenizer()(
            texts, padding=padding, truncation=True, max_length=self.config.max_length, return_tensors="pt",
            return_token_type_ids=False,
        )

    def moments(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance [B, latent_dim] of token batches [B, T]."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, He]
        mask = attention_mask[..., None].to(hidden.dtype)  # [B, T, 1]
        pooled = (hidden * mask).sum(1) / mask.sum(1)  # [B, He]
        mean, logvar = self.to_moments(pooled).chunk(2, dim=-1)  # [B, D] each
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance [B, latent_dim] of raw report texts (tokenised here)."""
        tokens = self.tokenize(texts)
        return self.moments(tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device))

    # ------------------------------------------------------------------------------------------ decoding

    def _embed(self, input_ids: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Token embeddings plus the projected latent: [B, T] -> [B, T, Hd]."""
        return self.decoder.transformer.wte(input_ids) + self.to_embedding(latents)[:, None]

    def _prefix(self, latents: torch.Tensor) -> torch.Tensor:
        """The latent as soft-prompt embeddings: [B, D] -> [B, P, Hd]."""
        return self.to_prefix(latents).view(len(latents), self.config.latent_prefix_tokens, -1)

    def logits(self, latents: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits [B, T, V] for decoder inputs [B, T] given latents [B, D].

        Without an attention mask: inputs are right-padded, so causal attention never lets a real token see a pad.
        """
        embeds = torch.cat([self._prefix(latents), self._embed(input_ids, latents)], dim=1)  # [B, P + T, Hd]
        return self.decoder(inputs_embeds=embeds).logits[:, self.config.latent_prefix_tokens:]

    def _start(self, latents: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        """Feed the prefix and [BOS]: the logits of the first token [B, V] and the KV cache."""
        bos = torch.full((len(latents), 1), self._tokenizer().bos_token_id, device=latents.device)
        embeds = torch.cat([self._prefix(latents), self._embed(bos, latents)], dim=1)  # [B, P + 1, Hd]
        out = self.decoder(inputs_embeds=embeds, use_cache=True)
        return out.logits[:, -1], out.cache

    def _step(self, tokens: torch.Tensor, latents: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, Cache]:
        """Feed one token per sequence [B]: the next logits [B, V] and the grown cache."""
        out = self.decoder(inputs_embeds=self._embed(tokens[:, None], latents), cache=cache, use_cache=True)
        return out.logits[:, -1], out.cache

    def decode(self, latents: torch.Tensor, max_length: int | None = None, num_beams: int = 1) -> list[str]:
        """Reports (normalised text) from latents [B, latent_dim]; see :meth:`generate`."""
        tokens = self.generate(latents, max_length, num_beams)  # [B, <= max_length]
        return [text.strip() for text in self._tokenizer().batch_decode(tokens.tolist(), skip_special_tokens=True)]

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, max_length: int | None = None, num_beams: int = 1) -> torch.Tensor:
        """Token ids [B, <= max_length] from latents [B, latent_dim], [PAD] after [EOS]; deterministic.

        Greedy when ``num_beams`` is 1, beam search otherwise. ``max_length`` bounds the generated tokens, [EOS]
        included (default ``config.max_length - 1``, the length of the training targets; at most
        ``config.max_length``, the positions the decoder has).
        """
        steps = self.config.max_length - 1 if max_length is None else max_length
        if not 1 <= steps <= self.config.max_length:
            raise InputError(f"max_length must be between 1 and {self.config.max_length}, not {steps}")
        if num_beams < 1:
            raise InputError(f"num_beams must be at least 1, not {num_beams}")
        latents = latents.to(self.device, self.dtype)
        return self._greedy(latents, steps) if num_beams == 1 else self._beam_search(latents, steps, num_beams)

    def _greedy(self, latents: torch.Tensor, steps: int) -> torch.Tensor:
        """Token ids [B, <= steps] of the most likely token at each step."""
        pad, eos = self._tokenizer().pad_token_id, self._tokenizer().eos_token_id
        logits, cache = self._start(latents)
        done = torch.zeros(len(latents), dtype=torch.bool, device=latents.device)
        tokens = []
        for step in range(steps):
            token = logits.argmax(-1).masked_fill(done, pad)  # [B]
            tokens.append(token)
            done |= token == eos
            if done.all() or step == steps - 1:
                break
            logits, cache = self._step(token, latents, cache)
        return torch.stack(tokens, dim=1)

    def _beam_search(self, latents: torch.Tensor, steps: int, beams: int) -> torch.Tensor:
        """Token ids [B, <= steps] of the best of ``beams`` hypotheses per latent by mean token log-probability."""
        pad, eos = self._tokenizer().pad_token_id, self._tokenizer().eos_token_id
        batch = len(latents)
        latents = latents.repeat_interleave(beams, dim=0)  # [B * K, D], beams of one latent together
        logits, cache = self._start(latents)
        scores = torch.full((batch, beams), float("-inf"), device=latents.device)
        scores[:, 0] = 0.0  # all beams start equal: keep one so the first step does not pick duplicates
        offsets = torch.arange(batch, device=latents.device)[:, None] * beams  # [B, 1]
        tokens = torch.zeros(batch * beams, 0, dtype=torch.long, device=latents.device)
        done = torch.zeros(batch * beams, dtype=torch.bool, device=latents.device)
        for step in range(steps):
            logprobs = logits.float().log_softmax(-1)  # [B * K, V]
            logprobs[:, pad] = float("-inf")
            logprobs[done] = float("-inf")
            logprobs[done, pad] = 0.0  # a finished beam only extends with [PAD], at no cost
            vocab = logprobs.shape[-1]
            total = (scores.view(-1, 1) + logprobs).view(batch, beams * vocab)  # [B, K * V]
            scores, flat = total.topk(beams, dim=-1)  # [B, K]
            origin = (flat // vocab + offsets).view(-1)  # [B * K] rows of the beams extended
            token = (flat % vocab).view(-1)  # [B * K]
            tokens = torch.cat([tokens[origin], token[:, None]], dim=1)
            done = done[origin] | (token == eos)
            if done.all() or step == steps - 1:
                break
            cache.reorder_cache(origin)
            logits, cache = self._step(token, latents, cache)
        lengths = (tokens != pad).sum(1).clamp(min=1).view(batch, beams)  # [B, K]
        best = (scores / lengths).argmax(-1) + offsets[:, 0]  # [B]
        return tokens[best]

    # ------------------------------------------------------------------------------------------ training

    def loss(
        self, batch: list[str] | dict[str, torch.Tensor], generator: torch.Generator, kl_weight: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, reconstruction, KL) of a batch of texts or token tensors, each averaged over reports.

        Reconstruction is the teacher-forced cross-entropy summed over a report's tokens, KL is summed over the
        latent dimensions; total = reconstruction + ``kl_weight`` (default ``config.kl_weight``) x KL, where the
        KL of each dimension counts at least ``free_bits``. The reparameterisation noise comes from ``generator``.
        """
        tokens = self.tokenize(batch) if isinstance(batch, list) else batch
        mask = tokens["attention_mask"].to(self.device)
        length = int(mask.sum(1).max())  # drop the padding columns no report of this batch needs
        ids, mask = tokens["input_ids"].to(self.device)[:, :length], mask[:, :length]  # [B, T]
        mean, logvar = self.moments(ids, mask)  # [B, D]
        noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
        latents = mean + (0.5 * logvar).exp() * noise.to(mean.device)  # [B, D]
        logits = self.logits(latents, self._drop_words(ids[:, :-1], generator))  # [B, T - 1, V]
        nll = F.cross_entropy(logits.transpose(1, 2).float(), ids[:, 1:], reduction="none")  # [B, T - 1]
        recon = (nll * mask[:, 1:]).sum(1).mean()
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float())  # [B, D]
        kl_term = kl.mean(0).clamp(min=self.config.free_bits).sum()
        weight = self.config.kl_weight if kl_weight is None else kl_weight
        return recon + weight * kl_term, recon, kl.sum(1).mean()

    def _drop_words(self, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Decoder inputs [B, T] with a ``word_dropout`` share of the tokens after [BOS] replaced by [MASK]."""
        if not self.training or self.config.word_dropout == 0:
            return input_ids
        draw = torch.rand(input_ids.shape, generator=generator, device=generator.device).to(input_ids.device)
        drop = draw < self.config.word_dropout
        drop[:, 0] = False
        return input_ids.masked_fill(drop, self._tokenizer().mask_token_id)


def _copy_weights(target: nn.Module, source: nn.Module, skip: tuple[str, ...]) -> list[str]:
    """Copy every tensor of ``source`` whose name matches into ``target`` (position tables cut to length).

    Returns the names of ``target``'s tensors that were not copied.
    """
    theirs = source.state_dict()
    kept = []
    with torch.no_grad():
        for name, ours in target.state_dict().items():
            value = theirs.get(name)
            if name in skip or value is None or value.shape[1:] != ours.shape[1:] or len(value) < len(ours):
                kept.append(name)
            elif value.shape == ours.shape or name.endswith(("position_embeddings.weight", "wpe.weight")):
                ours.copy_(value[:len(ours)])
            else:
                kept.append(name)
    return kept
