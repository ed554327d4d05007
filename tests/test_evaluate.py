"""``medm2g evaluate``: every task on a small phantom world with the embedded model and its baselines."""

import json
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import require_tool
from PIL import Image

from medm2g_core.data.cache import CacheConfig, build_cache
from medm2g_core.errors import InputError
from medm2g_core.evaluation.tasks import EvalOptions, TaskResult
from medm2g_core.phantoms.world import PhantomConfig, prepare_phantom

FAST = ("--steps", "2", "--seeds", "2", "--baseline-steps", "20")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")  # seed 30: the training chest films hold an effusion and normals
    manifest = prepare_phantom(root / "phantom", PhantomConfig(cases=16, seed=30, brain_slices=6, xray_pixels=64))
    build_cache(manifest, root / "cache", CacheConfig(resolution=64))
    return root


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


@pytest.mark.parametrize("task", ["mri-to-ct", "report", *(pytest.param(task, marks=pytest.mark.slow) for task in
                                                             ("mri-synthesis", "text-to-image", "xray-generation"))])
def test_every_task_writes_tables_pages_and_baselines(world, cli, tmp_path, task):
    out = tmp_path / task
    result = cli("--quiet", "evaluate", task, "--data", str(world / "cache"), "--out", str(out), "--split",
                 "train+val+test", "--cases", "6", *FAST, env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == task and saved["cases"] >= 1 and len(saved["summary"]) >= 2  # the model and baselines
    model_row = saved["seeds"]["MedM2G"]
    assert all(len(values) == 2 and np.isfinite(values).all() for values in model_row.values())
    assert "| MedM2G |" in result.stdout and "+/-" in result.stdout
    if task == "report":  # every row, baselines included, says how often its reports contradict or stray
        for rate in ("contradiction_rate", "foreign_finding_rate"):
            assert all(0 <= value <= 1 for row in saved["seeds"].values() for value in row[rate])
            assert f" {rate} " in result.stdout
    assert (out / "results.md").read_text().startswith(f"# {task}")
    page = _Images()
    page.feed((out / "index.html").read_text())
    assert page.sources and all((out / src).is_file() for src in page.sources)


def test_translation_metrics_are_sane(world, cli, tmp_path):
    out = tmp_path / "ct"
    result = cli("--quiet", "evaluate", "mri-to-ct", "--data", str(world / "cache"), "--out", str(out), "--split",
                 "train+val+test", "--cases", "2", *FAST, env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "results.json").read_text())["summary"]
    for method in summary.values():
        assert 5 < method["psnr"][0] < 60 and -1 < method["ssim"][0] <= 1 and method["mae_hu"][0] > 0
        assert method["fd_domain"][0] > 0  # no method reproduces the real slices' feature distribution
    assert summary["mean training slice"]["psnr"][1] == 0  # a baseline without randomness has no spread
    assert summary["supervised UNet (L1)"]["psnr"][1] == 0
    for method in summary.values():  # every volume read in three planes; 6 slices are too thin for a reformat SSIM
        assert all(5 < method[f"{plane}_psnr"][0] < 60 for plane in ("axial", "sagittal", "coronal"))
        assert 0 < method["through_plane_error"][0] < 3072 and -1 < method["axial_ssim"][0] <= 1
        assert "sagittal_ssim" not in method and "coronal_ssim" not in method
    assert summary["supervised UNet (L1)"]["through_plane_error"][1] == 0
    rows = sorted(path.name for path in out.glob("sample-*.png"))  # two cases' axial rows, the first case's reformats
    assert rows == [f"sample-{n}.png" for n in range(4)]
    reformat = Image.open(out / "sample-2.png")
    assert reformat.size == (128 * 5, 128)  # input, output, truth, UNet, error
    assert "sagittal" in (out / "index.html").read_text()


def test_samples_add_calibration_and_an_uncertainty_map_beside_the_error(world, cli, tmp_path):
    out = tmp_path / "samples"
    result = cli("--quiet", "evaluate", "mri-to-ct", "--data", str(world / "cache"), "--out", str(out), "--split",
                 "train+val+test", "--cases", "1", "--samples", "3", "--steps", "2", "--seeds", "1",
                 "--baseline-steps", "5", env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "results.json").read_text())["summary"]
    model = summary["MedM2G"]
    assert -1 <= model["uncertainty_spearman"][0] <= 1 and model["uncertainty_ause"][0] >= 0
    assert "uncertainty_spearman" not in summary["supervised UNet (L1)"]  # a deterministic baseline has no spread
    row = Image.open(out / "sample-0.png")
    assert row.size == (128 * 5, 128)  # input, output, truth, uncertainty, error
    refused = cli("evaluate", "mri-to-ct", "--data", str(world / "cache"), "--out", str(tmp_path / "x"),
                  "--samples", "0")
    assert refused.exit_code == 2 and "number of samples must be at least 1; got 0" in refused.stderr


def test_the_page_renders_in_a_headless_browser(world, cli, tmp_path):
    chromium = require_tool("chromium")
    out = tmp_path / "page"
    result = cli("--quiet", "evaluate", "report", "--data", str(world / "cache"), "--out", str(out), "--split",
                 "train+val+test", "--cases", "2", "--seeds", "1", "--steps", "2", env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.stderr
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=900,1200", (out / "index.html").as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1200, 900)
    strip = Image.open(out / "sample-0.png")  # the film tile is drawn where the page puts it: dark pixels appear
    assert strip.width >= 128 and (pixels < 60).mean() > 0.01 and pixels.std() > 20


def test_bad_requests_are_refused(world, cli, tmp_path):
    unknown = cli("evaluate", "segmentation", "--data", str(world / "cache"), "--out", str(tmp_path / "x"))
    assert unknown.exit_code == 2 and "tasks:" in unknown.stderr
    with pytest.raises(InputError, match="number of seeds must be at least 1; got 0") as refused:
        EvalOptions(seeds=0)
    assert refused.value.option == "seeds"
    with pytest.raises(InputError):
        EvalOptions(sources=("T1",), target="T1")
    result = TaskResult("report", 1)
    result.add("a", {"x": 1.0})
    result.add("a", {"x": 3.0})
    assert result.summary()["a"]["x"] == (2.0, 1.0)
