"""Image VAE, image and text denoisers, noise schedule, sampling loop and the MedM2G container (tiny random models)."""

import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from medm2g_core.errors import InputError, ModelError, OutputExistsError
from medm2g_core.models.image_denoiser import ImageDenoiser, ImageDenoiserConfig, adapt_pretrained_unet
from medm2g_core.models.image_vae import (
    ImageVAEConfig,
    adapt_pretrained_vae,
    build_image_vae,
    latent_means,
    measure_scaling_factor,
)
from medm2g_core.models.medm2g import MODEL_INDEX, MedM2G, with_global_path
from medm2g_core.models.sampler import SamplingConfig, Stream, make_scheduler, sample
from medm2g_core.models.schedule import DiffusionConfig, make_train_scheduler, training_target
from medm2g_core.models.text_denoiser import TextDenoiser, TextDenoiserConfig
from medm2g_core.training.image_ldm_stage import PREVIEWS_PER_LABEL, ImageLDMStage
from medm2g_core.vocabulary import MRI_CONTRASTS

VAE = ImageVAEConfig(block_out_channels=(8, 16, 16), sample_size=32)  # 32x32 -> 4x8x8
DENOISER = ImageDenoiserConfig(block_out_channels=(16, 32), attention_head_dim=4, cross_attention_dim=16,
                               context_tokens=2, sample_size=8)
TEXT = TextDenoiserConfig(latent_dim=32, tokens=4, hidden_dim=32, layers=2, heads=2, cross_attention_dim=16,
                          context_tokens=2)


def seeded(build, seed: int = 0):
    torch.manual_seed(seed)
    return build()


@pytest.fixture
def denoiser() -> ImageDenoiser:
    return seeded(lambda: ImageDenoiser(**asdict(DENOISER))).eval()


@pytest.fixture
def text_denoiser() -> TextDenoiser:
    return seeded(lambda: TextDenoiser(**asdict(TEXT))).eval()


def test_image_vae_shapes_and_scaling_factor():
    vae = seeded(lambda: build_image_vae(VAE))
    images = torch.rand(6, 1, 32, 32) * 2 - 1
    means = latent_means(vae, images, batch_size=4)
    assert means.shape == (6, 4, 8, 8)
    assert vae.decode(means).sample.shape == (6, 1, 32, 32)
    factor = measure_scaling_factor(vae, images)
    assert (means * factor).std().item() == pytest.approx(1.0, rel=1e-4)


def test_adapted_rgb_vae_sees_grey_as_the_rgb_vae_does(tmp_path):
    rgb = seeded(lambda: AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4,
    )).eval()
    rgb.save_pretrained(tmp_path / "sd-vae", safe_serialization=True)
    grey = adapt_pretrained_vae(tmp_path / "sd-vae").eval()
    assert (grey.config.in_channels, grey.config.out_channels) == (1, 1)
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        grey_latents = grey.encode(image).latent_dist.mean
        torch.testing.assert_close(grey_latents, rgb.encode(image.expand(-1, 3, -1, -1)).latent_dist.mean)
        decoded = grey.decode(grey_latents).sample
        torch.testing.assert_close(decoded, rgb.decode(grey_latents).sample.mean(dim=1, keepdim=True))


def test_adapt_pretrained_vae_reports_a_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="cannot load"):
        adapt_pretrained_vae(tmp_path / "nothing")


def test_image_denoiser_shapes_context_and_contrast(denoiser):
    latents, timesteps = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    with torch.no_grad():
        unconditional = denoiser(latents, timesteps)
        assert unconditional.shape == latents.shape
        torch.testing.assert_close(unconditional, denoiser(latents, timesteps, context=denoiser.null(3)))
        context = torch.randn(3, 5, DENOISER.cross_attention_dim)  # any number of context tokens
        assert not torch.allclose(unconditional, denoiser(latents, timesteps, context=context))
        none = torch.zeros(3, dtype=torch.long)
        torch.testing.assert_close(unconditional, denoiser(latents, timesteps, contrast=none))
        assert not torch.allclose(unconditional, denoiser(latents, timesteps, contrast=torch.tensor([1, 3, 5])))
    assert denoiser.null(3).shape == (3, DENOISER.context_tokens, DENOISER.cross_attention_dim)


