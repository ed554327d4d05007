"""The chest phantom: CT in HU with labels, its PA radiograph (DRR), findings where they were asked for."""

import dataclasses
import hashlib
import math
from collections.abc import Callable

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medm2g_core.errors import InputError
from medm2g_core.io.nifti import read_nifti, write_nifti
from medm2g_core.io.volume import Volume
from medm2g_core.phantoms.chest import LABEL, LABELS, ChestCase, make_chest_case
from medm2g_core.phantoms.drr import PAGeometry, drr, project_mask
from medm2g_core.phantoms.findings import DEVICES, LUNG_LOBES, ChestFindings, Lesion
from medm2g_core.phantoms.world import PhantomConfig, make_case
from medm2g_core.vocabulary import DETECTOR_SIZE_MM

SPACING_MM = 4.0
PIXELS = 128
NORMAL = ChestFindings(cardiothoracic_ratio=0.44)


def case(seed: int, findings: ChestFindings | None = NORMAL, **kwargs) -> ChestCase:
    return make_chest_case(seed, findings, spacing_mm=kwargs.pop("spacing_mm", SPACING_MM),
                           xray_pixels=kwargs.pop("xray_pixels", PIXELS), **kwargs)


def world(c: ChestCase, mask: np.ndarray) -> np.ndarray:
    """RAS mm of the voxels of a mask."""
    index = np.argwhere(mask)
    return index @ c.ct.affine[:3, :3].T + c.ct.affine[:3, 3]


def field(c: ChestCase, *names: str, min_mm: float = 5.0) -> np.ndarray:
    """Where structures project on the radiograph: (column, row) pixels with at least ``min_mm`` of them."""
    return project_mask(c.ct, np.isin(c.labels, [LABEL[n] for n in names]), PIXELS) > min_mm


def widest_row(mask: np.ndarray) -> int:
    """Largest horizontal extent (pixels, first to last column) over the rows of a (column, row) mask."""
    rows = [np.flatnonzero(mask[:, v]) for v in range(mask.shape[1])]
    return max(r[-1] - r[0] + 1 for r in rows if len(r))


@pytest.fixture(scope="module")
def normal() -> ChestCase:
    return case(11)


def test_same_seed_same_case_and_seeds_differ(normal):
    again = case(11)
    assert np.array_equal(again.ct.data, normal.ct.data)
    assert np.array_equal(again.xray.data, normal.xray.data)
    assert np.array_equal(again.labels, normal.labels)
    other = case(12)
    assert not np.array_equal(other.labels, normal.labels)
    assert np.abs(other.xray.data - normal.xray.data).mean() > 0.01


def test_no_findings_given_means_sampled_from_the_seed():
    c = make_chest_case(5, spacing_mm=6.0, xray_pixels=64)
    assert c.findings == ChestFindings.sample(np.random.default_rng(5))


def test_explicit_findings_keep_the_anatomy(normal):
    with_effusion = case(11, ChestFindings(cardiothoracic_ratio=0.44, effusion={"right": 0.3}))
    for name in ("rib", "spine", "clavicle", "heart", "fat"):
        assert np.array_equal(with_effusion.labels == LABEL[name], normal.labels == LABEL[name]), name


def test_ct_volume_geometry_and_provenance(normal):
    ct = normal.ct
    assert (ct.modality, ct.units, ct.orientation) == ("CT", "HU", "RAS")
    assert ct.spacing == pytest.approx((SPACING_MM,) * 3)
    assert ct.synthetic and ct.meta.format == "synthetic"
    assert ct.provenance["model"] == "medm2g-phantom-chest" and ct.provenance["seed"] == "11"
    assert any("seed 11" in note for note in ct.meta.notes)
    assert normal.labels.shape == ct.shape and normal.labels.dtype == np.uint8
    assert set(np.unique(normal.labels)) <= set(range(len(LABELS)))
    body = world(normal, normal.labels > 0)
    width, depth, height = body.max(axis=0) - body.min(axis=0)
    assert 290 <= width <= 440 and 190 <= depth <= 270 and height >= 290


