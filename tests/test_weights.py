"""Model resolution (embedded default, folder, imported name, Hub id) and `medm2g weights`, offline, on a tiny model
and a Hugging Face cache built by hand in the Hub's layout."""

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from huggingface_hub import constants

from medm2g_core import hub
from medm2g_core.errors import InputError, ModelError
from medm2g_core.hub import download_model, import_model, list_models, load_model, model_folder, verify_model
from medm2g_core.models.image_vae import ImageVAEConfig, build_image_vae
from medm2g_core.models.medm2g import MODEL_INDEX, MedM2G

pytestmark = pytest.mark.usefixtures("one_thread")

REV1 = hashlib.sha1(b"release v1").hexdigest()
REV2 = hashlib.sha1(b"release v2").hexdigest()
WEIGHTS = "image_vae/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Two releases of a tiny VAE-only model stored in fp16, told apart by ``info["release"]``."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    vae = build_image_vae(ImageVAEConfig(block_out_channels=(8,), sample_size=16)).half()
    folders = {}
    for release in ("v1", "v2"):
        model = MedM2G({"scheduler": DDPMScheduler(), "image_vae": vae}, info={"release": release})
        folders[release] = model.save_pretrained(root / release)
    return folders


@dataclass
class Site:
    """A machine without internet: its own MEDM2G_HOME and Hugging Face cache."""

    home: Path
    cache: Path

    def cache_repo(self, repo: str, model: Path, commit: str, ref: str | None = "main") -> Path:
        """Put ``model`` in the cache as snapshot ``commit`` of ``repo`` (real files, no blobs), ``ref`` naming it."""
        repo_dir = self.cache / f"models--{repo.replace('/', '--')}"
        snapshot = shutil.copytree(model, repo_dir / "snapshots" / commit)
        if ref is not None:
            (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
            (repo_dir / "refs" / ref).write_text(commit)
        return snapshot


@pytest.fixture
def site(tmp_path, monkeypatch) -> Site:
    site = Site(tmp_path / "home", tmp_path / "hf-cache")
    monkeypatch.setenv("MEDM2G_HOME", str(site.home))
    monkeypatch.setenv("HF_HUB_CACHE", str(site.cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these at import time; the CLI subprocesses read the environment above.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(site.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return site


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_a_hub_id_loads_offline_from_the_cache(site, tiny):
    snapshot = site.cache_repo("org/name", tiny["v2"], REV2)
    model = load_model("org/name")
    assert set(model.components) == {"image_vae", "scheduler"}
    assert model["image_vae"].dtype == torch.float32  # stored in fp16; float32 is the fast path on CPU
    assert model.info["release"] == "v2" and model.info["model_id"] == "org/name"
    assert Path(model.info["model_path"]) == snapshot.resolve()
    assert model.info["model_sha256"] == hashlib.sha256((snapshot / MODEL_INDEX).read_bytes()).hexdigest()
    assert download_model("org/name") == snapshot.resolve()  # already cached: nothing to fetch
    assert verify_model("org/name") == {"model": "org/name", "path": str(snapshot.resolve()),
                                        "components": {"scheduler": "ok", "image_vae": "ok"}, "files": 3}


def test_a_revision_pins_the_snapshot(site, tiny):
    site.cache_repo("org/name", tiny["v1"], REV1, ref="v1")
    site.cache_repo("org/name", tiny["v2"], REV2)
    assert load_model("org/name").info["release"] == "v2"
    assert load_model(f"org/name@{REV1}").info["release"] == "v1"
    assert load_model("org/name@v1").info["release"] == "v1"


def test_an_uncached_repo_offline_is_a_model_error(site):
    with pytest.raises(ModelError, match="offline"):
        load_model("org/missing")
    with pytest.raises(ModelError, match="offline"):
        download_model("org/missing")


def test_a_tampered_cached_weight_is_refused(site, tiny, cli):
    snapshot = site.cache_repo("org/name", tiny["v1"], REV1)
    _flip_last_byte(snapshot / WEIGHTS)
    with pytest.raises(ModelError, match=rf"{WEIGHTS}: sha256 does not match"):
        load_model("org/name")
    result = cli("weights", "verify", "org/name")
    assert result.exit_code == 1
    assert WEIGHTS in result.stderr and result.stdout == ""


def test_a_local_folder_loads(site, tiny):
    model = load_model(str(tiny["v1"]), components=["image_vae"])
    assert list(model.components) == ["image_vae"]
    assert model.info["model_id"] == str(tiny["v1"]) and model.info["model_path"] == str(tiny["v1"])


def test_bad_model_specs_are_input_errors(site, tiny):
    with pytest.raises(InputError, match="not a folder, not a model imported"):
        model_folder("no/such/folder")
    with pytest.raises(InputError, match="not a Hub id"):
        download_model("./nowhere")
    with pytest.raises(InputError, match="bad model name"):
        import_model(tiny["v1"], "My Model")


def test_import_then_load_by_name(site, tiny, cli):
    result = cli("--quiet", "weights", "import", str(tiny["v1"]), "--name", "phantom")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(site.home / "models" / "phantom")
    assert load_model("phantom").info["release"] == "v1"
    again = cli("weights", "import", str(tiny["v2"]), "--name", "phantom")
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    replaced = cli("--quiet", "weights", "import", str(tiny["v2"]), "--name", "phantom", "--overwrite")
    assert replaced.exit_code == 0, replaced.stderr
    assert load_model("phantom").info["release"] == "v2"
    verified = cli("--quiet", "weights", "verify", "phantom")
    assert verified.exit_code == 0 and verified.stdout.strip() == "ok: 3 files"


def test_list_shows_imported_and_cached_models(site, tiny, cli):
    import_model(tiny["v1"], "phantom")
    site.cache_repo("org/name", tiny["v2"], REV2)
    pipeline = site.home / "pipeline"
    pipeline.mkdir(parents=True)
    (pipeline / MODEL_INDEX).write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    site.cache_repo("org/pipeline", pipeline, REV1)
    result = cli("weights", "list", "--json")
    assert result.exit_code == 0, result.stderr
    models = {(m["name"], m["source"]): m for m in json.loads(result.stdout)}
    assert models[("phantom", "local")]["path"] == str(site.home / "models" / "phantom")
    cached = models[("org/name", "hub-cache")]
    assert cached["revision"] == REV2 and sorted(cached["components"]) == ["image_vae", "scheduler"]
    assert "revision" not in models[("phantom", "local")] and cached["size_mb"] >= 0
    assert not [name for name, _ in models if name == "org/pipeline"]


def test_the_embedded_default_model(site, tiny, monkeypatch):
    monkeypatch.setattr(hub, "DEFAULT_MODEL_DIR", site.home / "no-default")
    with pytest.raises(ModelError, match="the embedded default model is not installed"):
        load_model(None)
    assert list_models() == []  # no default, nothing imported, and no Hugging Face cache at all
    monkeypatch.setattr(hub, "DEFAULT_MODEL_DIR", tiny["v1"])
    assert load_model("default").info["model_id"] == "default"
    assert verify_model(None)["model"] == "default"
    assert [(m["name"], m["source"]) for m in list_models()] == [("default", "embedded")]


def test_pack_halves_weights_but_keeps_the_ood_statistics_in_float32(tmp_path):
    from safetensors.torch import load_file

    from medm2g_core.hub import pack_model
    from medm2g_core.models.ood_reference import OODReference

    torch.manual_seed(0)
    reference = OODReference(features=8)
    reference.precision_ct.copy_(torch.randn(8, 8) * 1000 + 1 / 3)  # float16 keeps ~3 digits: 1000.33 -> 1000.5
    model = MedM2G({"image_vae": build_image_vae(ImageVAEConfig(block_out_channels=(8,), sample_size=16)),
                    "ood_reference": reference})
    folder = pack_model(str(model.save_pretrained(tmp_path / "full")), tmp_path / "packed")
    stored = {name: load_file(folder / name / "diffusion_pytorch_model.safetensors")
              for name in ("image_vae", "ood_reference")}
    assert {t.dtype for t in stored["image_vae"].values()} == {torch.float16}
    assert {t.dtype for t in stored["ood_reference"].values()} == {torch.float32}
    packed = MedM2G.from_pretrained(folder)
    assert packed.info["stored_dtype"] == "float16"
    assert torch.equal(packed["ood_reference"].precision_ct, reference.precision_ct)
