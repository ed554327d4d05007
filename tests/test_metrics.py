"""Evaluation metrics against their reference implementations: pycocoevalcap, scikit-image, fid-helper-pytorch,
torchmetrics and scikit-video."""

import sys
import types

import numpy as np
import pytest
import scipy
import scipy.linalg
import torch
from conftest import require_tool
from fid_helper_pytorch import FidHelper
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from scipy.ndimage import gaussian_filter
from skimage import data as skimage_data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.image.fid import _compute_fid

from medm2g_core.errors import InputError, MissingDependencyError
from medm2g_core.io.volume import Volume
from medm2g_core.metrics import image_metrics, text_metrics
from medm2g_core.metrics.image_metrics import (
    calibration,
    fid,
    inception_features,
    ms_ssim,
    niqe,
    plane_scores,
    psnr,
    ssim,
)
from medm2g_core.metrics.text_metrics import coco_scores, corpus_bleu, finding_scores, rouge_l, words

pytestmark = pytest.mark.usefixtures("one_thread")

# (hypothesis, reference): repeated words, short hypotheses, an empty overlap, case, punctuation and line breaks.
CORPUS = [
    ("No pleural effusion or pneumothorax. Heart size is normal.",
     "No pleural effusion or pneumothorax. The heart size is normal."),
    ("Mild cardiomegaly.", "Mild cardiomegaly with small bilateral pleural effusions."),
    ("The lungs are clear.", "The lungs are clear. No focal consolidation."),
    ("Normal.", "Cardiomediastinal silhouette is within normal limits. Lungs are clear."),
    ("Right hip fracture.", "Lungs are clear bilaterally."),
    ("no no no effusion effusion effusion.", "No effusion."),
    ("Left lower lobe atelectasis. Left lower lobe atelectasis.", "Left lower lobe atelectasis or consolidation."),
    ("Stable 8 mm nodule in the right upper lobe.", "8 mm right upper lobe nodule, unchanged."),
    ("Moderate right pleural effusion with adjacent atelectasis.",
     "Moderate right pleural effusion. Adjacent compressive atelectasis."),
    ("Endotracheal tube terminates 4 cm above the carina.",
     "ET tube tip is 4.5 cm above the carina. Enteric tube in the stomach."),
    ("Cardiomegaly.", "Heart is enlarged."),
    ("Small left apical pneumothorax.", "Small left apical pneumothorax, decreased from prior."),
    ("FINDINGS: Lungs are clear.\nIMPRESSION: No acute disease.", "Findings: lungs are clear. Impression: normal."),
    ("There is a 4.2 cm mass in the right hilum.", "Right hilar mass measuring 4.2 cm."),
    ("Diffuse bilateral interstitial opacities, likely edema.", "Pulmonary edema with bilateral opacities."),
    ("The the the the heart heart.", "The heart is normal in size."),
    ("Sternotomy wires are intact.", "Median sternotomy wires are intact. No pleural effusion."),
    ("Atrophy.", "Mild generalized cerebral atrophy. No acute intracranial abnormality."),
    ("Periventricular white matter hyperintensities.", "Scattered periventricular white matter hyperintensities."),
    ("No acute cardiopulmonary process.", "No acute cardiopulmonary process."),
]
HYPOTHESES, REFERENCES = [h for h, _ in CORPUS], [r for _, r in CORPUS]
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def coco_inputs(hypotheses: list[str], references: list[list[str]]) -> tuple[dict, dict]:
    """R2Gen's scorer inputs {i: [refs]}, {i: [hypothesis]} on the words coco_scores reads."""
    gts = {i: [" ".join(words(r)) for r in refs] for i, refs in enumerate(references)}
    return gts, {i: [" ".join(words(h))] for i, h in enumerate(hypotheses)}


@pytest.fixture(scope="module")
def scores(one_thread: None) -> dict[str, float]:
    return coco_scores(HYPOTHESES, REFERENCES)


