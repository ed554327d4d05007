"""Translate image files: the steps behind ``medm2g translate``, for one case or every case of a folder.

Read and check the inputs (before any model loads, so bad input costs nothing), translate, write the output and
its preview, and leave a ``run.json`` (one case) or ``batch.json`` (a folder) beside them. Output names are built
here: ``<case>_<target>.nii.gz`` with the MRI contrast as the target's name (``t1_ct``, ``ct_t2``).

With several samples a case can also write its uncertainty map: the per-voxel standard deviation of the samples
on the output's grid, in the output's units, as NIfTI (the output's affine) or as a DICOM series marked synthetic
and derived, of its own; when the output is a DICOM series too, the map joins its study and each of its slices
references the output's slice.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medm2g_core.apps.records import run_json_beside, run_record, write_run_json
from medm2g_core.atomic import check_writable
from medm2g_core.errors import InputError, Medm2gError
from medm2g_core.io.dicom_write import derived_from_series
from medm2g_core.io.load import check_output, input_format, output_format, read_volume, write_volume
from medm2g_core.io.preview import write_preview
from medm2g_core.io.volume import Volume
from medm2g_core.metrics.image_metrics import volume_psnr_ssim
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.sampling.ood import OODCheck, check_input
from medm2g_core.sampling.translate import TranslateOptions, assume_modality, check_sources, translate_samples
from medm2g_core.vocabulary import FILE_OF_MODALITY

Progress = Callable[..., None]  # progress(done, total[, description])
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class TranslateJob:
    """What to make of every case: the translation, and how its files are read and written."""

    options: TranslateOptions
    modality: str | None = None  # what inputs whose files do not say hold (CT, MR, XRAY); else guessed
    preview: bool = True  # also OUT.png, a montage
    overwrite: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)  # recorded in run.json as given
    uncertainty: Path | None = None  # one case: also write the samples' per-voxel standard deviation here
    strict: bool = False  # refuse an input outside the training distribution (else: warn)

    @property
    def suffix(self) -> str:
        """The target's name in output names: ct, xray, or the MRI contrast (t1, t2, flair ...)."""
        return self.options.target if self.options.contrast is None else self.options.contrast.lower()


def case_name(path: Path) -> str:
    """The input's name without its image extension: output names are built from it."""
    for ext in IMAGE_EXTENSIONS:
        if path.name.lower().endswith(ext):
            return path.name[: -len(ext)]
    return path.name


def default_output(first: Path, job: TranslateJob) -> Path:
    """``INPUT_<target>.nii.gz`` beside the (first) input."""
    return first.with_name(f"{case_name(first)}_{job.suffix}.nii.gz")


def default_batch_output(folder: Path, job: TranslateJob) -> Path:
    """``FOLDER_<target>`` beside a folder of cases."""
    return folder.with_name(f"{folder.name}_{job.suffix}")


def read_source(path: Path, modality: str | None = None) -> Volume:
    """An input with the modality its file says, or ``modality``, or the guess ``assume_modality`` notes."""
    return assume_modality(read_volume(path, modality=modality))


def check_samples(samples: int, uncertainty: bool) -> None:
    """Refuse a sample count below 1, and an uncertainty map of one sample (translate and generate)."""
    if samples < 1:
        raise InputError(f"the number of samples must be at least 1; got {samples}", option="samples")
    if uncertainty and samples < 2:
        raise InputError("--uncertainty needs --samples 2 or more (one sample has no spread)", option="uncertainty")


def read_case(inputs: list[Path], out: Path, job: TranslateJob, reference: Path | None = None,
              ) -> tuple[list[Volume], Volume | None]:
    """The checked sources of one case (several: MRI contrasts of one grid) and the ground truth if given; the
    output must be writable. Everything that can be wrong with the input fails here, before a model loads."""
    check_output(out, overwrite=job.overwrite)
    if job.uncertainty is not None:
        check_samples(job.options.samples, uncertainty=True)
        if Path(job.uncertainty).resolve() == Path(out).resolve():
            raise InputError(f"--uncertainty {job.uncertainty} is the output itself; choose another path",
                             option="uncertainty")
        check_output(job.uncertainty, overwrite=job.overwrite)
    sources = [read_source(path, job.modality) for path in inputs]
    check_sources(sources)
    truth = read_volume(reference, modality=FILE_OF_MODALITY[job.options.target]) if reference else None
    return sources, truth


def screen(model: MedM2G, volume: Volume, strict: bool, warn: Callable[[str], None] | None = None,
           ) -> OODCheck | None:
    """The out-of-distribution check of an input (:mod:`medm2g_core.sampling.ood`): ``warn`` is told when it is
    outside; with ``strict`` that is an InputError, as is a model without the reference."""
    check = check_input(model, volume)
    if check is None and strict:
        raise InputError("--strict needs a model with an out-of-distribution reference for this modality (add one "
                         "with `medm2g train ood`)", option="strict")
    if check is not None and check.outside:
        if strict:
            raise InputError(f"{check.message()}; refused", option="strict")
        if warn:
            warn(check.message())
    return check


def translate_case(model: MedM2G, sources: list[Volume], out: Path, job: TranslateJob,
                   progress: Progress | None = None) -> tuple[Volume, list[Path]]:
    """Translate one case and write it (its preview, its uncertainty map when asked): the result and the paths
    written."""
    result, deviation = translate_samples(model, sources, job.options, progress)
    written = [write_volume(result, out, overwrite=job.overwrite)]
    if job.uncertainty is not None:
        if output_format(out) == "dicom" and output_format(job.uncertainty) == "dicom":
            deviation = derived_from_series(deviation, out)
        written.append(write_volume(deviation, job.uncertainty, overwrite=job.overwrite,
                                    series_description=deviation.meta.series_description))
    if job.preview and not str(out).lower().endswith(".png"):
        written.append(write_preview(result, Path(f"{out}.png"), overwrite=True))
    return result, written


