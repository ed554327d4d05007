"""The out-of-distribution check: the reference's numbers, and the embedded default's verdict on phantom test
cases (inside) and on the three odd inputs of issue 18 (outside): a chest CT given as a brain MRI, a pure-noise
volume, an image with inverted intensities."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from medm2g_core.io.nifti import write_nifti
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.ood_reference import OOD_MARGIN, OODReferenceConfig, fit_reference
from medm2g_core.phantoms.world import PhantomConfig, make_case
from medm2g_core.sampling.ood import check_input
from medm2g_core.vocabulary import OOD_REFERENCE

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ("--steps", "2", "--no-preview")


@pytest.fixture(scope="module")
def model(default_model):
    return default_model


@pytest.fixture(scope="module")
def cases():
    brain, _, _, _ = make_case("brain", 21, PhantomConfig(brain_slices=12, xray_pixels=256))
    chest, _, _, _ = make_case("chest", 22, PhantomConfig(xray_pixels=256, chest_spacing_mm=6.0))
    return brain, chest


def odd_inputs(brain: dict, chest: dict) -> dict:
    t1 = brain["mr_t1"]
    noise = np.random.default_rng(0).uniform(0, 1000, t1.data.shape).astype(np.float32)
    return {"chest CT as a brain MRI": replace(chest["ct"], modality="MR", units="a.u."),
            "pure noise": t1.with_data(noise),
            "inverted T1": t1.with_data(t1.data.max() - t1.data),
            "inverted CT": brain["ct"].with_data(brain["ct"].data.max() + brain["ct"].data.min() - brain["ct"].data),
            "inverted film": chest["xray"].with_data(chest["xray"].data.max() - chest["xray"].data)}


def test_the_reference_is_a_mahalanobis_distance_with_a_threshold_from_the_farthest_held_out_volume(tmp_path):
    generator = torch.Generator().manual_seed(0)
    train = {"ct": torch.randn(2000, 4, 16, 16, generator=generator)}
    held_out = {"ct": [torch.randn(30, 4, 16, 16, generator=generator) for _ in range(5)]}
    reference = fit_reference(train, held_out, OODReferenceConfig(modalities=("ct",)))
    features = reference.features(train["ct"]).double()
    centred = features - features.mean(0)
    covariance = torch.cov(features.T)
    covariance += 1e-3 * covariance.diagonal().mean() * torch.eye(256, dtype=torch.float64)
    expected = torch.einsum("ni,ij,nj->n", centred, torch.linalg.inv(covariance), centred).sqrt()
    np.testing.assert_allclose(reference.distance("ct", train["ct"][:50]).numpy(), expected[:50].numpy(), rtol=1e-3)
    farthest = max(float(reference.distance("ct", v).median()) for v in held_out["ct"])
    assert reference.threshold("ct") == pytest.approx(OOD_MARGIN * farthest)
    shifted = train["ct"][:50] + 3.0  # the same images, brighter by three standard deviations everywhere
    assert reference.distance("ct", shifted).median() > reference.threshold("ct")
    MedM2G({OOD_REFERENCE: reference}).save_pretrained(tmp_path / "m")
    again = MedM2G.from_pretrained(tmp_path / "m")[OOD_REFERENCE]
    assert torch.equal(again.distance("ct", shifted), reference.distance("ct", shifted))
    assert again.threshold("ct") == reference.threshold("ct")


def test_the_default_model_finds_phantom_cases_inside_and_odd_inputs_outside(model, cases):
    brain, chest = cases
    for name, volume in (("T1", brain["mr_t1"]), ("FLAIR", brain["mr_flair"]), ("brain CT", brain["ct"]),
                         ("chest CT", chest["ct"]), ("chest film", chest["xray"]), ("skull film", brain["xray"])):
        check = check_input(model, volume)
        assert not check.outside, (name, check)
    for name, volume in odd_inputs(brain, chest).items():
        check = check_input(model, volume)
        assert check.outside, (name, check)
        assert check.distance > 1.5 * check.threshold or name.startswith("chest CT"), (name, check)


def test_translate_warns_records_and_with_strict_refuses_an_odd_input(model, cases, cli, tmp_path):
    brain, chest = cases
    noise = tmp_path / "noise.nii.gz"
    write_nifti(odd_inputs(brain, chest)["pure noise"], noise)
    out = tmp_path / "ct.nii.gz"
    warned = cli("translate", str(noise), "--to", "ct", "--out", str(out), *FAST)
    assert warned.exit_code == 0, warned.stderr
    assert "warning: the input is unlike the MRI images the model was trained on" in warned.stderr
    record = json.loads(out.with_name("ct.nii.gz.run.json").read_text())
    assert record["ood"]["outside"] and record["ood"]["distance"] > record["ood"]["threshold"]
    refused = cli("translate", str(noise), "--to", "ct", "--out", str(tmp_path / "strict.nii.gz"), "--strict", *FAST)
    assert refused.exit_code == 2 and refused.stderr.strip().splitlines()[-1].endswith("; refused (--strict)")
    assert refused.stderr.count("error:") == 1 and "Traceback" not in refused.stderr
    assert not (tmp_path / "strict.nii.gz").exists() and not (tmp_path / "strict.nii.gz.run.json").exists()
    t1 = tmp_path / "t1.nii.gz"
    write_nifti(brain["mr_t1"], t1)
    clean = cli("translate", str(t1), "--to", "ct", "--out", str(tmp_path / "t1_ct.nii.gz"), "--strict", *FAST)
    assert clean.exit_code == 0 and "warning" not in clean.stderr
    assert not json.loads((tmp_path / "t1_ct.nii.gz.run.json").read_text())["ood"]["outside"]


def test_report_warns_about_an_inverted_film_and_strict_refuses_it(cases, cli, tmp_path):
    brain, chest = cases
    film = tmp_path / "inverted.nii.gz"
    write_nifti(odd_inputs(brain, chest)["inverted film"], film)
    warned = cli("report", str(film), "--out", str(tmp_path / "r.json"), "--steps", "2")
    assert warned.exit_code == 0 and "warning: the input is unlike the XRAY images" in warned.stderr
    assert json.loads((tmp_path / "r.json.run.json").read_text())["ood"]["outside"]
    refused = cli("report", str(film), "--strict", "--steps", "2")
    assert refused.exit_code == 2 and "; refused (--strict)" in refused.stderr and not refused.stdout
