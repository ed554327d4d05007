"""Is an input like what the model was trained on? The out-of-distribution check of ``translate`` and ``report``.

``medm2g train ood`` (:func:`medm2g_core.training.ood_stage.build_reference`) measures the training distribution
of each image modality from a cache (the train split's slices; the val split's volumes set the threshold:
:mod:`medm2g_core.models.ood_reference`) and stores it in the model as ``ood_reference``. :func:`check_input`
cuts an input as translation does (its frame standardised, :func:`medm2g_core.sampling.slices.standardise`), encodes
its slices with the image VAE, and compares the median distance with the threshold of the modality the input says
it is. An input of the wrong anatomy or modality, noise, or
inverted intensities lands far outside; so does a real scan for a model trained on the phantom world only, which
is what the warning is for.
"""

from dataclasses import dataclass

import torch

from medm2g_core.io.volume import Volume
from medm2g_core.models.image_vae import latent_means
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.ood_reference import OODReference
from medm2g_core.sampling.guides import image_resolution
from medm2g_core.sampling.slices import cut, standardise
from medm2g_core.sampling.translate import source_modality
from medm2g_core.vocabulary import OOD_REFERENCE


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
    images = cut(volume, image_resolution(model)).images
    images = torch.from_numpy(standardise(model, modality, images, volume.contrast).forward(images)).float()[:, None]
    distances = reference.distance(modality, latent_means(model["image_vae"], images))
    return OODCheck(modality, float(distances.median()), reference.threshold(modality))
