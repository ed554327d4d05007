"""The image VAE, image LDM and text LDM stages on a tiny phantom cache (4 cases, 32x32 slices)."""

import itertools
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from torch.utils.data import DataLoader

from medm2g_core.data.cache import Cache, CacheConfig, build_cache
from medm2g_core.errors import InputError
from medm2g_core.models.image_denoiser import ImageDenoiser, ImageDenoiserConfig
from medm2g_core.models.image_vae import ImageVAEConfig
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.schedule import DiffusionConfig
from medm2g_core.models.text_denoiser import TextDenoiser, TextDenoiserConfig
from medm2g_core.models.text_vae import TextVAE
from medm2g_core.models.tokenizer import train_tokenizer
from medm2g_core.phantoms.world import PhantomConfig, prepare_phantom
from medm2g_core.training.image_ldm_stage import ImageLDMStage
from medm2g_core.training.image_vae_stage import CacheSlices, ImageVAEStage, evaluate_reconstruction
from medm2g_core.training.stage import OptimConfig
from medm2g_core.training.text_ldm_stage import TextLDMStage
from medm2g_core.training.trainer import train as run_trainer

IMAGE_KEYS = ("xray", "ct", "mr_t1", "mr_t1ce", "mr_t2", "mr_flair", "mr_pd")
VAE = ImageVAEConfig(block_out_channels=(8, 16, 16), sample_size=32)  # 32x32 -> 4x8x8, 62k parameters
DENOISER = ImageDenoiserConfig(block_out_channels=(16, 32), attention_head_dim=4, cross_attention_dim=16,
                               context_tokens=2, sample_size=8)