def test_denoiser_without_contrasts_refuses_a_contrast():
    plain = ImageDenoiser(**asdict(DENOISER) | {"num_contrasts": 0})
    assert plain.unet.class_embedding is None
    with pytest.raises(ValueError, match="no contrast"):
        plain(torch.randn(1, 4, 8, 8), torch.tensor([1]), contrast=torch.tensor([1]))


@pytest.mark.parametrize("model", ["denoiser", "text_denoiser"])
def test_cross_attention_parameters_are_exactly_attn2(model, request):
    module = request.getfixturevalue(model)
    cross = {id(p) for p in module.cross_attention_parameters()}
    attn2 = {id(p) for name, p in module.named_parameters() if ".attn2." in name}
    assert cross and cross == attn2
    assert len(cross) == len(module.cross_attention_parameters())  # no duplicates
    assert len(cross) < len(list(module.parameters()))


def test_text_denoiser_shapes_and_context(text_denoiser):
    latents, timesteps = torch.randn(3, TEXT.latent_dim), torch.tensor([0, 500, 999])
    with torch.no_grad():
        unconditional = text_denoiser(latents, timesteps)
        assert unconditional.shape == latents.shape
        torch.testing.assert_close(unconditional, text_denoiser(latents, timesteps, context=text_denoiser.null(3)))
        context = torch.randn(3, 7, TEXT.cross_attention_dim)
        assert not torch.allclose(unconditional, text_denoiser(latents, timesteps, context=context))
        assert not torch.allclose(unconditional, text_denoiser(latents, torch.tensor([1, 2, 3])))


def _sd_layout_unet(cross_attention_dim: int) -> UNet2DConditionModel:
    return seeded(lambda: UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4, cross_attention_dim=cross_attention_dim, norm_num_groups=8,
    ))


@pytest.mark.parametrize("kind", ["image", "text"])
def test_the_zero_initialised_global_path_starts_as_the_denoiser_and_then_reads_the_context(kind, request):
    """A guided copy computes exactly what its denoiser computes until the global path's LayerNorm moves; then a
    different context (pooled into the timestep embedding) changes the output even without cross-attention."""
    base = request.getfixturevalue("denoiser" if kind == "image" else "text_denoiser").eval()
    copy = with_global_path(base).eval()
    assert copy.config.global_condition and not base.config.global_condition
    torch.manual_seed(3)
    width = base.config.cross_attention_dim
    latents = torch.randn(2, 4, 16, 16) if kind == "image" else torch.randn(2, base.config.latent_dim)
    t, context, other = torch.tensor([20, 700]), torch.randn(2, 5, width), torch.randn(2, 5, width)
    with torch.no_grad():
        assert torch.equal(copy(latents, t, context), base(latents, t, context))
        assert torch.equal(copy(latents, t), base(latents, t))  # the null context
        pooled = copy.unet.add_embedding if kind == "image" else copy.global_embedding
        pooled.norm2.weight.fill_(1.0)
        attention = [m for name, m in copy.named_modules() if name.endswith("attn2")]
        for module in attention:  # cut the cross-attention: only the global path can see the context
            module.to_out[0].weight.zero_()
            module.to_out[0].bias.zero_()
        assert not torch.allclose(copy(latents, t, context), copy(latents, t, other), atol=1e-5)
    with pytest.raises(ValueError, match="already has a global path"):
        with_global_path(copy)


def test_adapt_pretrained_unet_keeps_what_fits(tmp_path):
    _sd_layout_unet(cross_attention_dim=24).save_pretrained(tmp_path / "unet", safe_serialization=True)
    config = ImageDenoiserConfig(**asdict(DENOISER) | {"in_channels": 3, "block_out_channels": (8, 8)})
    model = adapt_pretrained_unet(tmp_path / "unet", config)
    assert tuple(model.config.block_out_channels) == (16, 32)  # the pretrained architecture wins
    source = UNet2DConditionModel.from_pretrained(tmp_path / "unet").state_dict()
    target = model.unet.state_dict()
    reinitialised = {k for k in target if k not in source or source[k].shape != target[k].shape}
    assert reinitialised == {
        "conv_in.weight", "conv_out.weight", "conv_out.bias", "class_embedding.weight",
        *(k for k in target if ".attn2.to_k." in k or ".attn2.to_v." in k),
    }
    for key in set(target) - reinitialised:
        torch.testing.assert_close(target[key], source[key])
    assert model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).shape == (2, 3, 8, 8)


