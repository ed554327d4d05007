"""The model-ready cache: 2D images at the recipe's resolution, normalised to [-1, 1], in safetensors shards.

Volumes are turned to the closest canonical (RAS) orientation and cut into axial slices. Each image key
(``ct``, ``mr_t1``, ``xray`` ...) is its own stream of images, each tagged with its case and slice index,
so paired images are found by joining streams on (case, slice) for volumes on one grid (CT and MRI of one
brain) or on the case alone (a report and its X-ray). Slices are padded to a square and resized with
antialiasing; mostly-empty slices are dropped per case (the same slices for every volume of the case). The
intensity map and the source grid (shape, affine) of every image are kept in ``cache.json`` so outputs can be
mapped back to HU or the source scale and placed on the original grid.

Layout::

    cache.json                          config, cases (id, split, report, labels, maps, grids), shard list
    <split>-<key>-<n>.safetensors       "images" [N, R, R] float32, "case" [N] int32, "slice" [N] int32
"""

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

from medm2g_core.atomic import atomic_dir
from medm2g_core.data.intensity import DEFAULT_CT_CLIP_HU, DEFAULT_MRI_PERCENTILES, IntensityMap, intensity_map
from medm2g_core.data.manifest import SPLITS, CaseRecord, Manifest, key_modality, read_manifest
from medm2g_core.errors import InputError
from medm2g_core.io.load import read_volume
from medm2g_core.io.volume import Volume
from medm2g_core.vocabulary import CACHE_INDEX


@dataclass(frozen=True)
class CacheConfig:
    resolution: int = 64
    keys: tuple[str, ...] | None = None  # None: every image key the manifest uses
    ct_clip_hu: tuple[float, float] = DEFAULT_CT_CLIP_HU
    mri_percentiles: tuple[float, float] = DEFAULT_MRI_PERCENTILES
    min_foreground: float = 0.05  # drop slices whose foreground covers less of the slice than this
    shard_images: int = 4096


def canonical(volume: Volume) -> np.ndarray:
    """The voxels turned to the closest RAS orientation: axis 2 runs inferior to superior."""
    return nib.orientations.apply_orientation(volume.data, nib.orientations.io_orientation(volume.affine))


def square_resize(image: np.ndarray, resolution: int, fill: float) -> np.ndarray:
    """Pad a 2D image to a centred square with ``fill`` and resize it to ``resolution`` (antialiased bilinear)."""
    rows, cols = image.shape
    size = max(rows, cols)
    padded = np.full((size, size), fill, np.float32)
    top, left = (size - rows) // 2, (size - cols) // 2
    padded[top:top + rows, left:left + cols] = image
    tensor = torch.from_numpy(padded)[None, None]
    resized = F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return resized[0, 0].numpy()


@dataclass
class CaseImages:
    """One image key of one case in the cache: its 2D images, slice indices, and how to go back."""

    images: np.ndarray  # [S, R, R] in [-1, 1], rows = array axis 1 of the canonical volume
    slices: np.ndarray  # [S] slice index along the canonical superior axis
    mapping: IntensityMap
    source_shape: tuple[int, ...]  # the grid of the image as read
    source_affine: np.ndarray


def _normalised(
    manifest: Manifest, record: CaseRecord, key: str, config: CacheConfig
) -> tuple[np.ndarray, IntensityMap, Volume]:
    modality = key_modality(key)[0]
    path, series = manifest.image_path(record, key), manifest.image_series(record, key)
    volume = read_volume(path, series=series, modality=modality)
    mapping = intensity_map(volume.data, modality, config.ct_clip_hu, config.mri_percentiles)
    data = canonical(volume) if volume.data.shape[2] > 1 else volume.data
    return mapping.forward(data), mapping, volume


def case_images(
    manifest: Manifest, record: CaseRecord, keys: tuple[str, ...], config: CacheConfig
) -> dict[str, CaseImages]:
    """Every requested key of one case, cut into slices that stay paired across its volumes."""
    loaded = {key: _normalised(manifest, record, key, config) for key in keys if key in record.images}
    grids = {data.shape for data, _, _ in loaded.values() if data.shape[2] > 1}
    if len(grids) > 1:
        raise InputError(f"case {record.id}: its volumes are on different grids {sorted(grids)}; resample them first")
    volumes = [data for data, _, _ in loaded.values() if data.shape[2] > 1]
    keep = np.zeros(1, np.int32)
    if volumes:
        foreground = np.mean([(v > -0.9).mean(axis=(0, 1)) for v in volumes], axis=0)
        keep = np.flatnonzero(foreground >= config.min_foreground).astype(np.int32)
    out = {}
    for key, (data, mapping, volume) in loaded.items():
        indices = keep if data.shape[2] > 1 else np.zeros(1, np.int32)
        images = np.zeros((len(indices), config.resolution, config.resolution), np.float32)
        for n, k in enumerate(indices):
            images[n] = square_resize(data[:, :, k].T, config.resolution, -1.0)
        out[key] = CaseImages(images, indices, mapping, volume.shape, volume.affine)
    return out


