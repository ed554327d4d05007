"""Is an input like what the model was trained on? The out-of-distribution check of ``translate`` and ``report``.

:func:`build_reference` measures the training distribution of each image modality from a cache (the train split's
slices; the val split's volumes set the threshold: :mod:`medm2g_core.models.ood_reference`), and ``medm2g train
ood`` stores it in the model as ``ood_reference``. :func:`check_input` cuts an input as translation does, encodes
its slices with the image VAE, and compares the median distance with the threshold of the modality the input
says it is. An input of the wrong anatomy or modality, noise, or inverted intensities lands far outside; so does
a real scan for a model trained on the phantom world only, which is what the warning is for.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from medm2g_core.data.cache import Cache
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.models.image_vae import latent_means
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.ood_reference import OODReference, fit_reference
from medm2g_core.sampling.guides import image_resolution
from medm2g_core.sampling.slices import cut
from medm2g_core.sampling.translate import source_modality
from medm2g_core.vocabulary import OOD_REFERENCE

TRAIN_SLICES = 4000  # training slices per modality the reference is measured on (a random subset, seed 0)


@dataclass(frozen=True)
class OODCheck:
    modality: str
    distance: float  # median Mahalanobis distance of the input's slices to the training slices
    threshold: float

    @property
    def outside(self) -> bool:
        return self.distance > self.threshold

    def message(self) -> str:
        return (f"the input is unlike the {self.modality.upper()} images the model was trained on (distance "
                f"{self.distance:.1f}, threshold {self.threshold:.1f}): expect an output that does not follow it; "
                "check the modality, anatomy and intensities, or use a model trained on such images")

    def as_json(self) -> dict:
        return {"modality": self.modality, "distance": round(self.distance, 3), "threshold": round(self.threshold, 3),
                "outside": self.outside}


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
    train, held_out = {}, {}
    modalities = [m for m in ("xray", "ct", "mri") if _keys(cache, m)]
    for number, modality in enumerate(modalities):
        keys = _keys(cache, modality)
        images = np.concatenate([cache.stream("train", k)["images"] for k in keys])
        chosen = np.sort(np.random.default_rng(0).permutation(len(images))[:TRAIN_SLICES])
        train[modality] = latent_means(vae, torch.from_numpy(images[chosen]).float()[:, None])
        held_out[modality] = []
        for key in keys:
            stream = cache.stream("val" if cache.index["shards"].get(f"val/{key}") else "train", key)
            latents = latent_means(vae, torch.from_numpy(stream["images"]).float()[:, None])
            held_out[modality] += [latents[stream["case"] == case] for case in np.unique(stream["case"])]
        if progress:
            progress(number + 1, len(modalities))
    if not train:
        raise InputError(f"{cache.root}: the cache holds no X-ray, CT or MRI training images to measure")
    return fit_reference(train, held_out)


@torch.no_grad()
def check_input(model: MedM2G, volume: Volume) -> OODCheck | None:
    """How far ``volume`` is from the training images of its modality; None when the model has no reference
    for that modality (a model trained before the check existed)."""
    if OOD_REFERENCE not in model:
        return None
    reference: OODReference = model[OOD_REFERENCE]
    modality = source_modality(volume)
    if modality not in reference.config.modalities:
        return None
    images = torch.from_numpy(cut(volume, image_resolution(model)).images).float()[:, None]
    distances = reference.distance(modality, latent_means(model["image_vae"], images))
    return OODCheck(modality, float(distances.median()), reference.threshold(modality))
