"""`medm2g prepare`: the phantom world on disk, resume, verify, cache, and the dataset commands."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medm2g_core.data.adapters import ADAPTERS
from medm2g_core.data.manifest import read_manifest

SMALL = ("--cases", "4", "--workers", "1", "--brain-slices", "6", "--xray-pixels", "64")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("world") / "phantom"
    result = run_cli("--quiet", "prepare", "phantom", "--out", str(out), *SMALL)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out / "manifest.jsonl")
    return out


def test_phantom_world_has_paired_cases_reports_and_labels(phantom_dir):
    manifest = read_manifest(phantom_dir / "manifest.jsonl")
    assert [r.meta["task"] for r in manifest.records] == ["brain", "chest", "brain", "chest"]
    brain, chest = manifest.records[0], manifest.records[1]
    assert set(brain.images) == {"ct", "mr_t1", "mr_t1ce", "mr_t2", "mr_flair", "mr_pd", "xray"}
    assert set(chest.images) == {"ct", "xray"}
    for record in manifest.records:
        assert record.report.startswith("FINDINGS:") and "IMPRESSION:" in record.report
        assert set(record.labels.values()) <= {0, 1}
        assert record.split in ("train", "val", "test")
    ct = nib.load(manifest.image_path(brain, "ct"))
    t1 = nib.load(manifest.image_path(brain, "mr_t1"))
    assert ct.shape == t1.shape and ct.shape[2] == 6
    np.testing.assert_allclose(ct.affine, t1.affine, atol=1e-5)
    assert ct.header["descrip"].item().decode().startswith("SYNTHETIC")
    skull = nib.load(manifest.image_path(brain, "xray"))
    assert skull.shape == (64, 64) and skull.header["descrip"].item().decode().startswith("SYNTHETIC")
    film = np.asarray(skull.dataobj)
    n = film.shape[0]
    assert film[n // 3: 2 * n // 3, n // 3: 2 * n // 3].mean() > 4 * film[:n // 10, :n // 10].mean()  # head, air
    sheet = Image.open(phantom_dir / "contact_sheet.png")
    assert sheet.width > 300 and sheet.height > 300


def test_verify_passes_then_catches_a_missing_file(phantom_dir, cli, tmp_path):
    ok = cli("prepare", "verify", str(phantom_dir), "--json")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    broken = tmp_path / "broken"
    shutil.copytree(phantom_dir, broken)
    record = read_manifest(broken / "manifest.jsonl").records[1]
    (broken / record.images["xray"]).unlink()
    bad = cli("prepare", "verify", str(broken))
    assert bad.exit_code == 1
    assert record.id in bad.stdout and "missing" in bad.stdout


def test_resume_remakes_only_missing_cases_identically(phantom_dir, cli, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(phantom_dir, copy)
    record = read_manifest(copy / "manifest.jsonl").records[2]
    shutil.rmtree(copy / "cases" / record.id)
    refused = cli("prepare", "phantom", "--out", str(copy), *SMALL)
    assert refused.exit_code == 2 and "--resume" in refused.stderr
    resumed = cli("--quiet", "prepare", "phantom", "--out", str(copy), *SMALL, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    for key in record.images:
        again = np.asarray(nib.load(copy / record.images[key]).dataobj)
        first = np.asarray(nib.load(phantom_dir / record.images[key]).dataobj)
        np.testing.assert_array_equal(again, first)


def test_cache_from_the_phantom_world(phantom_dir, cli, tmp_path):
    result = cli("--quiet", "prepare", "cache", str(phantom_dir), "--out", str(tmp_path / "cache"),
                 "--resolution", "32", "--keys", "ct,mr_t2,xray")
    assert result.exit_code == 0, result.stderr
    index = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert index["config"]["keys"] == ["ct", "mr_t2", "xray"]
    assert len(index["cases"]) == 4
    assert all(name.endswith(".safetensors") for names in index["shards"].values() for name in names)


def test_every_dataset_has_a_command(cli):
    result = cli("prepare", "--help")
    assert result.exit_code == 0
    for name in (*ADAPTERS, "phantom", "verify", "cache"):
        assert name in result.stdout


def test_dataset_command_with_a_missing_root(cli, tmp_path):
    result = cli("prepare", "brats", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "is not a folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_task_name_is_a_usage_error(cli, tmp_path):
    result = cli("prepare", "phantom", "--out", str(tmp_path / "p"), "--tasks", "knee")
    assert result.exit_code == 2
    assert "knee" in result.stderr and "(--tasks)" in result.stderr
    assert not (tmp_path / "p").exists()


def test_chest_base_gives_findings_on_a_given_ct(phantom_dir, cli, tmp_path):
    chest = read_manifest(phantom_dir / "manifest.jsonl").records[1]
    base = phantom_dir / chest.images["ct"]
    result = cli("--quiet", "prepare", "phantom", "--out", str(tmp_path / "based"), "--tasks", "chest",
                 "--cases", "1", "--workers", "1", "--xray-pixels", "64", "--chest-base", str(base))
    assert result.exit_code == 0, result.stderr
    record = read_manifest(tmp_path / "based" / "manifest.jsonl").records[0]
    ct = nib.load(tmp_path / "based" / record.images["ct"])
    assert np.asarray(ct.dataobj).min() <= -900  # air and lungs of the base survive


def test_chest_base_must_be_a_volume(cli, tmp_path):
    from pydicom.data import get_testdata_file

    result = cli("prepare", "phantom", "--out", str(tmp_path / "p"), "--tasks", "chest", "--cases", "1",
                 "--chest-base", get_testdata_file("CT_small.dcm"))
    assert result.exit_code == 2
    assert "single slice" in result.stderr and "(--chest-base)" in result.stderr
    assert not (tmp_path / "p").exists()
