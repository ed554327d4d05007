"""The Python API: the README's "From Python" block runs as written, and the API does what the commands do."""

import contextlib
import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import pytest

import medm2g_core
from medm2g_core.errors import InputError
from medm2g_core.io.nifti import write_nifti
from medm2g_core.phantoms.world import PhantomConfig, make_case

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_block() -> str:
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("api")
    brain, _, _, _ = make_case("brain", 3, PhantomConfig(brain_slices=4, xray_pixels=64))
    chest, _, _, _ = make_case("chest", 4, PhantomConfig(xray_pixels=64))
    write_nifti(brain["mr_t1"], folder / "t1.nii.gz")
    write_nifti(chest["xray"], folder / "xray.nii.gz")
    return folder


def test_import_is_cheap_and_the_api_is_lazy():
    code = ("import sys, medm2g_core; "
            "print('torch' in sys.modules, sorted(set(medm2g_core.API) & set(dir(medm2g_core))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split(" ", 1)[0] == "False", done.stderr
    assert all(name in done.stdout for name in medm2g_core.API)
    with pytest.raises(AttributeError, match="no attribute 'transalte'"):
        medm2g_core.transalte  # noqa: B018


def test_the_readme_example_runs_as_written(case_files, monkeypatch):
    monkeypatch.chdir(case_files)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_readme_block(), "README.md (From Python)", "exec"), {})
    printed = out.getvalue()
    assert printed.splitlines()[0] == "CT HU True True"
    assert "AI-GENERATED REPORT - UNVERIFIED - NOT FOR DIAGNOSIS" in printed
    t1, ct = nib.load(case_files / "t1.nii.gz"), nib.load(case_files / "t1_ct.nii.gz")
    assert ct.shape == t1.shape and abs(ct.affine - t1.affine).max() < 1e-4
    assert b"SYNTHETIC" in ct.header["descrip"].tobytes().upper()
    assert (case_files / "effusion.png").stat().st_size > 0


def test_translate_takes_a_path_or_a_volume_alike(case_files):
    model = medm2g_core.load_model(device="cpu")
    from_path = medm2g_core.translate(case_files / "t1.nii.gz", to="CT", model=model, steps=2, seed=1)
    volume = medm2g_core.read_volume(case_files / "t1.nii.gz")
    from_volume = medm2g_core.translate(volume, to="ct", model=model, steps=2, seed=1)
    assert (from_path.data == from_volume.data).all() and from_path.units == "HU"
    other_seed = medm2g_core.translate(volume, to="ct", model=model, steps=2, seed=2)
    assert (other_seed.data != from_path.data).any()
    mri = medm2g_core.translate(medm2g_core.read_volume(case_files / "t1.nii.gz"), to="mri", contrast="t2",
                                model=model, steps=2)
    assert (mri.modality, mri.contrast) == ("MR", "T2")


def test_the_api_warns_about_an_input_unlike_the_training_images_and_strict_refuses_it(case_files):
    model = medm2g_core.load_model(device="cpu")
    t1 = medm2g_core.read_volume(case_files / "t1.nii.gz")
    inverted = t1.with_data(t1.data.max() - t1.data)
    with pytest.warns(UserWarning, match="unlike the MRI images the model was trained on"):
        medm2g_core.translate(inverted, to="ct", model=model, steps=2)
    with pytest.raises(InputError, match="refused"):
        medm2g_core.report(inverted, model=model, steps=2, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a phantom T1 is inside: no warning
        medm2g_core.translate(t1, to="ct", model=model, steps=2)
