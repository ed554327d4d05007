"""What every generating command leaves beside its outputs: a ``run.json`` with the provenance of the run.

The record holds the medm2g version, the model (id, folder, sha256 of its ``model_index.json``, which lists the
digest of every weight file), the device, the seed, the arguments, the sha256 of every input and output (a DICOM
folder hashes its files in name order) and the wall time. Written atomically, like every output.
"""

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import medm2g_core
from medm2g_core.atomic import write_text
from medm2g_core.models.medm2g import MODEL_INDEX, MedM2G, file_sha256


def path_sha256(path: str | os.PathLike) -> str | None:
    """sha256 of a file, or of a folder's files (relative names and digests, in name order); None if missing."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{member.relative_to(path).as_posix()}\0{file_sha256(member)}\n".encode())
    return digest.hexdigest()


def model_identity(model: MedM2G) -> dict[str, Any]:
    """Which weights ran: id as given, folder, and the sha256 of the index that pins every weight file."""
    folder = model.info.get("model_path")
    index = Path(folder) / MODEL_INDEX if folder else None
    return {"id": model.info.get("model_id"), "path": folder,
            "index_sha256": file_sha256(index) if index and index.is_file() else None}


def run_record(
    command: str, arguments: dict[str, Any], model: MedM2G | None, device: str, seed: int | None,
    inputs: list[str | os.PathLike], outputs: list[str | os.PathLike], wall_s: float,
) -> dict[str, Any]:
    return {
        "medm2g": medm2g_core.__version__,
        "command": command,
        "synthetic": True,
        "arguments": arguments,
        "model": model_identity(model) if model is not None else None,
        "device": device,
        "seed": seed,
        "inputs": {str(p): path_sha256(p) for p in inputs},
        "outputs": {str(p): path_sha256(p) for p in outputs},
        "wall_s": round(wall_s, 3),
        "python": platform.python_version(),
    }


def write_run_json(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``path`` (replacing an older record of the same output)."""
    return write_text(Path(path), json.dumps(record, indent=2, default=str) + "\n", overwrite=True)


def run_json_beside(output: str | os.PathLike) -> Path:
    """Where the record of a single output (a file or a DICOM series folder) goes: ``<output>.run.json``."""
    return Path(f"{output}.run.json")