def test_body_size_varies_with_the_seed():
    widths = []
    for seed in range(4):
        body = world(c := case(seed, spacing_mm=6.0, xray_pixels=64), c.labels > 0)
        widths.append(np.ptp(body[:, 0]))
    assert max(widths) - min(widths) > 15


def test_hounsfield_units_of_tissues(normal):
    mean = {name: float(normal.ct.data[normal.labels == LABEL[name]].mean()) for name in LABELS
            if (normal.labels == LABEL[name]).any()}
    assert -900 < mean["lung"] < -700
    assert 30 < mean["heart"] < 60
    assert mean["spine"] > 300 and mean["rib"] > 300 and mean["clavicle"] > 300
    assert -150 < mean["fat"] < -50


def test_xray_is_a_monochrome2_radiograph_in_unit_range(normal):
    xray = normal.xray
    assert xray.shape == (PIXELS, PIXELS, 1) and xray.modality == "XRAY" and xray.units == "a.u."
    assert xray.meta.photometric_interpretation == "MONOCHROME2"
    assert xray.synthetic and xray.provenance == normal.ct.provenance
    assert xray.data.min() >= 0.0 and xray.data.max() <= 1.0
    assert xray.spacing[:2] == pytest.approx((DETECTOR_SIZE_MM / PIXELS,) * 2)
    assert xray.orientation == "LIP"  # columns toward the patient's left, rows toward the feet
    lungs = field(normal, "lung", "vessel", min_mm=40.0)
    spine = field(normal, "spine", min_mm=20.0)
    image = xray.data[:, :, 0]
    assert image[spine].mean() > image[lungs].mean() + 0.2
    assert image[field(normal, "heart", min_mm=40.0)].mean() > image[lungs].mean() + 0.2


def test_patient_left_is_on_the_right_of_the_screen(normal):
    geometry = PAGeometry.for_volume(normal.ct, PIXELS)
    column, row = geometry.project_point(np.array([[-100.0, 0.0, 50.0], [100.0, 0.0, -50.0]])).T
    assert column[0] > PIXELS / 2 > column[1]  # x < 0 is the patient's left in RAS
    assert row[0] < PIXELS / 2 < row[1]  # superior at the top
    heart = field(normal, "heart")
    assert np.flatnonzero(heart.any(axis=1)).mean() > PIXELS / 2  # the heart lies left of midline


def test_left_effusion_whitens_the_lower_left_lung_field_on_the_right_of_the_screen(normal):
    effusion = case(11, ChestFindings(cardiothoracic_ratio=0.44, effusion={"left": 0.3}))
    fluid = field(effusion, "effusion")
    assert fluid.any() and np.flatnonzero(fluid.any(axis=1)).min() > PIXELS / 2
    lungs = field(normal, "lung", "vessel")
    left = lungs & (np.arange(PIXELS) > PIXELS / 2)[:, None]
    rows = np.flatnonzero(left.any(axis=0))
    lower = left & (np.arange(PIXELS) > rows[0] + 2 * (rows[-1] - rows[0]) / 3)[None, :]
    before, after = normal.xray.data[:, :, 0][lower].mean(), effusion.xray.data[:, :, 0][lower].mean()
    assert after > before + 0.05
    right = lungs & (np.arange(PIXELS) < PIXELS / 2)[:, None]
    assert effusion.xray.data[:, :, 0][right].mean() == pytest.approx(normal.xray.data[:, :, 0][right].mean(), abs=0.01)
    blunted = effusion.labels == LABEL["effusion"]
    assert -0 < effusion.ct.data[blunted].mean() < 30 and (world(effusion, blunted)[:, 0] < 0).all()


def cardiothoracic_ratio(c: ChestCase) -> tuple[float, int]:
    """CTR measured on the radiograph: widest heart shadow over the widest inner thoracic (lung field) width."""
    heart = widest_row(field(c, "heart", min_mm=1.0))
    return heart / widest_row(field(c, "lung", "vessel", min_mm=1.0)), heart


