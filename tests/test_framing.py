"""Frame standardisation (issue 18): where the anatomy lies in a stack of slices, the map into the range the model
was trained on and back, and what it buys a translation of a head that is off centre or at another size."""

import numpy as np
import pytest

import medm2g_core.sampling.translate as translate_module
from medm2g_core.data.framing import Frame, FrameRange, Reframe, frame_range, measure, reframe
from medm2g_core.metrics.image_metrics import volume_psnr_ssim
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.phantoms.perturb import PERTURBATIONS
from medm2g_core.phantoms.world import PhantomConfig, make_case
from medm2g_core.sampling.slices import cut, standardise, trained_frame
from medm2g_core.sampling.translate import TranslateOptions, translate_volume

pytestmark = pytest.mark.usefixtures("one_thread")
SIDE = 64


def disc(x: float, y: float, radius: float, slices: int = 3) -> np.ndarray:
    """Slices [S, 64, 64] of a bright disc centred at normalised (x, y) on a -1 background."""
    centres = (np.arange(SIDE) + 0.5) / SIDE * 2 - 1
    inside = (centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2 <= radius ** 2
    return np.repeat(np.where(inside, 0.5, -1.0)[None], slices, axis=0).astype(np.float32)


def test_a_frame_is_the_centroid_and_square_root_area_share_of_the_union_of_the_slices():
    frame = measure(disc(0.25, -0.5, 0.4))
    assert frame.x == pytest.approx(0.25, abs=0.01) and frame.y == pytest.approx(-0.5, abs=0.01)
    assert frame.size == pytest.approx(np.sqrt(np.pi * 0.4 ** 2 / 4), abs=0.01)  # the square spans 2 x 2
    assert measure(np.full((2, SIDE, SIDE), -1.0, np.float32)) is None
    ranged = frame_range([Frame(0.1, -0.2, 0.6), Frame(-0.1, 0.0, 0.8)])
    assert ranged == FrameRange((-0.1, 0.1), (-0.2, 0.0), (0.6, 0.8))
    assert FrameRange.from_list(ranged.as_list()) == ranged


def test_an_input_inside_the_range_is_left_exactly_as_it_is():
    images = disc(0.02, -0.01, 0.7)
    trained = FrameRange((-0.05, 0.05), (-0.05, 0.05), (0.5, 0.8))
    mapping = reframe(measure(images), trained)
    assert mapping.identity and mapping.forward(images) is images and mapping.inverse(images) is images
    assert reframe(measure(images), None).identity and reframe(None, trained).identity


def test_an_off_centre_small_head_is_moved_and_scaled_into_the_range_and_back():
    trained = FrameRange((-0.05, 0.05), (-0.05, 0.05), (0.5, 0.8))
    images = disc(0.3, -0.2, 0.4)  # off centre, size 0.35
    mapping = reframe(measure(images), trained)
    assert mapping.scale == pytest.approx(0.5 / measure(images).size)
    moved = measure(mapping.forward(images))
    assert moved.x == pytest.approx(0.05, abs=0.02) and moved.y == pytest.approx(-0.05, abs=0.02)
    assert moved.size == pytest.approx(0.5, abs=0.03)  # bilinear edges: a pixel wider
    back = mapping.inverse(mapping.forward(images))
    assert np.mean(np.abs(back - images)) < 0.02  # only the rim, interpolated twice, differs
    assert np.array_equal(back[:, 0, 0], images[:, 0, 0])  # what comes in from outside is background


def test_the_default_records_each_modalitys_frame_and_its_phantom_inputs_are_inside_it(default_model):
    model = default_model
    for modality in ("ct", "mri", "xray"):
        ranged = trained_frame(model, modality)
        assert ranged.size[0] < ranged.size[1] and ranged.x[0] < 0 < ranged.x[1]
    assert trained_frame(model, "mri", "FLAIR") != trained_frame(model, "mri", "T1")  # each contrast its own
    brain = make_case("brain", 31, PhantomConfig())[0]
    for key, modality in (("ct", "ct"), ("mr_t1", "mri"), ("mr_t2", "mri")):
        volume = brain[key]
        assert standardise(model, modality, cut(volume, 64).images, volume.contrast).identity, key


@pytest.mark.parametrize("name", ["shifted field of view", "field of view size"])
def test_a_head_off_centre_or_at_another_size_is_translated_where_it_lies_and_as_well_as_a_centred_one(
        monkeypatch, name, default_model):
    model = default_model
    brain = make_case("brain", 31, PhantomConfig())[0]
    options = TranslateOptions("ct", sampling=SamplingConfig(steps=10))
    clean = volume_psnr_ssim(translate_volume(model, [brain["mr_t1"]], options), brain["ct"])["psnr"]
    seed = 2 if name == "shifted field of view" else 1  # seed 1: a tighter field of view, the head cut at its edges
    moved, truth = (PERTURBATIONS[name](brain[key], 1.0, seed) for key in ("mr_t1", "ct"))
    framed = volume_psnr_ssim(translate_volume(model, [moved], options), truth)["psnr"]
    monkeypatch.setattr(translate_module, "standardise", lambda *args: Reframe())
    unframed = volume_psnr_ssim(translate_volume(model, [moved], options), truth)["psnr"]
    assert framed > clean - 2.0 and framed > unframed + 3.0, (clean, framed, unframed)


@pytest.mark.parametrize("key", ["mr_t1", "mr_flair", "ct"])
def test_noise_bias_and_blur_leave_the_frame_where_it_was(key):
    volume = make_case("brain", 31, PhantomConfig())[0][key]
    clean = measure(cut(volume, SIDE).images)
    for name in ("noise", "bias field", "blur"):  # noise lifts an MRI's normalised background above -0.9
        frame = measure(cut(PERTURBATIONS[name](volume, 1.0, 5), SIDE).images)
        assert abs(frame.x - clean.x) < 0.02 and abs(frame.y - clean.y) < 0.02, name
        assert abs(frame.size - clean.size) < 0.03, (name, frame, clean)
