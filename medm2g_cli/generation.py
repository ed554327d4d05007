"""``medm2g translate``, ``medm2g report`` and ``medm2g generate``: the user commands over medm2g_core.sampling."""

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer

from medm2g_cli import console
from medm2g_core.devices import resolve_device
from medm2g_core.errors import InputError, Medm2gError
from medm2g_core.evaluation.image_metrics import volume_psnr_ssim
from medm2g_core.hub import load_model
from medm2g_core.io.atomic import check_writable, write_text
from medm2g_core.io.load import check_output, input_format, read_volume, write_volume
from medm2g_core.io.preview import write_preview
from medm2g_core.io.volume import Volume, canonical_target
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
    return first.with_name(f"{_case_name(first)}_{suffix}.nii.gz")


def _case_name(path: Path) -> str:
    """The input's name without its image extension: out names are built from it."""
    name = path.name
    for ext in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def batch_cases(folder: Path) -> list[Path]:
    """The cases of a batch folder: every NIfTI/DICOM/PNG file in it and every subfolder (a DICOM series)."""
    if not folder.is_dir():
        raise InputError(f"--batch takes one folder of cases; {folder} is not a folder")
    cases = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p.is_dir() or _readable(p)))
    if not cases:
        raise InputError(f"{folder}: no cases in it (NIfTI, DICOM or PNG files, or DICOM series folders)")
    return cases


def _readable(path: Path) -> bool:
    """Whether ``path`` has a format medm2g reads (by its name and first bytes; the content is checked later)."""
    try:
        input_format(path)
    except InputError:
        return False
    return True


def _mri_contrast(to: str, contrast: str | None) -> str | None:
    if canonical_target(to) == "mri" and contrast is None:
        console.say("--to mri without --contrast: making T1 (choose with --contrast T1|T1ce|T2|FLAIR|PD)")
        return "T1"
    return contrast


