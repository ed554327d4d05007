"""The user commands end to end through the CLI with the embedded default model: translate, report, generate,
synthesize-dataset and demo, on NIfTI and DICOM in and out and on a real radiograph."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import require_tool
from pydicom.data import get_testdata_file

from medm2g_core.io.dicom_write import write_dicom_series
from medm2g_core.io.load import read_volume
from medm2g_core.io.nifti import write_nifti
from medm2g_core.phantoms.world import PhantomConfig, make_case
from medm2g_core.sampling.report import HEADER

FAST = ("--steps", "3")
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def brain_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("brain")
    images, _, _, _ = make_case("brain", 11, PhantomConfig(brain_slices=6, xray_pixels=64))
    for key in ("mr_t1", "mr_t2", "ct"):
        write_nifti(images[key], root / f"{key}.nii.gz")
    write_dicom_series(images["mr_t1"], root / "t1_dicom")
    return root


def test_translate_nifti_keeps_the_grid_and_writes_provenance(brain_files, cli, tmp_path):
    out = tmp_path / "ct.nii.gz"
    result = cli("translate", str(brain_files / "mr_t1.nii.gz"), "--to", "ct", "--out", str(out),
                 "--reference", str(brain_files / "ct.nii.gz"), "--json", *FAST)
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["output"] == str(out) and 0 < printed["metrics"]["psnr"] < 60 and -1 < printed["metrics"]["ssim"] < 1
    source, made = nib.load(brain_files / "mr_t1.nii.gz"), nib.load(out)
    assert made.shape == source.shape
    np.testing.assert_allclose(made.affine, source.affine, atol=1e-4)
    assert made.header["descrip"].item().decode().startswith("SYNTHETIC")
    record = json.loads(Path(f"{out}.run.json").read_text())
    assert record["command"] == "translate" and record["synthetic"] and record["model"]["index_sha256"]
    assert record["outputs"][str(out)] and record["inputs"][str(brain_files / "mr_t1.nii.gz")]
    assert Path(f"{out}.png").is_file()
    again = cli("translate", str(brain_files / "mr_t1.nii.gz"), "--to", "ct", "--out", str(out), *FAST)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_translate_dicom_series_to_dicom_keeps_geometry(brain_files, cli, tmp_path):
    dciodvfy = require_tool("dciodvfy")
    out = tmp_path / "ct_series"
    result = cli("translate", str(brain_files / "t1_dicom"), "--to", "ct", "--out", str(out), *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    source, made = read_volume(brain_files / "t1_dicom"), read_volume(out)
    assert made.modality == "CT" and made.units == "HU" and made.shape == source.shape
    np.testing.assert_allclose(made.affine, source.affine, atol=1e-4)
    first = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert first.SeriesDescription.startswith("SYNTHETIC") and "DERIVED" in first.ImageType
    source_file = sorted((brain_files / "t1_dicom").glob("*.dcm"))[0]
    assert first.StudyInstanceUID == pydicom.dcmread(source_file).StudyInstanceUID
    check = subprocess.run([dciodvfy, str(sorted(out.glob("*.dcm"))[0])], capture_output=True, text=True)
    assert "Error" not in check.stdout + check.stderr


def test_translate_samples_write_an_uncertainty_map_on_the_output_grid(brain_files, cli, tmp_path):
    out, spread = tmp_path / "ct.nii.gz", tmp_path / "ct_std.nii.gz"
    result = cli("translate", str(brain_files / "mr_t1.nii.gz"), "--to", "ct", "--out", str(out), "--samples", "3",
                 "--uncertainty", str(spread), "--no-preview", "--json", *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["uncertainty"] == str(spread)
    made, deviation = nib.load(out), nib.load(spread)
    assert deviation.shape == made.shape
    assert np.array_equal(deviation.get_sform(), made.get_sform()) and np.array_equal(deviation.get_qform(),
                                                                                      made.get_qform())
    values = np.asarray(deviation.dataobj)
    assert values.min() >= 0 and values.max() > 10  # HU: three samples disagree somewhere
    assert deviation.header["descrip"].item().decode().startswith("SYNTHETIC uncertainty")
    record = json.loads(Path(f"{out}.run.json").read_text())
    assert record["arguments"]["samples"] == 3 and record["outputs"][str(spread)]


def test_translate_uncertainty_as_a_dicom_series_references_the_output(brain_files, cli, tmp_path):
    dciodvfy = require_tool("dciodvfy")
    out, spread = tmp_path / "ct_series", tmp_path / "std_series"
    result = cli("translate", str(brain_files / "t1_dicom"), "--to", "ct", "--out", str(out), "--samples", "2",
                 "--uncertainty", str(spread), *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [str(out), str(spread)]
    made, deviation = read_volume(out), read_volume(spread)
    assert deviation.shape == made.shape and np.array_equal(deviation.affine, made.affine)
    assert deviation.units == "HU" and deviation.data.min() >= 0 and deviation.data.max() > 10
    outputs = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    maps = [pydicom.dcmread(f) for f in sorted(spread.glob("*.dcm"))]
    assert maps[0].SeriesInstanceUID != outputs[0].SeriesInstanceUID  # a series of its own
    assert maps[0].StudyInstanceUID == outputs[0].StudyInstanceUID
    assert maps[0].FrameOfReferenceUID == outputs[0].FrameOfReferenceUID
    assert maps[0].SeriesDescription.startswith("SYNTHETIC uncertainty") and "DERIVED" in maps[0].ImageType
    assert outputs[0].SeriesInstanceUID in maps[0].DerivationDescription
    for image, source in zip(maps, outputs, strict=True):
        assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert image.ImagePositionPatient == source.ImagePositionPatient
    check = subprocess.run([dciodvfy, str(sorted(spread.glob("*.dcm"))[0])], capture_output=True, text=True)
    assert "Error" not in check.stdout + check.stderr


@pytest.mark.parametrize(("arguments", "message"), [
    (("--samples", "0"), "number of samples must be at least 1; got 0"),
    (("--samples", "-2"), "number of samples must be at least 1; got -2"),
    (("--uncertainty", "std.nii.gz"), "--uncertainty needs --samples 2 or more"),
    (("--slice-noise", "random"), "slice noise must be one of shared, independent; got 'random'"),
])
def test_translate_refuses_bad_samples_and_slice_noise_in_one_line(brain_files, cli, tmp_path, arguments, message):
    result = cli("translate", str(brain_files / "mr_t1.nii.gz"), "--to", "ct", "--out", str(tmp_path / "ct.nii.gz"),
                 *arguments, *FAST)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_translate_outputs_differ_with_input_and_repeat_with_seed(brain_files, cli, tmp_path):
    outputs = {}
    for name, source, seed in (("a", "mr_t1", "1"), ("b", "mr_t1", "1"), ("c", "mr_t2", "1")):
        out = tmp_path / f"{name}.nii.gz"
        result = cli("translate", str(brain_files / f"{source}.nii.gz"), "--to", "ct", "--out", str(out),
                     "--seed", seed, "--no-preview", *FAST, env=ENV)
        assert result.exit_code == 0, result.stderr
        outputs[name] = np.asarray(nib.load(out).dataobj)
    np.testing.assert_array_equal(outputs["a"], outputs["b"])
    assert np.abs(outputs["a"] - outputs["c"]).mean() > 1.0


def test_report_on_a_real_radiograph(cli, tmp_path):
    radiograph = get_testdata_file("RG1_UNCI.dcm")
    out = tmp_path / "report.json"
    result = cli("report", radiograph, "--out", str(out), "--n", "2", "--samples", "2", *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(HEADER) and result.stdout.count(HEADER) == 2
    assert result.stdout.count("stated by the 2 samples") == 2
    saved = json.loads(out.read_text())
    assert len(saved) == 2 and saved[0]["synthetic"] and saved[0]["text"] and "labels" in saved[0]
    assert saved[0]["samples"] == 2 and set(saved[0]["agreement"].values()) <= {0.5, 1.0}
    assert saved[0]["source"]["modality"] == "XRAY"
    assert json.loads(Path(f"{out}.run.json").read_text())["command"] == "report"


def test_generate_from_the_report_of_a_real_radiograph_as_dicom(cli, tmp_path):
    text = cli("report", get_testdata_file("RG1_UNCI.dcm"), "--json", *FAST, env=ENV)
    assert text.exit_code == 0, text.stderr
    prompt = json.loads(text.stdout.splitlines()[0])["text"]
    out = tmp_path / "gen"
    result = cli("generate", prompt, "--modality", "xray,ct,mri", "--format", "dicom", "--out", str(out), *FAST,
                 env=ENV)
    assert result.exit_code == 0, result.stderr
    folders = [Path(line) for line in result.stdout.splitlines()]
    assert [f.name for f in folders] == ["xray", "ct", "mri_t1"]
    xray = pydicom.dcmread(sorted(folders[0].glob("*.dcm"))[0])
    assert xray.SeriesDescription.startswith("SYNTHETIC") and xray.Modality in ("DX", "CR", "OT")
    assert json.loads((out / "run.json").read_text())["arguments"]["joint"] is True


def test_generate_reads_prompts_from_stdin_and_writes_png(tmp_path):
    out = tmp_path / "png"
    proc = subprocess.run([sys.executable, "-m", "medm2g_cli", "generate", "--prompt-file", "-", "--n", "2",
                           "--format", "png", "--out", str(out), *FAST], input="Large right pleural effusion.\n"
                          "Normal chest.\n", capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 4 and all(p.endswith("xray.png") for p in proc.stdout.split())


def _synthesize(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "medm2g_cli", "synthesize-dataset", "--n", "6", "--batch-size", "1",
         "--modalities", "xray,ct,text", "--out", str(out), "--json", *FAST, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})


def test_synthesize_dataset_resumes_after_a_kill_without_duplicates_or_gaps(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    first = _synthesize(out)
    lines = [first.stdout.readline() for _ in range(2)]  # two cases finished
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert all(json.loads(line)["id"].startswith("synth-") for line in lines)
    resumed = _synthesize(out, "--resume")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    made_after = [json.loads(line)["id"] for line in stdout.splitlines()]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in manifest]
    assert ids == [f"synth-{i:06d}" for i in range(6)]  # no gap, no duplicate
    assert set(made_after).isdisjoint(json.loads(line)["id"] for line in lines)
    assert all(set(r["images"]) == {"xray", "ct"} and r["report"] for r in manifest)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all((out / r["file_name"]).is_file() for r in rows)
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    corpus = datasets.load_dataset("imagefolder", data_dir=str(out), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert corpus.num_rows == 12 and set(corpus["modality"]) == {"xray", "ct"} and corpus[0]["image"].size == (64, 64)
    fresh = tmp_path / "fresh"
    again = _synthesize(fresh)
    again.communicate(timeout=600)
    for case in ("synth-000000", "synth-000005"):  # the same seed per case whether resumed or not
        a = np.asarray(nib.load(out / "cases" / case / "xray_synthetic.nii.gz").dataobj)
        b = np.asarray(nib.load(fresh / "cases" / case / "xray_synthetic.nii.gz").dataobj)
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_demo_writes_a_page_with_every_task(cli, tmp_path):
    out = tmp_path / "demo"
    result = cli("demo", "--out", str(out), "--steps", "3")
    assert result.exit_code == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page == out / "index.html"
    html = page.read_text()
    titles = ("MRI T1 -&gt; CT", "chest CT -&gt; X-ray", "X-ray -&gt; text", "report -&gt; X-ray", "Joint generation")
    for title in titles:
        assert title in html
    sources = [part.split("'")[0] for part in html.split("<img src='")[1:]]
    assert len(sources) >= 8 and all((out / s).is_file() for s in sources)
    summary = json.loads((out / "demo.json").read_text())
    assert summary["panels"][0]["metrics"]["PSNR (dB)"] > 0


def test_synthesize_dataset_under_accelerate_launch_splits_cases_between_processes(tmp_path):
    out = tmp_path / "sharded"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               "-m", "medm2g_cli", "--device", "cpu", "synthesize-dataset", "--n", "4", "--batch-size", "1",
               "--modalities", "xray,text", "--out", str(out), "--json", *FAST]
    done = subprocess.run(command, env={**os.environ, **ENV, "HF_HOME": str(tmp_path / "hf")}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    made = [json.loads(line)["id"] for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(made) == [f"synth-{i:06d}" for i in range(4)]  # each case made once, by one of the processes
    assert "process 2/2" in done.stderr or "process 1/2" in done.stderr
    manifest = [json.loads(line)["id"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert manifest == [f"synth-{i:06d}" for i in range(4)]


def test_translate_a_plain_nifti_as_the_card_writes_it(brain_files, cli, tmp_path):
    plain = tmp_path / "mri.nii"  # written by nibabel alone: nothing in it says MR
    source = nib.load(brain_files / "mr_t1.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj, dtype=np.float32), source.affine), plain)
    result = cli("translate", str(plain), "--to", "ct", *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    out = Path(result.stdout.strip())
    assert out == tmp_path / "mri_ct.nii.gz" and nib.load(out).shape == source.shape
