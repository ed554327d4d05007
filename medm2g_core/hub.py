"""Where weights come from: a local folder, or a Hugging Face Hub repository fetched on explicit request.

``"org/name"`` is a Hub id and ``"org/name#vae"`` names its ``vae`` subfolder; anything that looks like a
path (absolute, relative with ``./``, ``~``, or with more than one ``/``) must be an existing folder. Hub
fetches go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, revisions as ``org/name@rev``).
"""

from pathlib import Path

from medm2g_core.errors import InputError, ModelError


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