def translate(
    inputs: list[Path] = typer.Argument(..., help="Source image(s): NIfTI, a DICOM file or folder, PNG. Several "
                                        "MRI contrasts of one grid are used together (multi-source synthesis). "
                                        "With --batch: one folder of cases."),
    to: str = typer.Option(..., "--to", help="Target modality: ct, mri or xray (any case)."),
    contrast: str | None = typer.Option(None, "--contrast", help="MRI target contrast: T1, T1ce, T2, FLAIR, PD "
                                        "(any case; --to mri without it makes T1 and says so)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output: .nii/.nii.gz, .png, or a folder name for a "
                                    "DICOM series. Default: INPUT_<to>.nii.gz beside the input. With --batch: the "
                                    "output folder (default: FOLDER_<to>)."),
    batch: bool = typer.Option(False, "--batch", help="Translate every case of a folder (NIfTI/DICOM/PNG files and "
                               "DICOM series subfolders) with one model load: OUT/<case>_<to>.nii.gz each, a "
                               "summary line per case and OUT/batch.json."),
    keep_going: bool = typer.Option(False, "--keep-going", help="With --batch: report a failed case and go on "
                                    "(the exit code still says that cases failed)."),
    reference: Path | None = typer.Option(None, "--reference", help="Ground truth on the input grid: print PSNR/SSIM."),
    modality: str | None = typer.Option(None, "--modality", help="CT, MR or XRAY (any case), for inputs whose file "
                                        "does not say (NIfTI, PNG); otherwise guessed from the values."),
    model: str | None = MODEL_OPTION,
    steps: int = STEPS_OPTION,
    eta: float = ETA_OPTION,
    guidance: float = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    batch_size: int = typer.Option(32, "--batch-size", help="Slices denoised at once."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Also write OUT.png (a montage)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    json_output: bool = typer.Option(False, "--json", help="Print the output paths and metrics as JSON (with "
                                     "--batch: one JSON line per case)."),
) -> None:
    """Translate one imaging modality to another, on the input's exact grid (CT in HU).

    Examples: `medm2g translate mri.nii.gz --to ct`, `medm2g translate t2.nii.gz flair.nii.gz --to mri --contrast T1`,
    `medm2g translate ct_dicom/ --to mri --contrast T2 --out t2_series/` (a DICOM series),
    `medm2g translate --batch cases/ --to ct --out synthetic_ct/ --keep-going` (a folder of cases).
    """
    contrast = _mri_contrast(to, contrast)
    options = TranslateOptions(to, contrast, sampling_config(steps, eta, guidance, scheduler), seed, batch_size)
    suffix = options.target if options.contrast is None else options.contrast.lower()
    arguments = {"to": options.target, "contrast": options.contrast, "steps": steps, "eta": eta,
                 "guidance": guidance, "scheduler": scheduler, "batch_size": batch_size}
    if batch:
        if len(inputs) != 1 or reference is not None:
            raise InputError("--batch takes one folder of cases (and no --reference)")
        _translate_batch(inputs[0], out or inputs[0].with_name(f"{inputs[0].name}_{suffix}"), suffix, modality,
                         model, options, arguments, keep_going, preview, overwrite, json_output)
        return
    if keep_going:
        raise InputError("--keep-going applies to --batch only")
    started = time.perf_counter()
    out = out or _default_out(inputs[0], suffix)
    check_output(out, overwrite=overwrite)
    sources = [_read(path, modality) for path in inputs]
    check_sources(sources)  # before the model loads: a bad set of inputs costs nothing
    target_modality = {"ct": "CT", "mri": "MR", "xray": "XRAY"}[options.target]
    truth = read_volume(reference, modality=target_modality) if reference else None
    medm2g = open_model(model)
    with console.progress(f"translate to {options.target} (denoising steps)") as update:
        result, written = _translate_one(medm2g, sources, options, out, preview, overwrite, update)
    metrics = volume_psnr_ssim(result, truth) if truth is not None else None
    record = run_record("translate", arguments, medm2g, str(resolve_device(console.settings.device)), seed, inputs,
                        written, time.perf_counter() - started)
    record["metrics"] = metrics
    write_run_json(run_json_beside(out), record)
    if json_output:
        console.emit_json({"output": str(out), "metrics": metrics})
        return
    typer.echo(str(out))
    if metrics:
        typer.echo(f"PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  (against {reference})")


def _translate_one(medm2g: MedM2G, sources: list[Volume], options: TranslateOptions, out: Path, preview: bool,
                   overwrite: bool, update: Callable[[float, float], None]) -> tuple[Volume, list[Path]]:
    """Translate, write the output (and its preview); the result and the paths written."""
    result = translate_volume(medm2g, sources, options, update)
    written = [write_volume(result, out, overwrite=overwrite)]
    if preview and not str(out).lower().endswith(".png"):
        written.append(write_preview(result, Path(f"{out}.png"), overwrite=True))
    return result, written


def _translate_batch(folder: Path, out: Path, suffix: str, modality: str | None, model: str | None,
                     options: TranslateOptions, arguments: dict, keep_going: bool, preview: bool, overwrite: bool,
                     json_output: bool) -> None:
    """Every case of ``folder`` into ``out`` with one model load; a line (or JSON line) per case."""
    started = time.perf_counter()
    cases = batch_cases(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} must be a folder for --batch")
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "batch.json", overwrite=True)
    medm2g = open_model(model)
    rows, written = [], []
    title = f"translate {len(cases)} cases to {options.target}"
    with console.progress(title) as update:
        for number, case in enumerate(cases):
            target = out / f"{_case_name(case)}_{suffix}.nii.gz"
            began = time.perf_counter()
            row = {"input": str(case), "output": str(target)}
            try:
                check_output(target, overwrite=overwrite)
                sources = [_read(case, modality)]
                check_sources(sources)
                written += _translate_one(medm2g, sources, options, target, preview, overwrite,
                                          lambda done, total, k=number, name=case.name: update(
                                              k + done / total, len(cases), f"{name} ({k + 1}/{len(cases)})"))[1]
                row |= {"status": "ok"}
            except Exception as exc:
                if not keep_going:
                    raise
                internal = not isinstance(exc, Medm2gError)
                row |= {"status": "failed", "exit_code": 1 if internal else exc.exit_code,
                        "error": f"internal error: {type(exc).__name__}: {exc}" if internal else str(exc)}
            row["seconds"] = round(time.perf_counter() - began, 2)
            rows.append(row)
            update(number + 1, len(cases), title)
            if json_output:
                console.emit_json_line(row)
            else:
                typer.echo(f"{row['status']:<6}  {case}  ->  {target if row['status'] == 'ok' else row['error']}")
    record = run_record("translate --batch", arguments, medm2g, str(resolve_device(console.settings.device)),
                        options.seed, [], written, time.perf_counter() - started)
    write_run_json(out / "batch.json", record | {"cases": rows})
    failed = [row for row in rows if row["status"] != "ok"]
    console.say(f"{len(rows) - len(failed)} of {len(rows)} cases translated into {out} "
                f"in {time.perf_counter() - started:.0f} s")
    if failed:
        error = Medm2gError(f"{len(failed)} of {len(rows)} cases failed; see {out / 'batch.json'}")
        error.exit_code = 2 if all(row["exit_code"] == 2 for row in failed) else 1  # all bad input, or not
        raise error


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
    json_output: bool = typer.Option(False, "--json", help="Print one JSON line per image (prompt, seed, modality, "
                                     "path) instead of paths."),
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
    written, rows_out = [], []
    with console.progress("generate") as update:
        for start in range(0, len(rows), 8):
            chunk = rows[start:start + 8]
            images = generate_images(medm2g, [r[0] for r in chunk], options, [r[2] for r in chunk])
            for b, (text, number, sample_seed) in enumerate(chunk):
                made = _write_sample(images, b, text, out / f"prompt{number:03d}-seed{sample_seed}", fmt, medm2g,
                                     options, sample_seed)
                written += [path for _, path in made]
                rows_out += [{"prompt": text, "prompt_index": number, "seed": sample_seed, "modality": name,
                              "path": str(path)} for name, path in made]
            update(min(start + 8, len(rows)), len(rows))
    write_run_json(out / "run.json", run_record(
        "generate", {"modality": modality, "n": n, "contrast": contrast, "joint": not separate, "format": fmt,
                     "steps": steps, "eta": eta, "guidance": guidance, "scheduler": scheduler, "prompts": prompts},
        medm2g, str(resolve_device(console.settings.device)), seed, [], written, time.perf_counter() - started))
    for row in rows_out:
        if json_output:
            console.emit_json_line(row)
        else:
            typer.echo(row["path"])


def _write_sample(images: dict[str, np.ndarray], row: int, text: str, folder: Path, fmt: str, model: MedM2G,
                  options: GenerateOptions, seed: int) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "prompt.txt", text + "\n", overwrite=True)
    paths = []
    origin = provenance(model, options.sampling, seed)
    for modality, batch in images.items():
        volume = as_volume(batch[row], modality, options.contrast, origin, text)
        name = modality if modality != "mri" else f"mri_{options.contrast.lower()}"
        suffix = {"nifti": ".nii.gz", "png": ".png", "dicom": ""}[fmt]
        paths.append((name, write_volume(volume, folder / f"{name}{suffix}", overwrite=True)))
    return paths
