"""Recipes: one TOML file says how every stage of a model is trained (``recipes/*.toml``, shipped as package data).

Each stage has its model config (the same dataclass the model is built from) and its optimisation
(:class:`OptimConfig`). Unknown keys are errors naming the key; nothing in a recipe is evaluated as code.
"""

import os
import tomllib
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path

from medm2g_core.data.intensity import DEFAULT_CT_CLIP_HU
from medm2g_core.environment import available_recipes, recipes_dir
from medm2g_core.errors import InputError
from medm2g_core.models.image_denoiser import ImageDenoiserConfig
from medm2g_core.models.image_vae import ImageVAEConfig
from medm2g_core.models.schedule import DiffusionConfig
from medm2g_core.models.text_denoiser import TextDenoiserConfig
from medm2g_core.models.text_vae import TextVAEConfig
from medm2g_core.training.align_stage import AlignRecipe
from medm2g_core.training.config_loading import from_dict
from medm2g_core.training.cross_stage import CrossRecipe
from medm2g_core.training.report_stage import ReportRecipe
from medm2g_core.training.spatial_stage import SpatialRecipe
from medm2g_core.training.stage import OptimConfig


@dataclass
class DataRecipe:
    resolution: int = 64  # side of the square training slices
    ct_clip_hu: tuple[float, float] = DEFAULT_CT_CLIP_HU
    min_foreground: float = 0.05


@dataclass
class ImageVAERecipe:
    keys: tuple[str, ...] = ("xray", "ct", "mr_t1", "mr_t1ce", "mr_t2", "mr_flair", "mr_pd")
    init: str | None = None  # an SD-style AutoencoderKL folder or Hub id, adapted to one channel
    balance: bool = True  # draw X-ray, CT and MRI slices equally often (one X-ray per case vs many CT/MRI slices)
    model: ImageVAEConfig = field(default_factory=ImageVAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class TextVAERecipe:
    tokenizer: str | None = None  # a folder with tokenizer.json; None: trained on the training reports
    init_encoder: str | None = None  # a BERT folder (transformers format)
    init_decoder: str | None = None  # a GPT-2 folder (transformers format)
    kl_anneal_steps: int = 1000
    # Reports of a generated phantom world (no images: thousands a second) added to the training reports, a
    # text-only pretraining corpus in the phantom world's distribution; 0: the data's own reports only.
    phantom_reports: int = 0
    phantom_reports_seed: int = 1000  # that world's base seed; keep it apart from the seeds of image worlds
    model: TextVAEConfig = field(default_factory=TextVAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class ImageLDMRecipe:
    cond_dropout: float = 0.1
    self_guide: bool = True  # cross-attention reads the LDM's own noised latent (training/guidance.py)
    init: str | None = None  # an SD-style UNet2DConditionModel folder, adapted to our channels
    model: ImageDenoiserConfig = field(default_factory=ImageDenoiserConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class TextLDMRecipe:
    cond_dropout: float = 0.1
    self_guide: bool = True
    model: TextDenoiserConfig = field(default_factory=TextDenoiserConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class AblationRecipe:
    """Table 7's switches: central alignment, latent cross-guided alignment generation, visual invariant."""

    ca: bool = True  # off: the prompt encoders are not aligned (no InfoNCE)
    lcag: bool = True  # off: context encoders give only the adaptation f_B, not the guide's noisy latent z_t^B
    vi: bool = True  # off: no Barlow Twins term in the alignment
    spatial: bool = False  # on: `train cross --all` ends with the spatial round (our extension, not in Table 7)
    report: bool = False  # on: `train cross --all` ends with the report round (our extension, not in Table 7)


@dataclass
class Recipe:
    name: str
    description: str = ""
    data: DataRecipe = field(default_factory=DataRecipe)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    image_vae: ImageVAERecipe = field(default_factory=ImageVAERecipe)
    text_vae: TextVAERecipe = field(default_factory=TextVAERecipe)
    image_ldm: ImageLDMRecipe = field(default_factory=ImageLDMRecipe)
    text_ldm: TextLDMRecipe = field(default_factory=TextLDMRecipe)
    align: AlignRecipe = field(default_factory=AlignRecipe)
    cross: CrossRecipe = field(default_factory=CrossRecipe)
    spatial: SpatialRecipe = field(default_factory=SpatialRecipe)
    report: ReportRecipe = field(default_factory=ReportRecipe)
    ablation: AblationRecipe = field(default_factory=AblationRecipe)


def recipe_path(name_or_path: str | os.PathLike) -> Traversable:
    """A recipe file: a path to a ``.toml`` file, or the name of one shipped with medm2g (package data)."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise InputError(f"recipe {path} does not exist")
        return path
    shipped = recipes_dir() / f"{name_or_path}.toml"
    if not shipped.is_file():
        names = ", ".join(available_recipes())
        raise InputError(f"unknown recipe {str(name_or_path)!r}; shipped recipes: {names} (or give a .toml path)")
    return shipped


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe."""
    path = recipe_path(name_or_path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"recipe {path}: not valid TOML ({exc})") from exc
    if "name" not in table:
        table["name"] = path.name.removesuffix(".toml")
    return from_dict(Recipe, table, f"recipe {path.name}")
