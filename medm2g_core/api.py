"""The Python API: load a model, read and write images, translate, report and generate, in a few calls.

Every function takes what a person has at hand (a path to a NIfTI file, a DICOM file or series folder, a PNG;
or a :class:`~medm2g_core.io.volume.Volume`) and does the steps the command line does, nothing hidden: an image
whose file does not say its modality gets the same guess (and note) as ``medm2g translate``. ``model`` may be a
loaded :class:`~medm2g_core.models.medm2g.MedM2G`, a folder, an imported name, a Hub id, or ``None`` for the
embedded default; load once with :func:`load_model` when calling several times.

Example (the README's "From Python")::

    import medm2g_core as medm2g

    model = medm2g.load_model()
    ct = medm2g.translate("t1.nii.gz", to="ct", model=model, steps=20)
    medm2g.write_volume(ct, "t1_ct.nii.gz")
"""

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from medm2g_core.apps.translate import read_source, screen
from medm2g_core.devices import resolve_device
from medm2g_core.io import load
from medm2g_core.io.volume import Volume, canonical_target
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.generate import GenerateOptions, as_volume, generate_images
from medm2g_core.sampling.report import Report, ReportOptions, write_report
from medm2g_core.sampling.translate import (
    TranslateOptions,
    assume_modality,
    check_sources,
    provenance,
    translate_volume,
)
from medm2g_core.vocabulary import DRR_STRENGTH, REPORT_REDRAWS

Image = str | os.PathLike | Volume
ModelSpec = MedM2G | str | None


def load_model(spec: str | None = None, device: str = "auto") -> MedM2G:
    """A MedM2G model: ``None`` for the embedded default, a folder, a name from ``medm2g weights import``, or a
    Hub id ``org/name[@revision]`` (read from the Hugging Face cache; ``medm2g weights download`` fetches it).
    ``device``: auto, cpu, cuda, cuda:N or mps."""
    from medm2g_core.hub import load_model as load

    return load(spec, device=resolve_device(device))


def read_volume(path: str | os.PathLike, modality: str | None = None, series: str | None = None,
                frame: int | None = None) -> Volume:
    """An image from a NIfTI file, a DICOM file or series folder (``series``: UID or index when it holds
    several), a PNG/JPEG, or a 4D NIfTI's ``frame``. ``modality`` (CT, MR, XRAY) for files that do not say."""
    return load.read_volume(path, series=series, frame=frame, modality=modality)


def write_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``volume`` by the name of ``path``: ``.nii``/``.nii.gz``, ``.png`` (a preview), or a folder name
    for a DICOM series. A generated image is marked synthetic in the file. Returns the path written."""
    return load.write_volume(volume, path, overwrite=overwrite)


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def translate(images: Image | Sequence[Image], to: str, contrast: str | None = None, model: ModelSpec = None,
              steps: int = 50, guidance: float | None = None, eta: float | None = None, scheduler: str = "ddim",
              seed: int = 0, batch_size: int = 32, drr_strength: float = DRR_STRENGTH,
              progress: Callable[[int, int], None] | None = None, samples: int = 1,
              slice_noise: str = "shared", strict: bool = False) -> Volume:
    """Translate to ``to`` (ct, mri, xray) on the input's exact grid (CT in HU); ``contrast`` names the MRI
    target (T1 when ``to="mri"`` and none is given). Several MRI contrasts of one grid are used together. A CT
    volume's X-ray starts from the CT's projection, of which the model redraws ``drr_strength`` (0-1].
    ``samples`` > 1 returns the mean of that many samples (seeds ``seed`` ..), denoised together
    (``medm2g_core.sampling.translate.translate_samples`` also gives their per-voxel standard deviation).
    ``slice_noise`` "shared" (one noise for all slices: consistent in sagittal and coronal views) or
    "independent" (one per slice). ``guidance`` and ``eta`` None are each flow's defaults. ``progress(done,
    total)`` is called per denoising step. An input unlike the model's training images raises a ``UserWarning``
    (``strict``: an InputError), as the CLI warns."""
    sources = [_volume(image) for image in ([images] if isinstance(images, (str, os.PathLike, Volume)) else images)]
    check_sources(sources)
    if canonical_target(to) == "mri" and contrast is None:
        contrast = "T1"
    options = TranslateOptions(to, contrast, SamplingConfig(steps, eta, guidance, scheduler), seed, batch_size,
                               drr_strength, samples, slice_noise)
    medm2g = _model(model)
    screen(medm2g, sources[0], strict, _warn)
    return translate_volume(medm2g, sources, options, progress)


def report(image: Image, model: ModelSpec = None, n: int = 1, steps: int = 50, guidance: float | None = None,
           eta: float | None = None, scheduler: str = "ddim", seed: int = 0, beams: int = 1,
           redraws: int = REPORT_REDRAWS, samples: int = 1, strict: bool = False) -> list[Report]:
    """``n`` AI-generated reports of an X-ray, CT or MRI (seeds ``seed .. seed+n-1``): each has ``text`` (with
    the synthetic header), ``labels`` (finding -> 1 stated, 0 negated, None not mentioned) and ``seed``. A report
    that states and negates one finding, or names the other anatomy's, is drawn again up to ``redraws`` times;
    ``draws`` says how many it took and ``problems`` what is still wrong if none passed. ``guidance`` None is the
    flow's default (7.0 on the default model's guided report hop). ``samples`` > 1: each report is the most
    typical of that many drawn, and its ``agreement`` gives the share of them stating each finding. An input unlike
    the model's training images raises a ``UserWarning`` (``strict``: an InputError)."""
    options = ReportOptions(SamplingConfig(steps, eta, guidance, scheduler), seed, n, num_beams=beams,
                            redraws=redraws, samples=samples)
    medm2g, volume = _model(model), _volume(image)
    screen(medm2g, volume, strict, _warn)
    return write_report(medm2g, volume, options)


def generate(prompt: str, modality: str | Sequence[str] = "xray", contrast: str = "T1", model: ModelSpec = None,
             joint: bool = True, steps: int = 50, guidance: float | None = None, eta: float | None = None,
             scheduler: str = "ddim", seed: int = 0) -> dict[str, Volume]:
    """Images drawn from a report: modality name -> Volume, for ``modality`` xray, ct, mri or several (drawn
    jointly, paper 3.5, unless ``joint=False``). Every image is marked synthetic and carries the prompt."""
    medm2g = _model(model)
    modalities = (modality,) if isinstance(modality, str) else tuple(modality)
    options = GenerateOptions(modalities, contrast, SamplingConfig(steps, eta, guidance, scheduler), seed, joint)
    images = generate_images(medm2g, [prompt], options, [seed])
    origin = provenance(medm2g, options.sampling, seed)
    return {name: as_volume(batch[0], name, contrast, origin, prompt) for name, batch in images.items()}


def _volume(image: Image) -> Volume:
    """A volume with the modality the file says, or the same guess ``medm2g translate`` makes (and notes)."""
    return assume_modality(image) if isinstance(image, Volume) else read_source(Path(image))


def _model(model: ModelSpec) -> MedM2G:
    return model if isinstance(model, MedM2G) else load_model(model)
