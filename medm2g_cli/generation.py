"""``medm2g translate``, ``medm2g report`` and ``medm2g generate``: the user commands over medm2g_core.sampling."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import typer

from medm2g_cli import console
from medm2g_core.devices import resolve_device
from medm2g_core.errors import InputError
from medm2g_core.evaluation.image_metrics import volume_psnr_ssim
from medm2g_core.hub import load_model
from medm2g_core.io.atomic import check_writable, write_text
from medm2g_core.io.load import check_output, read_volume, write_volume
from medm2g_core.io.preview import write_preview
from medm2g_core.io.volume import Volume
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.sampling.diffusion import SCHEDULERS, SamplingConfig
from medm2g_core.sampling.generate import GenerateOptions, as_volume, generate_images
from medm2g_core.sampling.outputs import run_json_beside, run_record, write_run_json
from medm2g_core.sampling.report import ReportOptions, write_report
from medm2g_core.sampling.translate import (
    TranslateOptions,
    assume_modality,
    check_sources,
    provenance,
    translate_volume,
)

MODEL_HELP = ("A MedM2G model: a local folder, a name from `medm2g weights import`, or a Hub id org/name[@revision] "
              "(from the Hugging Face cache; `medm2g weights download` fetches it). Default: the embedded model.")
STEPS_HELP = "Denoising steps (the paper: 50)."
ETA_HELP = "DDIM eta: 1 as stochastic as DDPM (the paper), 0 deterministic given the seed's start noise."
GUIDANCE_HELP = "Classifier-free guidance scale (the paper: 2.0; 1 = none)."
SCHEDULER_HELP = f"Sampler: {', '.join(SCHEDULERS)} (diffusers schedulers on the model's noise schedule)."
SEED_HELP = "Random seed: the same seed and inputs give the same output."
# Options every generating command shares (typer reads these objects as defaults; one definition, one help text).
MODEL_OPTION = typer.Option(None, "--model", help=MODEL_HELP)
STEPS_OPTION = typer.Option(50, "--steps", help=STEPS_HELP)
ETA_OPTION = typer.Option(1.0, "--eta", help=ETA_HELP)
GUIDANCE_OPTION = typer.Option(2.0, "--guidance", help=GUIDANCE_HELP)
SCHEDULER_OPTION = typer.Option("ddim", "--scheduler", help=SCHEDULER_HELP)
FORMATS = ("nifti", "dicom", "png")


def sampling_config(steps: int, eta: float, guidance: float, scheduler: str) -> SamplingConfig:
    return SamplingConfig(steps=steps, eta=eta, guidance=guidance, scheduler=scheduler)


def open_model(spec: str | None) -> MedM2G:
    device = resolve_device(console.settings.device)
    console.say(f"model: {spec or 'embedded default'} on {device}")
    return load_model(spec, device=device)


def _read(path: Path, modality: str | None) -> Volume:
    return assume_modality(read_volume(path, modality=modality))


def _default_out(first: Path, suffix: str) -> Path:
    name = first.name
    for ext in (".nii.gz", ".nii", ".dcm", ".png", ".jpg"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return first.with_name(f"{name}_{suffix}.nii.gz")


def translate(
    inputs: list[Path] = typer.Argument(..., help="Source image(s): NIfTI, a DICOM file or folder, PNG. Several "
                                        "MRI contrasts of one grid are used together (multi-source synthesis)."),
    to: str = typer.Option(..., "--to", help="Target modality: ct, mri or xray."),
    contrast: str | None = typer.Option(None, "--contrast", help="MRI target contrast: T1, T1ce, T2, FLAIR, PD."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output: .nii/.nii.gz, .png, or a folder name for a "
                                    "DICOM series. Default: INPUT_<to>.nii.gz beside the input."),
    reference: Path | None = typer.Option(None, "--reference", help="Ground truth on the input grid: print PSNR/SSIM."),
    modality: str | None = typer.Option(None, "--modality", help="CT, MR or XRAY, for inputs whose file does not "
                                        "say (NIfTI, PNG); otherwise guessed from the values."),
    model: str | None = MODEL_OPTION,
    steps: int = STEPS_OPTION,
    eta: float = ETA_OPTION,
    guidance: float = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    batch_size: int = typer.Option(32, "--batch-size", help="Slices denoised at once."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Also write OUT.png (a montage)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    json_output: bool = typer.Option(False, "--json", help="Print the output paths and metrics as JSON."),
) -> None:
    """Translate one imaging modality to another, on the input's exact grid (CT in HU).

    Examples: `medm2g translate mri.nii.gz --to ct`, `medm2g translate t2.nii.gz flair.nii.gz --to mri --contrast T1`,
    `medm2g translate ct_dicom/ --to mri --contrast T2 --out t2_series/` (a DICOM series).
    """
    started = time.perf_counter()
    options = TranslateOptions(to, contrast, sampling_config(steps, eta, guidance, scheduler), seed, batch_size)
    out = out or _default_out(inputs[0], to if contrast is None else contrast.lower())
    check_output(out, overwrite=overwrite)
    sources = [_read(path, modality) for path in inputs]
    check_sources(sources)  # before the model loads: a bad set of inputs costs nothing
    truth = read_volume(reference, modality={"ct": "CT", "mri": "MR", "xray": "XRAY"}[to]) if reference else None
    medm2g = open_model(model)
    with console.progress(f"translate to {to}") as update:
        result = translate_volume(medm2g, sources, options, update)
    written = [write_volume(result, out, overwrite=overwrite)]
    if preview and not str(out).lower().endswith(".png"):
        written.append(write_preview(result, Path(f"{out}.png"), overwrite=True))
    metrics = volume_psnr_ssim(result, truth) if truth is not None else None
    record = run_record("translate", {"to": to, "contrast": contrast, "steps": steps, "eta": eta, "guidance": guidance,
                                      "scheduler": scheduler, "batch_size": batch_size},
                        medm2g, str(resolve_device(console.settings.device)), seed, inputs, written,
                        time.perf_counter() - started)
    record["metrics"] = metrics
    write_run_json(run_json_beside(out), record)
    if json_output:
        console.emit_json({"output": str(out), "metrics": metrics})
        return
    typer.echo(str(out))
    if metrics:
        typer.echo(f"PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  (against {reference})")


def report(
    image: Path = typer.Argument(..., help="An X-ray (DICOM, PNG), or a CT/MRI slice or volume."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the report: .txt, or .json (text, labels, "
                                    "model, seed)."),
    n: int = typer.Option(1, "--n", help="Reports to write (seeds SEED, SEED+1, ...)."),
    modality: str | None = typer.Option(None, "--modality", help="CT, MR or XRAY when the file does not say."),
    model: str | None = MODEL_OPTION,
    steps: int = STEPS_OPTION,
    eta: float = ETA_OPTION,
    guidance: float = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    beams: int = typer.Option(1, "--beams", help="Beam search width of the text decoder (1: greedy)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    json_output: bool = typer.Option(False, "--json", help="Print the report(s) as JSON lines."),
) -> None:
    """Write a radiology report for an image. Always AI-generated and unverified: never a diagnosis.

    Examples: `medm2g report xray.dcm`, `medm2g report chest.png --n 3 --out reports.json`.
    """
    started = time.perf_counter()
    if out is not None:
        if out.suffix.lower() not in (".txt", ".json"):
            raise InputError(f"--out {out}: use a .txt or .json file")
        check_writable(out, overwrite)
    volume = _read(image, modality)
    options = ReportOptions(sampling_config(steps, eta, guidance, scheduler), seed, n, num_beams=beams)
    medm2g = open_model(model)
    reports = write_report(medm2g, volume, options)
    if json_output:
        for item in reports:
            console.emit_json_line(item.as_json())
    else:
        typer.echo("\n".join(item.as_text() for item in reports).rstrip())
    if out is not None:
        text = (json.dumps([r.as_json() for r in reports], indent=1) + "\n" if out.suffix.lower() == ".json"
                else "\n".join(r.as_text() for r in reports))
        write_text(out, text, overwrite)
        write_run_json(run_json_beside(out), run_record(
            "report", {"n": n, "steps": steps, "eta": eta, "guidance": guidance, "scheduler": scheduler,
                       "beams": beams}, medm2g, str(resolve_device(console.settings.device)), seed, [image], [out],
            time.perf_counter() - started))


def _prompts(prompt: str | None, prompt_file: Path | None) -> list[str]:
    if (prompt is None) == (prompt_file is None):
        raise InputError("give a PROMPT or --prompt-file (a file with one report per line, - for stdin)")
    if prompt is not None:
        return [prompt]
    text = sys.stdin.read() if str(prompt_file) == "-" else prompt_file.read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{prompt_file}: no prompt in it")
    return lines


def generate(
    prompt: str | None = typer.Argument(None, help="A report text to draw from (or use --prompt-file)."),
    prompt_file: Path | None = typer.Option(None, "--prompt-file", help="One report per line; - reads stdin."),
    modality: str = typer.Option("xray", "--modality", "-m", help="xray, ct, mri, or several joined by commas: "
                                 "generated jointly (paper 3.5)."),
    n: int = typer.Option(1, "--n", help="Samples per prompt (seeds SEED, SEED+1, ...)."),
    contrast: str = typer.Option("T1", "--contrast", help="MRI contrast to draw."),
    separate: bool = typer.Option(
        False, "--separate", help="Several modalities: each from the text alone, not jointly."),
    out: Path = typer.Option(Path("medm2g-generated"), "--out", "-o", help="Output folder."),
    fmt: str = typer.Option("nifti", "--format", help="nifti, dicom (a series folder per image) or png."),
    model: str | None = MODEL_OPTION,
    steps: int = STEPS_OPTION,
    eta: float = ETA_OPTION,
    guidance: float = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing --out."),
) -> None:
    """Draw images from a report: one modality, or X-ray + CT + MRI jointly. Prints one path per image.

    Examples: `medm2g generate "Large left pleural effusion." --modality xray --n 4`,
    `medm2g generate --prompt-file reports.txt --modality xray,ct,mri --format png --out samples/`.
    """
    started = time.perf_counter()
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if n < 1:
        raise InputError("--n must be at least 1")
    prompts = _prompts(prompt, prompt_file)
    options = GenerateOptions(tuple(m.strip() for m in modality.split(",")), contrast,
                              sampling_config(steps, eta, guidance, scheduler), seed, joint=not separate)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} is not empty; pass --overwrite or choose another folder")
    medm2g = open_model(model)
    rows = [(p, number, seed + k) for number, p in enumerate(prompts) for k in range(n)]
    written = []
    with console.progress("generate") as update:
        for start in range(0, len(rows), 8):
            chunk = rows[start:start + 8]
            images = generate_images(medm2g, [r[0] for r in chunk], options, [r[2] for r in chunk])
            for b, (text, number, sample_seed) in enumerate(chunk):
                written += _write_sample(images, b, text, out / f"prompt{number:03d}-seed{sample_seed}", fmt,
                                         medm2g, options, sample_seed)
            update(min(start + 8, len(rows)), len(rows))
    write_run_json(out / "run.json", run_record(
        "generate", {"modality": modality, "n": n, "contrast": contrast, "joint": not separate, "format": fmt,
                     "steps": steps, "eta": eta, "guidance": guidance, "scheduler": scheduler, "prompts": prompts},
        medm2g, str(resolve_device(console.settings.device)), seed, [], written, time.perf_counter() - started))
    for path in written:
        typer.echo(str(path))


def _write_sample(images: dict[str, np.ndarray], row: int, text: str, folder: Path, fmt: str, model: MedM2G,
                  options: GenerateOptions, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "prompt.txt", text + "\n", overwrite=True)
    paths = []
    origin = provenance(model, options.sampling, seed)
    for modality, batch in images.items():
        volume = as_volume(batch[row], modality, options.contrast, origin, text)
        name = modality if modality != "mri" else f"mri_{options.contrast.lower()}"
        suffix = {"nifti": ".nii.gz", "png": ".png", "dicom": ""}[fmt]
        paths.append(write_volume(volume, folder / f"{name}{suffix}", overwrite=True))
    return paths
