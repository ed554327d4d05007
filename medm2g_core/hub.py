"""Where weights come from: the embedded default model, a local folder, an imported model, or the Hugging Face Hub.

``"org/name"`` is a Hub id and ``"org/name#vae"`` names its ``vae`` subfolder; anything that looks like a
path (absolute, relative with ``./``, ``~``, or with more than one ``/``) must be an existing folder. Hub
fetches go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, revisions as ``org/name@rev``).

A MedM2G model (``--model``) is ``None`` or ``"default"`` (the embedded model), a folder, a name imported with
``medm2g weights import`` (a folder under ``$MEDM2G_HOME/models``), or a Hub id; every file is checked against
the sha256 in its ``model_index.json`` before it is loaded.
"""

import re
import shutil
from pathlib import Path

import torch
from torch import nn

from medm2g_core import environment
from medm2g_core.atomic import atomic_dir
from medm2g_core.errors import InputError, ModelError, OutputExistsError
from medm2g_core.models.medm2g import MODEL_INDEX, MedM2G, file_sha256, read_index, verify_component

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HUB_ID = re.compile(r"^\w[\w.-]*/\w[\w.-]*(@[\w./-]+)?$")


def _is_hub_id(name: str) -> bool:
    return not name.startswith(("/", ".", "~")) and name.count("/") == 1 and not Path(name).exists()


def resolve_pretrained(value: str, what: str) -> Path:
    """The local folder ``value`` names (fetching a Hub snapshot when it is a Hub id); ``what`` names the
    option or recipe key in errors."""
    name, _, subfolder = value.partition("#")
    if _is_hub_id(name):
        folder = _snapshot(name, subfolder or None, what)
    else:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise InputError(f"{what} {name}: no such folder")
    if subfolder:
        folder = folder / subfolder
        if not folder.is_dir():
            raise InputError(f"{what} {value}: no subfolder {subfolder!r}")
    return folder


def _snapshot(repo: str, subfolder: str | None, what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    patterns = [f"{subfolder}/*"] if subfolder else None
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=patterns))
    except LocalEntryNotFoundError as exc:
        raise ModelError(f"{what} {repo}: not in the Hugging Face cache and the Hub cannot be reached "
                         "(offline?); download it on a connected machine or give a local folder") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(f"{what} {repo}: cannot fetch it from the Hub ({exc})") from exc


def _default_folder() -> Path:
    if not (DEFAULT_MODEL_DIR / MODEL_INDEX).is_file():
        raise ModelError(f"the embedded default model is not installed ({DEFAULT_MODEL_DIR} is missing); reinstall "
                         "medm2g, or give a model: a folder, an imported name or a Hub id org/name", option="model")
    return DEFAULT_MODEL_DIR


def model_folder(spec: str | None) -> Path:
    """The local folder of model ``spec``: ``None``/``"default"`` (embedded), a folder, an imported name, or a Hub
    id ``org/name[@revision]`` (through the Hugging Face cache, which honours ``HF_HUB_OFFLINE``)."""
    if spec in (None, "default"):
        return _default_folder()
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    imported = environment.models_dir() / spec
    if _MODEL_NAME.match(spec) and imported.is_dir():
        return imported
    if _HUB_ID.match(spec):
        return _snapshot(spec, None, "model")
    raise InputError(f"model {spec}: not a folder, not a model imported into {environment.models_dir()}, "
                     "and not a Hub id org/name or org/name@revision")


def load_model(
    spec: str | None, components: list[str] | None = None, device: str | torch.device | None = None,
) -> MedM2G:
    """Load ``components`` (default: all) of model ``spec``, verified, in float32; ``info`` says where it came from."""
    folder = model_folder(spec)
    model = MedM2G.from_pretrained(folder, components, device, verify=True)
    for component in model.components.values():
        if isinstance(component, nn.Module) and any(p.dtype != torch.float32 for p in component.parameters()):
            component.to(torch.float32)  # an fp16-stored model computes in fp32 (the fast path on CPU)
    model.info.update(model_id=spec or "default", model_path=str(folder),
                      model_sha256=file_sha256(folder / MODEL_INDEX))
    return model


