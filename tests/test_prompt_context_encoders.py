"""The prompt encoders C_M (paper 3.2) and the context encoder V_B with its adaptation f_B (paper 3.4)."""

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from medm2g_core.models.context_encoder import ContextEncoder, ContextEncoderConfig
from medm2g_core.models.prompt_encoder import (
    ImagePromptEncoder,
    ImagePromptEncoderConfig,
    TextPromptEncoder,
    TextPromptEncoderConfig,
)
from medm2g_core.models.text_vae import TextVAE
from medm2g_core.models.tokenizer import train_tokenizer

IMAGE = ImagePromptEncoderConfig(embed_dim=16, hidden_sizes=(8, 8, 16, 16), embedding_size=8)
TEXT = TextPromptEncoderConfig(embed_dim=16, vocab_size=50, max_length=32, hidden=32, layers=1, heads=2)
CONTEXT = ContextEncoderConfig(embed_dim=16, adaptation_tokens=3, hidden=32, layers=1, heads=2, context_dim=24)
REPORTS = ["the heart is normal in size.", "no pleural effusion.", "a small nodule in the left lung.",
           "the lungs are clear.", "mild cardiomegaly without effusion."]


pytestmark = pytest.mark.usefixtures("one_thread")


def context_encoder(**changes) -> ContextEncoder:
    torch.manual_seed(0)
    return ContextEncoder(**(asdict(CONTEXT) | changes)).eval()


def random(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- prompt encoders


@pytest.mark.parametrize("size", [32, 64])
def test_image_prompt_encoder_embeds_images_of_several_sizes(size: int) -> None:
    torch.manual_seed(0)
    encoder = ImagePromptEncoder(**asdict(IMAGE)).eval()
    images = random(3, 1, size, size).clamp(-1, 1)
    with torch.no_grad():
        embeddings = encoder(images)
    assert embeddings.shape == (3, 16)
    assert (embeddings[0] - embeddings[1]).abs().max() > 1e-4


def test_text_prompt_encoder_ignores_padding() -> None:
    torch.manual_seed(0)
    encoder = TextPromptEncoder(**asdict(TEXT)).eval()
    ids = torch.randint(5, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 6, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        embeddings = encoder(ids, torch.ones_like(ids))
        torch.testing.assert_close(encoder(padded, mask), embeddings, rtol=0, atol=1e-5)
    assert embeddings.shape == (2, 16)
    assert (embeddings[0] - embeddings[1]).abs().max() > 1e-4


def test_text_prompt_encoder_starts_from_the_text_vae_encoder() -> None:
    tokenizer = train_tokenizer(REPORTS, vocab_size=300)
    torch.manual_seed(0)
    vae = TextVAE(vocab_size=len(tokenizer), max_length=32, latent_dim=16, encoder_hidden=32, encoder_layers=1,
                  encoder_heads=2, decoder_hidden=32, decoder_layers=1, decoder_heads=2, tokenizer=tokenizer).eval()
    encoder = TextPromptEncoder.from_text_vae(vae, embed_dim=16).eval()
    assert encoder.config.hidden == 32 and encoder.config.vocab_size == len(tokenizer)
    torch.testing.assert_close(encoder.encoder.embeddings.word_embeddings.weight,
                               vae.encoder.embeddings.word_embeddings.weight, rtol=0, atol=0)
    tokens = vae.tokenize(REPORTS[:2])
    with torch.no_grad():
        ours = encoder.encoder(**tokens).last_hidden_state
        theirs = vae.encoder(**tokens).last_hidden_state
        assert encoder(tokens["input_ids"], tokens["attention_mask"]).shape == (2, 16)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- context encoder


@pytest.mark.parametrize(("changes", "latent_shape", "tokens"), [
    ({}, (4, 16, 16), 16 + 3),
    ({"latent_shape": (128,), "text_tokens": 8}, (128,), 8 + 3),
    ({"use_latent": False}, (4, 16, 16), 3),
    ({"adaptation": "none"}, (4, 16, 16), 16),
    ({"adaptation": "inversion", "latent_shape": (128,)}, (128,), 8 + 3),
])
def test_context_encoder_output_has_latent_and_adaptation_tokens(
    changes: dict, latent_shape: tuple[int, ...], tokens: int,
) -> None:
    encoder = context_encoder(**changes)
    with torch.no_grad():
        context = encoder(random(2, *latent_shape), torch.tensor([0, 500]), prompt=random(2, 16, seed=1))
    assert context.shape == (2, tokens, 24)
    assert encoder.num_tokens == tokens


@pytest.mark.parametrize("changes", [
    {"adaptation": "textual"},
    {"use_latent": False, "adaptation": "none"},
    {"patch_size": 3},
    {"latent_shape": (100,), "text_tokens": 8},
    {"latent_shape": (4, 16)},
])
def test_context_encoder_rejects_bad_configs(changes: dict) -> None:
    with pytest.raises(ValueError):
        context_encoder(**changes)


def test_context_encoder_reads_latent_timestep_and_prompt() -> None:
    encoder = context_encoder()
    latents, timesteps, prompt = random(2, 4, 16, 16), torch.tensor([0, 0]), random(2, 16, seed=1)
    with torch.no_grad():
        base = encoder(latents, timesteps, prompt)
        for changed in (
            encoder(random(2, 4, 16, 16, seed=2), timesteps, prompt),
            encoder(latents, torch.tensor([500, 500]), prompt),
            encoder(latents, timesteps, random(2, 16, seed=3)),
        ):
            assert (changed - base).abs().max() > 1e-4
    with pytest.raises(ValueError, match="prompt"):
        encoder(latents, timesteps)


def test_inversion_starts_from_f_emb_of_drawn_prompt_embeddings() -> None:
    encoder = context_encoder(adaptation="inversion")
    embeddings = random(10, 16, seed=4)
    encoder.init_adaptation(embeddings, torch.Generator().manual_seed(7))
    drawn = torch.randperm(10, generator=torch.Generator().manual_seed(7))[:3]
    with torch.no_grad():
        expected = encoder.f_emb(embeddings[drawn]).view(3, 3, -1)  # [drawn, token, H]
    torch.testing.assert_close(encoder.inverted.data, torch.stack([expected[k, k] for k in range(3)]))
    encoder.init_adaptation(embeddings[:2], torch.Generator().manual_seed(7))  # fewer embeddings than tokens
    assert encoder.inverted.shape == (3, 32)
    with torch.no_grad():  # one f_B for every sample: the prompt is not read
        latents, timesteps = random(2, 4, 16, 16), torch.tensor([0, 0])
        torch.testing.assert_close(encoder(latents, timesteps), encoder(latents, timesteps, random(2, 16)))


# ---------------------------------------------------------------------------------------------- saving


def test_save_and_load_give_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    models = {
        "image": (ImagePromptEncoder(**asdict(IMAGE)).eval(), (random(2, 1, 32, 32),)),
        "text": (TextPromptEncoder(**asdict(TEXT)).eval(), (torch.randint(5, 50, (2, 6)), torch.ones(2, 6))),
        "context": (context_encoder(latent_shape=(128,)), (random(2, 128), torch.tensor([0, 9]), random(2, 16))),
    }
    for name, (model, inputs) in models.items():
        model.save_pretrained(tmp_path / name)
        assert (tmp_path / name / "diffusion_pytorch_model.safetensors").is_file()
        loaded = type(model).from_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(*inputs), model(*inputs), rtol=0, atol=0)
