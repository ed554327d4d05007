"""Windowed PNG previews of a Volume: one image for a radiograph, a montage of axial slices for a volume.

Windowing. CT in Hounsfield units uses a window preset (:data:`WINDOW_PRESETS`); without one it uses the
window stored with the image (DICOM WindowCenter/WindowWidth, kept in ``meta``) because that is what the
scanner or the radiologist chose for this series, and ``soft-tissue`` when there is none, the window that
shows most of a body CT. Everything else (MR, X-ray, other, CT not in HU) maps robust percentiles
(default 0.5 and 99.5) of the non-background voxels, i.e. those above the volume's minimum (zero padding,
masked air), to black and white. The mapping is the plain linear one, ``(x - (L - W/2)) / W`` clipped to
[0, 1]; DICOM's VOI LUT formula differs from it by under one grey level.

Orientation. A 3D volume is reoriented (nearest axes, nibabel) so that screen columns run from the
patient's right to left, screen rows from anterior to posterior and slices from inferior to superior: the
radiological convention for axial images (patient's right on the screen's left, anterior at the top),
whatever order the voxels were stored in. A 2D image (one slice) is shown as stored: ``data[i, j, 0]`` at
screen column ``i``, row ``j``. Pixels are resampled to be square in millimetres.
"""

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

import medm2g_core
from medm2g_core.atomic import atomic_path, check_writable
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume

# (level, width) in HU. Source: Radiopaedia, "Windowing (CT)" (radiopaedia.org/articles/windowing-ct):
# brain W:80 L:40; subdural W:130-300 L:50-100 (we take 215/75); bone W:1800 L:400 (its spine bone window);
# lungs W:1500 L:-600; mediastinum W:350 L:50; abdominal soft tissues W:400 L:20-60 (we take L:40, the
# [-160, 240] HU window common in abdominal CT segmentation).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "bone": (400.0, 1800.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
}
DEFAULT_CT_PRESET = "soft-tissue"
DISPLAY_AXES = ("L", "P", "S")  # screen x: patient R->L, screen y: A->P, slices: I->S
MAX_TILE = 1024
SEPARATOR = 2  # pixels between montage tiles
MIN_PREVIEW_SIDE = 256  # smaller montages are enlarged (pixel replication) to at least this, so labels stay small
_SEPARATOR_GREY = 96


def _is_hu(volume: Volume) -> bool:
    return volume.modality == "CT" and volume.units == "HU"


def _preset_bounds(volume: Volume, preset: str) -> tuple[float, float]:
    if preset not in WINDOW_PRESETS:
        raise InputError(f"unknown window preset {preset!r}; valid presets: {', '.join(WINDOW_PRESETS)}")
    if not _is_hu(volume):
        raise InputError(
            f"window presets are in HU and apply to CT only; this volume is {volume.modality} in {volume.units}"
        )
    level, width = WINDOW_PRESETS[preset]
    return level - width / 2, level + width / 2


