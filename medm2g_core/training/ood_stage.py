"""``medm2g train ood``: the out-of-distribution reference of a model, measured on the data it was trained on.

No optimisation: the image VAE encodes a random subset of the cache's train slices of each image modality (their
mean and covariance) and its val volumes (the threshold): :mod:`medm2g_core.models.ood_reference`. The same pass
records the range of the train volumes' frames (anatomy position and size, :mod:`medm2g_core.data.framing`), which
translation standardises its inputs to. Sampling applies
it (:mod:`medm2g_core.sampling.ood`).
"""

from collections.abc import Callable

import numpy as np
import torch

from medm2g_core.data.cache import Cache
from medm2g_core.data.framing import Frame, frame_range, measure
from medm2g_core.errors import InputError
from medm2g_core.models.image_vae import latent_means
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.ood_reference import OODReference, fit_reference

TRAIN_SLICES = 4000  # training slices per modality the reference is measured on (a random subset, seed 0)


def _keys(cache: Cache, modality: str) -> list[str]:
    """The cache keys of ``modality`` that have training images."""
    keys = cache.index["config"]["keys"]
    return [k for k in keys if (k.startswith("mr_") if modality == "mri" else k == modality)
            and cache.index["shards"].get(f"train/{k}")]


def build_reference(model: MedM2G, cache: Cache, progress: Callable[[int, int], None] | None = None,
                    ) -> OODReference:
    """The reference of every image modality the cache holds training images of. The threshold comes from the
    val volumes; a key without val images (a tiny world) lends its train volumes instead, a less cautious
    threshold."""
    vae = model["image_vae"]
    train, held_out, frames = {}, {}, {}
    modalities = [m for m in ("xray", "ct", "mri") if _keys(cache, m)]
    for number, modality in enumerate(modalities):
        keys = _keys(cache, modality)
        images = np.concatenate([cache.stream("train", k)["images"] for k in keys])
        chosen = np.sort(np.random.default_rng(0).permutation(len(images))[:TRAIN_SLICES])
        train[modality] = latent_means(vae, torch.from_numpy(images[chosen]).float()[:, None])
        per_key = {key: _frames(cache.stream("train", key)) for key in keys}
        frames[modality] = frame_range([frame for found in per_key.values() for frame in found]).as_list()
        if modality == "mri":  # each contrast its own range: a noisy background widens FLAIR's and PD's
            frames |= {key: frame_range(found).as_list() for key, found in per_key.items() if found}
        held_out[modality] = []
        for key in keys:
            stream = cache.stream("val" if cache.index["shards"].get(f"val/{key}") else "train", key)
            latents = latent_means(vae, torch.from_numpy(stream["images"]).float()[:, None])
            held_out[modality] += [latents[stream["case"] == case] for case in np.unique(stream["case"])]
        if progress:
            progress(number + 1, len(modalities))
    if not train:
        raise InputError(f"{cache.root}: the cache holds no X-ray, CT or MRI training images to measure")
    return fit_reference(train, held_out, frames=frames)


def _frames(stream: dict[str, np.ndarray]) -> list[Frame]:
    """The frame of each case's slices in a cache stream (:mod:`medm2g_core.data.framing`)."""
    frames = [measure(stream["images"][stream["case"] == case]) for case in np.unique(stream["case"])]
    return [frame for frame in frames if frame is not None]