def test_adapt_pretrained_unet_refuses_another_layout(tmp_path):
    UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    ).save_pretrained(tmp_path / "unet")
    with pytest.raises(ModelError, match="layout"):
        adapt_pretrained_unet(tmp_path / "unet", DENOISER)


def test_schedule_is_the_papers_linear_one():
    config = DiffusionConfig()
    train = make_train_scheduler(config)
    assert isinstance(train, DDPMScheduler)
    assert train.betas[0].item() == pytest.approx(0.00085) and train.betas[-1].item() == pytest.approx(0.012)
    assert torch.allclose(train.betas[1:] - train.betas[:-1], train.betas[1] - train.betas[0], atol=1e-7)
    sampler = make_scheduler(train, "ddim")
    assert isinstance(sampler, DDIMScheduler)
    assert sampler.config.steps_offset == 1 and not sampler.config.set_alpha_to_one
    torch.testing.assert_close(sampler.alphas_cumprod, train.alphas_cumprod)
    with pytest.raises(InputError, match="unknown scheduler"):
        make_scheduler(train, "heun")
    latents, noise, t = torch.randn(2, 4), torch.randn(2, 4), torch.tensor([10, 900])
    assert training_target(train, latents, noise, t) is noise
    velocity = make_train_scheduler(DiffusionConfig(prediction_type="v_prediction"))
    torch.testing.assert_close(training_target(velocity, latents, noise, t), velocity.get_velocity(latents, noise, t))


def test_training_previews_sample_as_the_user_commands_do(tmp_path, monkeypatch):
    """An LDM stage's preview decodes exactly the latents of the users' sample() at guidance 1 (null context)."""
    vae = seeded(lambda: build_image_vae(VAE)).eval()
    stage = ImageLDMStage(SimpleNamespace(resolution=32), "mri", vae, DENOISER, DiffusionConfig(), preview_steps=3)
    decoded = []
    decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda z: decoded.append(z) or decode(z))
    stage.sample(tmp_path, step=1)
    labels = torch.arange(1, 1 + len(MRI_CONTRASTS)).repeat_interleave(PREVIEWS_PER_LABEL)
    stream = Stream(stage.denoiser, (len(labels), 4, 8, 8), lambda t, z: stage.denoiser.null(len(labels)), labels)
    users = sample({"mri": stream}, stage.scheduler, SamplingConfig(steps=3, guidance=1.0),
                   torch.Generator().manual_seed(0), torch.device("cpu"))["mri"]
    torch.testing.assert_close(decoded[0], users / vae.config.scaling_factor, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- MedM2G


@pytest.fixture
def model(denoiser, text_denoiser) -> MedM2G:
    vae = seeded(lambda: build_image_vae(VAE)).eval()
    return MedM2G({"image_vae": vae, "denoiser_mri": denoiser, "denoiser_text": text_denoiser,
                   "scheduler": make_train_scheduler(DiffusionConfig())}, info={"recipe": "micro"})


def _outputs(model: MedM2G) -> list[torch.Tensor]:
    torch.manual_seed(1)
    latents, image, text = torch.randn(2, 4, 8, 8), torch.rand(2, 1, 32, 32), torch.randn(2, TEXT.latent_dim)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        return [
            model["image_vae"].encode(image).latent_dist.mean,
            model["denoiser_mri"](latents, t, contrast=torch.tensor([2, 4])),
            model["denoiser_text"](text, t),
        ]


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / MODEL_INDEX).read_text())
    assert index["components"]["denoiser_mri"] == ["medm2g_core.models.image_denoiser", "ImageDenoiser"]
    assert "denoiser_mri/diffusion_pytorch_model.safetensors" in index["sha256"]
    assert index["info"] == {"recipe": "micro"}
    assert not [p for p in (tmp_path / "m").rglob("*") if p.suffix in (".bin", ".pt", ".pkl")]
    loaded = MedM2G.from_pretrained(tmp_path / "m", device="cpu")
    for before, after in zip(_outputs(model), _outputs(loaded), strict=True):
        torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert loaded["scheduler"].config.beta_schedule == "linear"
    assert loaded.info == {"recipe": "micro"}
    only_vae = MedM2G.from_pretrained(tmp_path / "m", components=["image_vae"])
    assert list(only_vae.components) == ["image_vae"]
    with pytest.raises(ModelError, match="no component 'denoiser_ct'"):
        only_vae["denoiser_ct"]