def test_cardiomegaly_widens_the_heart_shadow():
    normal_ratio, normal_width = cardiothoracic_ratio(case(21, ChestFindings(cardiothoracic_ratio=0.44)))
    big_ratio, big_width = cardiothoracic_ratio(case(21, ChestFindings(cardiothoracic_ratio=0.6)))
    assert normal_ratio < 0.5 < big_ratio
    assert big_width > normal_width
    assert normal_ratio == pytest.approx(0.44, abs=0.03) and big_ratio == pytest.approx(0.6, abs=0.03)


@pytest.mark.parametrize("lobe", LUNG_LOBES)
def test_nodule_lies_in_the_requested_lobe(lobe):
    c = case(31, ChestFindings(cardiothoracic_ratio=0.44, nodules=(Lesion(lobe, 14.0),)))
    nodule = c.labels == LABEL["nodule"]
    assert nodule.sum() * SPACING_MM**3 > 0.3 * (4 / 3) * math.pi * 7.0**3
    lobes = c.lobes.lobe_of(world(c, nodule))
    assert np.mean(lobes == lobe) > 0.9
    assert c.ct.data[nodule].max() > 0 and c.ct.data[nodule].mean() > -250  # soft tissue, partial volume at edges


def test_mass_is_bigger_than_a_nodule():
    c = case(32, ChestFindings(cardiothoracic_ratio=0.44, mass=Lesion("right lower", 50.0),
                               nodules=(Lesion("left upper", 10.0),)))
    mass, nodule = (c.labels == LABEL["mass"]).sum(), (c.labels == LABEL["nodule"]).sum()
    assert mass > 5 * nodule > 0


def test_pneumothorax_rim_is_air_without_vessels_and_the_lung_edge_moves_in(normal):
    c = case(11, ChestFindings(cardiothoracic_ratio=0.44, pneumothorax=("right", 0.25)))
    rim = c.labels == LABEL["pneumothorax"]
    assert rim.sum() * SPACING_MM**3 > 100_000  # more than 100 ml
    assert c.ct.data[rim].mean() < -980 and c.ct.data[rim].max() < -900  # no vessel, not even partly
    assert (world(c, rim)[:, 0] > 0).all()  # the patient's right
    lung_x = world(c, np.isin(c.labels, [LABEL["lung"], LABEL["vessel"]]))[:, 0]
    before_x = world(normal, np.isin(normal.labels, [LABEL["lung"], LABEL["vessel"]]))[:, 0]
    assert lung_x.max() < before_x.max() - 15
    assert np.flatnonzero(field(c, "pneumothorax").any(axis=1)).max() < PIXELS / 2


def test_consolidation_and_atelectasis_are_denser_than_lung(normal):
    c = case(11, ChestFindings(cardiothoracic_ratio=0.44, consolidation="right lower", atelectasis="left upper"))
    consolidation = c.labels == LABEL["consolidation"]
    assert -120 < c.ct.data[consolidation].mean() < 40
    assert (c.ct.data[consolidation] < -500).any()  # air bronchograms
    assert np.mean(c.lobes.lobe_of(world(c, consolidation)) == "right lower") > 0.95
    atelectasis = c.labels == LABEL["atelectasis"]
    assert atelectasis.any() and c.ct.data[atelectasis].mean() > -200


@pytest.mark.parametrize("device", DEVICES)
def test_device_is_denser_than_soft_tissue(device):
    c = case(11, ChestFindings(cardiothoracic_ratio=0.44, device=device), spacing_mm=2.5, xray_pixels=64)
    hu = c.ct.data[c.labels == LABEL["device"]]
    soft_tissue = c.ct.data[c.labels == LABEL["muscle"]].mean()
    if device == "endotracheal tube":  # a plastic wall sharing its voxels with air, and a radiopaque stripe
        assert hu.max() > 400
        above_carina = world(c, c.labels == LABEL["device"])[:, 2].min() - c.landmarks.carina[2]
        assert 25 <= above_carina <= 55
    else:
        assert hu.max() > 1000 and hu.mean() > soft_tissue + 100


