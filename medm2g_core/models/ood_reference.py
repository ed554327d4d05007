"""Where the training images of each modality lie in the image VAE's latent space: the reference of the
out-of-distribution check (issue 18; :mod:`medm2g_core.sampling.ood` applies it).

A slice's latent [4, 16, 16] is average-pooled to [4, 8, 8] (256 numbers) and its Mahalanobis distance to the
training slices of its modality is taken: their mean and covariance, shrunk towards a multiple of the identity
(``shrinkage`` of the mean variance) so that it inverts with a few thousand slices. An input's distance is the
median over its slices (robust to a few empty or odd ones); it is outside what the model has seen when it
exceeds the modality's threshold, ``OOD_MARGIN`` (1.25) times the farthest held-out (val) volume of the data
the reference was built from. Measured on the default model (BENCHMARKS.md, "Out-of-distribution check"; MRI,
the five contrasts pooled): the farthest val volume at 22.7 (threshold 28.4), phantom test MRIs 8.6-18.5, a chest
CT given as a brain MRI 30.7-65.1, noise 117-121, inverted intensities 202-211: the margin sits between the
farthest real volume and the nearest wrong one, which a chest CT read as MRI approaches most (it is a body
section, normalised like one).

We measured the aligned prompt embedding (paper 3.2) as the feature first: it does not separate an
intensity-inverted CT from a real one (median distance 16.5 vs 13.0), where the pooled latent does (1187 vs 27):
alignment keeps what pairs with text, the autoencoder keeps what the image looks like.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

OOD_MARGIN = 1.25  # threshold = this times the farthest held-out volume's median distance (module doc)


@dataclass
class OODReferenceConfig:
    modalities: tuple[str, ...] = ("xray", "ct", "mri")
    features: int = 256  # latent channels x (side / pool)^2
    pool: int = 2  # average pooling of the latent before the distance
    shrinkage: float = 1e-3


class OODReference(ModelMixin, ConfigMixin):
    """Mean, precision and threshold per modality, as buffers; build it with :func:`fit_reference`."""

    KEEP_FLOAT32 = True  # a precision matrix in float16 is off by whole units: `weights pack` leaves it float32

    @register_to_config
    def __init__(self, modalities: tuple[str, ...] = ("xray", "ct", "mri"), features: int = 256, pool: int = 2,
                 shrinkage: float = 1e-3, frames: dict[str, list[float]] | None = None) -> None:
        """``frames``: per modality (and per MRI contrast's cache key, ``mr_t1`` ...), the range of the training
        volumes' frames (x, y, size low/high, :class:`medm2g_core.data.framing.FrameRange`), which translation
        standardises its inputs to."""
        super().__init__()
        for modality in modalities:
            self.register_buffer(f"mean_{modality}", torch.zeros(features))
            self.register_buffer(f"precision_{modality}", torch.eye(features))
            self.register_buffer(f"threshold_{modality}", torch.tensor(float("inf")))

    def features(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [N, C, h, w] -> pooled features [N, C * (h / pool) * (w / pool)]."""
        return F.avg_pool2d(latents.float(), self.config.pool).flatten(1)

    def distance(self, modality: str, latents: torch.Tensor) -> torch.Tensor:
        """The Mahalanobis distance [N] of each latent [N, C, h, w] to the training slices of ``modality``."""
        centred = self.features(latents).to(self.device) - getattr(self, f"mean_{modality}")
        precision = getattr(self, f"precision_{modality}")
        return torch.einsum("ni,ij,nj->n", centred, precision, centred).clamp_min(0).sqrt()

    def threshold(self, modality: str) -> float:
        return float(getattr(self, f"threshold_{modality}"))


@torch.no_grad()
def fit_reference(train: dict[str, torch.Tensor], held_out: dict[str, list[torch.Tensor]],
                  config: OODReferenceConfig | None = None, frames: dict[str, list[float]] | None = None,
                  ) -> OODReference:
    """The reference of each modality from its training latents [N, C, h, w] (mean, shrunk covariance) and the
    latents of its held-out volumes (one tensor per volume: the threshold); ``frames`` are kept as given."""
    config = config or OODReferenceConfig(modalities=tuple(train))
    reference = OODReference(tuple(train), config.features, config.pool, config.shrinkage, frames)
    for modality, latents in train.items():
        features = reference.features(latents).double()  # [N, F]
        if features.shape[1] != config.features:
            raise ValueError(f"{modality}: pooled latents have {features.shape[1]} features, not {config.features}")
        covariance = torch.cov(features.T)
        covariance += config.shrinkage * covariance.diagonal().mean() * torch.eye(len(covariance),
                                                                                   dtype=covariance.dtype)
        getattr(reference, f"mean_{modality}").copy_(features.mean(0).float())
        getattr(reference, f"precision_{modality}").copy_(torch.linalg.inv(covariance).float())
        farthest = max(float(reference.distance(modality, volume).median()) for volume in held_out[modality])
        getattr(reference, f"threshold_{modality}").fill_(OOD_MARGIN * farthest)
    return reference
