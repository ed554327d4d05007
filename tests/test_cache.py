"""Intensity maps and the model-ready cache: exact inverses, paired slices, orientation independence."""

import numpy as np
import pytest

from medm2g_core.data.cache import Cache, CacheConfig, build_cache, square_resize
from medm2g_core.data.intensity import IntensityMap, intensity_map
from medm2g_core.data.manifest import CaseRecord, write_manifest
from medm2g_core.errors import InputError
from medm2g_core.io.nifti import write_nifti
from medm2g_core.io.volume import Volume


def test_intensity_map_round_trip_and_clipping():
    mapping = intensity_map(np.zeros(3), "CT", ct_clip_hu=(-1000.0, 1000.0))
    hu = np.array([-2000.0, -1000.0, 0.0, 500.0, 3000.0], np.float32)
    np.testing.assert_allclose(mapping.forward(hu), [-1, -1, 0, 0.5, 1], atol=1e-6)
    np.testing.assert_allclose(mapping.inverse(mapping.forward(hu)), np.clip(hu, -1000, 1000), atol=1e-3)


def test_mri_map_uses_robust_percentiles_of_the_foreground():
    rng = np.random.default_rng(0)
    data = np.zeros((40, 40, 10), np.float32)
    data[10:30, 10:30] = rng.uniform(100, 200, (20, 20, 10))
    data[12, 12, 3] = 10_000  # one hot voxel must not set the scale
    mapping = intensity_map(data, "MR")
    assert mapping.low == 0.0
    assert 195 < mapping.high < 201


def test_constant_image_is_refused():
    with pytest.raises(InputError, match="constant"):
        intensity_map(np.full((4, 4, 1), 3.0, np.float32), "XRAY")


def test_square_resize_is_identity_at_the_same_size():
    image = np.random.default_rng(1).normal(size=(32, 32)).astype(np.float32)
    np.testing.assert_allclose(square_resize(image, 32, -1.0), image, atol=1e-5)
    padded = square_resize(np.ones((16, 32), np.float32), 32, -1.0)
    assert padded[0, 0] == -1.0 and padded[16, 16] == pytest.approx(1.0)


def _world(tmp_path, flip: bool = False):
    """Two brain-like cases (CT + T1 on one grid) and one X-ray case, as NIfTI with a manifest."""
    rng = np.random.default_rng(2)
    records = []
    for n in range(2):
        ct = np.full((32, 32, 8), -1000.0, np.float32)
        ct[6:26, 6:26, 1:7] = rng.integers(0, 80, (20, 20, 6))
        t1 = np.where(ct > -500, 300.0 - ct, 0.0).astype(np.float32)
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        if flip:  # the same anatomy stored left-right flipped
            ct, t1 = ct[::-1].copy(), t1[::-1].copy()
            affine[0, 0], affine[0, 3] = -1.0, 31.0
        write_nifti(Volume(ct, affine, "CT", "HU"), tmp_path / f"ct{n}.nii.gz")
        write_nifti(Volume(t1, affine, "MR", contrast="T1"), tmp_path / f"t1{n}.nii.gz")
        records.append(CaseRecord(id=f"b{n}", split="train", subject=f"b{n}", source="test",
                                  images={"ct": f"ct{n}.nii.gz", "mr_t1": f"t1{n}.nii.gz"}))
    xray = rng.uniform(0, 1, (40, 32)).astype(np.float32)
    write_nifti(Volume(xray, np.eye(4), "XRAY"), tmp_path / "xr.nii.gz")
    records.append(CaseRecord(id="x0", split="test", subject="x0", source="test", images={"xray": "xr.nii.gz"},
                              report="FINDINGS: clear.\nIMPRESSION: normal.", labels={"nodule": 0}))
    write_manifest(tmp_path / "manifest.jsonl", records)
    return tmp_path / "manifest.jsonl"


def test_cache_pairs_slices_and_keeps_maps(tmp_path):
    (tmp_path / "w").mkdir()
    manifest = _world(tmp_path / "w")
    build_cache(manifest, tmp_path / "cache", CacheConfig(resolution=32, ct_clip_hu=(-1000.0, 1000.0)))
    cache = Cache.open(tmp_path / "cache")
    ct, t1 = cache.stream("train", "ct"), cache.stream("train", "mr_t1")
    assert ct["images"].shape == (12, 32, 32)  # 6 of 8 slices per case have enough foreground
    np.testing.assert_array_equal(ct["case"], t1["case"])
    np.testing.assert_array_equal(ct["slice"], t1["slice"])
    assert set(ct["slice"].tolist()) == set(range(1, 7))
    assert ct["images"].min() >= -1 and ct["images"].max() <= 1
    # the inverse map gives HU back (same size, so no resampling error)
    mapping = cache.intensity_map(int(ct["case"][0]), "ct")
    back = mapping.inverse(ct["images"][0])
    assert back.min() == pytest.approx(-1000.0, abs=1e-3) and back.max() < 80.5
    xray = cache.stream("test", "xray")
    assert xray["images"].shape == (1, 32, 32)
    assert cache.index["cases"][2]["report"].startswith("FINDINGS")
    grid = cache.index["cases"][0]["grids"]["ct"]
    assert grid["shape"] == [32, 32, 8]
    np.testing.assert_allclose(grid["affine"], np.diag([1.0, 1.0, 2.0, 1.0]), atol=1e-5)
    with pytest.raises(InputError, match="no mr_t1 images in split test"):
        cache.stream("test", "mr_t1")


def test_cache_does_not_depend_on_storage_order(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    build_cache(_world(tmp_path / "a"), tmp_path / "ca", CacheConfig(resolution=32))
    build_cache(_world(tmp_path / "b", flip=True), tmp_path / "cb", CacheConfig(resolution=32))
    a, b = Cache.open(tmp_path / "ca").stream("train", "ct"), Cache.open(tmp_path / "cb").stream("train", "ct")
    np.testing.assert_allclose(a["images"], b["images"], atol=1e-6)


def test_mismatched_grids_in_one_case_are_refused(tmp_path):
    write_nifti(Volume(np.zeros((8, 8, 4)), np.eye(4), "CT", "HU"), tmp_path / "ct.nii.gz")
    write_nifti(Volume(np.ones((8, 8, 5)), np.eye(4), "MR", contrast="T2"), tmp_path / "t2.nii.gz")
    write_manifest(tmp_path / "m.jsonl", [CaseRecord(id="c", split="train", subject="c", source="t",
                                                     images={"ct": "ct.nii.gz", "mr_t2": "t2.nii.gz"})])
    with pytest.raises(InputError, match="case c: its volumes are on different grids"):
        build_cache(tmp_path / "m.jsonl", tmp_path / "cache", CacheConfig(resolution=8))
    assert not (tmp_path / "cache").exists()


def test_intensity_map_refuses_empty_range():
    with pytest.raises(InputError):
        IntensityMap(1.0, 1.0)