def _verify_folder(folder: Path) -> dict:
    index = read_index(folder)
    components, digests = index["components"], index["sha256"]
    for name in components:
        verify_component(folder, name, digests)
    files = sum(1 for rel in digests if rel.split("/", 1)[0] in components)
    return {"components": dict.fromkeys(components, "ok"), "files": files}


def verify_model(spec: str | None) -> dict:
    """Check every file of every component of model ``spec`` against its sha256; ModelError names a bad file."""
    folder = model_folder(spec)
    return {"model": spec or "default", "path": str(folder), **_verify_folder(folder)}


def import_model(folder: Path, name: str, overwrite: bool = False) -> Path:
    """Verify the model folder ``folder`` and copy it atomically to ``models_dir()/name``, where ``--model name``
    finds it."""
    if not _MODEL_NAME.match(name) or name == "default":
        raise InputError(f"bad model name {name!r}: use lower-case letters, digits, - and _ (and not 'default')")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    target = environment.models_dir() / name
    if target.exists() and not overwrite:
        raise OutputExistsError(f"model {name} already exists ({target}); ask for overwrite to replace it",
                                option="overwrite")
    _verify_folder(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target, overwrite) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
    return target


def download_model(repo: str) -> Path:
    """Fetch Hub model ``org/name[@revision]`` into the Hugging Face cache and verify it; returns its folder."""
    if not _HUB_ID.match(repo):
        raise InputError(f"{repo}: not a Hub id org/name or org/name@revision")
    folder = _snapshot(repo, None, "model")
    _verify_folder(folder)
    return folder


def _describe(name: str, source: str, folder: Path, revision: str | None = None) -> dict | None:
    try:
        index = read_index(folder)
    except ModelError:
        return None
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"name": name, "source": source, "path": str(folder), **({"revision": revision} if revision else {}),
            "components": list(index["components"]), "size_mb": round(size / 1e6, 2)}


def _cached_models() -> list[dict | None]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(environment.huggingface_cache())
    except CacheNotFound:
        return []
    return [_describe(repo.repo_id, "hub-cache", Path(revision.snapshot_path), revision.commit_hash)
            for repo in sorted(cache.repos, key=lambda r: r.repo_id) if repo.repo_type == "model"
            for revision in sorted(repo.revisions, key=lambda r: r.commit_hash)]


def list_models() -> list[dict]:
    """The MedM2G models usable without network: the embedded default, imported models, and Hugging Face cache
    snapshots; each as {name, source, path, revision (hub-cache only), components, size_mb}."""
    found = [_describe("default", "embedded", DEFAULT_MODEL_DIR)]
    found += [_describe(name, "local", environment.models_dir() / name) for name in environment.available_models()]
    return [entry for entry in found + _cached_models() if entry is not None]


def pack_model(source: str | None, out: Path, half: bool = True, card: Path | None = None,
               overwrite: bool = False) -> Path:
    """A verified copy of model ``source`` for shipping: weights stored in float16 (``half``; loading computes in
    float32 again; statistics that float16 would spoil, ``KEEP_FLOAT32`` components, stay float32) and an optional
    model card as ``README.md`` (the Hub's place for it)."""
    model = MedM2G.from_pretrained(model_folder(source), verify=True)
    if half:
        for component in model.components.values():
            if isinstance(component, nn.Module) and not getattr(component, "KEEP_FLOAT32", False):
                component.half()
    info = {key: value for key, value in model.info.items() if not key.startswith("model_")}
    folder = MedM2G(model.components, {**info, "stored_dtype": "float16" if half else "float32"}).save_pretrained(
        out, overwrite=overwrite)
    if card is not None:
        shutil.copyfile(card, folder / "README.md")
    return folder
