"""2D PNG and JPEG images (radiographs exported from a PACS, dataset images) read into a Volume.

Values keep their stored range (8-bit 0..255, 16-bit 0..65535), as float32; nothing is rescaled. Colour
images become luminance (ITU-R 601-2, Pillow's ``convert("L")``) and palette images their grey values, each
with a note in ``meta.notes``. A raster file carries no geometry: the Volume gets unit spacing and the
orientation the DICOM reader gives an image with identity orientation (columns along LPS +x, rows along
LPS +y), so ``data[:, :, 0]`` is the image transposed: ``data[i, j, 0]`` is the pixel at column ``i``, row
``j``. No unit is known either, so the units are ``a.u.`` whatever the modality (a PNG of a CT slice does
not hold Hounsfield units).
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

from medm2g_core.errors import InputError
from medm2g_core.io.volume import LPS_TO_RAS, SourceMeta, Volume

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_FORMATS = ("PNG", "JPEG")
_KEPT_MODES = ("1", "L", "I;16", "I;16B", "I;16L", "I", "F")  # single-channel: values used as stored
_NO_GEOMETRY = "no geometry: unit spacing assumed"


def is_raster(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(RASTER_SUFFIXES)


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``; every way a file can fail to be one PNG/JPEG image is an InputError."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        image = Image.open(path, formats=_FORMATS)
        image.load()
    except Image.UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a PNG or JPEG image") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for broken files
        raise InputError(f"{path}: truncated or corrupt image ({exc})") from exc
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise InputError(f"{path}: animated image with {frames} frames; only single-frame images are supported")
    return image


def _grey_pixels(image: Image.Image, notes: list[str]) -> np.ndarray:
    """The (rows, columns) grey values of ``image``, converting colour or palette images with a note."""
    if image.mode in _KEPT_MODES:
        return np.asarray(image)
    if image.mode in ("P", "PA"):
        notes.append(f"palette image ({image.mode}) converted to its grey values")
    elif image.mode == "LA":
        notes.append("alpha channel dropped")
    else:
        notes.append(f"{image.mode} image converted to luminance (ITU-R 601-2)")
    return np.asarray(image.convert("L"))


def read_raster(path: str | os.PathLike, modality: str = "XRAY") -> Volume:
    """Read an 8- or 16-bit PNG or JPEG as a 2D Volume of shape (columns, rows, 1) in its stored range."""
    path = Path(path)
    image = _open(path)
    meta = SourceMeta(format="raster", path=str(path), notes=[_NO_GEOMETRY])
    pixels = _grey_pixels(image, meta.notes)
    return Volume(
        data=pixels.T.astype(np.float32)[:, :, None],
        affine=LPS_TO_RAS @ np.eye(4),
        modality=modality,
        units="a.u.",
        meta=meta,
    )
