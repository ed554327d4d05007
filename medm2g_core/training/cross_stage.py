"""Stage: one round of latent cross-guided alignment generation (paper 3.4, Eq. 5-6) in the multi-flow order (3.5).

For a pair of modalities (A, B) of the same case, B guides A: its context encoder V_B reads B's noisy latent
z_t^B together with the adaptation f_B = F_emb(C_B(x_B)) (Eq. 5, see ``docs/METHOD.md`` for the reading of
phi_s) and gives tokens for the cross-attention of A's denoiser, which predicts A's noise (Eq. 6). The loss sums
both directions, A guided by B and B guided by A. Only the context encoders and the cross-attention (``attn2``)
sub-layers named by the round train; every other weight (the rest of each LDM, the VAEs, the prompt encoders, the
other round's parts) stays frozen, bit for bit.

The three rounds of Fig. 3 (:data:`ROUNDS`):

- ``text-xray``: V_text, V_xray and the cross-attention of the text and X-ray denoisers;
- ``text-ct``: the text side frozen (V_text, text cross-attention); V_ct and the CT cross-attention train;
- ``ct-mri``: the CT side frozen; V_mri and the MRI cross-attention train.

The guide's noise level: with probability ``clean_guide_prob`` the guide is clean (t_B = 0, what translation and
report generation see), otherwise it is noised to the target's t (what joint generation sees); V_B is told t_B.
With probability ``cond_dropout`` a sample's context is replaced by the target denoiser's learned null context
(tiled to the same length, which leaves attention unchanged), so that classifier-free guidance keeps working.
A new V_B starts from the self guide of B's single-modal LDM where there is one (``medm2g_core.training.guidance``).
Latents (frozen VAEs) and the guides' prompt embeddings (frozen encoders) are computed once per split.
"""

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from torch.utils.data import Dataset, default_collate

from medm2g_core.atomic import write_text
from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.models.context_encoder import ContextEncoder, ContextEncoderConfig
from medm2g_core.models.image_vae import latent_means
from medm2g_core.models.medm2g import MedM2G, export_component
from medm2g_core.models.schedule import DiffusionConfig, make_train_scheduler, training_target
from medm2g_core.training.guidance import drop_to_null, init_from_self_guide
from medm2g_core.training.pairs import (
    PairedItems,
    Store,
    has_pairs,
    image_store,
    pair_sides,
    part,
    store_embeddings,
    text_store,
)
from medm2g_core.training.stage import OptimConfig

ENCODE_BATCH = 64


@dataclass(frozen=True)
class Round:
    """A multi-flow round: a pair kind, whose context encoders train, whose cross-attention trains."""

    kind: str
    train_context: tuple[str, ...]
    train_attention: tuple[str, ...]


ROUNDS = {
    "text-xray": Round("text-xray", ("text", "xray"), ("text", "xray")),
    "text-ct": Round("text-ct", ("ct",), ("ct",)),
    "ct-mri": Round("ct-mri", ("mri",), ("mri",)),
}


@dataclass
class CrossRecipe:
    rounds: tuple[str, ...] = tuple(ROUNDS)  # what `train cross --all` runs, in order
    context_encoder: ContextEncoderConfig = field(default_factory=ContextEncoderConfig)  # latent_shape set per modality
    clean_guide_prob: float = 0.5
    cond_dropout: float = 0.1
    optim: OptimConfig = field(default_factory=OptimConfig)


def required_components(round_name: str) -> tuple[str, ...]:
    """What a round's ``--model`` must hold: its autoencoders, both denoisers and prompt encoders, and the context
    encoders that earlier rounds trained and this one keeps frozen."""
    if round_name not in ROUNDS:
        raise InputError(f"unknown round {round_name!r}; rounds: {', '.join(ROUNDS)}")
    spec = ROUNDS[round_name]
    sides = pair_sides(spec.kind)
    autoencoders = [name for name, used in (("text_vae", "text" in sides), ("image_vae", sides != ("text",)))
                    if used]
    return (*autoencoders, *(f"denoiser_{m}" for m in sides), *(f"prompt_encoder_{m}" for m in sides),
            *(f"context_encoder_{m}" for m in sides if m not in spec.train_context))