def test_with_component_adds_without_changing_the_base(model, tmp_path):
    extra = seeded(lambda: ImageDenoiser(**asdict(DENOISER)), seed=5)
    bigger = model.with_component("denoiser_ct", extra)
    assert "denoiser_ct" in bigger and "denoiser_ct" not in model
    bigger.save_pretrained(tmp_path / "m")
    assert MedM2G.from_pretrained(tmp_path / "m", components=["denoiser_ct"])["denoiser_ct"].config.num_contrasts == 6
    with pytest.raises(ModelError, match="unknown component class 'Linear'"):
        model.with_component("net", torch.nn.Linear(2, 2))
    with pytest.raises(ModelError, match="bad component name"):
        model.with_component("../evil", extra)


def test_save_refuses_to_overwrite(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(OutputExistsError):
        model.save_pretrained(tmp_path / "m")
    model.with_component("denoiser_ct", model["denoiser_mri"]).save_pretrained(tmp_path / "m", overwrite=True)
    assert "denoiser_ct" in MedM2G.from_pretrained(tmp_path / "m", components=["denoiser_ct"])


def test_a_tampered_weight_is_refused(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m")
    weights = folder / "denoiser_text" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"denoiser_text/diffusion_pytorch_model\.safetensors: sha256"):
        MedM2G.from_pretrained(folder)
    assert MedM2G.from_pretrained(folder, components=["image_vae"])  # the other components still verify
    assert MedM2G.from_pretrained(folder, components=["denoiser_text"], verify=False)


def test_an_unlisted_file_is_refused(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m")
    (folder / "image_vae" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="not listed"):
        MedM2G.from_pretrained(folder, components=["image_vae"])


def _edit_index(folder, edit) -> None:
    index = json.loads((folder / MODEL_INDEX).read_text())
    edit(index)
    (folder / MODEL_INDEX).write_text(json.dumps(index))


def test_classes_come_only_from_the_registry(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m")
    _edit_index(folder, lambda index: index["components"].update(image_vae=["os", "system"]))
    with pytest.raises(ModelError, match="unknown component class 'system'"):
        MedM2G.from_pretrained(folder)
    _edit_index(folder, lambda index: index["components"].update(image_vae=["evil.module", "AutoencoderKL"]))
    with pytest.raises(ModelError, match="not registered"):
        MedM2G.from_pretrained(folder)
    _edit_index(folder, lambda index: index["components"].update(image_vae=["diffusers", "AutoencoderKL"],
                                                                   **{"../up": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(ModelError, match="bad component name"):
        MedM2G.from_pretrained(folder, components=["image_vae"])


def test_missing_folders_are_model_errors(model, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        MedM2G.from_pretrained(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=f"no {MODEL_INDEX}"):
        MedM2G.from_pretrained(tmp_path / "empty")
    folder = model.save_pretrained(tmp_path / "m")
    for file in (folder / "denoiser_mri").iterdir():
        file.unlink()
    (folder / "denoiser_mri").rmdir()
    with pytest.raises(ModelError, match="denoiser_mri: component folder is missing"):
        MedM2G.from_pretrained(folder)
    with pytest.raises(ModelError, match="has no component denoiser_ct"):
        MedM2G.from_pretrained(folder, components=["denoiser_ct"])


def test_a_vae_only_model_is_valid(tmp_path):
    vae = build_image_vae(VAE)
    MedM2G({"image_vae": vae}).save_pretrained(tmp_path / "m")
    assert list(MedM2G.from_pretrained(tmp_path / "m").components) == ["image_vae"]
