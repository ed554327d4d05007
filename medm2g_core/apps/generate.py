"""Draw images from reports into files: the steps behind ``medm2g generate``: a folder per prompt and seed
(``prompt003-seed7/``) holding the prompt and one image per modality (NIfTI, DICOM series or PNG), every image
marked synthetic, and a ``run.json`` for the whole run."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medm2g_core.apps.records import run_record, write_run_json
from medm2g_core.atomic import write_text
from medm2g_core.errors import InputError
from medm2g_core.io.load import write_volume
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.sampling.generate import GenerateOptions, as_volume, generate_images
from medm2g_core.sampling.translate import provenance

FORMATS = {"nifti": ".nii.gz", "png": ".png", "dicom": ""}  # format -> file suffix (a DICOM series is a folder)
CHUNK = 8  # samples generated at once


def generate_files(model: MedM2G, prompts: list[str], n: int, options: GenerateOptions, out: Path, fmt: str,
                   device: str, arguments: dict[str, Any],
                   progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """``n`` samples per prompt (seeds ``seed .. seed+n-1``) written under ``out``; a row per image (prompt,
    prompt_index, seed, modality, path)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown image format {fmt!r}; use one of {', '.join(FORMATS)}")
    if n < 1:
        raise InputError("the number of samples per prompt must be at least 1")
    started = time.perf_counter()
    samples = [(text, number, options.seed + k) for number, text in enumerate(prompts) for k in range(n)]
    written, rows = [], []
    for start in range(0, len(samples), CHUNK):
        chunk = samples[start:start + CHUNK]
        images = generate_images(model, [s[0] for s in chunk], options, [s[2] for s in chunk])
        for row, (text, number, seed) in enumerate(chunk):
            folder = out / f"prompt{number:03d}-seed{seed}"
            made = _write_sample(model, images, row, text, folder, fmt, options, seed)
            written += [path for _, path in made]
            rows += [{"prompt": text, "prompt_index": number, "seed": seed, "modality": name, "path": str(path)}
                     for name, path in made]
        if progress:
            progress(min(start + CHUNK, len(samples)), len(samples))
    write_run_json(out / "run.json", run_record("generate", arguments, model, device, options.seed, [], written,
                                                time.perf_counter() - started))
    return rows


def _write_sample(model: MedM2G, images: dict, row: int, text: str, folder: Path, fmt: str,
                  options: GenerateOptions, seed: int) -> list[tuple[str, Path]]:
    """One sample's images (``mri_<contrast>`` for MRI) and its prompt into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "prompt.txt", text + "\n", overwrite=True)
    origin = provenance(model, options.sampling, seed)
    paths = []
    for modality, batch in images.items():
        volume = as_volume(batch[row], modality, options.contrast, origin, text)
        name = modality if modality != "mri" else f"mri_{options.contrast.lower()}"
        paths.append((name, write_volume(volume, folder / f"{name}{FORMATS[fmt]}", overwrite=True)))
    return paths