def translate_files(model: MedM2G, inputs: list[Path], sources: list[Volume], out: Path, job: TranslateJob,
                    device: str, truth: Volume | None = None, progress: Progress | None = None,
                    warn: Callable[[str], None] | None = None) -> dict[str, float] | None:
    """One case end to end: screen the input (:func:`screen`), translate, write, score against ``truth`` when
    given, write ``run.json`` (with the screen's numbers); the metrics (PSNR/SSIM) or None."""
    started = time.perf_counter()
    check = screen(model, sources[0], job.strict, warn)
    result, written = translate_case(model, sources, out, job, progress)
    metrics = volume_psnr_ssim(result, truth) if truth is not None else None
    record = run_record("translate", job.arguments, model, device, job.options.seed, inputs, written,
                        time.perf_counter() - started)
    write_run_json(run_json_beside(out), record | {"metrics": metrics, "ood": check and check.as_json()})
    return metrics


def batch_cases(folder: Path) -> list[Path]:
    """The cases of a folder: every NIfTI/DICOM/PNG file in it and every subfolder (a DICOM series)."""
    if not folder.is_dir():
        raise InputError(f"a batch is one folder of cases; {folder} is not a folder")
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


def prepare_batch(folder: Path, out: Path, job: TranslateJob | None = None) -> list[Path]:
    """The cases of ``folder``, with ``out`` (and the job's uncertainty folder) made writable folders, before a
    model loads."""
    cases = batch_cases(folder)
    if job is not None and job.uncertainty is not None:
        check_samples(job.options.samples, uncertainty=True)
    for place, what in ((out, "output"), (job and job.uncertainty, "uncertainty folder")):
        if place is None:
            continue
        if place.exists() and not place.is_dir():
            raise InputError(f"the {what} of a batch must be a folder; {place} is a file")
        place.mkdir(parents=True, exist_ok=True)
    check_writable(out / "batch.json", overwrite=True)
    return cases


def batch_uncertainty(job: TranslateJob, case: Path) -> Path | None:
    """Where a batch writes the uncertainty map of ``case``: ``<uncertainty folder>/<case>_<target>_uncertainty``."""
    if job.uncertainty is None:
        return None
    return Path(job.uncertainty) / f"{case_name(case)}_{job.suffix}_uncertainty.nii.gz"


def translate_batch(model: MedM2G, cases: list[Path], out: Path, job: TranslateJob, device: str,
                    keep_going: bool = False, on_case: Callable[[dict], None] | None = None,
                    progress: Progress | None = None, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Every case into ``out/<case>_<target>.nii.gz`` with one model (its uncertainty map into the job's
    uncertainty folder, when it names one); a row per case (status, paths, error, seconds) passed to ``on_case`` as
    it finishes and recorded in ``out/batch.json``. A failed case stops the
    batch unless ``keep_going`` (then :func:`batch_failure` makes the error the run ends in)."""
    started, rows, written = time.perf_counter(), [], []
    for number, case in enumerate(cases):
        target, began = out / f"{case_name(case)}_{job.suffix}.nii.gz", time.perf_counter()
        spread = batch_uncertainty(job, case)
        row = {"input": str(case), "output": str(target)} | ({"uncertainty": str(spread)} if spread else {})
        try:
            case_job = replace(job, uncertainty=spread)
            sources, _ = read_case([case], target, case_job)
            named = warn and (lambda text, name=case.name: warn(f"{name}: {text}"))
            check = screen(model, sources[0], job.strict, named)
            row |= {"ood": check.as_json()} if check else {}
            step = _case_progress(progress, number, len(cases), case.name)
            written += translate_case(model, sources, target, case_job, step)[1]
            row |= {"status": "ok"}
        except Exception as exc:
            if not keep_going:
                raise
            internal = not isinstance(exc, Medm2gError)
            row |= {"status": "failed", "exit_code": 1 if internal else exc.exit_code,
                    "error": f"internal error: {type(exc).__name__}: {exc}" if internal else str(exc)}
        rows.append(row | {"seconds": round(time.perf_counter() - began, 2)})
        if progress:
            progress(number + 1, len(cases))
        if on_case:
            on_case(rows[-1])
    record = run_record("translate --batch", job.arguments, model, device, job.options.seed, [], written,
                        time.perf_counter() - started)
    write_run_json(out / "batch.json", record | {"cases": rows})
    return rows


def batch_failure(rows: list[dict], out: Path) -> Medm2gError | None:
    """The error a batch with failed cases ends in (exit code 2 when every failure was bad input), or None."""
    failed = [row for row in rows if row["status"] != "ok"]
    if not failed:
        return None
    error = Medm2gError(f"{len(failed)} of {len(rows)} cases failed; see {out / 'batch.json'}")
    error.exit_code = 2 if all(row["exit_code"] == 2 for row in failed) else 1
    return error


def _case_progress(progress: Progress | None, number: int, count: int, name: str) -> Progress | None:
    """A case's denoising-step progress as progress over the batch, described by the case."""
    if progress is None:
        return None
    return lambda done, total: progress(number + done / total, count, f"{name} ({number + 1}/{count})")
