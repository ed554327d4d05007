"""Stage: the spatial path of image-to-image flows (our extension of the paper; docs/METHOD.md, "Spatial path").

The round trains ``spatial_ct`` and ``spatial_mri``: copies of the CT and MRI denoisers whose input also holds the
sources' latents in fixed slots (:mod:`medm2g_core.models.spatial_guide`), widened with zero weights so that they
start as the single-modal denoisers they come from. Every weight of the copies trains; the paper's denoisers,
context encoders, VAEs and prompt encoders stay frozen and unchanged, so text -> CT and joint generation are
exactly what the multi-flow rounds made them.

Data: the paired brain slices of a split, one item per (case, slice) with its CT and every MRI contrast it has.
Each step draws, per sample,

* CT target: a random non-empty subset of the MRI contrasts present (each kept with probability 1/2);
* MRI target: one present contrast as the target (its label goes to the contrast embedding) and a random
  non-empty subset of CT and the other contrasts as sources: T2 + FLAIR -> T1, T1 -> CT, CT -> T2 and every
  other combination are one model (the paper's Table 2 multi-source synthesis with any subset).

The paper's cross-attention guidance (LCAG) stays in the flow: the cross-attention reads V_B of one present
source (V_mri for an MRI source, V_ct for CT; at sampling, the first input), clean (t_B = 0), when the model has
those context encoders. With probability ``cond_dropout`` the sample is unconditional (all slots absent and the
null context), which is the unconditional half of classifier-free guidance at sampling.

Domain randomisation (issue 18): with probability ``scanner`` a sample's sources (the spatial slots and V_B's input)
are read from a copy of its slices as a random scanner would have acquired them
(:func:`medm2g_core.phantoms.perturb.randomise`: noise, bias field, bit depth, blur, thick slices, lower in-plane
resolution, each volume perturbed as one in HU or the MRI's units and normalised back as inference does), while the
target stays the clean image: the guide learns to read through the scanner. The copy is drawn once, when the
dataset is built (deterministic by the stage's seed); f_B's input, the prompt embedding, stays the clean image's.
"""


import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.atomic import write_text
from medm2g_core.data.cache import Cache
from medm2g_core.data.intensity import DEFAULT_CT_CLIP_HU, DEFAULT_MRI_PERCENTILES, IntensityMap, intensity_map
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.models.image_denoiser import ImageDenoiser, with_spatial_path
from medm2g_core.models.image_vae import latent_means
from medm2g_core.models.medm2g import MedM2G, export_component
from medm2g_core.models.sampler import tile_null
from medm2g_core.models.schedule import DiffusionConfig, make_train_scheduler, training_target
from medm2g_core.models.spatial_guide import slab_rows, spatial_channels, spatial_input
from medm2g_core.phantoms.perturb import randomise
from medm2g_core.training.pairs import Store, image_store, store_embeddings
from medm2g_core.training.stage import OptimConfig
from medm2g_core.vocabulary import MRI_CONTRASTS, SPATIAL_ROUND, SPATIAL_SCHEDULER

TARGETS = ("ct", "mri")
SCANNER_PAIRS = {"ct": "ct_scanner", "mri": "mri_scanner", "ct_slab": "ct_scanner_slab", "mri_slab": "mri_scanner_slab"}


@dataclass
class SpatialRecipe:
    cond_dropout: float = 0.1  # unconditional samples (no source, null context): classifier-free guidance
    keep_prob: float = 0.5  # each available source is kept with this probability (at least one always is)
    scanner: float = 0.0  # share of samples whose sources come from a randomised scanner (domain randomisation)
    zero_terminal_snr: bool = False  # the copies' own schedule: zero terminal SNR, v-prediction, trailing steps
    neighbours: int = 0  # 2.5D: slices each side of the target's that every source slot holds (issue 16)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        for name in ("cond_dropout", "keep_prob", "scanner"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"[spatial] {name} is a probability within 0-1; got {getattr(self, name)}",
                                 option="recipe")
        if not 0 <= self.neighbours <= 4:
            raise InputError(f"[spatial] neighbours is 0-4 slices each side; got {self.neighbours}", option="recipe")