def _percentile_bounds(data: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    low, high = percentiles
    if not 0 <= low < high <= 100:
        raise InputError(f"percentiles must satisfy 0 <= low < high <= 100; got {percentiles}")
    background = float(data.min())
    foreground = data[data > background]
    if foreground.size == 0:  # a constant image shows black
        return background, background + 1.0
    lo, hi = np.percentile(foreground, [low, high])
    return float(lo), float(hi)


def window_bounds(
    volume: Volume, preset: str | None = None, percentiles: tuple[float, float] = (0.5, 99.5),
) -> tuple[float, float]:
    """The values shown as black and white: a preset, the stored CT window, or robust percentiles."""
    if preset is not None:
        return _preset_bounds(volume, preset)
    if _is_hu(volume):
        level, width = volume.meta.window_center, volume.meta.window_width
        if level is not None and width is not None and width > 0:
            return level - width / 2, level + width / 2
        return _preset_bounds(volume, DEFAULT_CT_PRESET)
    return _percentile_bounds(volume.data, percentiles)


def _scale(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:  # a constant foreground (a mask): the foreground is white
        return (data >= hi).astype(np.float32)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def window(
    volume: Volume, preset: str | None = None, percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """The volume's voxels mapped to [0, 1] (float32, same shape) by :func:`window_bounds`."""
    return _scale(volume.data, *window_bounds(volume, preset, percentiles))


def reorient_for_display(volume: Volume) -> Volume:
    """The same image on axes ordered for axial display (:data:`DISPLAY_AXES`); 2D images are unchanged.

    Only axes are permuted and flipped, no resampling: the returned affine maps each voxel to the same
    place in the patient as before.
    """
    if volume.is_2d:
        return volume
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(volume.affine), nib.orientations.axcodes2ornt(DISPLAY_AXES),
    )
    data = nib.orientations.apply_orientation(volume.data, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.shape)
    return replace(volume, data=data, affine=affine)


def to_display(slice2d: np.ndarray) -> np.ndarray:
    """A [0, 1] slice ``data[:, :, k]`` (column index first) as a uint8 (rows, columns) image."""
    grey = np.nan_to_num(np.clip(slice2d, 0.0, 1.0), nan=0.0)
    return np.round(grey * 255).astype(np.uint8).T


def _square_pixels(image: np.ndarray, spacing_xy: tuple[float, float], max_tile: int) -> np.ndarray:
    """Resample a (rows, columns) image so pixels are square in mm and its longest side is <= ``max_tile``."""
    rows, cols = image.shape
    pixel_mm = min(spacing_xy)
    width, height = cols * spacing_xy[0] / pixel_mm, rows * spacing_xy[1] / pixel_mm
    shrink = min(1.0, max_tile / max(width, height))
    size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    if size == (cols, rows):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _slice_indices(data: np.ndarray, lo: float, hi: float, n_slices: int) -> np.ndarray:
    """Centres of ``n_slices`` equal bins over the slices that show anything (all of them when fewer).

    Leading and trailing slices that the window ``lo..hi`` turns entirely black (the empty field of view
    above a skull-stripped head, say) are left out.
    """
    shown = np.nonzero(_scale(data.max(axis=(0, 1)), lo, hi) >= 0.5 / 255)[0]
    first, last = (int(shown[0]), int(shown[-1])) if shown.size else (0, data.shape[2] - 1)
    count = last - first + 1
    n = min(n_slices, count)
    return first + ((np.arange(n) + 0.5) * count / n).astype(int)


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape
    canvas = np.full((rows * height + (rows - 1) * SEPARATOR, columns * width + (columns - 1) * SEPARATOR),
                     _SEPARATOR_GREY, dtype=np.uint8)
    for row in range(rows):
        for col in range(columns):
            y, x = row * (height + SEPARATOR), col * (width + SEPARATOR)
            index = row * columns + col
            canvas[y:y + height, x:x + width] = tiles[index] if index < len(tiles) else 0
    return canvas


def montage(
    volume: Volume, preset: str | None = None, n_slices: int = 16, columns: int | None = None,
    max_tile: int = MAX_TILE,
) -> np.ndarray:
    """A uint8 grid of evenly spaced axial slices, inferior first, read left to right and top to bottom.

    Slices are spread over the part of the volume that shows anything (see :func:`_slice_indices`); the last
    row of the grid is padded with black. A 2D volume gives just its image. Tiles are separated by
    :data:`SEPARATOR` grey pixels.
    """
    if n_slices < 1:
        raise InputError(f"n_slices must be at least 1; got {n_slices}")
    lo, hi = window_bounds(volume, preset)
    display = reorient_for_display(volume)
    spacing_xy = display.spacing[:2]
    tiles = [
        _square_pixels(to_display(_scale(display.data[:, :, k], lo, hi)), spacing_xy, max_tile)
        for k in _slice_indices(display.data, lo, hi, n_slices)
    ]
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    return _grid(tiles, max(1, min(columns, len(tiles))))


def _burn_label(image: Image.Image, text: str) -> None:
    """White text on a black box in the top-left corner, sized to the image."""
    font = ImageFont.load_default(size=max(10, min(image.size) // 16))
    draw = ImageDraw.Draw(image)
    _, _, right, bottom = draw.textbbox((4, 4), text, font=font)
    draw.rectangle((0, 0, right + 4, bottom + 4), fill=0)
    draw.text((4, 4), text, fill=255, font=font)


def _png_text(volume: Volume) -> PngInfo:
    info = PngInfo()
    info.add_text("Software", f"medm2g {medm2g_core.__version__}")
    if volume.synthetic:
        model = volume.provenance.get("model", "medm2g")
        info.add_text("Description", f"SYNTHETIC {volume.modality} image generated by {model}; not for diagnosis")
        info.add_text("Comment", json.dumps({"synthetic": True, "provenance": volume.provenance}, sort_keys=True))
    return info


def preview_scale(shape: tuple[int, ...], min_side: int = MIN_PREVIEW_SIDE) -> int:
    """The integer factor a montage of ``shape`` is enlarged by in a preview (1: as it is)."""
    return max(1, -(-min_side // min(shape[:2])))


def write_preview(
    volume: Volume, path: str | os.PathLike, preset: str | None = None, overwrite: bool = False,
    n_slices: int = 16, min_side: int = MIN_PREVIEW_SIDE, label: bool = True,
) -> Path:
    """Write the :func:`montage` of ``volume`` as a PNG, atomically; synthetic images are labelled. A montage
    under ``min_side`` pixels a side is enlarged by pixel replication (:func:`preview_scale`): a 64-px generated
    film is shown at 256 px, its SYNTHETIC label in a corner rather than across it (0: never enlarged).
    ``label=False`` (training corpora, whose pixels a burned-in label would teach) keeps the marking in the PNG's
    text chunks only."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: a preview is written as PNG; the name must end in .png")
    check_writable(path, overwrite)  # fail before the work, not after it
    pixels = montage(volume, preset, n_slices)
    factor = preview_scale(pixels.shape, min_side)
    image = Image.fromarray(pixels).resize((pixels.shape[1] * factor, pixels.shape[0] * factor),
                                           Image.Resampling.NEAREST)
    if volume.synthetic and label:
        _burn_label(image, "SYNTHETIC")
    with atomic_path(path, overwrite) as tmp:
        image.save(tmp, format="PNG", pnginfo=_png_text(volume))
    return path
