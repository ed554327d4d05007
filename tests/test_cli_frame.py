"""The CLI contract: exit codes, one-line errors, --debug tracebacks, clean stdout, doctor keys."""

import json

import medm2g_core


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