def spatial_diffusion(diffusion: DiffusionConfig, config: SpatialRecipe) -> DiffusionConfig:
    """The copies' noise schedule: the recipe's, or with ``zero_terminal_snr`` the same betas rescaled to end in
    pure noise, predicting the velocity, sampled from the last step (docs/METHOD.md, "Spatial path")."""
    if not config.zero_terminal_snr:
        return diffusion
    return replace(diffusion, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")


def required_components() -> tuple[str, ...]:
    return ("image_vae", "denoiser_ct", "denoiser_mri")


class SlicePairs(Dataset):
    """Item: the CT and every MRI contrast of one (case, slice): latents ``ct`` [C,h,w], ``mri`` [5,C,h,w],
    prompt embeddings ``ct_prompt`` [E], ``mri_prompt`` [5,E], and ``have`` [6] (CT, then the contrasts); with
    domain randomisation also ``ct_scanner`` and ``mri_scanner``, the latents of the randomised scanner's slices;
    in 2.5D (``neighbours`` n) also each of those as slabs (``ct_slab`` [(2n+1)C,h,w], ``mri_slab`` [5,(2n+1)C,h,w],
    ``ct_scanner_slab``, ``mri_scanner_slab``: the slices -n..n around this one, :func:`slab_rows`)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["have"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: value[index] for name, value in self.tensors.items()}


def scanner_images(store: Store, cache_config: dict, seed: int) -> torch.Tensor:
    """The store's slices [M, 1, R, R] as a random scanner would have acquired them: each volume (a case's slices of
    one contrast, in slice order) perturbed as one (:func:`medm2g_core.phantoms.perturb.randomise`), in HU or the
    MRI's units, and normalised back as inference normalises an input (the cache's CT window; the MRI's robust
    percentiles). Deterministic by ``seed``."""
    window = IntensityMap(*cache_config.get("ct_clip_hu", DEFAULT_CT_CLIP_HU))
    percentiles = tuple(cache_config.get("mri_percentiles", DEFAULT_MRI_PERCENTILES))
    images = store.tensors["image"][:, 0].numpy()
    labels = store.tensors["label"].numpy()
    out = images.copy()
    for case, label in sorted(set(zip(store.case.tolist(), labels.tolist(), strict=True))):
        rows = np.flatnonzero((store.case == case) & (labels == label))
        rows = rows[np.argsort(store.slice[rows])]
        stack = np.moveaxis(images[rows], 0, 2)  # [R, R, S]: a volume
        draw = int(np.random.SeedSequence([seed, case, label]).generate_state(1)[0])
        if store.modality == "ct":
            normalised = window.forward(randomise(Volume(window.inverse(stack), np.eye(4), "CT", "HU"), draw)[0].data)
        else:
            made = randomise(Volume(stack + 1.0, np.eye(4), "MR"), draw)[0].data  # background 0, as acquired
            normalised = intensity_map(made, "MR", mri_percentiles=percentiles).forward(made)
        out[rows] = np.moveaxis(normalised, 2, 0)
    return torch.from_numpy(out)[:, None]


def through_scanner(batch: dict, share: float, generator: torch.Generator) -> dict:
    """``batch`` with the sources (``ct``, ``mri`` and their slabs) of a random ``share`` of its samples swapped for
    the randomised scanner's (``ct_scanner``, ...); the batch itself when there is nothing to swap."""
    if share <= 0 or "ct_scanner" not in batch:
        return batch
    swap = torch.rand(len(batch["ct"]), generator=generator) < share  # [B]
    swapped = {}
    for clean, scanner in SCANNER_PAIRS.items():
        if clean in batch:
            acquired = batch[scanner]
            swapped[clean] = torch.where(swap.view(-1, *[1] * (acquired.ndim - 1)), acquired, batch[clean])
    return {**batch, **swapped}


def case_slabs(cases: np.ndarray, slices: np.ndarray, neighbours: int) -> np.ndarray:
    """Rows [N, 2n + 1] of the slices -n..n around each of N (case, slice) rows, within its case in slice order."""
    near = np.zeros((len(cases), 2 * neighbours + 1), np.int64)
    for case in np.unique(cases):
        rows = np.flatnonzero(cases == case)
        rows = rows[np.argsort(slices[rows], kind="stable")]
        near[rows] = rows[slab_rows(len(rows), neighbours)]
    return near