def test_poisson_noise_differs_by_seed_around_one_expectation(normal):
    quiet = drr(normal.ct, pixels=64, photons=math.inf, seed=1)
    assert np.array_equal(quiet.data, drr(normal.ct, pixels=64, photons=math.inf, seed=2).data)
    first = drr(normal.ct, pixels=64, photons=1e4, seed=1).data
    second = drr(normal.ct, pixels=64, photons=1e4, seed=2).data
    assert not np.array_equal(first, second)
    assert np.abs(first - quiet.data).mean() < 0.02 and abs(first.mean() - quiet.data.mean()) < 0.005


def test_drr_does_not_depend_on_the_ct_axis_order(normal):
    flipped = normal.ct.data[::-1, ::-1, :]
    affine = normal.ct.affine @ np.array([[-1, 0, 0, normal.ct.shape[0] - 1], [0, -1, 0, normal.ct.shape[1] - 1],
                                          [0, 0, 1, 0], [0, 0, 0, 1.0]])
    lps = Volume(np.ascontiguousarray(flipped), affine, modality="CT", units="HU")
    assert lps.orientation == "LPS"
    expected = drr(normal.ct, pixels=64, photons=math.inf)
    assert np.allclose(drr(lps, pixels=64, photons=math.inf).data, expected.data, atol=1e-5)
    assert np.allclose(drr(lps, pixels=64).affine, expected.affine)


def test_real_ct_base_gets_the_findings(tmp_path, normal):
    write_nifti(normal.ct, tmp_path / "base.nii.gz")
    base = read_nifti(tmp_path / "base.nii.gz")
    c = make_chest_case(40, ChestFindings(effusion={"left": 0.3}, nodules=(Lesion("right lower", 15.0),)),
                        spacing_mm=5.0, base=base, xray_pixels=PIXELS)
    assert c.ct.spacing == pytest.approx((5.0,) * 3) and c.labels.shape == c.ct.shape
    assert any("base anatomy" in note for note in c.ct.meta.notes)
    assert (c.labels == LABEL["lung"]).sum() * 125 > 1_000_000  # over a litre of lung segmented
    effusion = world(c, c.labels == LABEL["effusion"])
    assert len(effusion) and (effusion[:, 0] < c.lobes.midline_x).all()
    nodule = world(c, c.labels == LABEL["nodule"])
    assert len(nodule) and np.mean(c.lobes.lobe_of(nodule) == "right lower") > 0.9
    assert c.xray.shape == (PIXELS, PIXELS, 1)


def test_single_slice_real_ct_is_rejected():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    one_slice = Volume(hu.T, np.diag([*map(float, ds.PixelSpacing), 1.0, 1.0]), modality="CT", units="HU")
    with pytest.raises(InputError, match="single slice"):
        make_chest_case(1, NORMAL, base=one_slice)


@pytest.mark.parametrize("findings", [
    ChestFindings(nodules=(Lesion("right lingula", 10.0),)),
    ChestFindings(effusion={"middle": 0.2}),
    ChestFindings(device="stent"),
    ChestFindings(pneumothorax=("left", 1.5)),
])
def test_impossible_findings_are_input_errors(findings):
    with pytest.raises(InputError):
        make_chest_case(1, findings, spacing_mm=SPACING_MM)


def test_lobe_map_splits_each_lung_into_its_lobes(normal):
    lobes = normal.lobe_map()
    assert set(np.unique(lobes)) == {0, 1, 2, 3, 4, 5}
    right = world(normal, (lobes >= 1) & (lobes <= 3))[:, 0]
    left = world(normal, lobes >= 4)[:, 0]
    assert (right > 0).all() and (left < 0).all()
    upper, lower = (world(normal, lobes == LUNG_LOBES.index(name) + 1)[:, 2].mean() for name in ("left upper",
                                                                                                 "left lower"))
    assert upper > lower