class CrossStage:
    """Trains one round on ``model`` (a MedM2G with the VAEs, the round's denoisers and prompt encoders)."""

    def __init__(
        self, cache: Cache, model: MedM2G, round_name: str, config: CrossRecipe, diffusion: DiffusionConfig,
        lcag: bool = True, seed: int = 0,
    ) -> None:
        needed = required_components(round_name)
        self.round = ROUNDS[round_name]
        self.name = f"cross-{round_name}"
        self.cache, self.config = cache, config
        self.sides = pair_sides(self.round.kind)
        missing = [name for name in needed if name not in model]
        if missing:
            raise InputError(f"round {round_name} needs {', '.join(missing)} in the model it builds on; train those "
                             "stages first", option="model")
        self.model = model
        self.denoisers = {m: model[f"denoiser_{m}"] for m in self.sides}
        self.prompt_encoders = {m: model[f"prompt_encoder_{m}"].eval() for m in self.sides}
        self.autoencoders = {name: model[name].eval() for name in needed if name.endswith("_vae")}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.context = {m: self._context_encoder(model, m, lcag) for m in self.sides}
        for module in (*self.denoisers.values(), *self.context.values(), *self.prompt_encoders.values(),
                       *self.autoencoders.values()):
            module.requires_grad_(False)
        new = [m for m in self.sides if f"context_encoder_{m}" not in model]
        for modality in new:
            if self.context[modality].config.adaptation == "inversion":  # Eq. 5 with phi_s = random training inputs
                prompts = self.stores("train")[modality].tensors["prompt"]
                self.context[modality].init_adaptation(prompts, torch.Generator().manual_seed(seed))
        self.scheduler = make_train_scheduler(diffusion)
        self._stores: dict[str, dict[str, Store]] = {}
        self._datasets: dict[str, PairedItems] = {}

    def _latent_shape(self, modality: str) -> tuple[int, ...]:
        if modality == "text":
            return (self.denoisers["text"].config.latent_dim,)
        side = self.denoisers[modality].config.sample_size
        return (self.denoisers[modality].config.in_channels, side, side)

    def _context_encoder(self, model: MedM2G, modality: str, lcag: bool) -> ContextEncoder:
        """V_modality: from the model when an earlier round made it (required when this round keeps it frozen),
        else new."""
        name = f"context_encoder_{modality}"
        if name in model:
            return model[name]
        partner = next(m for m in self.sides if m != modality)
        config = replace(self.config.context_encoder, latent_shape=self._latent_shape(modality),
                         embed_dim=self.prompt_encoders[modality].config.embed_dim,
                         context_dim=self.denoisers[partner].config.cross_attention_dim, use_latent=lcag)
        encoder = ContextEncoder(**asdict(config))
        if f"self_guide_{modality}" in model:  # the single-modal LDM's guide already reads this modality's latents
            init_from_self_guide(encoder, model[f"self_guide_{modality}"])
        return encoder

    def modules(self) -> dict[str, nn.Module]:
        return {**{f"denoiser_{m}": d for m, d in self.denoisers.items()},
                **{f"context_encoder_{m}": v for m, v in self.context.items()},
                **{f"prompt_encoder_{m}": e for m, e in self.prompt_encoders.items()}, **self.autoencoders}

    def trainable(self) -> list[nn.Parameter]:
        """The round's context encoders (without F_emb in inversion mode, where it only initialises f_B) and the
        cross-attention of its trained denoisers."""
        context = [p for m in self.round.train_context for name, p in self.context[m].named_parameters()
                   if not (self.context[m].config.adaptation == "inversion" and name.startswith("f_emb."))]
        return context + [p for m in self.round.train_attention for p in self.denoisers[m].cross_attention_parameters()]

    def ema_modules(self) -> dict[str, nn.Module]:
        return {**{f"denoiser_{m}": self.denoisers[m] for m in self.round.train_attention},
                **{f"context_encoder_{m}": self.context[m] for m in self.round.train_context}}

    # ------------------------------------------------------------------------------------------------ data

    @torch.no_grad()
    def stores(self, split: str) -> dict[str, Store]:
        """Both sides of the pair in ``split`` with their scaled latents and normalised prompt embeddings."""
        if split not in self._stores:
            stores = {}
            for modality in self.sides:
                store = self.raw_store(split, modality)
                if store is None:
                    raise InputError(f"the data has no {modality} in split {split}")
                store.tensors["latent"] = self._latents(modality, store)
                store.tensors["prompt"] = store_embeddings(self.prompt_encoders[modality], store)
                stores[modality] = store
            self._stores[split] = stores
        return self._stores[split]

    def raw_store(self, split: str, modality: str) -> Store | None:
        """One side's rows in ``split`` before encoding (None when the split has none)."""
        if modality == "text":
            return text_store(self.cache, split, self.autoencoders["text_vae"].tokenize)
        return image_store(self.cache, split, modality)

    def _latents(self, modality: str, store: Store) -> torch.Tensor:
        if modality != "text":
            vae = self.autoencoders["image_vae"]
            return latent_means(vae, store.tensors["image"]) * vae.config.scaling_factor  # [M, C, h, w]
        text_vae = self.autoencoders["text_vae"]
        means = [text_vae.moments(store.tensors["ids"][i:i + ENCODE_BATCH].to(text_vae.device),
                                  store.tensors["mask"][i:i + ENCODE_BATCH].to(text_vae.device))[0].float().cpu()
                 for i in range(0, len(store), ENCODE_BATCH)]
        return torch.cat(means) * self.denoisers["text"].config.scaling_factor  # [M, D]

    def dataset(self, split: str) -> Dataset:
        if split not in self._datasets:
            self._datasets[split] = PairedItems(self.stores(split), self.kinds())
        return self._datasets[split]

    def kinds(self) -> tuple[str, ...]:
        """The pair kinds a batch holds (the round's own)."""
        return (self.round.kind,)

    def pair_kind(self, target: str, guide: str) -> str:
        """The pair kind that holds ``target`` and ``guide`` of one case."""
        return self.round.kind

    # ------------------------------------------------------------------------------------------------ loss

    def directions(self) -> list[tuple[str, str]]:
        """(target, guide) pairs where something trains: the guide's V or the target's cross-attention."""
        a, b = self.sides
        return [(t, g) for t, g in ((a, b), (b, a))
                if g in self.round.train_context or t in self.round.train_attention]

    def direction_loss(
        self, batch: dict, target: str, guide: str, generator: torch.Generator, shuffle: bool = False,
        cond_dropout: float | None = None,
    ) -> torch.Tensor:
        """Eq. 6 for ``target`` guided by ``guide`` (``shuffle``: the guide of another sample, for evaluation;
        ``cond_dropout``: instead of the recipe's)."""
        cond_dropout = self.config.cond_dropout if cond_dropout is None else cond_dropout
        denoiser = self.denoisers[target]
        device = denoiser.device
        kind = self.pair_kind(target, guide)
        goal = part(batch, kind, target, device)
        lead = part(batch, kind, guide, device)
        if shuffle:
            order = torch.roll(torch.arange(len(goal["latent"]), device=device), 1)
            lead = {name: value[order] for name, value in lead.items()}
        z0 = goal["latent"]
        size = (len(z0),)
        noise = randn_tensor(z0.shape, generator=generator, device=device, dtype=z0.dtype)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, size, generator=generator,
                          device=generator.device).to(device)
        clean = torch.rand(size, generator=generator, device=generator.device).to(device) < self.config.clean_guide_prob
        t_guide = t.masked_fill(clean, 0)
        guide_noise = randn_tensor(lead["latent"].shape, generator=generator, device=device, dtype=z0.dtype)
        context = self.context[guide](self.scheduler.add_noise(lead["latent"], guide_noise, t_guide), t_guide,
                                      lead["prompt"])  # [B, L, D]
        context = drop_to_null(context, denoiser, cond_dropout, generator)
        kwargs = {"contrast": goal["label"]} if target == "mri" else {}
        prediction = denoiser(self.scheduler.add_noise(z0, noise, t), t, context=context, **kwargs)
        return F.mse_loss(prediction.float(), training_target(self.scheduler, z0, noise, t).float())

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        total, metrics = 0.0, {}
        for target, guide in self.directions():
            value = self.direction_loss(batch, target, guide, generator)
            total = total + value
            metrics[f"mse_{target}<-{guide}"] = value.item()
        return total, metrics

    # ---------------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def guidance_gain(self, split: str, batches: int = 8, batch_size: int = 32, seed: int = 0) -> dict[str, dict]:
        """Held-out Eq. 6 loss with the real partner vs a shuffled one (same noise, timesteps and dropout-free),
        per direction: the real partner must help if the guide carries information about the target."""
        data = self.dataset(split)
        step = max(1, len(data) // (batches * batch_size))  # spread the rows over the whole split
        results = {}
        for target, guide in self.directions():
            sums = {"real": 0.0, "shuffled": 0.0}
            for n in range(batches):
                rows = [((n * batch_size + i) * step) % len(data) for i in range(batch_size)]
                batch = default_collate([data[r] for r in rows])
                for name, shuffle in (("real", False), ("shuffled", True)):
                    generator = torch.Generator().manual_seed(seed + n)
                    loss = self.direction_loss(batch, target, guide, generator, shuffle, cond_dropout=0.0)
                    sums[name] += loss.item() / batches
            results[f"{target}<-{guide}"] = {**sums, "ratio": sums["real"] / sums["shuffled"]}
        return results

    def sample(self, folder: Path, step: int) -> None:
        """Held-out (val) denoising loss with real vs shuffled partners as JSON (train data when val has no pairs)."""
        split = "val" if has_pairs(self.cache, "val", self.round.kind) else "train"
        write_text(Path(folder) / f"{self.name}-{step:06d}.json",
                   json.dumps({"split": split, "guidance": self.guidance_gain(split, batches=2)}, indent=1) + "\n",
                   overwrite=True)

    def export(self, folder: Path) -> None:
        """The round's context encoders and the denoisers whose cross-attention trained."""
        for modality in self.sides:
            export_component(self.context[modality], Path(folder) / f"context_encoder_{modality}")
        for modality in self.round.train_attention:
            export_component(self.denoisers[modality], Path(folder) / f"denoiser_{modality}")
