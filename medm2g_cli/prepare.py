"""``medm2g prepare``: make the phantom world, read published datasets into manifests, verify, cache."""

import json
import os
from pathlib import Path

import typer

from medm2g_cli import console
from medm2g_core.atomic import check_folder_writable
from medm2g_core.errors import InputError
from medm2g_core.vocabulary import ANATOMIES

app = typer.Typer(
    help="Prepare paired data: the phantom world, published datasets, integrity checks, the model-ready cache.",
    no_args_is_help=True,
)


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else None


@app.command("phantom")
def phantom(
    out: Path = typer.Option(..., "--out", help="Folder to write cases, manifest.jsonl and contact_sheet.png into."),
    cases: int = typer.Option(200, "--cases", help="Number of cases in all (tasks take turns)."),
    seed: int = typer.Option(0, "--seed", help="Base seed: case i uses seed*100003+i, so any case can be remade."),
    tasks: str = typer.Option(
        ",".join(ANATOMIES), "--tasks",
        help="Comma-separated: brain (CT + 5 MRI + skull X-ray) and/or chest (CT + X-ray)."),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", help="Processes that make cases."),
    brain_slices: int = typer.Option(24, "--brain-slices", help="Axial slices per brain case (0: whole head)."),
    xray_pixels: int = typer.Option(256, "--xray-pixels", help="Side of the DRR X-ray in pixels."),
    brain_xray: bool = typer.Option(
        True, "--brain-xray/--no-brain-xray", help="Give each brain case a PA skull radiograph (DRR of the head)."),
    chest_base: Path | None = typer.Option(
        None, "--chest-base", help="A real chest CT (NIfTI or DICOM, in HU) as the anatomy; findings are inserted."
    ),
    resume: bool = typer.Option(False, "--resume", help="Keep finished cases of an interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty folder."),
) -> None:
    """Make the paired phantom world: brain CT + T1/T1ce/T2/FLAIR/PD + skull X-ray and chest CT + X-ray, with reports.

    Example: `medm2g prepare phantom --out data/phantom --cases 200 --workers 2`
    """
    from medm2g_core.phantoms.world import PhantomConfig, prepare_phantom

    check_folder_writable(out)

    config = PhantomConfig(cases=cases, seed=seed, tasks=_csv(tasks) or (), brain_slices=brain_slices or None,
                           xray_pixels=xray_pixels, brain_xray=brain_xray,
                           chest_base=str(chest_base) if chest_base else None)
    if workers < 1:
        raise InputError("--workers must be at least 1")
    with console.progress("phantom cases") as update:
        manifest = prepare_phantom(out, config, workers=workers, overwrite=overwrite, resume=resume, progress=update)
    console.say(f"{cases} cases, manifest and contact sheet in {out}")
    typer.echo(str(manifest))