class SpatialStage:
    """Trains the spatial path of the CT and MRI denoisers on ``model`` (VAE, denoisers; context encoders if any)."""

    def __init__(self, cache: Cache, model: MedM2G, config: SpatialRecipe, diffusion: DiffusionConfig,
                 seed: int = 0) -> None:
        missing = [name for name in required_components() if name not in model]
        if missing:
            raise InputError(f"the spatial round needs {', '.join(missing)} in the model it builds on; train those "
                             "stages first", option="model")
        self.name = f"cross-{SPATIAL_ROUND}"
        self.cache, self.config, self.model = cache, config, model
        self.vae = model["image_vae"].eval()
        channels = self.vae.config.latent_channels
        self.denoisers: dict[str, ImageDenoiser] = {}
        for target in TARGETS:
            name = f"spatial_{target}"
            widened = spatial_channels(target, channels, config.neighbours)
            self.denoisers[target] = (model[name] if name in model
                                      else with_spatial_path(model[f"denoiser_{target}"], widened, config.neighbours))
            if self.denoisers[target].config.spatial_neighbours != config.neighbours:
                raise InputError(f"{name} in the model reads {self.denoisers[target].config.spatial_neighbours} "
                                 f"neighbouring slices each side, the recipe {config.neighbours}", option="recipe")
        self.context = {m: model[f"context_encoder_{m}"].eval() for m in TARGETS if f"context_encoder_{m}" in model}
        self.prompt_encoders = {m: model[f"prompt_encoder_{m}"].eval() for m in TARGETS
                                if f"prompt_encoder_{m}" in model and m in self.context}
        if set(self.prompt_encoders) != set(self.context):  # V_B needs f_B's input, the prompt embedding
            self.context = {}
        for module in (self.vae, *self.context.values(), *self.prompt_encoders.values()):
            module.requires_grad_(False)
        self.diffusion = spatial_diffusion(diffusion, config)
        self.scheduler = make_train_scheduler(self.diffusion)
        self.own_schedule = self.diffusion != diffusion  # exported as scheduler_spatial, which sampling reads
        self.seed = seed
        self._datasets: dict[str, SlicePairs] = {}

    def modules(self) -> dict[str, nn.Module]:
        return {**{f"spatial_{t}": d for t, d in self.denoisers.items()},
                **{f"context_encoder_{m}": v for m, v in self.context.items()},
                **{f"prompt_encoder_{m}": e for m, e in self.prompt_encoders.items()}, "image_vae": self.vae}

    def trainable(self) -> list[nn.Parameter]:
        return [p for d in self.denoisers.values() for p in d.parameters()]

    def ema_modules(self) -> dict[str, nn.Module]:
        return {f"spatial_{t}": d for t, d in self.denoisers.items()}

    # ------------------------------------------------------------------------------------------------ data

    @torch.no_grad()
    def dataset(self, split: str) -> SlicePairs:
        if split not in self._datasets:
            stores = {m: image_store(self.cache, split, m) for m in TARGETS}
            if any(store is None for store in stores.values()):
                raise InputError(f"the spatial round needs CT and MRI slices of the same cases in split {split}")
            self._datasets[split] = SlicePairs(self._grid(stores["ct"], stores["mri"]))
        return self._datasets[split]

    def _latents(self, store: Store, rows: np.ndarray, images: torch.Tensor | None = None) -> torch.Tensor:
        images = (store.tensors["image"] if images is None else images)[torch.from_numpy(rows)]
        return latent_means(self.vae, images) * self.vae.config.scaling_factor  # [M, C, h, w]

    def _embeddings(self, modality: str, store: Store, rows: np.ndarray) -> torch.Tensor:
        picked = Store(store.modality, {"image": store.tensors["image"][torch.from_numpy(rows)]}, store.case[rows],
                       store.slice[rows])
        return store_embeddings(self.prompt_encoders[modality], picked)

    def _grid(self, ct: Store, mri: Store) -> dict[str, torch.Tensor]:
        """One row per CT slice that has at least one MRI contrast at the same (case, slice); only those slices are
        encoded (chest CT slices have no MRI partner)."""
        rows = {(int(c), int(s)): n for n, (c, s) in enumerate(zip(ct.case, ct.slice, strict=True))}
        slots = np.full((len(ct), len(MRI_CONTRASTS)), -1)
        for n, (c, s, label) in enumerate(zip(mri.case, mri.slice, mri.tensors["label"].tolist(), strict=True)):
            if (int(c), int(s)) in rows:
                slots[rows[(int(c), int(s))], label - 1] = n
        keep = np.flatnonzero((slots >= 0).any(axis=1))
        if len(keep) == 0:
            raise InputError("no case holds CT and MRI slices at the same positions")
        slots = slots[keep]
        used = np.unique(slots[slots >= 0])  # MRI rows to encode
        position = np.zeros(len(mri), np.int64)
        position[used] = np.arange(len(used))
        index = torch.from_numpy(position[np.clip(slots, 0, None)])  # [N, 5] rows of the encoded MRI slices
        have = torch.cat([torch.ones(len(keep), 1, dtype=torch.bool), torch.from_numpy(slots >= 0)], dim=1)
        tensors = {"ct": self._latents(ct, keep), "mri": self._latents(mri, used)[index], "have": have}
        if self.config.scanner > 0:
            config = self.cache.index["config"]
            tensors |= {"ct_scanner": self._latents(ct, keep, scanner_images(ct, config, self.seed)),
                        "mri_scanner": self._latents(mri, used, scanner_images(mri, config, self.seed))[index]}
        if self.config.neighbours:
            near = torch.from_numpy(case_slabs(ct.case[keep], ct.slice[keep], self.config.neighbours))  # [N, K]
            for name in [n for n in ("ct", "mri", "ct_scanner", "mri_scanner") if n in tensors]:
                rows = tensors[name][near]  # [N, K, C, h, w] or [N, K, 5, C, h, w]
                tensors[f"{name}_slab"] = (rows.flatten(1, 2) if rows.ndim == 5
                                           else rows.transpose(1, 2).flatten(2, 3))  # [N, (5,) K*C, h, w]
        if self.prompt_encoders:
            tensors |= {"ct_prompt": self._embeddings("ct", ct, keep),
                        "mri_prompt": self._embeddings("mri", mri, used)[index]}
        return tensors

    # ------------------------------------------------------------------------------------------------ loss

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        total, metrics = 0.0, {}
        for target in TARGETS:
            value = self.target_loss(batch, target, generator)
            total = total + value
            metrics[f"mse_{target}"] = value.item()
        return total, metrics

    def _draw(self, batch: dict, target: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per sample: the target latent and contrast label, the sources kept [B, S] and the primary source."""
        have = batch["have"].cpu()  # [B, 6]: CT, T1, T1ce, T2, FLAIR, PD
        size = have.shape
        if target == "ct":
            goal, label = 0, None
            available = have.clone()
            available[:, 0] = False
        else:  # a present contrast is the target; it cannot be a source
            scores = torch.rand((size[0], size[1] - 1), generator=generator) * have[:, 1:]
            goal = 1 + scores.argmax(dim=1)  # [B] column of the target contrast
            label = goal  # contrast labels are 1 + index in MRI_CONTRASTS, as the columns
            available = have.clone()
            available[torch.arange(size[0]), goal] = False
        kept = (torch.rand(size, generator=generator) < self.config.keep_prob) & available
        fallback = (torch.rand(size, generator=generator) * available).argmax(dim=1)  # one random available source
        none = ~kept.any(dim=1)
        kept[none, fallback[none]] = True
        primary = (torch.rand(size, generator=generator) * kept).argmax(dim=1)  # [B] the source V_B reads
        return {"goal": goal, "label": label, "kept": kept, "primary": primary}

    def target_loss(self, batch: dict, target: str, generator: torch.Generator, shuffle: bool = False,
                    cond_dropout: float | None = None, scanner: float | None = None) -> torch.Tensor:
        """Denoising MSE (eps or v, by the copies' schedule) of ``target`` under its spatial guide (``shuffle``:
        every source from another sample; ``scanner``: the share of samples read through a randomised scanner,
        default the recipe's)."""
        denoiser = self.denoisers[target]
        device = denoiser.device
        draw = self._draw(batch, target, generator)
        everything = torch.cat([batch["ct"][:, None], batch["mri"]], dim=1).to(device)  # [B, 6, C, h, w]
        rows = torch.arange(len(everything))
        z0 = everything[:, 0] if target == "ct" else everything[rows, draw["goal"]]
        batch = through_scanner(batch, self.config.scanner if scanner is None else scanner, generator)
        everything = torch.cat([batch["ct"][:, None], batch["mri"]], dim=1).to(device)  # the sources as acquired
        if self.config.neighbours:  # 2.5D: every slot holds its slab
            everything = torch.cat([batch["ct_slab"][:, None], batch["mri_slab"]], dim=1).to(device)
        sources = torch.roll(everything, 1, dims=0) if shuffle else everything
        kept = draw["kept"] if target == "mri" else draw["kept"][:, 1:]
        slots = sources if target == "mri" else sources[:, 1:]
        spatial = spatial_input(target, slots, kept.to(device))
        context = self._context(batch, draw["primary"], shuffle)
        dropout = self.config.cond_dropout if cond_dropout is None else cond_dropout
        dropped = (torch.rand(len(z0), generator=generator) < dropout).to(device)
        spatial = spatial.masked_fill(dropped[:, None, None, None], 0.0)
        if context is None:
            context = denoiser.null(len(z0))
        null = tile_null(denoiser, len(z0), context.shape[1])
        context = torch.where(dropped[:, None, None], null, context)
        noise = randn_tensor(z0.shape, generator=generator, device=device, dtype=z0.dtype)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(z0),), generator=generator).to(device)
        kwargs = {} if draw["label"] is None else {"contrast": draw["label"].to(device)}
        prediction = denoiser(self.scheduler.add_noise(z0, noise, t), t, context=context, spatial=spatial, **kwargs)
        return F.mse_loss(prediction.float(), training_target(self.scheduler, z0, noise, t).float())

    def _context(self, batch: dict, primary: torch.Tensor, shuffle: bool) -> torch.Tensor | None:
        """V_B of each sample's primary source, clean (t_B = 0): V_ct for CT (column 0), V_mri for a contrast. Each
        encoder runs only on the samples whose primary source it reads."""
        if not self.context:
            return None
        source = torch.roll(torch.arange(len(primary)), 1) if shuffle else torch.arange(len(primary))
        device = next(self.context["ct"].parameters()).device
        parts, reads_ct = [], primary == 0
        for modality, rows in (("ct", reads_ct.nonzero().flatten()), ("mri", (~reads_ct).nonzero().flatten())):
            if not len(rows):
                continue
            picked = source[rows] if modality == "ct" else (source[rows], primary[rows] - 1)  # MRI: (sample, column)
            zero = torch.zeros(len(rows), dtype=torch.long, device=device)
            parts.append((rows, self.context[modality](batch[modality][picked].to(device), zero,
                                                       batch[f"{modality}_prompt"][picked].to(device))))
        first = parts[0][1]
        context = first.new_empty(len(primary), *first.shape[1:])  # [B, L, D]
        for rows, value in parts:
            context[rows.to(device)] = value
        return context

    # ---------------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def guidance_gain(self, split: str, batches: int = 4, batch_size: int = 32) -> dict[str, dict]:
        """Held-out denoising MSE with the real sources vs sources of another sample (same noise, no dropout)."""
        data = self.dataset(split)
        step = max(1, len(data) // (batches * batch_size))
        results = {}
        for target in TARGETS:
            sums = {"real": 0.0, "shuffled": 0.0}
            for n in range(batches):
                rows = [((n * batch_size + i) * step) % len(data) for i in range(batch_size)]
                batch = {name: value[rows] for name, value in data.tensors.items()}
                for name, shuffle in (("real", False), ("shuffled", True)):
                    generator = torch.Generator().manual_seed(self.seed + n)
                    sums[name] += self.target_loss(batch, target, generator, shuffle, 0.0, 0.0).item() / batches
            results[target] = {**sums, "ratio": sums["real"] / sums["shuffled"]}
        return results

    def sample(self, folder: Path, step: int) -> None:
        split = "val" if "val/ct" in self.cache.index["shards"] else "train"
        write_text(Path(folder) / f"{self.name}-{step:06d}.json",
                   json.dumps({"split": split, "guidance": self.guidance_gain(split, batches=2)}, indent=1) + "\n",
                   overwrite=True)

    def export(self, folder: Path) -> None:
        for target, denoiser in self.denoisers.items():
            export_component(denoiser, Path(folder) / f"spatial_{target}")
        if self.own_schedule:
            export_component(self.scheduler, Path(folder) / SPATIAL_SCHEDULER)
