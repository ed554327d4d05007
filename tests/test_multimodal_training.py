"""Central alignment, visual invariant and the cross-guided rounds on the micro recipe (paper 3.2-3.5)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from medm2g_core.data.cache import Cache, CacheConfig, build_cache
from medm2g_core.errors import InputError
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import tile_null
from medm2g_core.phantoms.world import PhantomConfig, prepare_phantom
from medm2g_core.training.align_stage import AlignStage
from medm2g_core.training.cross_stage import ROUNDS, CrossStage
from medm2g_core.training.pairs import PairedItems, image_store, text_store
from medm2g_core.training.recipe import load_recipe
from medm2g_core.training.report_stage import ReportStage
from medm2g_core.training.retrieval import retrieval_scores
from medm2g_core.training.run import StageRun, train_ldm, train_vae
from medm2g_core.training.trainer import train

RECIPE = load_recipe("micro")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """28 phantom cases (seed 6: val holds 4 chest and 2 brain cases) and every single-modal stage, micro-sized."""
    root = tmp_path_factory.mktemp("multimodal")
    # Without skull films: the guidance margins asserted below were measured on chest films alone (a skull film
    # says little about its report, which dilutes the micro recipe's text-X-ray margin to noise).
    prepare_phantom(root / "phantom", PhantomConfig(cases=28, seed=6, brain_slices=6, xray_pixels=64, brain_xray=False),
                    workers=1)
    build_cache(root / "phantom" / "manifest.jsonl", root / "cache", CacheConfig(resolution=32))
    model = None

    def run(name: str, steps: int) -> StageRun:
        return StageRun(recipe=RECIPE, data=root / "cache", out=root / name, base_model=model, progress=False,
                        steps=steps)

    train_vae(run("vae", 30), "image")
    model = root / "vae" / "model"
    for modality in ("xray", "ct", "mri"):
        train_ldm(run(f"ldm-{modality}", 60), modality)
        model = root / f"ldm-{modality}" / "model"
    train_vae(run("vae-text", 30), "text")
    model = root / "vae-text" / "model"
    train_ldm(run("ldm-text", 100), "text")
    return root


@pytest.fixture(scope="module")
def aligned(world, tmp_path_factory) -> Path:
    from conftest import run_cli

    out = world / "align"
    result = run_cli("--quiet", "train", "align", "--recipe", "micro", "--data", str(world / "cache"),
                     "--model", str(world / "ldm-text" / "model"), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def crossed(world, aligned) -> Path:
    from conftest import run_cli

    out = world / "cross"
    result = run_cli("--quiet", "train", "cross", "--all", "--recipe", "micro", "--data", str(world / "cache"),
                     "--model", str(aligned / "model"), "--out", str(out), "--steps", "8")
    assert result.exit_code == 0, result.stderr
    return out


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def state(model: MedM2G, name: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model[name].state_dict().items()}


# ------------------------------------------------------------------------------------------------- pairs


def test_pairs_join_modalities_of_the_same_case_and_slice(world):
    cache = Cache.open(world / "cache")
    ct, mri = image_store(cache, "train", "ct"), image_store(cache, "train", "mri")
    items = PairedItems({"ct": ct, "mri": mri}, ("ct-mri",))
    left, right, cases = items.pairs["ct-mri"]
    assert len(cases) == len(mri) == 5 * np.isin(ct.case, mri.case).sum()  # each contrast finds its CT slice
    assert np.array_equal(ct.case[left.numpy()], mri.case[right.numpy()])
    assert np.array_equal(ct.slice[left.numpy()], mri.slice[right.numpy()])
    text = text_store(cache, "train", lambda texts: {"input_ids": torch.zeros(len(texts), 3, dtype=torch.long),
                                                     "attention_mask": torch.ones(len(texts), 3, dtype=torch.long)})
    xray = image_store(cache, "train", "xray")
    pairs = PairedItems({"text": text, "xray": xray}, ("text-xray",))
    assert pairs.count("text-xray") == len(xray)  # one report per chest case
    item = pairs[3]
    assert set(item) == {"text-xray:text:ids", "text-xray:text:mask", "text-xray:xray:image", "text-xray:xray:label",
                         "text-xray:case"}


def test_retrieval_scores_count_own_case_ranks():
    embeddings = F.normalize(torch.randn(10, 16), dim=-1)
    cases = np.arange(10)
    perfect = retrieval_scores(cases, embeddings, cases, embeddings)
    assert perfect["r@1"] == 1.0 and perfect["chance@1"] == pytest.approx(0.1) and perfect["cases"] == 10
    swapped = retrieval_scores(cases, embeddings, cases[::-1].copy(), embeddings)  # every gallery label wrong
    assert swapped["r@1"] == 0.0
    assert retrieval_scores(cases[:1], embeddings[:1], cases[:1], embeddings[:1]) is None


# --------------------------------------------------------------------------------------------- alignment


def test_align_trains_every_prompt_encoder_and_its_loss_goes_down(aligned):
    lines = metrics(aligned)
    losses = [line["loss"] for line in lines]
    assert len(losses) == RECIPE.align.optim.steps
    assert np.mean(losses[:10]) > np.mean(losses[-10:])
    assert {"nce_text-xray", "nce_text-ct", "nce_ct-mri", "vi_xray", "vi_ct", "vi_mri"} <= set(lines[-1])
    model = MedM2G.from_pretrained(aligned / "model")
    assert {f"prompt_encoder_{m}" for m in ("text", "xray", "ct", "mri")} <= set(model.components)
    assert {"text_vae", "denoiser_text", "denoiser_ct"} <= set(model.components)  # the base model is kept
    preview = json.loads(next((aligned / "samples").glob("align-*.json")).read_text())
    assert preview["split"] == "val" and preview["retrieval"]["text->xray"]["cases"] == 4


def test_align_records_its_switches_parameters_and_epoch_time(aligned):
    model = MedM2G.from_pretrained(aligned / "model")
    info = model.info["stage:align"]
    encoders = sum(p.numel() for m in ("text", "xray", "ct", "mri") for p in model[f"prompt_encoder_{m}"].parameters())
    assert info["ca"] is True and info["vi"] is True and info["steps"] == RECIPE.align.optim.steps
    assert info["trained_parameters"] == encoders + RECIPE.align.learn_temperature  # + the temperature
    record = json.loads((aligned / "run.json").read_text())
    examples = len(AlignStage(Cache.open(aligned.parent / "cache"), model["text_vae"], RECIPE.align).dataset("train"))
    epoch_steps = examples / RECIPE.align.optim.batch_size
    assert info["seconds_per_epoch"] == pytest.approx(epoch_steps / record["steps_per_s"], rel=1e-2)


def test_no_ca_no_vi_exports_the_encoders_as_built(world, cli, tmp_path):
    result = cli("--quiet", "train", "align", "--recipe", "micro", "--data", str(world / "cache"),
                 "--model", str(world / "ldm-text" / "model"), "--out", str(tmp_path / "run"), "--no-ca", "--no-vi")
    assert result.exit_code == 0, result.stderr
    info = MedM2G.from_pretrained(tmp_path / "run" / "model").info["stage:align"]
    assert info == {"steps": 0, "trained_parameters": 0, "ca": False, "vi": False}  # no epoch time: nothing ran


def test_no_vi_drops_the_barlow_twins_terms(world, cli, tmp_path):
    result = cli("--quiet", "train", "align", "--recipe", "micro", "--data", str(world / "cache"),
                 "--model", str(world / "ldm-text" / "model"), "--out", str(tmp_path / "run"), "--no-vi",
                 "--steps", "3")
    assert result.exit_code == 0, result.stderr
    assert not any(key.startswith("vi_") for key in metrics(tmp_path / "run")[-1])


# ------------------------------------------------------------------------------------------------- cross


def test_cross_rounds_train_only_their_parts(world, aligned, crossed):
    """After each round, everything but its context encoders and cross-attention is bit-identical to before."""
    before = MedM2G.from_pretrained(aligned / "model")
    for name in ROUNDS:
        after = MedM2G.from_pretrained(crossed / name / "model")
        spec = ROUNDS[name]
        for component in before.components:
            if component == "scheduler":
                continue
            old, new = state(before, component), state(after, component)
            trained_denoiser = component.removeprefix("denoiser_") in spec.train_attention and \
                component.startswith("denoiser_")
            for key, value in old.items():
                if trained_denoiser and ".attn2." in key:
                    continue
                assert torch.equal(value, new[key]), f"round {name} changed frozen {component}.{key}"
            if trained_denoiser:
                assert any(not torch.equal(old[k], new[k]) for k in old if ".attn2." in k)
        for modality in spec.train_context:
            assert f"context_encoder_{modality}" in after.components
        before = after
    final = MedM2G.from_pretrained(crossed / "model")
    assert {f"context_encoder_{m}" for m in ("text", "xray", "ct", "mri")} <= set(final.components)


def test_no_lcag_rounds_give_only_f_b_and_train_fewer_parameters(world, aligned, crossed, cli, tmp_path):
    result = cli("--quiet", "train", "cross", "--round", "text-xray", "--recipe", "micro", "--data",
                 str(world / "cache"), "--model", str(aligned / "model"), "--out", str(tmp_path / "run"), "--steps",
                 "2", "--no-lcag")
    assert result.exit_code == 0, result.stderr
    ablated = MedM2G.from_pretrained(tmp_path / "run" / "model")
    full = MedM2G.from_pretrained(crossed / "model")
    assert not ablated["context_encoder_text"].config.use_latent and full["context_encoder_text"].config.use_latent
    off, on = ablated.info["stage:cross-text-xray"], full.info["stage:cross-text-xray"]
    assert off["lcag"] is False and on["lcag"] is True and on["seconds_per_epoch"] > 0
    latent_path = sum(p.numel() for m in ("text", "xray") for name, p in full[f"context_encoder_{m}"].named_parameters()
                      if name.startswith(("patchify.", "position")))
    assert on["trained_parameters"] - off["trained_parameters"] == latent_path


def test_real_partner_guides_better_than_a_shuffled_one(world, crossed, tmp_path):
    """The text-CT round, trained a little longer: held-out reports are denoised better when guided by a slice of
    their own CT than by another case's (the CT tells a brain report from a chest report). At micro scale the
    margin is small (BENCHMARKS.md has the phantom-tiny numbers)."""
    stage = CrossStage(Cache.open(world / "cache"), MedM2G.from_pretrained(crossed / "text-xray" / "model"),
                       "text-ct", RECIPE.cross, RECIPE.diffusion)
    train(stage, replace(RECIPE.cross.optim, steps=150, lr=3e-3, sample_every=0, checkpoint_every=150),
          tmp_path / "run", progress=False)
    gain = stage.guidance_gain("val", batches=4)["text<-ct"]
    assert gain["real"] < gain["shuffled"], gain


def test_eq6_is_eq2_when_the_guide_is_removed(world, crossed):
    """With the guide dropped (null context), the cross-guided loss is the single-modal loss of Eq. 2."""
    stage = CrossStage(Cache.open(world / "cache"), MedM2G.from_pretrained(crossed / "text-ct" / "model"), "ct-mri",
                       RECIPE.cross, RECIPE.diffusion)
    batch = torch.utils.data.default_collate([stage.dataset("train")[i] for i in range(6)])
    with torch.no_grad():
        guided = stage.direction_loss(batch, "mri", "ct", torch.Generator().manual_seed(1), cond_dropout=1.0)
        generator = torch.Generator().manual_seed(1)  # replay the draws of direction_loss
        z0 = batch["ct-mri:mri:latent"]
        noise = randn_tensor(z0.shape, generator=generator)
        t = torch.randint(0, 1000, (6,), generator=generator)
        denoiser = stage.denoisers["mri"]
        plain = F.mse_loss(denoiser(stage.scheduler.add_noise(z0, noise, t), t, contrast=batch["ct-mri:mri:label"]),
                           noise)
    assert guided.item() == pytest.approx(plain.item(), rel=1e-5)


def test_report_round_trains_only_its_guided_copies_and_the_real_guide_wins(world, crossed, cli, tmp_path):
    """`train cross --round report` adds guided copies of the text, X-ray and CT denoisers and of V_text and V_xray,
    trains every weight of them, and leaves every other component bit-identical."""
    result = cli("--quiet", "train", "cross", "--round", "report", "--recipe", "micro", "--data",
                 str(world / "cache"), "--model", str(crossed / "model"), "--out", str(tmp_path / "run"), "--steps",
                 "150")
    assert result.exit_code == 0, result.stderr
    before, after = MedM2G.from_pretrained(crossed / "model"), MedM2G.from_pretrained(tmp_path / "run" / "model")
    assert set(after.components) - set(before.components) == {"guided_text", "guided_xray", "guided_ct",
                                                                "guided_context_text", "guided_context_xray"}
    for component in before.components:
        if component != "scheduler":
            old, new = state(before, component), state(after, component)
            assert all(torch.equal(old[k], new[k]) for k in old), f"the report round changed {component}"
    assert after["guided_text"].config.global_condition and after["guided_xray"].config.global_condition
    assert after.info["stage:cross-report"]["report"] is True
    losses = [row["loss"] for row in metrics(tmp_path / "run")]
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    for modality in ("text", "xray", "ct"):  # every weight of the copies trains, the global path included
        old, new = state(before, f"denoiser_{modality}"), state(after, f"guided_{modality}")
        assert all(not torch.equal(old[k], new[k]) for k in old if k.endswith("attn1.to_q.weight"))
        pooled = [k for k in new if k not in old]
        assert pooled and all(k.split(".")[-3] in ("add_embedding", "global_embedding") for k in pooled
                              if k.endswith("norm2.weight"))
        assert any(new[k].abs().sum() > 0 for k in pooled if k.endswith("norm2.weight"))
    stage = ReportStage(Cache.open(world / "cache"), after, RECIPE.report, RECIPE.diffusion)
    assert set(stage.guidance_gain("val", batches=1)) == {"text<-xray", "xray<-text", "ct<-text"}


def test_the_report_round_refuses_a_model_without_the_text_xray_round(world, aligned, cli, tmp_path):
    result = cli("train", "cross", "--round", "report", "--recipe", "micro", "--data", str(world / "cache"),
                 "--model", str(aligned / "model"), "--out", str(tmp_path / "run"), "--steps", "2")
    assert result.exit_code == 2
    assert "context_encoder_text" in result.stderr and "context_encoder_xray" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_tiled_null_context_is_the_null_context(world):
    model = MedM2G.from_pretrained(world / "ldm-text" / "model")
    z, t = torch.randn(3, 4, 16, 16), torch.tensor([10, 500, 900])
    with torch.no_grad():
        for name, latents in (("denoiser_ct", z), ("denoiser_text", torch.randn(3, 32))):
            denoiser = model[name].eval()
            tiled = tile_null(denoiser, 3, 3 * denoiser.config.context_tokens)
            assert torch.allclose(denoiser(latents, t, context=tiled), denoiser(latents, t), atol=1e-5)


def test_cross_errors_are_one_line_exit_2(world, aligned, cli, tmp_path):
    common = ("--recipe", "micro", "--data", str(world / "cache"), "--out", str(tmp_path / "run"))
    cases = [
        (("--round", "text-ct", "--model", str(aligned / "model")), "context_encoder_text"),  # round 1 not run
        (("--round", "text-xray", "--model", str(world / "ldm-text" / "model")), "prompt_encoder"),  # no align
        (("--round", "xray-mri", "--model", str(aligned / "model")), "unknown round"),
        (("--all", "--round", "text-xray", "--model", str(aligned / "model")), "exactly one"),
    ]
    for args, message in cases:
        result = cli("train", "cross", *args, *common)
        assert result.exit_code == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
        assert not (tmp_path / "run").exists()
    manifest = world / "phantom" / "manifest.jsonl"  # a manifest would build RUN/cache first: the check comes before
    result = cli("train", "cross", "--round", "text-ct", "--model", str(aligned / "model"), "--recipe", "micro",
                 "--data", str(manifest), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "context_encoder_text" in result.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- ablation


@pytest.mark.slow  # trains and scores four variants (~1 min): CI runs it with -m slow
def test_ablation_scores_variants_with_their_recorded_switches(world, aligned, crossed, cli, tmp_path):
    """Table 7 on two variants trained from the same alignment: the full model and one without LCAG."""
    ablated = tmp_path / "no-lcag"
    result = cli("--quiet", "train", "cross", "--all", "--recipe", "micro", "--data", str(world / "cache"),
                 "--model", str(aligned / "model"), "--out", str(ablated), "--steps", "2", "--no-lcag")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "table7"
    result = cli("--quiet", "evaluate", "ablation", "--variant", f"full={crossed / 'model'}", "--variant",
                 f"no LCAG={ablated / 'model'}", "--data", str(world / "cache"), "--out", str(out), "--split",
                 "train+val+test", "--cases", "1", "--seeds", "2", "--steps", "2", env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["paper_table"] == "Table 7" and list(saved["seeds"]) == ["full", "no LCAG"]
    columns = saved["columns"]
    assert [columns["full"][k] for k in ("CA", "LCAG", "VI")] == ["yes", "yes", "yes"]
    assert [columns["no LCAG"][k] for k in ("CA", "LCAG", "VI")] == ["yes", "no", "yes"]
    full, off = MedM2G.from_pretrained(crossed / "model"), MedM2G.from_pretrained(ablated / "model")
    trained = [sum(v.get("trained_parameters", 0) for k, v in m.info.items() if k.startswith("stage:cross-"))
               for m in (full, off)]
    assert columns["full"]["added params (M)"] == "-"
    assert float(columns["no LCAG"]["added params (M)"]) == pytest.approx((trained[1] - trained[0]) / 1e6, abs=1e-3)
    assert float(columns["full"]["s/epoch"]) > 0
    expected = {"report_bleu_1", "report_bleu_4", "report_rouge_l", "report_f1_micro", "effusion_auc", "xray_fid",
                "pd_psnr", "pd_ssim", "ct_psnr", "ct_ssim"}
    for variant in ("full", "no LCAG"):
        row = saved["seeds"][variant]
        assert set(row) == expected and all(len(v) == 2 for v in row.values())
        assert all(np.isfinite(row[k]).all() for k in expected - {"effusion_auc"})
        assert 5 < np.mean(row["ct_psnr"]) < 60 and -1 < np.mean(row["pd_ssim"]) <= 1
    assert saved["seeds"]["full"]["ct_psnr"] != saved["seeds"]["no LCAG"]["ct_psnr"]  # different models, outputs
    assert "| full | yes | yes | yes |" in (out / "results.md").read_text()


def test_ablation_refuses_incomplete_or_single_variants(world, aligned, crossed, cli, tmp_path):
    from medm2g_cli.evaluate import _variants

    for specs, message in (([f"full={crossed / 'model'}"], "at least two"),
                           ([f"a={crossed / 'model'}", f"a={aligned / 'model'}"], "must differ"),
                           (["full", f"b={crossed / 'model'}"], "NAME=MODEL")):
        with pytest.raises(InputError, match=message):
            _variants(specs, None)
    partial = cli("evaluate", "ablation", "--data", str(world / "cache"), "--out", str(tmp_path / "x"), "--variant",
                  f"full={crossed / 'model'}", "--variant", f"aligned={aligned / 'model'}")
    assert partial.exit_code != 0 and "variant 'aligned' lacks context_encoder" in partial.stderr
    assert not (tmp_path / "x" / "results.json").exists()
