"""What a new user trips over, through the CLI: batch translation, progress in logs, one-shot training, global
options anywhere, names in any case, the built-in model in `info`, `generate --json`, flag help, clean corpora."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medm2g_core.io.load import read_volume
from medm2g_core.io.nifti import write_nifti
from medm2g_core.io.preview import montage
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.phantoms.world import PhantomConfig, make_case, prepare_phantom
from medm2g_core.sampling.generate import GenerateOptions
from medm2g_core.sampling.translate import TranslateOptions

FAST = ("--steps", "2")
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """A batch folder: two brain T1 volumes and a file that only looks like NIfTI (sorted last)."""
    root = tmp_path_factory.mktemp("batch")
    for number, seed in enumerate((11, 12)):
        images, _, _, _ = make_case("brain", seed, PhantomConfig(brain_slices=6, xray_pixels=64))
        write_nifti(images["mr_t1"], root / f"case{number}.nii.gz")
        if number == 0:
            write_nifti(images["ct"], root.parent / "ct.nii.gz")
    (root / "zz-broken.nii.gz").write_bytes(b"not a nifti")
    return root


def test_batch_translates_every_case_with_one_model_load_and_keeps_going(cases, cli, tmp_path):
    out = tmp_path / "ct"
    result = cli("translate", "--batch", str(cases), "--to", "ct", "--out", str(out), "--keep-going", "--json",
                 *FAST, env=ENV)
    assert result.exit_code == 2  # a case failed, on bad input
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [
        ("case0.nii.gz", "ok"), ("case1.nii.gz", "ok"), ("zz-broken.nii.gz", "failed")]
    assert "not a readable NIfTI file" in rows[2]["error"]
    assert result.stderr.count("model: embedded default") == 1
    assert "2 of 3 cases translated" in result.stderr and "error: 1 of 3 cases failed" in result.stderr
    made = [read_volume(out / f"case{n}_ct.nii.gz") for n in (0, 1)]
    assert all(v.modality == "CT" and v.synthetic for v in made)
    assert not np.allclose(made[0].data, made[1].data)  # each case from its own input
    record = json.loads((out / "batch.json").read_text())
    assert [c["status"] for c in record["cases"]] == ["ok", "ok", "failed"] and record["synthetic"]


def test_batch_with_samples_writes_an_uncertainty_map_per_case_on_its_grid(cases, cli, tmp_path):
    out, maps = tmp_path / "ct", tmp_path / "std"
    result = cli("translate", "--batch", str(cases), "--to", "ct", "--out", str(out), "--keep-going", "--json",
                 "--samples", "2", "--uncertainty", str(maps), *FAST, env=ENV)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    for number, row in enumerate(rows[:2]):
        made, spread = read_volume(row["output"]), read_volume(row["uncertainty"])
        assert Path(row["uncertainty"]) == maps / f"case{number}_ct_uncertainty.nii.gz"
        assert spread.shape == made.shape and np.array_equal(spread.affine, made.affine)
        assert spread.data.min() >= 0 and spread.data.max() > 1.0  # HU: two samples disagree somewhere
    refused = cli("translate", "--batch", str(cases), "--to", "ct", "--out", str(tmp_path / "r"), "--uncertainty",
                  str(tmp_path / "rs"), *FAST, env=ENV)
    assert refused.exit_code == 2 and "--uncertainty needs --samples 2 or more" in refused.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "rs").exists()


def test_batch_stops_at_the_first_failure_without_keep_going(cases, cli, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(cases, folder)
    (folder / "a-broken.nii.gz").write_bytes(b"junk")  # sorted first
    result = cli("translate", "--batch", str(folder), "--to", "ct", "--out", str(tmp_path / "out"), *FAST, env=ENV)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {folder / 'a-broken.nii.gz'}")
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_progress_is_plain_lines_with_eta_when_stderr_is_a_log(cases, cli, tmp_path):
    result = cli("translate", str(cases / "case0.nii.gz"), "--to", "ct", "--out", str(tmp_path / "ct.nii.gz"),
                 "--steps", "4", env=ENV)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("translate to ct (denoising steps)")]
    assert len(lines) >= 2  # the first step and the end
    assert "about" in lines[0] and "left" in lines[0]  # an ETA once work has started
    assert lines[-1].endswith("elapsed") and ": 4/4 (100%)" in lines[-1]
    assert "\x1b[" not in result.stderr and "━" not in result.stderr  # no terminal codes or bars in a log


def test_to_mri_without_contrast_says_which_it_makes(cases, cli):
    result = cli("translate", str(cases.parent / "ct.nii.gz"), "--to", "MRI", *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    assert "--to mri without --contrast: making T1" in result.stderr
    out = Path(result.stdout.strip())
    assert out.name == "ct_t1.nii.gz" and read_volume(out).contrast == "T1"


def test_names_are_taken_in_any_case():
    options = TranslateOptions("CT")
    assert (options.target, TranslateOptions("Mri", "flair").contrast) == ("ct", "FLAIR")
    assert TranslateOptions("mr", "t1CE").contrast == "T1ce"
    generated = GenerateOptions(("X-Ray", "CT", "MRI"), "pd")
    assert (generated.modalities, generated.contrast) == (("xray", "ct", "mri"), "PD")


def test_modality_option_in_any_case_and_global_options_after_the_command(cases, cli):
    path = str(cases / "case0.nii.gz")
    lower = cli("inspect", path, "--modality", "mri", "--json", "--device", "cpu")
    assert lower.exit_code == 0, lower.stderr
    assert json.loads(lower.stdout)["modality"] == "MR"
    quiet = cli("inspect", path, "-q", "--device=cpu")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    missing = cli("inspect", path, "--device", "cuda:7")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: device 'cuda:7' was requested") and "--help" not in missing.stderr


def test_info_names_the_built_in_default_model(cli):
    result = cli("info")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "default model: built in (used when --model is not given)"
    data = json.loads(cli("info", "--json").stdout)
    assert MedM2G.from_pretrained(data["default_model"]).components  # the folder it names is a model


def test_generate_json_prints_a_line_per_image(cli, tmp_path):
    result = cli("generate", "Small right pleural effusion.", "--modality", "X-ray,CT", "--n", "2", "--json",
                 "--out", str(tmp_path / "g"), *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["seed"], r["modality"]) for r in rows] == [(0, "xray"), (0, "ct"), (1, "xray"), (1, "ct")]
    assert all(Path(r["path"]).is_file() and r["prompt"] == "Small right pleural effusion." for r in rows)


def test_generate_samples_write_their_mean_and_uncertainty_beside_each_image(cli, tmp_path):
    """--samples 3 --uncertainty: each image is the mean of seeds 3k .. 3k+2 and its map their spread, same grid."""
    prompt = "Small right pleural effusion."
    result = cli("generate", prompt, "--modality", "xray", "--n", "2", "--samples", "3", "--uncertainty", "--json",
                 "--out", str(tmp_path / "g"), *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["seed"], r["samples"]) for r in rows] == [(0, 3), (3, 3)]
    single = cli("generate", prompt, "--modality", "xray", "--n", "6", "--json", "--out", str(tmp_path / "one"),
                 *FAST, env=ENV)
    films = [read_volume(json.loads(line)["path"]).data for line in single.stdout.splitlines()]
    for k, row in enumerate(rows):
        mean, spread = read_volume(row["path"]), read_volume(row["uncertainty"])
        group = np.stack(films[3 * k:3 * k + 3])
        np.testing.assert_allclose(mean.data, group.mean(axis=0), atol=0.02 * np.ptp(group))
        np.testing.assert_allclose(spread.data, group.std(axis=0), atol=0.02 * np.ptp(group))
        assert spread.data.mean() > 0 and spread.synthetic and np.array_equal(spread.affine, mean.affine)
        descrip = nib.load(row["uncertainty"]).header["descrip"].item().decode()
        assert descrip.startswith("SYNTHETIC uncertainty") and mean.provenance["samples"] == "3"
    refused = cli("generate", prompt, "--uncertainty", "--out", str(tmp_path / "r"), *FAST, env=ENV)
    assert refused.exit_code == 2 and "--uncertainty needs --samples 2 or more" in refused.stderr
    assert not (tmp_path / "r").exists()


def test_flags_show_no_type_in_help(cli):
    text = cli("convert", "--help", env={"COLUMNS": "120"}).stdout
    assert "<bool>" not in text
    assert "--overwrite" in text and "<str>" in text  # options with a value keep their type


def test_corpus_pixels_carry_no_burned_in_label(cli, tmp_path):
    out = tmp_path / "corpus"
    result = cli("synthesize-dataset", "--n", "1", "--modalities", "xray,text", "--out", str(out), *FAST, env=ENV)
    assert result.exit_code == 0, result.stderr
    case = out / "cases" / "synth-000000"
    assert sorted(p.name for p in case.iterdir() if "xray" in p.name) == ["xray_synthetic.nii.gz",
                                                                           "xray_synthetic.png"]
    volume = read_volume(case / "xray_synthetic.nii.gz")
    png = Image.open(case / "xray_synthetic.png")
    np.testing.assert_array_equal(np.asarray(png), montage(volume))  # the image, and nothing drawn on it
    assert "SYNTHETIC" in png.text["Description"] and volume.synthetic
    card = (out / "README.md").read_text()
    assert "Every image and report here is synthetic" in card and "no** burned-in label" in card
    row = json.loads((out / "metadata.jsonl").read_text().splitlines()[0])
    assert row["file_name"].endswith("xray_synthetic.png") and row["synthetic"] is True


@pytest.mark.slow  # every stage at micro scale, twice (~1 min): CI runs it with -m slow
def test_train_all_runs_every_stage_and_resumes(cli, tmp_path):
    prepare_phantom(tmp_path / "phantom", PhantomConfig(cases=12, brain_slices=4, xray_pixels=64), workers=1)
    common = ("train", "all", "--recipe", "micro", "--data", str(tmp_path / "phantom"), "--out",
              str(tmp_path / "run"), "--steps", "2")
    first = cli(*common, env=ENV)
    assert first.exit_code == 0, first.stderr
    assert first.stdout.strip() == str(tmp_path / "run" / "model")
    model = MedM2G.from_pretrained(tmp_path / "run" / "model")
    assert {"image_vae", "text_vae", "denoiser_xray", "denoiser_ct", "denoiser_mri", "denoiser_text",
            "prompt_encoder_text", "context_encoder_ct", "ood_reference"} <= set(model.components)
    assert (tmp_path / "run" / "cache").is_dir() and not (tmp_path / "run" / "align" / "cache").exists()
    again = cli(*common, env=ENV)
    assert again.exit_code == 2 and "--resume" in again.stderr
    shutil.rmtree(tmp_path / "run" / "cross")
    shutil.rmtree(tmp_path / "run" / "model")
    resumed = cli(*common, "--resume", env=ENV)
    assert resumed.exit_code == 0, resumed.stderr
    assert "[7/9] align: finished before, kept" in resumed.stderr
    assert "[8/9] cross: training in" in resumed.stderr
    assert "[9/9] ood: training in" in resumed.stderr and "2 stage(s) trained now" in resumed.stderr  # stale: redone
    assert (tmp_path / "run" / "model" / "model_index.json").is_file()