def test_bleu_and_rouge_match_pycocoevalcap(scores: dict[str, float]) -> None:
    gts, res = coco_inputs(HYPOTHESES, [[r] for r in REFERENCES])
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    assert [scores[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(rouge, abs=1e-6)
    assert rouge_l(HYPOTHESES, REFERENCES) == pytest.approx(rouge, abs=1e-6)
    assert 0 < scores["bleu_4"] < scores["bleu_1"] < 1


def test_several_references_and_empty_hypothesis_match_pycocoevalcap(monkeypatch: pytest.MonkeyPatch) -> None:
    hypotheses = ["Heart size is normal.", "", "Small right pleural effusion.", "Clear lungs. Clear lungs."]
    references = [["The heart size is normal.", "Normal heart size. Lungs clear."], ["No acute disease."],
                  ["Small effusion.", "Small right pleural effusion, new.", "Right effusion."],
                  ["Lungs are clear.", "The lungs are clear."]]
    monkeypatch.setattr(text_metrics.shutil, "which", lambda name: None)  # no Java: METEOR is left out
    result = coco_scores(hypotheses, references)
    gts, res = coco_inputs(hypotheses, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [result[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-6)
    assert result["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-6)
    assert result["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)
    assert "meteor" not in result


def test_meteor_and_cider_match_pycocoevalcap(scores: dict[str, float]) -> None:
    require_tool("java")
    gts, res = coco_inputs(HYPOTHESES, [[r] for r in REFERENCES])
    assert scores["meteor"] == pytest.approx(Meteor().compute_score(gts, res)[0], abs=1e-6)
    assert scores["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)
    assert 0 < scores["meteor"] < 1


def test_optional_scores_are_omitted_without_pycocoevalcap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocoevalcap.cider.cider", None)  # makes the import fail
    assert set(coco_scores(HYPOTHESES[:3], REFERENCES[:3])) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"}


def test_corpus_bleu_is_unchanged() -> None:
    assert corpus_bleu(REFERENCES, REFERENCES) == pytest.approx(1.0)
    assert corpus_bleu(["Right hip fracture."], ["Lungs are clear bilaterally."]) == 0.0


@pytest.mark.parametrize(("hypotheses", "references", "message"), [
    (["a"], ["a", "b"], "1 hypotheses but 2 references"),
    ([], [], "no report to score"),
    ([None], ["a"], "hypothesis 0 is a NoneType"),
    (["a"], [[]], "reference 0 must be a string or a non-empty list"),
    (["a"], [["a", 3]], "reference 0, 1 is a int"),
])
def test_text_metrics_reject_bad_input(hypotheses: list, references: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        coco_scores(hypotheses, references)


def test_finding_scores_by_hand() -> None:
    hypotheses = ["Cardiomegaly. No pleural effusion.", "Right pneumothorax. Right lower lobe consolidation.",
                  "Possible cardiomegaly."]
    references = ["Cardiomegaly. Small left pleural effusion.", "No pneumothorax. Right lower lobe consolidation.",
                  "The heart size is normal. Left upper lobe nodule."]
    # cardiomegaly: tp 1, fp 1 (uncertain counts as present); pleural effusion: fn 1; consolidation: tp 1;
    # pneumothorax: fp 1 (in no reference, so out of the macro mean); nodule: fn 1. Micro: tp 2, fp 2, fn 2.
    # Macro over cardiomegaly, effusion, consolidation, nodule: P (1/2, 0, 1, 0), R (1, 0, 1, 0), F1 (2/3, 0, 1, 0).
    assert finding_scores(hypotheses, references) == pytest.approx({
        "precision_micro": 0.5, "recall_micro": 0.5, "f1_micro": 0.5,
        "precision_macro": 0.375, "recall_macro": 0.5, "f1_macro": 5 / 12,
    })


def smooth_pair(count: int, size: int, seed: int, noise: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images in [0, 1] and a blurred, noisier copy."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((count, size, size)), (0, 4, 4))
    x = (x - x.min()) / (x.max() - x.min())
    y = gaussian_filter(x, (0, 1, 1)) + noise * gaussian_filter(rng.normal(size=x.shape), (0, 1, 1))
    return x, y


@pytest.mark.parametrize(("size", "data_range", "noise"), [(64, 1.0, 0.04), (97, 255.0, 0.4), (192, 2.0, 0.04)])
def test_psnr_and_ssim_agree_with_scikit_image(size: int, data_range: float, noise: float) -> None:
    x, y = smooth_pair(3, size, seed=size, noise=noise)
    x, y = x * data_range, y * data_range
    reference_psnr = np.mean([peak_signal_noise_ratio(b, a, data_range=data_range) for a, b in zip(x, y, strict=True)])
    reference_ssim = np.mean([structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                                    use_sample_covariance=False, data_range=data_range)
                              for a, b in zip(x, y, strict=True)])
    assert psnr(x, y, data_range) == pytest.approx(reference_psnr, abs=1e-5)
    assert ssim(torch.from_numpy(x), torch.from_numpy(y), data_range) == pytest.approx(reference_ssim, abs=1e-6)
    assert 0 < ssim(x, y, data_range) < 1


def ms_ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Wang et al. 2003: mean contrast-structure at scales 1-4, mean SSIM at scale 5, 2 x 2 means in between,
    Gaussian window 11 (sigma 1.5) on the valid region."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    value = 1.0
    for scale, beta in enumerate(MS_SSIM_BETAS):
        def blur(image: np.ndarray) -> np.ndarray:
            return gaussian_filter(image, 1.5, truncate=3.5)[5:-5, 5:-5]
        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        term = (2 * cov + c2) / (vx + vy + c2)
        if scale == len(MS_SSIM_BETAS) - 1:
            term = term * (2 * mx * my + c1) / (mx**2 + my**2 + c1)
        value *= term.mean() ** beta
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
        y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    return value


@pytest.mark.parametrize(("size", "noise"), [(180, 0.04), (192, 0.4)])
def test_ms_ssim_agrees_with_the_paper(size: int, noise: float) -> None:
    x, y = smooth_pair(2, size, seed=size, noise=noise)
    reference = np.mean([ms_ssim_reference(a, b, 1.0) for a, b in zip(x, y, strict=True)])
    assert ms_ssim(x, y, 1.0) == pytest.approx(reference, abs=1e-6)
    assert ms_ssim(x, x, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize(("function", "x", "y", "message"), [
    (psnr, np.zeros((2, 64, 64)), np.zeros((2, 64, 63)), "same shape"),
    (psnr, np.zeros((0, 64, 64)), np.zeros((0, 64, 64)), "empty"),
    (psnr, np.zeros((64, 64)), np.zeros((64, 64)), r"\[N, H, W\]"),
    (ssim, np.full((1, 64, 64), np.nan), np.zeros((1, 64, 64)), "NaN"),
    (ssim, np.zeros((1, 8, 64)), np.zeros((1, 8, 64)), "too small"),
    (ms_ssim, np.zeros((1, 128, 128)), np.zeros((1, 128, 128)), "176 a side"),
])
def test_image_metrics_reject_bad_input(function, x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        function(x, y, 1.0)


@pytest.mark.parametrize("data_range", [0.0, -1.0, float("nan")])
def test_image_metrics_reject_a_bad_data_range(data_range: float) -> None:
    with pytest.raises(InputError, match="data_range must be a positive number"):
        psnr(np.zeros((1, 16, 16)), np.ones((1, 16, 16)), data_range)


@pytest.mark.parametrize(("count", "dim"), [(40, 16), (8, 32)])  # covariances of full rank, then singular
def test_fid_matches_the_reference_formulas(count: int, dim: int) -> None:
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(count, dim))
    b = rng.normal(0.3, 1.5, size=(count + 3, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim)
    stats = [{"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)} for f in (a, b)]
    torchmetrics_fid = _compute_fid(*(torch.from_numpy(s[k]) for s in stats for k in ("mu", "sigma")))
    assert fid(a, b) == pytest.approx(float(torchmetrics_fid), rel=1e-6)
    if count > dim:  # pytorch-fid's and fid-helper's formula; scipy's sqrtm needs non-singular covariances
        (mu_a, sigma_a), (mu_b, sigma_b) = ((s["mu"], s["sigma"]) for s in stats)
        trace_sqrt = np.trace(scipy.linalg.sqrtm(sigma_a @ sigma_b)).real
        reference = np.square(mu_a - mu_b).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_sqrt
        assert fid(a, b) == pytest.approx(reference, rel=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def images(one_thread: None) -> np.ndarray:
    """32 smooth random 64-pixel images in [0.2, 0.8]."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((32, 1, 8, 8)))
    return torch.nn.functional.interpolate(coarse, size=64, mode="bilinear")[:, 0].numpy() * 0.6 + 0.2


def test_inception_features_match_fid_helper(images: np.ndarray) -> None:
    ours = inception_features(images[:4])
    rgb = torch.from_numpy(images[:4, None]).expand(-1, 3, -1, -1)
    reference = FidHelper().extract_feats(rgb, data_range=(0, 1), resize_hw=(299, 299),
                                          resample_mode="nv_bilinear_float")
    assert ours.shape == (4, 2048)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    np.testing.assert_allclose(inception_features(rgb.numpy()), ours, atol=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(images: np.ndarray) -> None:
    base = inception_features(images)
    shifted = [fid(base, inception_features(images + shift)) for shift in (0.1, 0.2)]
    assert fid(base, base) == pytest.approx(0.0, abs=1e-6)
    assert 1.0 < shifted[0] < shifted[1]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: fid(np.zeros((4, 8)), np.zeros((4, 9))), "differ in dimension"),
    (lambda: fid(np.zeros((1, 8)), np.zeros((4, 8))), "at least two feature vectors"),
    (lambda: fid(np.zeros((0, 8)), np.zeros((4, 8))), "at least two feature vectors"),
    (lambda: fid(np.full((4, 8), np.inf), np.zeros((4, 8))), "NaN or infinite"),
    (lambda: inception_features(np.full((2, 32, 32), 2.0)), r"values in \[0, 1\]"),
    (lambda: inception_features(np.zeros((2, 4, 32, 32))), r"\[N, 3, H, W\]"),
    (lambda: inception_features(np.zeros((0, 32, 32))), "empty"),
    (lambda: niqe(np.zeros((192, 256))), "sides over 193"),
    (lambda: niqe(np.zeros((2, 256, 256))), "one grey image"),
    (lambda: niqe(np.full((256, 256), np.nan)), "NaN"),
])
def test_fid_and_niqe_reject_bad_input(call, message: str) -> None:
    with pytest.raises(InputError, match=message):
        call()


def test_missing_scikit_video_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    image_metrics._niqe_pristine.cache_clear()
    monkeypatch.setattr(image_metrics.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'medm2g\[eval\]'"):
        niqe(np.zeros((256, 256)))


def scipy12_imresize(array: np.ndarray, size: float, interp: str = "bilinear", mode: str | None = None) -> np.ndarray:
    """SciPy 1.2's ``scipy.misc.imresize`` for a float size and mode "F" (toimage, PIL resize, fromimage)."""
    image = Image.frombytes("F", (array.shape[1], array.shape[0]), array.astype(np.float32).tobytes())
    new_size = tuple((np.array(image.size) * size).astype(int))
    return np.array(image.resize(new_size, resample={"bicubic": Image.Resampling.BICUBIC}[interp]))


@pytest.fixture
def skvideo_niqe(monkeypatch: pytest.MonkeyPatch):
    """scikit-video's own ``niqe``, run with the two names current NumPy and SciPy removed put back."""
    monkeypatch.setattr(np, "int", int, raising=False)
    misc = types.ModuleType("scipy.misc")
    misc.imresize = scipy12_imresize
    monkeypatch.setitem(sys.modules, "scipy.misc", misc)
    monkeypatch.setattr(scipy, "misc", misc, raising=False)
    import skvideo.measure
    return lambda image: float(skvideo.measure.niqe(image)[0])


def niqe_fixtures() -> dict[str, np.ndarray]:
    camera = skimage_data.camera().astype(np.float64)
    noisy = np.clip(camera + np.random.default_rng(0).normal(0, 20, camera.shape), 0, 255)
    return {"camera": camera, "noisy": noisy, "blurred": gaussian_filter(camera, 2),
            "cropped": camera[:301, 7:450]}


def test_niqe_agrees_with_scikit_video(skvideo_niqe) -> None:
    # Our MSCN is float64, scikit-video's float32 (see image_metrics): measured differences 1e-4 (camera),
    # 4e-6 (noisy), 1.5e-4 (blurred) and 1.3e-3 (cropped) relative.
    images = niqe_fixtures()
    for name, image in images.items():
        assert niqe(image) == pytest.approx(skvideo_niqe(image), rel=2e-3), name
    assert niqe(images["camera"]) < min(niqe(images["noisy"]), niqe(images["blurred"]))


def test_niqe_is_scikit_video_given_its_mscn(skvideo_niqe, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rest of the port then matches to 3e-7 relative, 6e-6 on the noisy image (scikit-video fits the AGGD
    # shapes in float32).
    from skvideo.utils.mscn import compute_image_mscn_transform
    monkeypatch.setattr(image_metrics, "_mscn", lambda image: compute_image_mscn_transform(image)[0].astype(float))
    for name, image in niqe_fixtures().items():
        assert niqe(image) == pytest.approx(skvideo_niqe(image), rel=1e-5), name


def slab_pair() -> tuple[Volume, Volume, np.ndarray]:
    """A 12 x 12 x 12 CT of water (0 HU) with a one-voxel air wall at the patient's right (canonical x = 0), and a
    translation of it that adds 96 HU to even and 192 HU to odd axial slices (the air wall left exact): a
    volume that jumps between slices. Stored z, x (toward the patient's right), y, as a sagittal DICOM series might
    be; returns (output, truth, offsets of the canonical slices in HU)."""
    truth = np.zeros((12, 12, 12), np.float32)  # canonical [x, y, z]
    truth[0] = -1024.0
    offsets = np.where(np.arange(12) % 2 == 0, 96.0, 192.0)
    output = truth + offsets[None, None, :]
    output[0] = -1024.0

    def stored(canonical_data: np.ndarray) -> np.ndarray:  # [z, x flipped, y]
        return np.ascontiguousarray(np.flip(canonical_data, axis=0).transpose(2, 0, 1))

    affine = np.array([[0, -1.0, 0, 11], [0, 0, 1.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    return (Volume(stored(output), affine, modality="CT", units="HU"),
            Volume(stored(truth), affine, modality="CT", units="HU"), offsets)


def test_plane_scores_equal_hand_computed_values() -> None:
    output, truth, offsets = slab_pair()
    scores = plane_scores(output, truth)
    d = offsets / 1536.0  # HU -> normalised (the CT window -1024..2048 spans 2)
    # axial slice k: error d_k on the 11 water columns of 12; coronal images hold every slice, 11 water rows of 12;
    # the sagittal image of the air wall has no foreground and is not scored, the others are all water
    assert scores["axial_psnr"] == pytest.approx(np.mean(10 * np.log10(4 / (d**2 * 11 / 12))), abs=1e-5)
    assert scores["coronal_psnr"] == pytest.approx(10 * np.log10(4 / (np.mean(d**2) * 11 / 12)), abs=1e-5)
    assert scores["sagittal_psnr"] == pytest.approx(10 * np.log10(4 / np.mean(d**2)), abs=1e-5)
    assert scores["axial_psnr"] - scores["sagittal_psnr"] == pytest.approx(1.3470, abs=1e-4)  # 27.471 vs 26.124 dB
    assert scores["through_plane_error"] == pytest.approx(96.0, abs=1e-3)  # HU; air pairs (error 0) not counted
    x = (np.where(np.arange(12)[:, None, None] == 0, -1.0, -1 / 3) + np.zeros((12, 12, 12)))  # truth, canonical
    y = x + np.where(np.arange(12)[:, None, None] == 0, 0.0, d[None, None, :])
    for plane, axis, first in (("axial", 2, 0), ("coronal", 1, 0), ("sagittal", 0, 1)):
        a, b = np.moveaxis(y, axis, 0)[first:], np.moveaxis(x, axis, 0)[first:]
        reference = np.mean([structural_similarity(p, q, gaussian_weights=True, sigma=1.5, data_range=2.0,
                                                   use_sample_covariance=False) for p, q in zip(a, b, strict=True)])
        assert scores[f"{plane}_ssim"] == pytest.approx(reference, abs=1e-6)


def test_plane_scores_of_a_perfect_and_a_smooth_volume() -> None:
    _, truth, _ = slab_pair()
    perfect = plane_scores(truth, truth)
    assert perfect["through_plane_error"] == 0 and all(perfect[f"{p}_ssim"] == pytest.approx(1.0)
                                                       for p in ("axial", "sagittal", "coronal"))
    ramp = truth.with_data(truth.data + 8.0 * np.arange(1, 13, dtype=np.float32)[:, None, None])  # +8 HU a slice
    scores = plane_scores(ramp, truth)
    assert scores["through_plane_error"] == pytest.approx(8.0, abs=1e-3)
    # the axial mean of per-slice PSNRs is above the PSNR of their mean error (Jensen) when slices differ
    assert scores["axial_psnr"] > scores["sagittal_psnr"] > 20


def test_plane_scores_reject_thin_or_mismatched_volumes() -> None:
    _, truth, _ = slab_pair()
    thin = Volume(truth.data[:4], truth.affine, modality="CT", units="HU")
    scores = plane_scores(thin, thin)
    assert "axial_ssim" in scores and "sagittal_ssim" not in scores and scores["through_plane_error"] == 0
    with pytest.raises(InputError, match="on the output's grid"):
        plane_scores(thin, truth)
    with pytest.raises(InputError, match="single image"):
        film = Volume(truth.data[:, :, :1], truth.affine, modality="CT", units="HU")
        plane_scores(film, film)


def test_calibration_of_an_uncertainty_that_orders_the_errors() -> None:
    error = np.arange(1.0, 201.0)  # 1 .. 200
    perfect = calibration(error * 3, -error)  # any increasing function of |error|
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["ause"] == pytest.approx(0.0)
    assert perfect["sparsification"][0] == pytest.approx(100.5) and perfect["sparsification"][50] == pytest.approx(50.5)
    backwards = calibration(-error, error)
    assert backwards["spearman"] == pytest.approx(-1.0)
    assert backwards["sparsification"][50] == pytest.approx(150.5)  # the 100 largest errors are left
    fractions = np.arange(100) / 100
    gap = np.array(backwards["sparsification"]) - np.array(backwards["oracle"])
    assert backwards["ause"] == pytest.approx(np.trapezoid(gap, fractions)) and backwards["ause"] > 90
    with pytest.raises(InputError, match="same two or more voxels"):
        calibration(np.ones(3), np.ones(4))
