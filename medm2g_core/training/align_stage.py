"""Stage: central alignment of the prompt encoders (paper 3.2, Eq. 3) with visual invariant preservation (3.3, Eq. 4).

Prompt encoders C_text, C_xray, C_ct, C_mri map each modality into one shared space (``embed_dim``). The text
encoder starts from the text VAE's BERT encoder (it already reads reports); the image encoders are small ResNets.

Central alignment: the pair kinds are taken in recipe order (default text-xray, text-ct, ct-mri). The first pair
trains both of its encoders; every later pair aligns its new modality to one already placed in the space, whose
embedding is computed without gradient: text-ct moves only C_ct towards the text centre, ct-mri only C_mri
towards C_ct. That is the paper's "freeze the other encoders" per pair, but all pairs run in one stage, each step
holding a batch of every kind (a "concurrent" schedule; the paper's sequential one would need one run per pair
and reaches the same fixed point when each pair's partner is already placed). Modalities that never meet
(X-ray and MRI) share the space only through the centre, which is what the retrieval benchmark measures.

Each pair's loss is the symmetric InfoNCE of Eq. 3 over the batch with a learnable (CLIP-style, log-
parameterised) or fixed temperature; the same case drawn twice in a batch is not its own negative.

Visual invariant (``vi``): for every imaging modality two augmented views of its images (small affine, crop,
gamma, contrast, noise: changes that keep anatomy) are embedded by its encoder and pulled together by the Barlow
Twins loss of Eq. 4, weighted by ``vi_weight`` and trained jointly with the alignment.

Ablations (Table 7): ``ca`` off drops the InfoNCE terms (the encoders then learn from VI alone, or not at all).
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.atomic import write_text
from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.models.medm2g import export_component
from medm2g_core.models.prompt_encoder import ImagePromptEncoder, ImagePromptEncoderConfig, TextPromptEncoder
from medm2g_core.models.text_vae import TextVAE
from medm2g_core.training.objectives import AugmentConfig, augment, barlow_twins, info_nce
from medm2g_core.training.pairs import (
    PairedItems,
    Store,
    embed,
    has_pairs,
    image_store,
    pair_sides,
    part,
    text_store,
)
from medm2g_core.training.retrieval import retrieval_matrix
from medm2g_core.training.stage import OptimConfig


@dataclass
class AlignRecipe:
    pairs: tuple[str, ...] = ("text-xray", "text-ct", "ct-mri")  # in order: later pairs align to earlier ones
    image_encoder: ImagePromptEncoderConfig = field(default_factory=ImagePromptEncoderConfig)
    temperature: float = 0.07  # CLIP's initial value
    learn_temperature: bool = True
    vi_weight: float = 0.1  # weight of each modality's Barlow Twins loss (Eq. 4 is ~1 at start, InfoNCE ~log B)
    vi_lambda: float = 0.0051  # Barlow Twins' default off-diagonal weight
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


class Temperature(nn.Module):
    """tau = exp(log_tau), clamped to [0.01, 1] as CLIP does for its logit scale."""

    def __init__(self, value: float, learnable: bool) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(value)), requires_grad=learnable)

    def forward(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(0.01, 1.0)


class AlignStage:
    """Trains ``prompt_encoder_<modality>`` for every modality of ``config.pairs``."""

    def __init__(
        self, cache: Cache, text_vae: TextVAE, config: AlignRecipe, ca: bool = True, vi: bool = True, seed: int = 0
    ) -> None:
        self.name = "align"
        self.cache, self.text_vae, self.config, self.ca, self.vi = cache, text_vae, config, ca, vi
        self.modalities = tuple(dict.fromkeys(m for kind in config.pairs for m in pair_sides(kind)))
        embed_dim = config.image_encoder.embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoders: dict[str, nn.Module] = {
                m: TextPromptEncoder.from_text_vae(text_vae, embed_dim) if m == "text"
                else ImagePromptEncoder(**asdict(config.image_encoder)) for m in self.modalities
            }
        self.temperature = Temperature(config.temperature, config.learn_temperature and ca)
        self.trained = self._trained_modalities()
        self._stores: dict[str, dict[str, Store]] = {}
        self._datasets: dict[str, PairedItems] = {}

    def _trained_modalities(self) -> tuple[str, ...]:
        """What gets gradients: with CA, the first pair's two encoders and each later pair's new one; with VI,
        every image encoder."""
        trained: list[str] = []
        if self.ca:
            placed: set[str] = set()
            for kind in self.config.pairs:
                new = [m for m in pair_sides(kind) if m not in placed]
                if not new:
                    raise InputError(f"align pair {kind} adds no new modality (both are aligned by earlier pairs)")
                trained += new
                placed |= set(pair_sides(kind))
        if self.vi:
            trained += [m for m in self.modalities if m != "text"]
        return tuple(dict.fromkeys(trained))

    def modules(self) -> dict[str, nn.Module]:
        return {**{f"prompt_encoder_{m}": e for m, e in self.encoders.items()}, "temperature": self.temperature}

    def trainable(self) -> list[nn.Parameter]:
        params = [p for m in self.trained for p in self.encoders[m].parameters()]
        return params + ([self.temperature.log_tau] if self.temperature.log_tau.requires_grad else [])

    def ema_modules(self) -> dict[str, nn.Module]:
        return {}

    def stores(self, split: str) -> dict[str, Store]:
        if split not in self._stores:
            stores = {m: text_store(self.cache, split, self.text_vae.tokenize) if m == "text"
                      else image_store(self.cache, split, m) for m in self.modalities}
            self._stores[split] = {m: s for m, s in stores.items() if s is not None}
        return self._stores[split]

    def dataset(self, split: str) -> Dataset:
        if split not in self._datasets:
            self._datasets[split] = PairedItems(self.stores(split), self.config.pairs)
        return self._datasets[split]

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        device = self.temperature.log_tau.device
        total = torch.zeros((), device=device)
        metrics: dict[str, float] = {}
        if self.ca:
            placed: set[str] = set()
            tau = self.temperature()
            for kind in self.config.pairs:
                sides = []
                for modality in pair_sides(kind):
                    with torch.set_grad_enabled(modality not in placed and torch.is_grad_enabled()):
                        sides.append(embed(self.encoders[modality], part(batch, kind, modality, device)))
                nce = info_nce(sides[0], sides[1], tau, ids=batch[f"{kind}:case"].to(device))
                total = total + nce
                metrics[f"nce_{kind}"] = nce.item()
                placed |= set(pair_sides(kind))
            metrics["temperature"] = tau.item()
        if self.vi:
            for modality in self.modalities:
                if modality == "text":
                    continue
                kind = next(k for k in self.config.pairs if modality in pair_sides(k))
                images = part(batch, kind, modality, device)["image"]
                views = [self.encoders[modality](augment(images, generator, self.config.augment)) for _ in range(2)]
                bt = barlow_twins(*views, lambd=self.config.vi_lambda)
                total = total + self.config.vi_weight * bt
                metrics[f"vi_{modality}"] = bt.item()
        return total, metrics

    @torch.no_grad()
    def retrieval(self, split: str) -> dict[str, dict[str, float]]:
        """Case-level recall@1/@5 between every two modalities that share cases in ``split``."""
        return retrieval_matrix(self.encoders, self.stores(split))

    def sample(self, folder: Path, step: int) -> None:
        """Held-out (val) retrieval scores as JSON: the preview of an alignment is how well it retrieves (train data
        when val has no pairs)."""
        split = "val" if any(has_pairs(self.cache, "val", kind) for kind in self.config.pairs) else "train"
        scores = self.retrieval(split)
        write_text(Path(folder) / f"{self.name}-{step:06d}.json",
                   json.dumps({"split": split, "retrieval": scores}, indent=1) + "\n", overwrite=True)

    def export(self, folder: Path) -> None:
        """``folder/prompt_encoder_<modality>`` for every modality."""
        for modality, encoder in self.encoders.items():
            export_component(encoder, Path(folder) / f"prompt_encoder_{modality}")

