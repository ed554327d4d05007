"""The MedM2G model: named components saved as one verified folder (diffusers' ``model_index.json`` layout).

A model is a set of optional components (a VAE-only model is valid), each in its own subfolder written by
the component's own ``save_pretrained`` (safetensors only)::

    model_index.json     {"_class_name": "MedM2G", "_medm2g_version", "components": {name: [module, class]},
                          "sha256": {relative path: hex digest of every file}, "info": {...}}
    image_vae/           AutoencoderKL
    text_vae/            TextVAE
    denoiser_xray/ denoiser_ct/ denoiser_mri/    ImageDenoiser
    denoiser_text/       TextDenoiser
    scheduler/           DDPMScheduler (the training noise schedule)
    spatial_ct/ spatial_mri/   ImageDenoiser (train cross --round spatial); scheduler_spatial/ DDPMScheduler, their
                         own schedule when the round trained with zero terminal SNR
    prompt_encoder_text/ TextPromptEncoder; prompt_encoder_xray/ _ct/ _mri/   ImagePromptEncoder (train align)
    context_encoder_text/ _xray/ _ct/ _mri/   ContextEncoder (train cross)
    ood_reference/       OODReference: the training distribution of each image modality (train ood)

Loading resolves classes only through :data:`COMPONENT_CLASSES` (never from import paths written in the JSON),
checks the sha256 of every file of a component before reading it, and loads safetensors only: no pickle, no
``trust_remote_code``. A new kind of component joins by adding its class to the registry.
"""

import hashlib
import importlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import ModelMixin
from torch import nn

from medm2g_core import __version__
from medm2g_core.atomic import atomic_dir
from medm2g_core.devices import resolve_device
from medm2g_core.errors import ModelError
from medm2g_core.vocabulary import MODEL_INDEX

