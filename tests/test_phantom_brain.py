"""Brain phantom: the atlas, determinism, geometry, and the contrasts that make MRI->CT a real task."""

import numpy as np
import pytest

import medm2g_core
from medm2g_core.errors import InputError
from medm2g_core.phantoms.brain import IMAGE_KEYS, LABELS, BrainCase, make_brain_case
from medm2g_core.phantoms.brain_atlas import ATLAS_LABELS, ATLAS_PATH, build_atlas, load_atlas
from medm2g_core.phantoms.findings import BrainFindings, Tumor

SLAB = 24


def mean_in(case: BrainCase, key: str, label: str) -> float:
    mask = case.labels == LABELS.index(label)
    assert mask.sum() > 0, f"no {label} voxels"
    return float(case.images[key].data[mask].mean())


def world_x(case: BrainCase, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).T
    return case.images["ct"].affine[0, :3] @ ijk + case.images["ct"].affine[0, 3]


@pytest.fixture(scope="module")
def normal() -> BrainCase:
    return make_brain_case(3, BrainFindings())


@pytest.fixture(scope="module", params=["left", "right"])
def tumour(request) -> BrainCase:
    lobe = {"left": "frontal", "right": "parietal"}[request.param]
    return make_brain_case(11, BrainFindings(tumor=Tumor(request.param, lobe, 18.0, 0.4, 12.0)), slices=SLAB)


def test_atlas_file_loads_with_all_labels():
    atlas = load_atlas()
    assert ATLAS_PATH.stat().st_size < 1.5e6
    assert (ATLAS_PATH.parent / "MNI152-LICENSE.txt").is_file()
    assert atlas.labels.shape == (129, 153, 121)
    assert atlas.shell_depth.shape == (81, 95, 71)
    for name in ("gm", "wm", "ventricle_depth", "labels", "shell_depth"):
        assert getattr(atlas, name).dtype == np.uint8
    assert atlas.gm.shape == atlas.wm.shape == atlas.ventricle_depth.shape == atlas.labels.shape
    assert set(np.unique(atlas.labels)) == set(range(len(ATLAS_LABELS)))
    assert LABELS[: len(ATLAS_LABELS)] == ATLAS_LABELS
    assert {"necrosis", "enhancing", "edema", "wm_lesion"} <= set(LABELS)
    ventricles_ml = (atlas.labels == ATLAS_LABELS.index("ventricle")).sum() * 1.5**3 / 1000
    assert 10 < ventricles_ml < 40
    assert atlas.choroid_mm[0, 0] < 0 < atlas.choroid_mm[1, 0]


@pytest.mark.slow
def test_committed_atlas_is_what_the_script_builds():
    pytest.importorskip("nilearn")
    built = build_atlas()
    with np.load(ATLAS_PATH, allow_pickle=False) as committed:
        assert sorted(committed.files) == sorted(built)
        for key, array in built.items():
            np.testing.assert_array_equal(committed[key], array, err_msg=key)


def test_same_seed_same_case_and_other_seed_other_anatomy():
    first, again = make_brain_case(42, slices=6), make_brain_case(42, slices=6)
    assert first.findings == again.findings == BrainFindings.sample(np.random.default_rng(42))
    np.testing.assert_array_equal(first.labels, again.labels)
    for key in IMAGE_KEYS:
        np.testing.assert_array_equal(first.images[key].data, again.images[key].data)
    same_findings = [make_brain_case(seed, BrainFindings(), slices=6) for seed in (42, 43)]
    assert (same_findings[0].labels != same_findings[1].labels).mean() > 0.02


def test_explicit_findings_keep_the_anatomy():
    plain = make_brain_case(8, BrainFindings(), slices=SLAB)
    with_lesions = make_brain_case(8, BrainFindings(wm_lesions=10), slices=SLAB)
    np.testing.assert_array_equal(plain.images["ct"].affine, with_lesions.images["ct"].affine)
    changed = plain.labels != with_lesions.labels
    assert 0 < changed.mean() < 0.01
    brain = {LABELS.index(n) for n in ("wm_lesion", "wm", "gm", "csf", "ventricle")}
    assert set(np.unique(with_lesions.labels[changed])) <= brain


