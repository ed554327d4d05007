"""What this installation has: versions, devices, folders and optional pieces (``medm2g doctor``)."""

import importlib.metadata
import importlib.util
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import medm2g_core

# Runtime dependencies from pyproject.toml, reported by `medm2g doctor`.
DEPENDENCIES = (
    "torch", "diffusers", "transformers", "accelerate", "typer", "rich", "pydicom", "nibabel",
    "safetensors", "huggingface-hub", "tqdm", "numpy", "pillow", "scipy",
)


@dataclass(frozen=True)
class OptionalPiece:
    """Something medm2g uses when present, and how to get it when not."""

    name: str
    purpose: str
    present: bool
    detail: str
    install: str


def medm2g_home() -> Path:
    """Root of medm2g's own files (models, caches): ``$MEDM2G_HOME`` or ``~/.cache/medm2g``."""
    return Path(os.environ.get("MEDM2G_HOME") or Path.home() / ".cache" / "medm2g").expanduser()


def models_dir() -> Path:
    """Folder where imported and downloaded MedM2G model folders live."""
    return medm2g_home() / "models"


def huggingface_cache() -> Path:
    """The Hugging Face Hub cache that Hub downloads go through."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def recipes_dir() -> Traversable:
    """The recipes shipped with medm2g: package data in ``medm2g_core/recipes``.

    People edit the top-level ``recipes/`` folder (the project layout puts it there); the package holds a
    byte-for-byte copy so that every install has them, a wheel as much as an editable checkout, read through
    ``importlib.resources``. ``tests/test_wheel.py`` fails when the two folders differ. A copy rather than a
    build-time mapping of ``recipes/`` into the package: setuptools maps a folder onto a package only when every
    package is listed by hand (no ``packages.find``), and an editable install would then need reinstalling to
    see the mapping."""
    return files("medm2g_core") / "recipes"


def available_recipes() -> list[str]:
    """Names of the TOML recipes shipped with medm2g."""
    folder = recipes_dir()
    if not folder.is_dir():
        return []
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def available_models() -> list[str]:
    """Local model folders (those holding a ``model_index.json``) under :func:`models_dir`."""
    folder = models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.parent.name for p in folder.glob("*/model_index.json"))


def dependency_versions() -> dict[str, str | None]:
    """Installed version of every runtime dependency, ``None`` when missing."""
    versions: dict[str, str | None] = {}
    for name in DEPENDENCIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _module_piece(name: str, purpose: str, modules: tuple[str, ...], install: str) -> OptionalPiece:
    found = [m for m in modules if importlib.util.find_spec(m) is not None]
    return OptionalPiece(name, purpose, bool(found), ", ".join(found) or "not found", install)


def _tool_piece(name: str, purpose: str, executable: str, install: str) -> OptionalPiece:
    where = shutil.which(executable)
    return OptionalPiece(name, purpose, where is not None, where or "not found", install)


def optional_pieces() -> list[OptionalPiece]:
    """The optional pieces medm2g can use, each with whether it is present and how to install it."""
    return [
        _module_piece(
            "dicom-codecs", "decode compressed DICOM (JPEG, JPEG 2000, JPEG-LS, RLE)",
            ("pylibjpeg", "openjpeg", "libjpeg", "rle", "gdcm"), "pip install 'medm2g[codecs]'",
        ),
        _module_piece(
            "eval-metrics", "image metrics for `medm2g evaluate` (SSIM, PSNR, MS-SSIM)",
            ("torchmetrics", "skimage"), "pip install 'medm2g[eval]'",
        ),
        _tool_piece("java", "METEOR and the PTB tokenizer of the report metrics", "java",
                    "apt-get install default-jre-headless"),
        _tool_piece("dcm2niix", "independent geometry check of DICOM series", "dcm2niix",
                    "apt-get install dcm2niix"),
        _tool_piece("dciodvfy", "validation of the DICOM files medm2g writes", "dciodvfy",
                    "apt-get install dicom3tools"),
    ]


def doctor_report() -> dict:
    """Everything ``medm2g doctor`` shows, as plain data (its ``--json`` form)."""
    import torch

    from medm2g_core.devices import visible_devices

    return {
        "medm2g": medm2g_core.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dependencies": dependency_versions(),
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "devices": visible_devices(),
            "threads": torch.get_num_threads(),
        },
        "paths": {
            "medm2g_home": str(medm2g_home()),
            "models": str(models_dir()),
            "huggingface_cache": str(huggingface_cache()),
            "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"),
        },
        "optional": [asdict(piece) for piece in optional_pieces()],
        "models": available_models(),
        "recipes": available_recipes(),
    }
