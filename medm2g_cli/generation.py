"""``medm2g translate``, ``medm2g report`` and ``medm2g generate``: parse, call medm2g_core.apps, print."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medm2g_cli import console
from medm2g_core.atomic import check_folder_writable
from medm2g_core.devices import resolve_device
from medm2g_core.errors import InputError
from medm2g_core.vocabulary import DRR_STRENGTH, PAPER_GUIDANCE, REPORT_GUIDANCE, REPORT_REDRAWS, SCHEDULER_NAMES

if TYPE_CHECKING:  # the engine is imported when a command runs, so `--help` starts without torch
    from medm2g_core.apps.translate import TranslateJob
    from medm2g_core.models.medm2g import MedM2G
    from medm2g_core.models.sampler import SamplingConfig

MODEL_HELP = ("A MedM2G model: a local folder, a name from `medm2g weights import`, or a Hub id org/name[@revision] "
              "(from the Hugging Face cache; `medm2g weights download` fetches it). Default: the embedded model.")
STEPS_HELP = "Denoising steps (the paper: 50)."
ETA_HELP = ("DDIM eta: 1 as stochastic as DDPM (the paper), 0 deterministic given the seed's start noise. Default: "
            "the flow's, 1 except 0 for MRI made through an eps-trained spatial path (older models; measured: "
            "BENCHMARKS.md).")
GUIDANCE_HELP = (f"Classifier-free guidance scale (1 = none); default: the paper's {PAPER_GUIDANCE:.1f}, and "
                 f"{REPORT_GUIDANCE:.1f} on the report round's guided hops (X-ray <-> report, report -> CT).")
SCHEDULER_HELP = f"Sampler: {', '.join(SCHEDULER_NAMES)} (diffusers schedulers on the model's noise schedule)."
SEED_HELP = "Random seed: the same seed and inputs give the same output."
# Options every generating command shares (typer reads these objects as defaults; one definition, one help text).
MODEL_OPTION = typer.Option(None, "--model", help=MODEL_HELP)
STEPS_OPTION = typer.Option(50, "--steps", help=STEPS_HELP)
ETA_OPTION = typer.Option(None, "--eta", help=ETA_HELP, show_default=False)
GUIDANCE_OPTION = typer.Option(None, "--guidance", help=GUIDANCE_HELP)
SCHEDULER_OPTION = typer.Option("ddim", "--scheduler", help=SCHEDULER_HELP)


def sampling_config(steps: int, eta: float | None, guidance: float | None, scheduler: str) -> SamplingConfig:
    from medm2g_core.models.sampler import SamplingConfig

    return SamplingConfig(steps=steps, eta=eta, guidance=guidance, scheduler=scheduler)


def open_model(spec: str | None) -> MedM2G:
    from medm2g_core.hub import load_model

    device = resolve_device(console.settings.device)
    console.say(f"model: {spec or 'embedded default'} on {device}")
    return load_model(spec, device=device)


def _mri_contrast(to: str, contrast: str | None) -> str | None:
    from medm2g_core.io.volume import canonical_target

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
    eta: float | None = ETA_OPTION,
    guidance: float | None = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    batch_size: int = typer.Option(32, "--batch-size", help="Slices denoised at once."),
    drr_strength: float = typer.Option(DRR_STRENGTH, "--drr-strength", help="CT volume -> X-ray: the film starts "
                                       "from the CT's projection (DRR) and the model redraws this share of the "
                                       "denoising schedule (0-1; lower keeps more of the projection)."),
    samples: int = typer.Option(1, "--samples", help="Draw this many samples (seeds SEED .. SEED+N-1, denoised "
                                "together) and write their mean."),
    uncertainty: Path | None = typer.Option(None, "--uncertainty", help="With --samples 2 or more: also write the "
                                            "samples' per-voxel standard deviation (HU for CT) on the output's grid: "
                                            ".nii/.nii.gz, or a folder name for a DICOM series (synthetic, derived; "
                                            "beside a DICOM output it references it). With --batch: a folder, "
                                            "<case>_<to>_uncertainty.nii.gz each."),
    slice_noise: str = typer.Option("shared", "--slice-noise", help="shared: every slice of a volume starts from and "
                                    "is driven by the same noise, so the volume is consistent in sagittal and "
                                    "coronal views (default); independent: a noise of its own for each slice."),
    strict: bool = typer.Option(False, "--strict", help="Refuse (exit 2) an input unlike the images the model was "
                                "trained on, instead of warning (the model's out-of-distribution reference, "
                                "`medm2g train ood`)."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Also write OUT.png (a montage)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    json_output: bool = typer.Option(False, "--json", help="Print the output paths and metrics as JSON (with "
                                     "--batch: one JSON line per case)."),
) -> None:
    """Translate one imaging modality to another, on the input's exact grid (CT in HU).

    Examples: `medm2g translate mri.nii.gz --to ct`, `medm2g translate t2.nii.gz flair.nii.gz --to mri --contrast T1`,
    `medm2g translate ct_dicom/ --to mri --contrast T2 --out t2_series/` (a DICOM series),
    `medm2g translate --batch cases/ --to ct --out synthetic_ct/ --keep-going` (a folder of cases),
    `medm2g translate mri.nii.gz --to ct --samples 8 --uncertainty ct_std.nii.gz` (mean of 8 and where they differ).
    """
    from medm2g_core.apps import translate as app
    from medm2g_core.sampling.translate import TranslateOptions

    options = TranslateOptions(to, _mri_contrast(to, contrast), sampling_config(steps, eta, guidance, scheduler), seed,
                               batch_size, drr_strength, samples, slice_noise)
    job = app.TranslateJob(options, modality, preview, overwrite, arguments={
        "to": options.target, "contrast": options.contrast, "steps": steps, "eta": eta, "guidance": guidance,
        "scheduler": scheduler, "batch_size": batch_size, "drr_strength": drr_strength, "samples": samples,
        "slice_noise": options.slice_noise,
        "uncertainty": None if uncertainty is None else str(uncertainty), "strict": strict}, uncertainty=uncertainty,
        strict=strict)
    if batch:
        if len(inputs) != 1 or reference is not None:
            raise InputError("--batch takes one folder of cases (and no --reference)")
        _translate_batch(inputs[0], out or app.default_batch_output(inputs[0], job), job, model, keep_going,
                         json_output)
        return
    if keep_going:
        raise InputError("--keep-going applies to --batch only")
    out = out or app.default_output(inputs[0], job)
    sources, truth = app.read_case(inputs, out, job, reference)  # before the model loads: bad input costs nothing
    medm2g = open_model(model)
    with console.progress(f"translate to {options.target} (denoising steps)") as update:
        metrics = app.translate_files(medm2g, inputs, sources, out, job, _device(), truth, update, console.warn)
    if json_output:
        console.emit_json({"output": str(out), "metrics": metrics}
                          | ({"uncertainty": str(uncertainty)} if uncertainty is not None else {}))
        return
    typer.echo(str(out))
    if uncertainty is not None:
        typer.echo(str(uncertainty))
    if metrics:
        typer.echo(f"PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  (against {reference})")


def _translate_batch(folder: Path, out: Path, job: TranslateJob, model: str | None, keep_going: bool,
                     json_output: bool) -> None:
    """Every case of ``folder`` into ``out`` with one model load; a line (or JSON line) per case."""
    from medm2g_core.apps import translate as app

    started = time.perf_counter()
    cases = app.prepare_batch(folder, out, job)
    medm2g = open_model(model)

    def print_case(row: dict) -> None:
        if json_output:
            console.emit_json_line(row)
        else:
            result = row["output"] if row["status"] == "ok" else row["error"]
            typer.echo(f"{row['status']:<6}  {row['input']}  ->  {result}")

    title = f"translate {len(cases)} cases to {job.options.target}"
    with console.progress(title) as update:
        rows = app.translate_batch(medm2g, cases, out, job, _device(), keep_going, print_case,
                                   lambda done, total, description=None: update(done, total, description or title),
                                   console.warn)
    ok = sum(row["status"] == "ok" for row in rows)
    console.say(f"{ok} of {len(rows)} cases translated into {out} in {time.perf_counter() - started:.0f} s")
    if (failure := app.batch_failure(rows, out)) is not None:
        raise failure


def _device() -> str:
    return str(resolve_device(console.settings.device))


def report(
    image: Path = typer.Argument(..., help="An X-ray (DICOM, PNG), or a CT/MRI slice or volume."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the report: .txt, or .json (text, labels, "
                                    "model, seed)."),
    n: int = typer.Option(1, "--n", help="Reports to write (seeds SEED, SEED+1, ...)."),
    modality: str | None = typer.Option(None, "--modality", help="CT, MR or XRAY when the file does not say."),
    model: str | None = MODEL_OPTION,
    steps: int = STEPS_OPTION,
    eta: float | None = ETA_OPTION,
    guidance: float | None = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    beams: int = typer.Option(1, "--beams", help="Beam search width of the text decoder (1: greedy)."),
    redraws: int = typer.Option(REPORT_REDRAWS, "--redraws", help="Draw a report again (new seed) while it states "
                                "and negates one finding, or names a finding of the other anatomy (chest vs "
                                "brain, when the image says its body part); a report still failing says so."),
    samples: int = typer.Option(1, "--samples", help="Draw this many reports for each one written and write the "
                                "most typical, with the share of the samples that state each finding (how sure "
                                "the model is of it)."),
    strict: bool = typer.Option(False, "--strict", help="Refuse (exit 2) an input unlike the images the model was "
                                "trained on, instead of warning (the model's out-of-distribution reference, "
                                "`medm2g train ood`)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    json_output: bool = typer.Option(False, "--json", help="Print the report(s) as JSON lines."),
) -> None:
    """Write a radiology report for an image. Always AI-generated and unverified: never a diagnosis.

    Examples: `medm2g report xray.dcm`, `medm2g report chest.png --n 3 --out reports.json`,
    `medm2g report xray.dcm --samples 8` (with the share of 8 samples stating each finding).
    """
    from medm2g_core.apps.report import REPORT_SUFFIXES, read_image, report_file
    from medm2g_core.sampling.report import ReportOptions

    if out is not None and out.suffix.lower() not in REPORT_SUFFIXES:
        raise InputError(f"--out {out}: use a .txt or .json file")
    volume = read_image(image, modality, out, overwrite)
    options = ReportOptions(sampling_config(steps, eta, guidance, scheduler), seed, n, num_beams=beams,
                            redraws=redraws, samples=samples)
    medm2g = open_model(model)
    reports = report_file(medm2g, image, volume, options, out, overwrite, _device(), {
        "n": n, "steps": steps, "eta": eta, "guidance": guidance, "scheduler": scheduler, "beams": beams,
        "redraws": redraws, "samples": samples, "strict": strict}, strict, console.warn)
    if json_output:
        for item in reports:
            console.emit_json_line(item.as_json())
    else:
        typer.echo("\n".join(item.as_text() for item in reports).rstrip())


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
    eta: float | None = ETA_OPTION,
    guidance: float | None = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    samples: int = typer.Option(1, "--samples", help="Each image is the mean of this many samples (seeds SEED + "
                                "k*N ..), denoised together."),
    uncertainty: bool = typer.Option(False, "--uncertainty", help="With --samples 2 or more: also write each "
                                     "image's per-pixel standard deviation over its samples beside it "
                                     "(<modality>_uncertainty, same grid and units, marked synthetic)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing --out."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON line per image (prompt, seed, modality, "
                                     "path) instead of paths."),
) -> None:
    """Draw images from a report: one modality, or X-ray + CT + MRI jointly. Prints one path per image.

    Examples: `medm2g generate "Large left pleural effusion." --modality xray --n 4`,
    `medm2g generate --prompt-file reports.txt --modality xray,ct,mri --format png --out samples/`,
    `medm2g generate "Right upper lobe mass." --samples 8 --uncertainty` (mean of 8 and where they differ).
    """
    from medm2g_core.apps.generate import FORMATS, generate_files
    from medm2g_core.apps.translate import check_samples
    from medm2g_core.sampling.generate import GenerateOptions

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if n < 1:
        raise InputError("--n must be at least 1")
    check_samples(samples, uncertainty)
    prompts = _prompts(prompt, prompt_file)
    options = GenerateOptions(tuple(m.strip() for m in modality.split(",")), contrast,
                              sampling_config(steps, eta, guidance, scheduler), seed, joint=not separate)
    check_folder_writable(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} is not empty; pass --overwrite or choose another folder")
    medm2g = open_model(model)
    with console.progress("generate") as update:
        rows = generate_files(medm2g, prompts, n, options, out, fmt, _device(), {
            "modality": modality, "n": n, "contrast": contrast, "joint": not separate, "format": fmt, "steps": steps,
            "eta": eta, "guidance": guidance, "scheduler": scheduler, "prompts": prompts, "samples": samples,
            "uncertainty": uncertainty}, update, samples, uncertainty)
    for row in rows:
        if json_output:
            console.emit_json_line(row)
        else:
            typer.echo(row["path"])