# class name -> (module, class name): the only classes a model folder can name.
COMPONENT_CLASSES: dict[str, tuple[str, str]] = {
    "AutoencoderKL": ("diffusers", "AutoencoderKL"),
    "ContextEncoder": ("medm2g_core.models.context_encoder", "ContextEncoder"),
    "DDPMScheduler": ("diffusers", "DDPMScheduler"),
    "ImageDenoiser": ("medm2g_core.models.image_denoiser", "ImageDenoiser"),
    "ImagePromptEncoder": ("medm2g_core.models.prompt_encoder", "ImagePromptEncoder"),
    "OODReference": ("medm2g_core.models.ood_reference", "OODReference"),
    "TextDenoiser": ("medm2g_core.models.text_denoiser", "TextDenoiser"),
    "TextPromptEncoder": ("medm2g_core.models.prompt_encoder", "TextPromptEncoder"),
    "TextVAE": ("medm2g_core.models.text_vae", "TextVAE"),
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelError(f"bad component name {name!r}: use lower-case letters, digits and _")
    return name


def _registered_class(class_name: str) -> type:
    """The class registered under ``class_name``, imported on first use."""
    if class_name not in COMPONENT_CLASSES:
        raise ModelError(f"unknown component class {class_name!r}; medm2g loads only {', '.join(COMPONENT_CLASSES)}")
    module, name = COMPONENT_CLASSES[class_name]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ModelError(f"component class {class_name} is not available in this installation: {error}") from error


def _class_name_of(component: Any) -> str:
    name = type(component).__name__
    if _registered_class(name) is not type(component):
        raise ModelError(f"{type(component).__module__}.{name} is not the registered {name}")
    return name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_component(component: Any, folder: Path) -> None:
    if isinstance(component, ModelMixin):
        component.save_pretrained(folder, safe_serialization=True)
    else:
        component.save_pretrained(folder)
    pickles = [p.name for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ModelError(f"{type(component).__name__} wrote pickle files {pickles}; medm2g saves safetensors only")


def export_component(component: Any, folder: str | os.PathLike) -> Path:
    """Save one component on its own (what a training stage exports), atomically, replacing an older export."""
    Path(folder).parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, overwrite=True) as tmp:
        _save_component(component, tmp)
    return Path(folder)


@torch.no_grad()
def with_global_path(denoiser: ModelMixin) -> ModelMixin:
    """A copy of an image or text denoiser with the global path (its class names the path's module in
    ``GLOBAL_PATH``), the path's output LayerNorm zero: the copy starts computing exactly what ``denoiser`` does."""
    if denoiser.config.global_condition:
        raise ValueError("the denoiser already has a global path")
    config = {k: v for k, v in denoiser.config.items() if not k.startswith("_")}
    copy = type(denoiser)(**{**config, "global_condition": True})
    path = type(denoiser).GLOBAL_PATH
    missing = copy.load_state_dict(denoiser.state_dict(), strict=False).missing_keys
    if any(not key.startswith(f"{path}.") for key in missing):
        raise ValueError(f"unexpected missing weights in the copy: {missing}")
    norm = copy.get_submodule(f"{path}.norm2")
    nn.init.zeros_(norm.weight)
    nn.init.zeros_(norm.bias)
    return copy.to(denoiser.device)  # float32, as every stage trains


def _load_component(component_class: type, folder: Path) -> Any:
    try:
        if issubclass(component_class, ModelMixin):
            return component_class.from_pretrained(folder, use_safetensors=True, local_files_only=True)
        return component_class.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{folder}: cannot load {component_class.__name__}: {error}") from error


def load_exported(folder: str | os.PathLike) -> Any:
    """Load one component saved by :func:`export_component`; its config file names its registered class."""
    folder = Path(folder)
    config_file = next((folder / n for n in ("config.json", "scheduler_config.json") if (folder / n).is_file()), None)
    if config_file is None:
        raise ModelError(f"{folder}: no config.json; not an exported component")
    class_name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name")
    return _load_component(_registered_class(str(class_name)), folder)


def read_index(folder: Path) -> dict:
    """The checked ``model_index.json`` of the model folder ``folder``."""
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    path = folder / MODEL_INDEX
    if not path.is_file():
        raise ModelError(f"{folder}: not a MedM2G model (no {MODEL_INDEX})")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: unreadable: {error}") from error
    if not isinstance(index, dict) or index.get("_class_name") != "MedM2G":
        raise ModelError(f"{path}: not a MedM2G model index")
    components, digests = index.get("components"), index.get("sha256")
    if not isinstance(components, dict) or not isinstance(digests, dict) or not isinstance(index.get("info", {}), dict):
        raise ModelError(f"{path}: needs 'components' and 'sha256' tables (and 'info', if any, must be a table)")
    for name, entry in components.items():
        _check_name(name)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
            raise ModelError(f"{path}: component {name} must be [module, class name]; got {entry!r}")
    return index


def verify_component(folder: Path, name: str, digests: Mapping[str, str]) -> None:
    """Every file of component ``name`` is listed in ``digests`` and has that sha256; nothing else is there."""
    listed = {rel: digest for rel, digest in digests.items() if rel.startswith(f"{name}/")}
    present = {p.relative_to(folder).as_posix() for p in (folder / name).rglob("*") if p.is_file()}
    if not listed:
        raise ModelError(f"{folder / MODEL_INDEX}: lists no files for component {name}")
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise ModelError(f"{folder / unlisted[0]}: file not listed in {MODEL_INDEX}; the folder was modified")
    for rel, digest in sorted(listed.items()):
        path = folder / rel
        if ".." in Path(rel).parts:
            raise ModelError(f"{folder / MODEL_INDEX}: bad file path {rel!r}")
        if not path.is_file():
            raise ModelError(f"{path}: listed in {MODEL_INDEX} but missing")
        if file_sha256(path) != digest:
            raise ModelError(f"{path}: sha256 does not match {MODEL_INDEX}; the file is corrupted or was changed")


class MedM2G:
    """Named components of the unified model; any subset is a valid model."""

    def __init__(self, components: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None) -> None:
        self.components: dict[str, Any] = {}
        self.info: dict[str, Any] = dict(info or {})
        for name, component in (components or {}).items():
            _class_name_of(component)
            self.components[_check_name(name)] = component

    def __contains__(self, name: str) -> bool:
        return name in self.components

    def __getitem__(self, name: str) -> Any:
        if name not in self.components:
            have = ", ".join(self.components) or "nothing"
            raise ModelError(f"the model has no component {name!r} (it has: {have})")
        return self.components[name]

    def get(self, name: str, default: Any = None) -> Any:
        """Component ``name``, or ``default`` when the model has none of that name."""
        return self.components.get(name, default)

    def with_component(self, name: str, component: Any) -> "MedM2G":
        """A new model with ``component`` added (or replaced) under ``name``; this one is unchanged."""
        return MedM2G({**self.components, name: component}, self.info)

    def to(self, device: str | torch.device) -> "MedM2G":
        device = resolve_device(device) if isinstance(device, str) else device
        for component in self.components.values():
            if isinstance(component, nn.Module):
                component.to(device)
        return self

    def save_pretrained(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model folder atomically: every component, then the index with the sha256 of every file."""
        with atomic_dir(folder, overwrite) as tmp:
            for name, component in self.components.items():
                _save_component(component, tmp / name)
            digests = {p.relative_to(tmp).as_posix(): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            index = {
                "_class_name": "MedM2G",
                "_medm2g_version": __version__,
                "components": {name: list(COMPONENT_CLASSES[_class_name_of(c)]) for name, c in self.components.items()},
                "sha256": digests,
                "info": self.info,
            }
            (tmp / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return Path(folder)

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, components: list[str] | None = None, device: str | torch.device | None = None,
        verify: bool = True,
    ) -> "MedM2G":
        """Load ``components`` (default: all) from a local model folder, verifying each one's files first."""
        folder = Path(folder)
        index = read_index(folder)
        listed = index["components"]
        names = list(listed) if components is None else components
        missing = [name for name in names if name not in listed]
        if missing:
            raise ModelError(f"{folder}: has no component {', '.join(missing)} (it has: {', '.join(listed)})")
        loaded = {}
        for name in names:
            module, class_name = listed[name]
            component_class = _registered_class(class_name)
            if COMPONENT_CLASSES[class_name][0] != module:
                raise ModelError(f"{folder}: component {name} names {module}.{class_name}, which is not registered")
            if not (folder / name).is_dir():
                raise ModelError(f"{folder / name}: component folder is missing")
            if verify:
                verify_component(folder, name, index["sha256"])
            loaded[name] = _load_component(component_class, folder / name)
        model = cls(loaded, index.get("info"))
        return model if device is None else model.to(device)
