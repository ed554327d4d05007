"""Draw images from reports into files: the steps behind ``medm2g generate``: a folder per prompt and seed
(``prompt003-seed7/``) holding the prompt and one image per modality (NIfTI, DICOM series or PNG), every image
marked synthetic, and a ``run.json`` for the whole run.

With ``samples`` N each image is the voxel-wise mean of N samples (seeds ``seed + k*N .. seed + k*N + N-1`` for
output k; the folder is named by the first) and, with ``uncertainty``, their standard deviation is written beside it
as ``<modality>_uncertainty`` (same grid and units, marked synthetic: where the report leaves the image open).
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medm2g_core.apps.records import run_record, write_run_json
from medm2g_core.apps.translate import check_samples
from medm2g_core.atomic import write_text
from medm2g_core.errors import InputError
from medm2g_core.io.load import write_volume
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.sampling.generate import GenerateOptions, as_volume, generate_images
from medm2g_core.sampling.translate import provenance, spread

FORMATS = {"nifti": ".nii.gz", "png": ".png", "dicom": ""}  # format -> file suffix (a DICOM series is a folder)
CHUNK = 8  # samples generated at once


def generate_files(model: MedM2G, prompts: list[str], n: int, options: GenerateOptions, out: Path, fmt: str,
                   device: str, arguments: dict[str, Any], progress: Callable[[int, int], None] | None = None,
                   samples: int = 1, uncertainty: bool = False) -> list[dict[str, Any]]:
    """``n`` images per prompt (seeds ``seed .. seed+n-1``; each the mean of ``samples``, module doc) written under
    ``out``; a row per image (prompt, prompt_index, seed, modality, path[, uncertainty])."""
    if fmt not in FORMATS:
        raise InputError(f"unknown image format {fmt!r}; use one of {', '.join(FORMATS)}")
    if n < 1:
        raise InputError("the number of samples per prompt must be at least 1")
    check_samples(samples, uncertainty)
    started = time.perf_counter()
    outputs = [(text, number, options.seed + k * samples) for number, text in enumerate(prompts) for k in range(n)]
    per_chunk = max(1, CHUNK // samples)  # every sample of an output in one batch
    written, rows = [], []
    for start in range(0, len(outputs), per_chunk):
        chunk = outputs[start:start + per_chunk]
        seeds = [seed + j for _, _, seed in chunk for j in range(samples)]
        images = generate_images(model, [text for text, _, _ in chunk for _ in range(samples)], options, seeds)
        for row, (text, number, seed) in enumerate(chunk):
            folder = out / f"prompt{number:03d}-seed{seed}"
            made = _write_output(model, images, range(row * samples, (row + 1) * samples), text, folder, fmt,
                                 options, seed, uncertainty)
            written += [path for paths in made.values() for path in paths]
            rows += [{"prompt": text, "prompt_index": number, "seed": seed, "modality": name, "path": str(paths[0])}
                     | ({"samples": samples} if samples > 1 else {})
                     | ({"uncertainty": str(paths[1])} if uncertainty else {}) for name, paths in made.items()]
        if progress:
            progress(min(start + per_chunk, len(outputs)), len(outputs))
    write_run_json(out / "run.json", run_record("generate", arguments, model, device, options.seed, [], written,
                                                time.perf_counter() - started))
    return rows


def _write_output(model: MedM2G, images: dict, rows: range, text: str, folder: Path, fmt: str,
                  options: GenerateOptions, seed: int, uncertainty: bool) -> dict[str, list[Path]]:
    """One output's images (``mri_<contrast>`` for MRI: the mean of the samples in ``rows``), their uncertainty maps
    when asked, and its prompt into ``folder``: name -> [image path(, map path)]."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "prompt.txt", text + "\n", overwrite=True)
    origin = provenance(model, options.sampling, seed)
    paths = {}
    for modality, batch in images.items():
        mean, deviation = spread([as_volume(batch[row], modality, options.contrast, origin, text) for row in rows])
        name = modality if modality != "mri" else f"mri_{options.contrast.lower()}"
        paths[name] = [write_volume(mean, folder / f"{name}{FORMATS[fmt]}", overwrite=True)]
        if uncertainty:
            paths[name].append(write_volume(deviation, folder / f"{name}_uncertainty{FORMATS[fmt]}", overwrite=True))
    return paths
