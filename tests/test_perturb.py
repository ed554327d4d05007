"""The scanner perturbations of issue 18: same grid and units, deterministic by seed, zero strength changes nothing,
and each does what its name says, measured on a phantom T1."""

import numpy as np
import pytest

from medm2g_core.phantoms.perturb import PERTURBATIONS
from medm2g_core.phantoms.world import PhantomConfig, make_case


@pytest.fixture(scope="module")
def t1():
    return make_case("brain", 5, PhantomConfig(brain_slices=8, xray_pixels=64))[0]["mr_t1"]


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_a_perturbation_keeps_the_grid_repeats_by_seed_and_is_nothing_at_zero(t1, name):
    perturb = PERTURBATIONS[name]
    made = perturb(t1, 1.0, 7)
    assert made.shape == t1.shape and np.array_equal(made.affine, t1.affine) and made.units == t1.units
    assert made.data.dtype == np.float32 and np.isfinite(made.data).all()
    np.testing.assert_array_equal(perturb(t1, 1.0, 7).data, made.data)
    np.testing.assert_allclose(perturb(t1, 0.0, 7).data, t1.data, atol=1e-3 * float(np.ptp(t1.data)))
    assert np.abs(made.data - t1.data).mean() > np.abs(perturb(t1, 0.5, 7).data - t1.data).mean() > 0


def test_each_perturbation_does_what_it_says(t1):
    data, scale = t1.data, float(np.percentile(t1.data, 99))
    assert np.std(PERTURBATIONS["noise"](t1, 1.0, 1).data - data) == pytest.approx(0.08 * scale, rel=0.1)
    np.testing.assert_allclose(PERTURBATIONS["intensity scale"](t1, 1.0, 1).data, 4 * data, rtol=1e-5)
    assert len(np.unique(PERTURBATIONS["bit depth"](t1, 1.0, 1).data)) <= 16  # 4 bits
    thick = PERTURBATIONS["thick slices"](t1, 1.0, 1).data  # 4 slices averaged: runs of equal slices
    assert np.array_equal(thick[:, :, 0], thick[:, :, 1]) and np.array_equal(thick[:, :, 4], thick[:, :, 5])
    blurred = PERTURBATIONS["blur"](t1, 1.0, 1).data
    assert np.abs(np.diff(blurred, axis=0)).mean() < 0.7 * np.abs(np.diff(data, axis=0)).mean()
    moved = PERTURBATIONS["shifted field of view"](t1, 1.0, 1).data
    centres = [np.array([np.average(np.indices(d.shape)[a], weights=np.clip(d - d.min(), 0, None)) for a in (0, 1)])
               for d in (data, moved)]
    assert np.linalg.norm(centres[0] - centres[1]) > 0.1 * min(data.shape[:2])  # the head moved (15 % of the FOV)
    gain = PERTURBATIONS["bias field"](t1, 1.0, 1).data / np.where(data > 0.2 * scale, data, np.nan)
    assert 0.3 < np.nanmax(gain) - np.nanmin(gain) < 1.5  # a smooth gain of about +/- 0.5 in log


def test_the_field_of_view_size_zooms_the_anatomy_by_30_percent_either_way(t1):
    def width(data):  # foreground extent along the first in-plane axis, in voxels
        rows = np.flatnonzero((data > 0.1 * np.percentile(t1.data, 99)).any(axis=(1, 2)))
        return rows[-1] - rows[0] + 1

    ratios = {round(width(PERTURBATIONS["field of view size"](t1, 1.0, seed).data) / width(t1.data), 2)
              for seed in range(8)}
    assert min(ratios) == pytest.approx(0.7, abs=0.06)  # a wider field of view: the head smaller
    assert max(ratios) > 1.1  # a tighter one: larger, cut where it leaves the image


def test_a_random_scanner_repeats_by_seed_applies_at_least_one_acquisition_change_and_varies_with_the_seed(t1):
    from medm2g_core.phantoms.perturb import ACQUISITION, GEOMETRIC, randomise

    assert not set(ACQUISITION) & GEOMETRIC and "intensity scale" not in ACQUISITION
    drawn = [randomise(t1, seed) for seed in range(12)]
    again, applied = randomise(t1, 3)
    np.testing.assert_array_equal(again.data, drawn[3][0].data)
    assert applied == drawn[3][1] and all(1 <= len(a) <= len(ACQUISITION) for _, a in drawn)
    assert {name for _, a in drawn for name, _ in a} == set(ACQUISITION)  # every kind is drawn somewhere
    assert all(not np.array_equal(v.data, t1.data) for v, _ in drawn)
    assert len({tuple(a) for _, a in drawn}) == len(drawn)