@app.command("verify")
def verify(
    target: Path = typer.Argument(..., help="A prepared folder (holding manifest.jsonl) or a manifest file."),
    no_images: bool = typer.Option(False, "--no-images", help="Check the manifest and file presence only."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Integrity check: missing files, NaN/Inf, paired shapes and spacing, label sets, split leakage.

    Exits with code 1 when any problem is found.
    """
    from medm2g_core.data.verify import verify_manifest

    manifest = target / "manifest.jsonl" if target.is_dir() else target
    with console.progress("verifying cases") as update:
        report = verify_manifest(manifest, check_images=not no_images, progress=update)
    if json_output:
        console.emit_json(report.to_dict())
    else:
        for problem in report.problems:
            console.stdout.print(f"{problem.case}: {problem.kind}: {problem.message}", markup=False)
        console.say(f"{report.cases} cases, {len(report.problems)} problem(s)")
    if not report.ok:
        raise typer.Exit(1)


@app.command("cache")
def cache(
    manifest: Path = typer.Argument(..., help="manifest.jsonl (or the folder holding it)."),
    out: Path = typer.Option(..., "--out", help="Cache folder to write."),
    resolution: int = typer.Option(64, "--resolution", help="Side of the square training images in pixels."),
    keys: str | None = typer.Option(None, "--keys", help="Image keys to cache (default: all), e.g. ct,mr_t1,xray."),
    ct_clip: str = typer.Option("-1024,2048", "--ct-clip", help="CT window in HU mapped to [-1, 1]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache."),
) -> None:
    """Build the model-ready cache: axial slices at RESOLUTION, normalised per modality, in safetensors shards."""
    from medm2g_core.data.cache import CacheConfig, build_cache

    check_folder_writable(out)

    low, _, high = ct_clip.partition(",")
    try:
        clip = (float(low), float(high))
    except ValueError as exc:
        raise InputError(f"--ct-clip must be LOW,HIGH in HU; got {ct_clip!r}") from exc
    config = CacheConfig(resolution=resolution, keys=_csv(keys), ct_clip_hu=clip)
    source = manifest / "manifest.jsonl" if manifest.is_dir() else manifest
    with console.progress("caching cases") as update:
        folder = build_cache(source, out, config, overwrite=overwrite, progress=update)
    index = json.loads((folder / "cache.json").read_text())
    console.say(f"cached {len(index['cases'])} cases at {resolution}x{resolution} into {folder}")
    typer.echo(str(folder))


ROOT_HELP = "The dataset folder as its publisher distributes it."
OUT_HELP = "Folder to write manifest.jsonl into (images are referenced in place, not copied)."
OVERWRITE_HELP = "Replace an existing manifest."
INCOMPLETE_HELP = "Keep the cases that pair and drop the rest (logged) instead of stopping at the first."


def _run_adapter(name: str, root: Path, out: Path, overwrite: bool, **options) -> None:
    from medm2g_core.data.adapters import ADAPTERS

    check_folder_writable(out)

    if not root.is_dir():
        raise InputError(f"--root {root} is not a folder")
    with console.progress(f"reading {name}") as update:
        manifest = ADAPTERS[name](root, out, overwrite=overwrite, progress=update, **options)
    typer.echo(str(manifest))


@app.command("mimic-cxr")
def mimic_cxr(
    root: Path = typer.Option(..., "--root", help="MIMIC-CXR-JPG root (files/, the split and metadata CSVs)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    reports: Path | None = typer.Option(
        None, "--reports", help="mimic-cxr-reports.zip or its extracted folder (default: looked for under --root)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """MIMIC-CXR-JPG: one frontal X-ray per study with its FINDINGS/IMPRESSION report, official split."""
    _run_adapter("mimic-cxr", root, out, overwrite, reports=reports)


@app.command("iu-xray")
def iu_xray(
    root: Path = typer.Option(..., "--root", help="The R2Gen iu_xray folder (annotation.json, images/)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """IU X-ray in the R2Gen layout: frontal image and report per study, R2Gen's split."""
    _run_adapter("iu-xray", root, out, overwrite)


@app.command("brats")
def brats(
    root: Path = typer.Option(..., "--root", help="Folder holding BraTS20_Training_NNN (and Validation) folders."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """BraTS 2020: T1, T1ce, T2, FLAIR (and the segmentation) per case."""
    _run_adapter("brats", root, out, overwrite)


@app.command("ixi")
def ixi(
    root: Path = typer.Option(..., "--root", help="Folder with IXI-T1/, IXI-T2/, IXI-PD/ (or all files in one)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help=INCOMPLETE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """IXI: T1, T2 and PD per subject, paired by subject id."""
    _run_adapter("ixi", root, out, overwrite, allow_incomplete=allow_incomplete)


@app.command("gold-atlas")
def gold_atlas(
    root: Path = typer.Option(..., "--root", help="Folder of Gold Atlas patient folders (1_01_P, ...)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Gold Atlas male pelvis: MR T2 and (deformably registered) CT per patient."""
    _run_adapter("gold-atlas", root, out, overwrite)


@app.command("brain-ct-mri")
def brain_ct_mri(
    root: Path = typer.Option(..., "--root", help="The Kaggle folder holding 'Brain Tumor CT scan Images' and MRI."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help=INCOMPLETE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Kaggle brain tumour CT and MRI slices, paired within class (Healthy/Tumor)."""
    _run_adapter("brain-ct-mri", root, out, overwrite, allow_incomplete=allow_incomplete)