def test_geometry_and_metadata(normal):
    ct = normal.images["ct"]
    assert set(normal.images) == set(IMAGE_KEYS)
    assert normal.labels.dtype == np.uint8 and normal.labels.shape == ct.shape == (110, 130, 100)
    assert ct.orientation == "LPS" and ct.spacing == pytest.approx((2.0, 2.0, 2.0))
    for key, volume in normal.images.items():
        assert volume.shape == ct.shape
        np.testing.assert_array_equal(volume.affine, ct.affine)
        assert volume.synthetic is True
        assert volume.provenance == {
            "model": "medm2g-phantom-brain", "model_version": medm2g_core.__version__, "seed": "3",
        }
        assert volume.meta.format == "synthetic" and any("seed 3" in note for note in volume.meta.notes)
        if key == "ct":
            assert (volume.modality, volume.units, volume.contrast) == ("CT", "HU", None)
        else:
            assert (volume.modality, volume.units) == ("MR", "a.u.")
    assert [normal.images[k].contrast for k in IMAGE_KEYS[1:]] == ["T1", "T1ce", "T2", "FLAIR", "PD"]
    np.testing.assert_array_equal(ct.data, np.rint(ct.data))  # integer HU
    slab = make_brain_case(3, BrainFindings(), slices=SLAB, spacing_mm=3.0)
    assert slab.labels.shape == (73, 87, SLAB) and slab.images["mr_t2"].spacing == pytest.approx((3.0,) * 3)
    assert (slab.labels == LABELS.index("ventricle")).any(), "the slab goes through the lateral ventricles"


def test_skull_is_bright_on_ct_and_dark_on_t1_and_t2(normal):
    assert mean_in(normal, "ct", "skull_cortical") > 700
    for key in ("mr_t1", "mr_t2"):
        assert mean_in(normal, key, "skull_cortical") < 0.3 * mean_in(normal, key, "wm")


def test_csf_is_bright_on_t2_and_dark_on_t1_and_flair(normal):
    assert mean_in(normal, "mr_t2", "ventricle") > mean_in(normal, "mr_t2", "wm")
    assert mean_in(normal, "mr_t1", "ventricle") < mean_in(normal, "mr_t1", "wm")
    assert mean_in(normal, "mr_flair", "ventricle") < 0.5 * mean_in(normal, "mr_flair", "wm")
    assert mean_in(normal, "ct", "ventricle") < mean_in(normal, "ct", "wm")


def test_grey_white_contrast(normal):
    assert mean_in(normal, "mr_t1", "wm") > mean_in(normal, "mr_t1", "gm")
    assert mean_in(normal, "mr_t2", "wm") < mean_in(normal, "mr_t2", "gm")
    assert mean_in(normal, "mr_flair", "wm") < mean_in(normal, "mr_flair", "gm")
    assert mean_in(normal, "ct", "wm") < mean_in(normal, "ct", "gm")


def test_tumour_enhances_swells_and_sits_in_its_hemisphere(tumour):
    def relative(key: str, label: str) -> float:
        return mean_in(tumour, key, label) / mean_in(tumour, key, "wm")

    assert relative("mr_t1ce", "enhancing") / relative("mr_t1", "enhancing") > 1.3
    assert relative("mr_flair", "edema") > 1.3 and relative("mr_t2", "edema") > 1.3
    assert relative("mr_t2", "necrosis") > 1.5
    core = np.isin(tumour.labels, [LABELS.index("necrosis"), LABELS.index("enhancing")])
    x = world_x(tumour, core).mean()
    assert (x < -10) if tumour.findings.tumor.hemisphere == "left" else (x > 10)
    ct = tumour.images["ct"]
    for volume in tumour.images.values():
        assert volume.shape == ct.shape == tumour.labels.shape
        np.testing.assert_array_equal(volume.affine, ct.affine)


def test_atrophy_enlarges_the_ventricles():
    counts = [
        (make_brain_case(5, BrainFindings(atrophy=a), slices=SLAB).labels == LABELS.index("ventricle")).sum()
        for a in (0.0, 0.8)
    ]
    assert counts[1] > 1.3 * counts[0] > 0


def test_wm_lesions_add_bright_flair_voxels():
    without = make_brain_case(6, BrainFindings(), slices=SLAB)
    lesions = make_brain_case(6, BrainFindings(wm_lesions=12), slices=SLAB)
    assert (without.labels == LABELS.index("wm_lesion")).sum() == 0
    assert (lesions.labels == LABELS.index("wm_lesion")).sum() > 10
    assert mean_in(lesions, "mr_flair", "wm_lesion") > 1.3 * mean_in(lesions, "mr_flair", "wm")


def test_mr_background_has_a_rician_floor(normal):
    air = normal.labels == LABELS.index("background")
    for key in IMAGE_KEYS[1:]:
        values = normal.images[key].data[air]
        assert values.min() >= 0 and values.mean() > 0 and (values > 0).mean() > 0.99
    assert abs(float(np.median(normal.images["ct"].data[air])) + 1000) <= 1


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError):
        make_brain_case(1, spacing_mm=0.0)
    with pytest.raises(InputError):
        make_brain_case(1, slices=0)
    with pytest.raises(InputError):
        make_brain_case(-1)
