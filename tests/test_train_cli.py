"""`medm2g train` end to end on the micro recipe: the VAE -> LDM chain, run records, and bad input."""

import json
import shutil

import pytest

from medm2g_core.data.cache import Cache, CacheConfig, build_cache
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.phantoms.world import PhantomConfig, prepare_phantom
from medm2g_core.training.recipe import recipe_path
from medm2g_core.training.text_vae_stage import reports_from_cache


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-world")
    prepare_phantom(root / "phantom", PhantomConfig(cases=20, brain_slices=6, xray_pixels=64), workers=1)
    build_cache(root / "phantom" / "manifest.jsonl", root / "cache", CacheConfig(resolution=32))
    return root


@pytest.fixture(scope="module")
def vae_run(world):
    from conftest import run_cli

    out = world / "vae"
    result = run_cli("--quiet", "train", "vae", "--modality", "image", "--recipe", "micro",
                     "--data", str(world / "cache"), "--out", str(out), "--steps", "30")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out / "model")
    return out


def test_image_vae_run_writes_model_metrics_and_record(vae_run):
    losses = [json.loads(line)["loss"] for line in (vae_run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 30
    assert sum(losses[:10]) / 10 > sum(losses[-10:]) / 10
    model = MedM2G.from_pretrained(vae_run / "model")
    assert set(model.components) == {"image_vae", "scheduler"}
    assert model["image_vae"].config.scaling_factor != 1.0  # measured on the training latents
    record = json.loads((vae_run / "run.json").read_text())
    assert record["steps"] == 30 and record["recipe"]["name"] == "micro"
    assert set(record["model_sha256"]) >= {"image_vae/config.json"}


def test_ldm_builds_on_the_vae_model(vae_run, world, cli):
    out = world / "ldm-ct"
    result = cli("--quiet", "train", "ldm", "--modality", "ct", "--recipe", "micro", "--data", str(world / "cache"),
                 "--model", str(vae_run / "model"), "--out", str(out), "--steps", "5")
    assert result.exit_code == 0, result.stderr
    model = MedM2G.from_pretrained(out / "model")
    assert set(model.components) == {"image_vae", "denoiser_ct", "self_guide_ct", "scheduler"}
    again = cli("--quiet", "train", "ldm", "--modality", "ct", "--recipe", "micro", "--data", str(world / "cache"),
                "--model", str(vae_run / "model"), "--out", str(out), "--steps", "5")
    assert again.exit_code == 2 and "--resume" in again.stderr
    finished = cli("--quiet", "train", "ldm", "--modality", "ct", "--recipe", "micro", "--data", str(world / "cache"),
                   "--model", str(vae_run / "model"), "--out", str(out), "--steps", "5", "--resume")
    assert finished.exit_code == 0, finished.stderr


def test_ldm_needs_a_model_with_the_vae(world, cli, tmp_path):
    result = cli("train", "ldm", "--modality", "ct", "--recipe", "micro", "--data", str(world / "cache"),
                 "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def _recipe_with(tmp_path, extra: str) -> str:
    path = tmp_path / "custom.toml"
    path.write_text(recipe_path("micro").read_text() + "\n" + extra + "\n")
    return str(path)


def test_bad_recipe_key_is_one_line_exit_2(world, cli, tmp_path):
    recipe = _recipe_with(tmp_path, "[trainer]\nspeed = 11")
    result = cli("train", "vae", "--modality", "image", "--recipe", recipe, "--data", str(world / "cache"),
                 "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "unknown key 'trainer'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_data_without_the_modality(world, cli, tmp_path):
    brain_only = tmp_path / "brain"
    prepare_phantom(brain_only, PhantomConfig(cases=2, tasks=("brain",), brain_slices=6, brain_xray=False), workers=1)
    result = cli("train", "vae", "--modality", "xray", "--recipe", "micro", "--data", str(brain_only),
                 "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "no xray images" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_init_path(world, cli, tmp_path):
    section = f'[image_vae]\ninit = "{tmp_path}/sd"\n\n[image_vae.model]'
    text = recipe_path("micro").read_text().replace("[image_vae.model]", section)
    (tmp_path / "init.toml").write_text(text)
    result = cli("train", "vae", "--modality", "image", "--recipe", str(tmp_path / "init.toml"),
                 "--data", str(world / "cache"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "sd" in result.stderr


def test_unknown_recipe_name(cli, tmp_path):
    result = cli("train", "vae", "--modality", "image", "--recipe", "huge", "--data", str(tmp_path),
                 "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "micro" in result.stderr


def test_text_vae_stage_through_the_cli(world, cli):
    shutil.rmtree(world / "tvae", ignore_errors=True)
    result = cli("--quiet", "train", "vae", "--modality", "text", "--recipe", "micro", "--data", str(world / "cache"),
                 "--out", str(world / "tvae"), "--steps", "5")
    assert result.exit_code == 0, result.stderr
    model = MedM2G.from_pretrained(world / "tvae" / "model")
    assert "text_vae" in model.components
    train_reports = len(reports_from_cache(Cache.open(world / "cache"))["train"])
    assert model.info["stage:text-vae"]["training_examples"] == train_reports


def test_text_vae_pretraining_corpus_from_the_recipe(world, cli, tmp_path):
    """``[text_vae] phantom_reports`` adds that many generated reports to the data's training reports."""
    recipe = recipe_path("micro").read_text().replace("[text_vae]\n", "[text_vae]\nphantom_reports = 300\n", 1)
    (tmp_path / "corpus.toml").write_text(recipe)
    result = cli("--quiet", "train", "vae", "--modality", "text", "--recipe", str(tmp_path / "corpus.toml"),
                 "--data", str(world / "cache"), "--out", str(tmp_path / "run"), "--steps", "2")
    assert result.exit_code == 0, result.stderr
    train_reports = len(reports_from_cache(Cache.open(world / "cache"))["train"])
    info = MedM2G.from_pretrained(tmp_path / "run" / "model").info
    assert info["stage:text-vae"]["training_examples"] == train_reports + 300
