"""Image similarity of a generated volume to its ground truth: PSNR and SSIM as the translation literature reports.

Both are computed in the model's normalised intensity space of the target modality ([-1, 1], data range 2): CT
through the CT window, MRI through the ground truth's robust percentile map, X-ray through its own range, so
that a dB means the same on every input. PSNR over every voxel of the volume; SSIM (Gaussian window 11, sigma
1.5, Wang et al. 2004) per axial slice of the canonical volume, averaged. torchmetrics computes both.
"""

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from medm2g_core.data.cache import canonical
from medm2g_core.data.intensity import intensity_map
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume

DATA_RANGE = 2.0


def _normalised(volume: Volume, reference: Volume) -> np.ndarray:
    modality = reference.modality if reference.modality in ("CT", "MR", "XRAY") else "XRAY"
    data = canonical(volume) if not volume.is_2d else volume.data
    return intensity_map(reference.data, modality).forward(data)


def volume_psnr_ssim(output: Volume, reference: Volume) -> dict[str, float]:
    """{"psnr": dB, "ssim": mean over slices} of ``output`` against ``reference`` on the same grid."""
    if output.shape != reference.shape or not np.allclose(output.affine, reference.affine, atol=1e-4):
        raise InputError(f"the reference must be on the output's grid: shapes {reference.shape} vs {output.shape}, "
                         "or the affines differ")
    x = torch.from_numpy(_normalised(output, reference)).permute(2, 0, 1)[:, None]  # [K, 1, I, J]
    y = torch.from_numpy(_normalised(reference, reference)).permute(2, 0, 1)[:, None]
    if min(x.shape[-2:]) < 11:
        raise InputError(f"images of {tuple(x.shape[-2:])} pixels are too small for SSIM's 11-pixel window")
    psnr = peak_signal_noise_ratio(x, y, data_range=DATA_RANGE)
    ssim = structural_similarity_index_measure(x, y, data_range=DATA_RANGE, reduction="elementwise_mean")
    return {"psnr": float(psnr), "ssim": float(ssim)}