TEXT = TextDenoiserConfig(latent_dim=32, tokens=4, hidden_dim=32, layers=2, heads=2, cross_attention_dim=16,
                          context_tokens=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    # Seed 159 puts one brain and one chest case in each of train and val.
    root = tmp_path_factory.mktemp("phantom")
    manifest = prepare_phantom(root / "world", PhantomConfig(cases=4, seed=159, brain_slices=6, xray_pixels=64))
    return Cache.open(build_cache(manifest, root / "cache", CacheConfig(resolution=32)))


def train(stage, steps: int, lr: float, batch_size: int) -> list[float]:
    """A bare training loop: AdamW over stage.trainable(), one generator for all of the stage's randomness."""
    optimiser = torch.optim.AdamW(stage.trainable(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(stage.dataset("train"), batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    epochs = (batch for _ in itertools.count() for batch in loader)  # reshuffled every epoch
    losses = []
    for batch in itertools.islice(epochs, steps):
        loss, _ = stage.loss(batch, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def vae_stage(cache, tmp_path_factory) -> tuple[ImageVAEStage, list[float], Path]:
    """One VAE over X-ray, CT and MRI slices, trained 300 steps and exported (measuring its scaling factor)."""
    stage = ImageVAEStage(cache, IMAGE_KEYS, VAE, seed=0)
    losses = train(stage, steps=300, lr=5e-3, batch_size=8)
    export = tmp_path_factory.mktemp("vae-export")
    stage.export(export)
    return stage, losses, export


def test_vae_stage_beats_the_mean_image(vae_stage):
    stage, losses, _ = vae_stage
    assert mean(losses[:10]) > mean(losses[-10:])
    train_mean = CacheSlices(stage.cache, "train", IMAGE_KEYS).images.mean(0)
    scores = evaluate_reconstruction(stage.vae, stage.dataset("val").images, train_mean)
    assert scores["psnr"] > scores["mean_baseline_psnr"] + 0.5, scores


def test_vae_stage_data_and_determinism(cache):
    stage = ImageVAEStage(cache, IMAGE_KEYS, VAE, seed=3)
    train_set = stage.dataset("train")
    assert train_set[0]["image"].shape == (1, 32, 32) and set(train_set.labels.tolist()) == {0, 1, 2, 3, 4, 5}
    batch = next(iter(DataLoader(train_set, batch_size=4)))
    twin = ImageVAEStage(cache, IMAGE_KEYS, VAE, seed=3)
    first, _ = stage.loss(batch, torch.Generator().manual_seed(7))
    assert first.item() == twin.loss(batch, torch.Generator().manual_seed(7))[0].item()
    assert first.item() != stage.loss(batch, torch.Generator().manual_seed(8))[0].item()
    with pytest.raises(InputError, match="no xray images in split test"):
        ImageVAEStage(cache, ("xray",), VAE).dataset("test")


def test_vae_stage_starts_from_an_rgb_vae(cache, tmp_path):
    AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2).save_pretrained(tmp_path / "sd-vae")
    stage = ImageVAEStage(cache, ("ct",), VAE, init=str(tmp_path / "sd-vae"))
    assert stage.name == "vae-ct" and stage.vae.config.in_channels == 1
    assert stage.loss(stage.dataset("train")[:4], torch.Generator().manual_seed(0))[0].item() > 0


def test_vae_stage_previews_and_exports(vae_stage, tmp_path):
    stage, _, export = vae_stage
    stage.sample(tmp_path / "samples", step=150)
    assert Image.open(tmp_path / "samples" / "vae-image-000150.png").size == (8 * 32, 2 * 32)
    vae = AutoencoderKL.from_pretrained(export / "image_vae", use_safetensors=True)
    images = stage.dataset("train").images
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    assert latents.shape[1:] == (4, 8, 8)
    assert latents.std().item() == pytest.approx(1.0, rel=0.05)  # measured on (up to 512 of) these slices


@pytest.fixture(scope="module")
def mri_stage(cache, vae_stage) -> tuple[ImageLDMStage, list[float]]:
    stage = ImageLDMStage(cache, "mri", vae_stage[0].vae, DENOISER, DiffusionConfig(), cond_dropout=0.1, seed=0)
    return stage, train(stage, steps=50, lr=1e-3, batch_size=8)


def test_mri_ldm_stage_learns(mri_stage):
    stage, losses = mri_stage
    assert mean(losses[:10]) > mean(losses[-10:])
    assert not any(p.requires_grad for p in stage.vae.parameters())
    trainable = {id(p) for p in stage.trainable()}
    assert trainable == {id(p) for p in stage.denoiser.parameters()}
    latents = stage.dataset("train").latents
    assert latents.shape[1:] == (4, 8, 8)
    assert set(stage.dataset("train").labels.tolist()) == {1, 2, 3, 4, 5}  # T1, T1ce, T2, FLAIR, PD


def test_ldm_loss_is_reproducible_and_drops_contrast(cache, vae_stage):
    def stage(dropout: float) -> ImageLDMStage:
        return ImageLDMStage(cache, "mri", vae_stage[0].vae, DENOISER, DiffusionConfig(), cond_dropout=dropout)

    batch = next(iter(DataLoader(stage(0.1).dataset("train"), batch_size=6)))
    same = [stage(0.1).loss(batch, torch.Generator().manual_seed(1))[0].item() for _ in range(2)]
    assert same[0] == same[1]
    # cond_dropout=1 drops every label to 0: the same loss as a batch without contrast labels.
    no_labels = batch | {"label": torch.zeros_like(batch["label"])}
    dropped = stage(1.0).loss(batch, torch.Generator().manual_seed(1))[0].item()
    assert dropped == stage(0.0).loss(no_labels, torch.Generator().manual_seed(1))[0].item()
    assert dropped != stage(0.0).loss(batch, torch.Generator().manual_seed(1))[0].item()


def test_ldm_stage_checks_its_inputs(cache, vae_stage):
    vae = vae_stage[0].vae
    with pytest.raises(InputError, match="key must be one of"):
        ImageLDMStage(cache, "pet", vae, DENOISER, DiffusionConfig())
    with pytest.raises(InputError, match="num_contrasts"):
        ImageLDMStage(cache, "mri", vae, ImageDenoiserConfig(**asdict(DENOISER) | {"num_contrasts": 0}),
                      DiffusionConfig())
    with pytest.raises(InputError, match="in_channels"):
        ImageLDMStage(cache, "ct", vae, ImageDenoiserConfig(**asdict(DENOISER) | {"in_channels": 8}), DiffusionConfig())


def test_ldm_stage_previews_and_exports(mri_stage, vae_stage, tmp_path):
    stage, _ = mri_stage
    stage.sample(tmp_path / "samples", step=50)
    assert Image.open(tmp_path / "samples" / "ldm-mri-000050.png").size == (8 * 32, 5 * 32)  # a row per contrast
    stage.export(tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["denoiser_mri", "scheduler"]
    denoiser = ImageDenoiser.from_pretrained(tmp_path / "export" / "denoiser_mri", use_safetensors=True)
    z, t, contrast = torch.randn(2, 4, 8, 8), torch.tensor([5, 600]), torch.tensor([1, 4])
    with torch.no_grad():
        torch.testing.assert_close(denoiser(z, t, contrast=contrast), stage.denoiser(z, t, contrast=contrast))
    # The exported parts assemble into a model folder.
    parts = MedM2G({"image_vae": vae_stage[0].vae, "denoiser_mri": denoiser})
    parts.save_pretrained(tmp_path / "model")
    assert sorted(MedM2G.from_pretrained(tmp_path / "model").components) == ["denoiser_mri", "image_vae"]


def test_ldm_stage_runs_in_the_shared_trainer(cache, vae_stage, tmp_path):
    vae = vae_stage[0].vae
    frozen = {key: value.clone() for key, value in vae.state_dict().items()}

    def stage() -> ImageLDMStage:
        return ImageLDMStage(cache, "mri", vae, DENOISER, DiffusionConfig(), seed=0, preview_steps=2)

    config = OptimConfig(steps=8, batch_size=8, lr=1e-3, ema_decay=0.9, log_every=4, sample_every=4,
                         checkpoint_every=4)
    result = run_trainer(stage(), config, tmp_path / "run", device="cpu", progress=False)
    assert result.steps == 8 and "mse" in result.metrics
    assert (tmp_path / "run" / "samples" / "ldm-mri-000004.png").is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "model").iterdir()) == ["denoiser_mri", "scheduler"]
    for key, value in vae.state_dict().items():
        assert torch.equal(value, frozen[key]), key  # the frozen VAE stays bit for bit
    # All of the stage's randomness comes from its seed and the trainer's generators: a second run is identical.
    exported = ImageDenoiser.from_pretrained(tmp_path / "run" / "model" / "denoiser_mri").state_dict()
    run_trainer(stage(), config, tmp_path / "again", device="cpu", progress=False)
    again = ImageDenoiser.from_pretrained(tmp_path / "again" / "model" / "denoiser_mri").state_dict()
    assert all(torch.equal(exported[key], again[key]) for key in exported)


@pytest.fixture(scope="module")
def text_vae(cache) -> TextVAE:
    reports = [case["report"] for case in cache.index["cases"]]
    tokenizer = train_tokenizer(reports, vocab_size=300)
    torch.manual_seed(0)
    return TextVAE(vocab_size=len(tokenizer), max_length=48, latent_dim=TEXT.latent_dim, encoder_hidden=32,
                   encoder_layers=1, encoder_heads=2, decoder_hidden=32, decoder_layers=1, decoder_heads=2,
                   tokenizer=tokenizer)


def test_text_ldm_stage(cache, text_vae, tmp_path):
    reports = [case["report"] for case in cache.index["cases"]]
    stage = TextLDMStage(reports * 8, text_vae, TEXT, DiffusionConfig(), seed=0)
    losses = train(stage, steps=50, lr=1e-3, batch_size=8)
    assert mean(losses[:10]) > mean(losses[-10:])
    assert stage.dataset("train").latents.std().item() == pytest.approx(1.0, rel=1e-4)
    assert stage.denoiser.config.scaling_factor == stage.scaling_factor() != 1.0
    stage.sample(tmp_path / "samples", step=50)
    assert len((tmp_path / "samples" / "ldm-text-000050.txt").read_text().splitlines()) == 4
    stage.export(tmp_path / "export")
    denoiser = TextDenoiser.from_pretrained(tmp_path / "export" / "denoiser_text", use_safetensors=True)
    assert denoiser.config.scaling_factor == stage.scaling_factor()
    model = MedM2G({"text_vae": text_vae, "denoiser_text": denoiser})
    model.save_pretrained(tmp_path / "model")
    loaded = MedM2G.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        torch.testing.assert_close(loaded["text_vae"].encode(reports[:2])[0], text_vae.encode(reports[:2])[0])


def test_text_ldm_stage_reads_reports_by_split(cache, text_vae):
    stage = TextLDMStage(cache, text_vae, TEXT, DiffusionConfig())
    assert len(stage.reports("train")) == 2 and len(stage.reports("val")) == 2
    with pytest.raises(InputError, match="no reports in split test"):
        stage.dataset("test")
    with pytest.raises(InputError, match="latent_dim"):
        TextLDMStage(cache, text_vae, TextDenoiserConfig(latent_dim=64, tokens=4), DiffusionConfig())


def test_balanced_vae_data_draws_each_modality_equally(cache):
    stage = ImageVAEStage(cache, IMAGE_KEYS, VAE, seed=0)
    plain = ImageVAEStage(cache, IMAGE_KEYS, VAE, seed=0, balance=False).dataset("train")
    data = stage.dataset("train")
    labels = torch.stack([data[i]["label"] for i in range(len(data))])
    images = torch.stack([data[i]["image"] for i in range(len(data))])
    xray = plain.sizes["xray"]
    groups = len(data.groups)
    assert groups == 3 and len(data) == groups * max(len(g) for g in data.groups)
    # Every third item is an X-ray (the first keys are xray then ct), and every slice of the data appears.
    assert all(torch.equal(images[i], plain.images[(i // 3) % xray]) for i in range(0, len(data), 3))
    assert (labels > 0).sum() == len(data) // 3  # the MRI third carries contrast labels
    seen = {hash(img.numpy().tobytes()) for img in images}
    assert seen == {hash(img.numpy().tobytes()) for img in plain.images}
