"""Training checkpoints: one atomic folder per saved step, found, rotated and read back by the trainer.

``run_dir/checkpoints/step-00000100/`` holds

- ``modules/<name>.safetensors``: the state of every module of the stage (trainable and frozen), written with
  ``safetensors.torch.save_model`` (``save_file`` of the state dict that also copes with tied weights);
- ``ema.safetensors``: the EMA copy of the EMA modules' trainable parameters, keyed ``<module>.<parameter>``;
- ``optimizer.pt``: the AdamW and LR-scheduler state dicts (``torch.save``; read back with ``weights_only=True``,
  so loading it never runs pickled code);
- ``rng.pt``: the torch (and CUDA), NumPy and Python RNG states of every process, as plain tensors, numbers and
  tuples (``weights_only=True`` as well);
- ``trainer.json``: format, step, stage name, the ``OptimConfig``, process count, versions, the metrics window
  and the last logged metrics.

The folder is written through :func:`~medm2g_core.atomic.atomic_dir`, so a checkpoint either exists complete
or not at all; what a killed writer leaves behind is a hidden ``.step-*.partial-*`` folder, which is never read
and is removed by :func:`remove_leftovers`.
"""

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from medm2g_core.atomic import atomic_dir
from medm2g_core.errors import InputError

FORMAT = 1
_NAME = re.compile(r"^step-(\d{8,})$")
_LEFTOVER = re.compile(r"^\.step-\d+\.(partial|deleting)-")


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint of ``step`` (zero-padded so that names sort like steps)."""
    return f"step-{step:08d}"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` as ``(step, path)``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and (path / "trainer.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary folders an interrupted checkpoint write or rotation left in ``folder``."""
    if folder.is_dir():
        for path in folder.iterdir():
            if _LEFTOVER.match(path.name):
                shutil.rmtree(path, ignore_errors=True)


def rotate(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints. Each old one is renamed to a hidden name first, so a crash in the
    middle of deleting it can never leave a partial folder that looks like a checkpoint."""
    for step, path in list_checkpoints(folder)[:-keep]:
        doomed = folder / f".{checkpoint_name(step)}.deleting-{os.getpid()}"
        os.replace(path, doomed)
        shutil.rmtree(doomed)


def save_checkpoint(
    folder: Path,
    step: int,
    modules: dict[str, nn.Module],
    ema: dict[str, torch.Tensor] | None,
    training: dict,
    rng: list[dict],
    meta: dict,
) -> Path:
    """Write the checkpoint of ``step`` into ``folder`` atomically and return its path."""
    path = folder / checkpoint_name(step)
    with atomic_dir(path) as tmp:
        (tmp / "modules").mkdir()
        for name, module in modules.items():
            save_model(module, str(tmp / "modules" / f"{name}.safetensors"))
        if ema is not None:
            save_file({key: value.contiguous() for key, value in ema.items()}, str(tmp / "ema.safetensors"))
        torch.save(training, tmp / "optimizer.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / "trainer.json").write_text(json.dumps({"format": FORMAT, "step": step, **meta}, indent=2) + "\n")
    return path


def read_meta(path: Path) -> dict:
    """The ``trainer.json`` of a checkpoint."""
    meta = json.loads((path / "trainer.json").read_text())
    if meta.get("format") != FORMAT:
        raise InputError(f"checkpoint {path} has format {meta.get('format')!r}; this medm2g reads format {FORMAT}")
    return meta


def load_modules(path: Path, modules: dict[str, nn.Module]) -> None:
    """Load every module's weights from the checkpoint (strict: names and shapes must match)."""
    for name, module in modules.items():
        file = path / "modules" / f"{name}.safetensors"
        if not file.is_file():
            raise InputError(f"checkpoint {path} has no weights for module {name!r}")
        try:
            load_model(module, file, strict=True)
        except RuntimeError as error:
            raise InputError(f"checkpoint {path} does not fit module {name!r}: {error}") from error


def load_ema(path: Path) -> dict[str, torch.Tensor]:
    """The EMA tensors of a checkpoint (on the CPU)."""
    file = path / "ema.safetensors"
    if not file.is_file():
        raise InputError(f"checkpoint {path} holds no EMA weights")
    return load_file(str(file))


def load_training(path: Path) -> dict:
    """The optimizer and scheduler state dicts of a checkpoint."""
    return torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)


def load_rng(path: Path) -> list[dict]:
    """The RNG states of every process of the run that wrote the checkpoint."""
    return torch.load(path / "rng.pt", map_location="cpu", weights_only=True)


def capture_rng() -> dict:
    """This process's torch, CUDA, NumPy and Python RNG states in a form ``weights_only`` loading accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_rng(seed: int) -> None:
    """Seed the torch (and CUDA), NumPy and Python RNGs of this process from one 64-bit seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def restore_rng(state: dict) -> None:
    """Put back the RNG states :func:`capture_rng` took."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["cached"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
