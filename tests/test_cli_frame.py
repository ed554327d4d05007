"""The CLI contract: exit codes, one-line errors, --debug tracebacks, clean stdout, doctor keys."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import medm2g_core

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "numpy", "pydicom", "nibabel")


def test_version_goes_to_stdout(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"medm2g {medm2g_core.__version__}"


def test_help_lists_every_command_group(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("doctor", "info"):
        assert command in result.stdout


def test_command_help_teaches_with_examples(cli):
    """A command's --help is its whole docstring (examples included); the listing keeps the one-line summary."""
    listing = cli("--help", env={"COLUMNS": "200"}).stdout
    assert "Evaluate a model on the paper's tasks with baselines" in listing
    result = cli("evaluate", "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Examples:" in result.stdout
    assert "medm2g evaluate ablation --variant" in result.stdout


def test_unknown_option_is_exit_2_with_one_line(cli):
    result = cli("--no-such-option")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--no-such-option" in lines[0]
    assert result.stdout == ""


def test_unknown_command_is_exit_2_with_one_line(cli):
    result = cli("frobnicate")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "frobnicate" in result.stderr


def test_missing_device_is_an_error_not_a_fallback(cli):
    result = cli("--device", "cuda:7", "info")
    assert result.exit_code == 2
    assert "cuda:7" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_malformed_device_is_exit_2(cli):
    result = cli("--device", "gpu", "info")
    assert result.exit_code == 2
    assert "unknown device 'gpu'" in result.stderr


def test_debug_prints_a_traceback(cli):
    result = cli("--debug", "--device", "cuda:7", "info")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "DeviceError" in result.stderr


def test_doctor_json_keys_and_only_data_on_stdout(cli):
    result = cli("doctor", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert set(report) == {
        "medm2g", "python", "platform", "dependencies", "torch", "paths", "optional", "models", "recipes"
    }
    assert report["medm2g"] == medm2g_core.__version__
    assert report["dependencies"]["torch"].startswith("2.")
    assert "cpu" in report["torch"]["devices"]
    assert set(report["paths"]) == {"medm2g_home", "models", "huggingface_cache", "hf_hub_offline"}
    names = {piece["name"] for piece in report["optional"]}
    assert {"dicom-codecs", "java", "dcm2niix", "dciodvfy"} <= names
    for piece in report["optional"]:
        assert set(piece) == {"name", "purpose", "present", "detail", "install"}
        assert piece["install"]


def test_medm2g_home_is_honoured(cli, tmp_path):
    (tmp_path / "models" / "my-model").mkdir(parents=True)
    (tmp_path / "models" / "my-model" / "model_index.json").write_text("{}")
    result = cli("info", "--json", env={"MEDM2G_HOME": str(tmp_path)})
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["models"] == ["my-model"]
    assert data["models_dir"] == str(tmp_path / "models")


def test_quiet_and_pipes_keep_stdout_to_data(cli):
    result = cli("--quiet", "info", "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)
    assert result.stderr == ""


def test_the_installed_entry_point_keeps_the_contract(cli):
    """The console script itself (not the in-process runner the other tests use): output, exit codes, streams."""
    script = Path(sys.executable).with_name("medm2g")
    assert script.is_file(), "medm2g is not installed beside this interpreter"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, f"medm2g {medm2g_core.__version__}", "")
    done = subprocess.run([str(script), "inspect", "/no/such.nii.gz"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "error: /no/such.nii.gz: no such file or folder"
    module = cli("info", "--json", isolated=True)  # python -m medm2g_cli
    assert module.exit_code == 0 and "recipes" in json.loads(module.stdout)


def test_engine_errors_name_the_problem_and_the_cli_names_the_flag(cli, tmp_path):
    """The engine speaks to a Python user (no flag he never typed) and says which parameter is at fault; the CLI
    adds the flag of that parameter, and only one the command that ran has."""
    import nibabel as nib
    import numpy as np

    from medm2g_cli.app import engine_message
    from medm2g_core import api
    from medm2g_core.errors import InputError

    image = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), image)
    with pytest.raises(InputError) as refused:
        api.translate(image, to="ct", steps=0)
    assert (str(refused.value), refused.value.option) == ("denoising steps must be within 1-1000; got 0", "steps")
    result = cli("translate", str(image), "--to", "ct", "--steps", "0")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.strip() == "error: denoising steps must be within 1-1000; got 0 (--steps)"
    assert engine_message(InputError("x", option="variants"), ["evaluate", "ablation"]) == "x (--variant)"
    assert engine_message(InputError("x", option="device"), ["--device", "cpu", "train", "all"]) == "x (--device)"
    assert engine_message(InputError("x", option="batch_size"), ["synthesize-dataset"]) == "x (--batch-size)"
    assert engine_message(InputError("x", option="steps"), ["inspect", "a.nii"]) == "x"  # inspect has no --steps


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["translate", "--help"], ["train", "cross", "--help"],
                                  ["evaluate", "--help"], ["prepare", "phantom", "--help"], ["weights", "--help"]])
def test_help_and_version_start_without_the_engine(argv):
    """Help and version import no numerical library: the engine is imported when a command runs."""
    code = (f"import contextlib, io, sys\nfrom medm2g_cli.app import run\n"
            f"with contextlib.redirect_stdout(io.StringIO()) as out:\n    code = run({argv!r})\n"
            f"print(code, len(out.getvalue()), ' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    code, length, *imported = done.stdout.split()
    assert (code, imported) == ("0", []), done.stderr
    assert int(length) > 10
