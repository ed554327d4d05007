"""Packaging: the recipes shipped in the package match the top-level ones, and a built wheel works on its own."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PACKAGES = ("medm2g_core", "medm2g_cli")


def _toml_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob("*.toml")}


def test_packaged_recipes_match_top_level():
    top, packaged = _toml_files(REPO / "recipes"), _toml_files(REPO / "medm2g_core" / "recipes")
    assert top
    differ = sorted(name for name in top.keys() | packaged.keys() if top.get(name) != packaged.get(name))
    assert not differ, (f"medm2g_core/recipes is the packaged copy of recipes/ and differs in {differ}: "
                        "rm medm2g_core/recipes/*.toml && cp recipes/*.toml medm2g_core/recipes/")


@dataclass
class Install:
    wheel: Path
    source_files: list[str]  # every file of the packages in the tree the wheel was built from, as wheel paths
    bin: Path  # the scratch venv's scripts folder
    site_packages: Path
    work: Path  # a folder outside the repository to run commands in
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, cwd=self.work, env=self.env, timeout=600)


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Install:
    """Build the wheel from a copy of the source and install it, without dependencies, into a fresh venv."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.is_relative_to(REPO)
    # A copy: an in-tree build would write build/ and medm2g.egg-info into the checkout.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    source_files = sorted(path.relative_to(source).as_posix() for package in PACKAGES
                          for path in (source / package).rglob("*") if path.is_file())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = (root / "dist").glob("medm2g-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=600)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=600)
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies come from this test environment's site-packages. A line of a .pth file only appends its
    # folder to sys.path, after the venv's own site-packages: the .pth files inside that folder are not run, so
    # the editable install's finder there (__editable__*.pth) never maps medm2g_core to the source tree.
    deps = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "medm2g-test-dependencies.pth").write_text("".join(f"{path}\n" for path in deps))

    work = root / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {"MEDM2G_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    return Install(wheel, source_files, venv / "bin", site_packages, work, env)


def test_wheel_holds_every_package_file(install):
    names = set(zipfile.ZipFile(install.wheel).namelist())
    missing = [name for name in install.source_files if name not in names]
    assert not missing, f"not in the wheel (pyproject.toml [tool.setuptools.package-data]): {missing}"
    assert {f"medm2g_core/recipes/{name}" for name in _toml_files(REPO / "recipes")} <= names
    assert "medm2g_core/default_model/model_index.json" in names


@pytest.mark.slow  # three cold starts of the CLI (torch imports): 25 s on an idle machine, over 60 s on a busy one
def test_installed_wheel_runs_the_demo_and_trains_from_a_shipped_recipe(install):
    where = install.run(str(install.bin / "python"), "-c",
                        "import medm2g_cli, medm2g_core; print(medm2g_core.__file__); print(medm2g_cli.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(install.site_packages) for line in where.stdout.splitlines())

    info = install.run(str(install.bin / "medm2g"), "info", "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["recipes"] == sorted(name.removesuffix(".toml") for name in _toml_files(REPO / "recipes"))
    assert data["default_model"] and Path(data["default_model"]).is_relative_to(install.site_packages)

    prepared = install.run(str(install.bin / "medm2g"), "--quiet", "prepare", "phantom", "--out", "phantom",
                           "--cases", "2", "--tasks", "chest", "--workers", "1", "--xray-pixels", "64")
    assert prepared.returncode == 0, prepared.stderr
    trained = install.run(str(install.bin / "medm2g"), "--quiet", "train", "vae", "--modality", "image",
                          "--recipe", "micro", "--data", "phantom", "--out", "run", "--steps", "1")
    assert trained.returncode == 0, trained.stderr
    assert (install.work / "run" / "model" / "model_index.json").is_file()
    record = json.loads((install.work / "run" / "run.json").read_text())
    assert record["recipe"]["name"] == "micro" and record["steps"] == 1

    demo = install.run(str(install.bin / "medm2g"), "--quiet", "demo", "--out", "demo", "--steps", "5")
    assert demo.returncode == 0, demo.stderr
    page = install.work / "demo" / "index.html"
    assert (install.work / demo.stdout.strip()).resolve() == page.resolve()
    assert "synthetic" in page.read_text(encoding="utf-8").lower()