@dataclass
class _Stream:
    """Images of one (split, key) waiting to be written as shards."""

    images: list[np.ndarray] = field(default_factory=list)
    cases: list[np.ndarray] = field(default_factory=list)
    slices: list[np.ndarray] = field(default_factory=list)
    count: int = 0
    shards: list[str] = field(default_factory=list)


def _flush(stream: _Stream, folder: Path, split: str, key: str) -> None:
    if not stream.images:
        return
    name = f"{split}-{key}-{len(stream.shards):04d}.safetensors"
    save_file({
        "images": np.concatenate(stream.images).astype(np.float32),
        "case": np.concatenate(stream.cases).astype(np.int32),
        "slice": np.concatenate(stream.slices).astype(np.int32),
    }, str(folder / name))
    stream.shards.append(name)
    stream.images, stream.cases, stream.slices, stream.count = [], [], [], 0


def build_cache(
    manifest_path: str | os.PathLike, out: str | os.PathLike, config: CacheConfig, overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Read every case of a manifest once and write the cache folder ``out`` atomically."""
    manifest = read_manifest(manifest_path)
    keys = config.keys or tuple(sorted({k for r in manifest.records for k in r.images}))
    for key in keys:
        key_modality(key)
    cases, streams = [], {}
    with atomic_dir(out, overwrite) as tmp:
        for number, record in enumerate(manifest.records):
            per_key = case_images(manifest, record, keys, config)
            for key, item in per_key.items():
                stream = streams.setdefault((record.split, key), _Stream())
                stream.images.append(item.images)
                stream.cases.append(np.full(len(item.slices), number))
                stream.slices.append(item.slices)
                stream.count += len(item.slices)
                if stream.count >= config.shard_images:
                    _flush(stream, tmp, record.split, key)
            cases.append({
                "id": record.id, "split": record.split, "subject": record.subject, "source": record.source,
                "report": record.report, "labels": record.labels,
                "maps": {key: [item.mapping.low, item.mapping.high] for key, item in per_key.items()},
                "grids": {key: {"shape": list(item.source_shape), "affine": item.source_affine.tolist()}
                          for key, item in per_key.items()},
            })
            if progress:
                progress(number + 1, len(manifest.records))
        for (split, key), stream in streams.items():
            _flush(stream, tmp, split, key)
        index = {
            "config": asdict(config) | {"keys": list(keys)},
            "manifest": str(Path(manifest_path).resolve()),
            "cases": cases,
            "shards": {f"{split}/{key}": s.shards for (split, key), s in sorted(streams.items())},
        }
        (tmp / CACHE_INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return Path(out)


@dataclass
class Cache:
    """A cache folder opened for reading."""

    root: Path
    index: dict

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "Cache":
        folder = Path(folder)
        if not (folder / CACHE_INDEX).is_file():
            raise InputError(f"{folder}: not a medm2g cache (no {CACHE_INDEX}); make one with `medm2g prepare cache`")
        return cls(folder, json.loads((folder / CACHE_INDEX).read_text(encoding="utf-8")))

    @property
    def resolution(self) -> int:
        return int(self.index["config"]["resolution"])

    def stream(self, split: str, key: str) -> dict[str, np.ndarray]:
        """All images of one split and key: {"images", "case", "slice"}."""
        if split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}")
        names = self.index["shards"].get(f"{split}/{key}")
        if not names:
            raise InputError(f"{self.root}: the cache has no {key} images in split {split}")
        parts = [load_file(str(self.root / name)) for name in names]
        return {field: np.concatenate([p[field] for p in parts]) for field in ("images", "case", "slice")}

    def intensity_map(self, case: int, key: str) -> IntensityMap:
        return IntensityMap(*self.index["cases"][case]["maps"][key])
