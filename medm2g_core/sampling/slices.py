"""Volumes to model-ready slices and back onto the input's exact grid.

The same cut as the training cache (``medm2g_core.data.cache``): the volume turned to the closest RAS
orientation, axial slices transposed so rows run along array axis 1, padded to a centred square and resized
with antialiasing to the model's resolution; intensities mapped to [-1, 1] per modality. The way back undoes
each step: resize to the padded square, crop, transpose, turn back to the input's orientation. The affine is
never touched, so the output sits on the input grid voxel for voxel. :func:`standardise` says how a stack moves into
the frame the model was trained on (:mod:`medm2g_core.data.framing`); translation applies it to its inputs and its
inverse to its outputs.
"""

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medm2g_core.data.cache import canonical, square_resize
from medm2g_core.data.framing import FrameRange, Reframe, measure, reframe
from medm2g_core.data.intensity import IntensityMap, intensity_map
from medm2g_core.data.manifest import image_key
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.vocabulary import MRI_CONTRASTS, OOD_REFERENCE

MIN_FOREGROUND = 0.05  # slices whose foreground covers less than this are not generated (as in the cache)
RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass
class SliceStack:
    """A volume as model-ready slices, and what is needed to put outputs back on its grid."""

    images: np.ndarray  # [S, R, R] in [-1, 1]: the slices with foreground
    kept: np.ndarray  # [S] their indices along the canonical superior axis
    canonical_shape: tuple[int, int, int]
    orientation: np.ndarray  # nibabel orientation of the input relative to RAS
    mapping: IntensityMap

    @property
    def is_2d(self) -> bool:
        return self.canonical_shape[2] == 1


def cut(volume: Volume, resolution: int, min_foreground: float = MIN_FOREGROUND) -> SliceStack:
    """The axial slices of ``volume`` with foreground, at ``resolution``; a 2D image is one slice."""
    modality = volume.modality if volume.modality in ("CT", "MR", "XRAY") else "XRAY"
    mapping = intensity_map(volume.data, modality)
    orientation = nib.orientations.io_orientation(volume.affine)
    data = canonical(volume) if not volume.is_2d else volume.data
    normalised = mapping.forward(data)
    if volume.is_2d:
        kept = np.zeros(1, np.int64)
    else:
        foreground = (normalised > -0.9).mean(axis=(0, 1))
        kept = np.flatnonzero(foreground >= min_foreground)
        if not len(kept):
            raise InputError("the volume has no slice with foreground (is it empty or all air?)")
    images = np.stack([square_resize(normalised[:, :, k].T, resolution, -1.0) for k in kept])
    return SliceStack(images, kept, normalised.shape, orientation, mapping)


def uncut(stack: SliceStack, images: np.ndarray, mapping: IntensityMap, background: float) -> np.ndarray:
    """Model slices [S, R, R] in [-1, 1] for ``stack.kept`` back on the input grid, in ``mapping``'s units;
    slices that were not generated hold ``background``."""
    columns, rows, depth = stack.canonical_shape
    out = np.full((columns, rows, depth), background, np.float32)
    size = max(rows, columns)
    top, left = (size - rows) // 2, (size - columns) // 2
    square = F.interpolate(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None],
                           size=(size, size), mode="bilinear", antialias=True, align_corners=False)[:, 0].numpy()
    for image, k in zip(square, stack.kept, strict=True):
        out[:, :, k] = mapping.inverse(image[top:top + rows, left:left + columns]).T
    if stack.is_2d:
        return out
    back = nib.orientations.ornt_transform(RAS, stack.orientation)
    return np.ascontiguousarray(nib.orientations.apply_orientation(out, back), dtype=np.float32)


def trained_frame(model: MedM2G, modality: str, contrast: str | None = None) -> FrameRange | None:
    """The frame range the model's ``modality`` inputs (of an MRI ``contrast``, if it has its own) were trained on;
    None for a model that does not record it."""
    if OOD_REFERENCE not in model:
        return None
    frames = model[OOD_REFERENCE].config.get("frames") or {}
    key = image_key("MR", contrast) if modality == "mri" and contrast in MRI_CONTRASTS else modality
    key = key if key in frames else modality
    return FrameRange.from_list(frames[key]) if key in frames else None


def standardise(model: MedM2G, modality: str, images: np.ndarray, contrast: str | None = None) -> Reframe:
    """How slices [S, R, R] of a ``modality`` input ("ct", "mri", "xray"; an MRI of ``contrast``) move into the
    model's training frame: the identity when they are inside it or the model does not record one."""
    return reframe(measure(images), trained_frame(model, modality, contrast))