GOLDEN_SHA256 = {  # recorded from the code; a change here means every generated chest case changed
    "normal": "7ecf390e81b1a6bd5d969ae58f44a2810df2b53a97478749ac2844ee4ab748aa",
    "findings a": "e4e024fe6c8e27b359d77d3aede98eadac5460cacf4fb7f04be87384804872cb",
    "findings b": "3c9e55eff9208429f0a72e720d765894fc05db2cccf3504d656ed6e766e88f01",
    # Rounded to 3 decimals: the resampled base CT's float bits differ between installs of the same commit
    # (the exact digest of 0d9874b changed with a fresh environment while the other four held).
    "real ct base": "cd8c5b4649275c813b24c57b3fa6e55c17c232d821225811ca911a39f6c51686",
    "world case": "2a95e413d6b591f1584643d58ced6d8e5092609c3989ac4e6913f89c2454c0a2",
}


def _feed(update: Callable[[bytes], None], value, decimals: int | None = None) -> None:
    """Hash a value exactly: arrays by dtype, shape and bytes; floats by their bits; containers in order.

    With ``decimals``, floating-point arrays and floats are rounded to that many decimals first.
    """
    if isinstance(value, np.ndarray):
        if decimals is not None and value.dtype.kind == "f":
            value = np.round(value, decimals) + 0.0  # + 0.0: -0.0 and 0.0 hash alike
        update(f"array {value.dtype.str} {value.shape}".encode())
        update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Volume):
        _feed(update, [value.data, value.affine, value.meta.notes], decimals)
    elif dataclasses.is_dataclass(value):
        _feed(update, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, decimals)
    elif isinstance(value, dict):
        for key in sorted(value):
            _feed(update, [key, value[key]], decimals)
    elif isinstance(value, list | tuple):
        update(f"sequence {len(value)}".encode())
        for item in value:
            _feed(update, item, decimals)
    elif isinstance(value, float | np.floating):
        value = float(value) if decimals is None else round(float(value), decimals) + 0.0
        update(f"float {value.hex()}".encode())
    else:
        update(f"{type(value).__name__} {value}".encode())


def sha256_of(*values, decimals: int | None = None) -> str:
    digest = hashlib.sha256()
    _feed(digest.update, values, decimals)
    return digest.hexdigest()


def chest_digest(c: ChestCase, decimals: int | None = None) -> str:
    """Everything a chest case holds but the provenance (which names the package version)."""
    return sha256_of(c.seed, c.findings, c.ct, c.xray, c.labels, c.lobe_map(), c.lobes, c.landmarks,
                     decimals=decimals)


def test_cases_are_bit_identical_to_the_recorded_hashes(normal):
    findings_a = ChestFindings(cardiothoracic_ratio=0.56, effusion={"right": 0.3}, consolidation="right lower",
                               nodules=(Lesion("left upper", 12.0),), device="endotracheal tube")
    findings_b = ChestFindings(cardiothoracic_ratio=0.46, mass=Lesion("right upper", 40.0), atelectasis="left lower",
                               pneumothorax=("left", 0.2), device="pacemaker")
    findings_base = ChestFindings(effusion={"left": 0.25}, nodules=(Lesion("right middle", 10.0),),
                                  device="central venous catheter")
    config = PhantomConfig(cases=1, tasks=("chest",), chest_spacing_mm=6.0, xray_pixels=64)
    got = {
        "normal": chest_digest(normal),
        "findings a": chest_digest(case(12, findings_a)),
        "findings b": chest_digest(case(13, findings_b)),
        "real ct base": chest_digest(case(14, findings_base, spacing_mm=5.0, base=normal.ct), decimals=3),
        "world case": sha256_of(*make_case("chest", 5, config)),
    }
    assert got == GOLDEN_SHA256
