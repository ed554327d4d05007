"""The spatial path (our extension of the paper): zero-initialised input channels that start as the single-modal
LDM, a round that teaches them to follow the sources, multi-source MRI synthesis with missing contrasts."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medm2g_core.data.cache import Cache, CacheConfig, build_cache
from medm2g_core.errors import InputError
from medm2g_core.hub import load_model
from medm2g_core.io.volume import Volume
from medm2g_core.models.image_denoiser import ImageDenoiser, ImageDenoiserConfig, with_spatial_path
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig, Stream, make_scheduler, sample
from medm2g_core.models.schedule import DiffusionConfig, make_train_scheduler
from medm2g_core.models.spatial_guide import (
    SPATIAL_SLOTS,
    fill_slots,
    slab,
    slab_rows,
    spatial_channels,
    spatial_input,
)
from medm2g_core.phantoms.world import PhantomConfig, make_case, prepare_phantom
from medm2g_core.sampling.translate import TranslateOptions, translate_slices, translate_volume
from medm2g_core.training.pairs import image_store
from medm2g_core.training.recipe import load_recipe
from medm2g_core.training.run import StageRun, train_cross, train_ldm, train_vae
from medm2g_core.training.spatial_stage import (
    SpatialRecipe,
    SpatialStage,
    case_slabs,
    scanner_images,
    spatial_diffusion,
    through_scanner,
)
from medm2g_core.vocabulary import SPATIAL_SCHEDULER

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = load_recipe("micro")
FAST = SamplingConfig(steps=10)


def _options(target: str, contrast: str | None) -> TranslateOptions:
    return TranslateOptions(target, contrast, FAST, seed=0)


def test_zero_initialised_spatial_path_leaves_the_denoiser_unchanged():
    torch.manual_seed(0)
    config = ImageDenoiserConfig(block_out_channels=(16, 32), attention_head_dim=2, cross_attention_dim=16,
                                 context_tokens=2, sample_size=8, norm_num_groups=8)
    base = ImageDenoiser(**config.__dict__).eval()
    widened = with_spatial_path(base, spatial_channels("mri", 4)).eval()
    assert widened.config.spatial_channels == 6 * 5
    latents, t = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 900])
    spatial = torch.randn(3, 30, 8, 8)
    contrast = torch.tensor([1, 3, 5])
    with torch.no_grad():
        before = base(latents, t, contrast=contrast)
        assert torch.equal(widened(latents, t, contrast=contrast, spatial=spatial), before)
        assert torch.equal(widened(latents, t, contrast=contrast), before)  # no source: zeros
    with pytest.raises(ValueError, match="30 spatial channels"):
        widened(latents, t, spatial=spatial[:, :5])


def test_spatial_input_zeroes_absent_slots_and_marks_presence():
    latents = torch.randn(2, 5, 3, 2, 2)
    t1, flair = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    slots, present = fill_slots("mri", [("T1", t1), ("FLAIR", flair)])
    assert present.tolist() == [[False, True, False, False, True, False]] * 2
    layout = spatial_input("mri", slots, present).view(2, 6, 4, 2, 2)
    assert torch.equal(layout[:, 1, :3], t1) and torch.equal(layout[:, 4, :3], flair)
    assert torch.all(layout[:, 1, 3] == 1) and torch.all(layout[:, 0] == 0)
    masked = spatial_input("ct", latents, torch.zeros(2, 5, dtype=torch.bool))
    assert torch.all(masked == 0)
    with pytest.raises(ValueError, match="cannot guide ct"):
        fill_slots("ct", [("CT", t1)])
    assert SPATIAL_SLOTS["ct"] == ("T1", "T1ce", "T2", "FLAIR", "PD")


def brain_cache(root: Path, cases: int, seed: int) -> Cache:
    """``cases`` phantom brain cases (6 slices) and their 32-pixel cache under ``root`` (``root / "cache"``)."""
    prepare_phantom(root / "phantom", PhantomConfig(cases=cases, seed=seed, tasks=("brain",), brain_slices=6,
                                                    xray_pixels=64, brain_xray=False), workers=1)
    build_cache(root / "phantom" / "manifest.jsonl", root / "cache", CacheConfig(resolution=32))
    return Cache.open(root / "cache")


@pytest.fixture(scope="module")
def spatial_world(tmp_path_factory) -> Path:
    """12 brain cases, the micro VAE and CT/MRI LDMs, then the spatial round (no context encoders: null context)."""
    root = tmp_path_factory.mktemp("spatial")
    brain_cache(root, 12, 4)
    model = None

    def run(name: str, steps: int) -> StageRun:
        return StageRun(recipe=RECIPE, data=root / "cache", out=root / name, base_model=model, progress=False,
                        steps=steps)

    train_vae(run("vae", 60), "image")
    model = root / "vae" / "model"
    for modality in ("ct", "mri"):  # the spatial round trains every weight of its copies: the LDMs just seed them
        train_ldm(run(f"ldm-{modality}", 1), modality)
        model = root / f"ldm-{modality}" / "model"
    result = train_cross(run("spatial", 200), "spatial")
    assert result.steps == 200
    return root


def _brain_slices(cache: Cache, keys: tuple[str, ...], count: int) -> dict[str, np.ndarray]:
    """``count`` slices of different cases where every key has the same (case, slice)."""
    streams = {k: cache.stream("train", k) for k in keys}
    positions = [set(zip(s["case"].tolist(), s["slice"].tolist(), strict=True)) for s in streams.values()]
    common = sorted(set.intersection(*positions))
    chosen, seen = [], set()
    for case, index in common:
        if case not in seen and index == 3:
            chosen.append((case, index))
            seen.add(case)
    chosen = chosen[:count]
    out = {}
    for key, stream in streams.items():
        lookup = {(int(c), int(s)): n for n, (c, s) in enumerate(zip(stream["case"], stream["slice"], strict=True))}
        out[key] = np.stack([stream["images"][lookup[p]] for p in chosen])
    return out


@pytest.mark.slow  # trains the micro spatial round (~1.5 min): CI runs it with -m slow
def test_the_spatial_round_trains_only_its_copies_and_the_real_guide_wins(spatial_world):
    base = MedM2G.from_pretrained(spatial_world / "ldm-mri" / "model")
    model = MedM2G.from_pretrained(spatial_world / "spatial" / "model")
    for name in ("denoiser_ct", "denoiser_mri", "image_vae"):  # the paper's parts are unchanged, bit for bit
        before, after = base[name].state_dict(), model[name].state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.info["stage:cross-spatial"]["spatial"] is True
    stage = SpatialStage(Cache.open(spatial_world / "cache"), model, RECIPE.spatial, RECIPE.diffusion)
    gain = stage.guidance_gain("train", batches=2, batch_size=16)
    assert gain["ct"]["ratio"] < 1.0 and gain["mri"]["ratio"] < 1.0, gain



@pytest.mark.slow  # builds on the micro spatial round (~1.5 min): CI runs it with -m slow
def test_a_zero_terminal_snr_round_exports_its_schedule_and_translation_samples_on_it(spatial_world, monkeypatch):
    """``[spatial] zero_terminal_snr``: the copies train on rescaled betas (last step pure noise) predicting v, the
    model gains ``scheduler_spatial`` and the spatial hop samples on it from the last step; the paper's schedule
    stays the shared one."""
    from medm2g_core.sampling import routes

    recipe = replace(RECIPE, spatial=replace(RECIPE.spatial, zero_terminal_snr=True))
    run = StageRun(recipe=recipe, data=spatial_world / "cache", out=spatial_world / "zsnr", progress=False, steps=2,
                   base_model=spatial_world / "ldm-mri" / "model")
    train_cross(run, "spatial")
    model = MedM2G.from_pretrained(spatial_world / "zsnr" / "model")
    schedule = model[SPATIAL_SCHEDULER]
    assert schedule.config.prediction_type == "v_prediction" and schedule.config.timestep_spacing == "trailing"
    assert float(schedule.alphas_cumprod[-1]) < 1e-8 < 1e-3 < float(model["scheduler"].alphas_cumprod[-1])
    assert model["scheduler"].config.prediction_type == "epsilon"
    seen = {}
    real = routes.sample
    monkeypatch.setattr(routes, "sample", lambda streams, *a, **k: seen.update(streams) or real(streams, *a, **k))
    volume = Volume(np.random.default_rng(0).random((32, 32, 2), np.float32) * 500, np.eye(4), "MR", None, "T1")
    made = translate_volume(model, [volume], _options("ct", None))
    assert seen["ct"].schedule is schedule and np.isfinite(made.data).all()


def test_slabs_hold_the_slices_around_each_within_its_case_and_repeat_the_ends():
    assert slab_rows(4, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert slab_rows(1, 2).tolist() == [[0, 0, 0, 0, 0]]
    cases, slices = np.array([7, 3, 7, 3, 7]), np.array([5, 1, 4, 2, 6])  # rows of two cases, out of order
    assert case_slabs(cases, slices, 1).tolist() == [[2, 0, 4], [1, 1, 3], [2, 2, 0], [1, 3, 3], [0, 4, 4]]
    latents = torch.randn(2, 4, 3, 3)
    assert torch.equal(slab(latents, 1).view(2, 3, 4, 3, 3)[:, 2], latents)
    assert spatial_channels("ct", 4, 1) == 5 * (12 + 1) and spatial_channels("mri", 4, 0) == 6 * 5
    with pytest.raises(InputError, match="neighbours"):
        SpatialRecipe(neighbours=-1)


def test_through_the_scanner_swaps_slabs_with_their_slices():
    batch = {"ct": torch.zeros(64, 1), "mri": torch.zeros(64, 5, 1), "ct_slab": torch.zeros(64, 3),
             "mri_slab": torch.zeros(64, 5, 3)}
    batch |= {f"{k.split('_')[0]}_scanner{'_slab' if k.endswith('slab') else ''}": torch.ones_like(v)
              for k, v in batch.items()}
    out = through_scanner(batch, 0.5, torch.Generator().manual_seed(0))
    swapped = out["ct"][:, 0]
    assert 0 < swapped.sum() < 64
    for name in ("mri", "ct_slab", "mri_slab"):
        assert torch.equal(out[name].flatten(1).amin(1), swapped) and torch.equal(out[name].flatten(1).amax(1), swapped)


@pytest.mark.slow  # builds on the micro spatial round (~1.5 min): CI runs it with -m slow
def test_a_2_5d_round_reads_the_neighbouring_slices(spatial_world):
    """``[spatial] neighbours = 1``: the copies' slots hold three slices; the output of a slice changes when only
    its neighbours change, and a one-slice model ignores the slabs it is given."""
    recipe = replace(RECIPE, spatial=replace(RECIPE.spatial, neighbours=1))
    run = StageRun(recipe=recipe, data=spatial_world / "cache", out=spatial_world / "slab", progress=False, steps=3,
                   base_model=spatial_world / "ldm-mri" / "model")
    train_cross(run, "spatial")
    model = MedM2G.from_pretrained(spatial_world / "slab" / "model")
    assert model["spatial_ct"].config.spatial_neighbours == 1
    assert model["spatial_ct"].config.spatial_channels == spatial_channels("ct", 4, 1)
    t1 = _brain_slices(Cache.open(spatial_world / "cache"), ("mr_t1",), 2)["mr_t1"]  # [2, R, R]
    flat = np.stack([t1] * 3, axis=1)  # every neighbour the slice itself
    moved = flat.copy()
    moved[:, 0], moved[:, 2] = t1[::-1], t1[::-1]  # only the neighbours change

    def ct_from(chosen: MedM2G, slabs: np.ndarray) -> np.ndarray:
        generators = [torch.Generator().manual_seed(i) for i in range(2)]
        return translate_slices(chosen, [t1], "mri", _options("ct", None), generators, contrasts=["T1"], slabs=[slabs])

    assert np.abs(ct_from(model, flat) - ct_from(model, moved)).mean() > 1e-4
    one_slice = MedM2G.from_pretrained(spatial_world / "spatial" / "model")
    assert np.array_equal(ct_from(one_slice, flat), ct_from(one_slice, moved))
    volume = Volume(np.random.default_rng(0).random((32, 32, 3), np.float32) * 500, np.eye(4), "MR", None, "T1")
    assert np.isfinite(translate_volume(model, [volume], _options("ct", None)).data).all()


def test_a_zero_terminal_snr_schedule_predicts_v_and_starts_at_the_last_step():
    with pytest.raises(InputError, match="v_prediction"):
        DiffusionConfig(rescale_betas_zero_snr=True)
    plain = DiffusionConfig()
    assert spatial_diffusion(plain, SpatialRecipe()) is plain
    zero = spatial_diffusion(plain, SpatialRecipe(zero_terminal_snr=True))
    assert (_first_timestep(plain), _first_timestep(zero)) == (801, 999)
    for steps in range(1, 31):  # DDIM at eta 1 from alpha-bar 0: the root of a rounding error unless floored
        ddim = make_scheduler(make_train_scheduler(zero), "ddim")
        ddim.set_timesteps(steps)
        x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(steps))
        for t in ddim.timesteps:
            x = ddim.step(torch.randn(x.shape, generator=torch.Generator().manual_seed(int(t))), t, x, eta=1.0,
                          generator=torch.Generator().manual_seed(0)).prev_sample
        assert torch.isfinite(x).all(), steps


def _first_timestep(schedule: DiffusionConfig) -> int:
    """The timestep of the first denoiser call when a stream with its own ``schedule`` samples 5 DDIM steps."""
    seen = []
    denoiser = ImageDenoiser(**ImageDenoiserConfig(block_out_channels=(8, 16), attention_head_dim=2,
                                                   cross_attention_dim=8, context_tokens=1, sample_size=4,
                                                   norm_num_groups=4).__dict__)
    denoiser.register_forward_pre_hook(lambda module, args, kwargs: seen.append(int(args[1][0])), with_kwargs=True)
    stream = Stream(denoiser, (1, 4, 4, 4), lambda t, z: denoiser.null(1), schedule=make_train_scheduler(schedule))
    out = sample({"x": stream}, make_train_scheduler(DiffusionConfig()), SamplingConfig(steps=5, guidance=1.0),
                 torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.isfinite(out["x"]).all()
    return seen[0]


def test_the_default_model_follows_its_guide_more_than_its_seed():
    """MRI T1 -> CT through the shipped spatial path on two unseen phantom heads (fixed seeds): the real T1 gives a
    CT closer to the truth than the other head's T1 does, and swapping the guide moves the output more than
    swapping the seed (on average over three other seeds: with one noise for all slices, one seed's effect is a
    single draw for the whole head). (On the micro recipe the translation margin is within noise; its eps-loss gain
    is above.)"""
    model = load_model(None, device="cpu")
    heads = [make_case("brain", seed, PhantomConfig(brain_slices=4, xray_pixels=64))[0] for seed in (101, 202)]
    options = TranslateOptions("ct", sampling=FAST, seed=0)

    def ct_from(t1: Volume, grid: Volume, seed: int = 0) -> np.ndarray:
        moved = replace(t1, affine=grid.affine.copy())
        return translate_volume(model, [moved], replace(options, seed=seed)).data

    for own, other in ((0, 1), (1, 0)):
        truth, t1 = heads[own]["ct"].data, heads[own]["mr_t1"]
        real, shuffled = ct_from(t1, t1), ct_from(heads[other]["mr_t1"], t1)
        assert np.abs(real - truth).mean() < 0.8 * np.abs(shuffled - truth).mean()
        seed_effect = np.mean([np.abs(real - ct_from(t1, t1, seed=s)).mean() for s in (1, 2, 3)])
        assert np.abs(real - shuffled).mean() > 1.25 * seed_effect  # measured 1.3-1.8x at 3 steps (shared noise)


@pytest.mark.slow  # trains the micro spatial round (~1.5 min): CI runs it with -m slow
def test_multi_source_synthesis_takes_any_subset_of_contrasts(spatial_world):
    model = MedM2G.from_pretrained(spatial_world / "spatial" / "model")
    slices = _brain_slices(Cache.open(spatial_world / "cache"), ("mr_t2", "mr_flair", "mr_t1"), 3)

    def t1_from(*keys: str) -> np.ndarray:
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        contrasts = [k.removeprefix("mr_").upper().replace("T1CE", "T1ce") for k in keys]
        return translate_slices(model, [slices[k] for k in keys], "mri", _options("mri", "T1"), generators,
                                contrasts=contrasts)

    both, t2_only = t1_from("mr_t2", "mr_flair"), t1_from("mr_t2")
    assert both.shape == t2_only.shape == slices["mr_t1"].shape
    assert np.isfinite(both).all() and np.isfinite(t2_only).all()
    assert np.abs(both - t2_only).mean() > 1e-3  # FLAIR changes the result: it is read, not ignored
    with pytest.raises(Exception, match="target contrast T1 is one of the inputs"):
        translate_slices(model, [slices["mr_t1"]], "mri", _options("mri", "T1"),
                         [torch.Generator().manual_seed(i) for i in range(3)], contrasts=["T1"])


def test_a_second_input_on_another_grid_exits_2_and_writes_nothing(cli, tmp_path):
    import nibabel as nib

    data = np.random.default_rng(0).uniform(0, 500, (16, 16, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "t2.nii.gz")
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "flair.nii.gz")
    out = tmp_path / "t1.nii.gz"
    result = cli("translate", str(tmp_path / "t2.nii.gz"), str(tmp_path / "flair.nii.gz"), "--to", "mri",
                 "--contrast", "T1", "--modality", "MR", "--out", str(out), "--steps", "2")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "one grid" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flair.nii.gz", "t2.nii.gz"]


@pytest.mark.slow  # trains the micro spatial round (~1.5 min): CI runs it with -m slow
def test_the_spatial_round_refuses_a_model_without_both_denoisers(spatial_world, cli, tmp_path):
    out = tmp_path / "run"
    result = cli("--quiet", "train", "cross", "--round", "spatial", "--recipe", "micro", "--data",
                 str(spatial_world / "cache"), "--model", str(spatial_world / "ldm-ct" / "model"), "--out", str(out))
    assert result.exit_code == 2
    assert "denoiser_mri" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory) -> Cache:
    return brain_cache(tmp_path_factory.mktemp("scanner"), 3, 9)


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_the_randomised_scanner_copy_repeats_by_seed_and_keeps_the_anatomy(small_cache, modality):
    store = next(image_store(small_cache, s, modality) for s in ("train", "val", "test")
                 if image_store(small_cache, s, modality) is not None)
    config = small_cache.index["config"]
    clean = store.tensors["image"]
    made = scanner_images(store, config, seed=0)
    assert made.shape == clean.shape and made.dtype == clean.dtype and made.abs().max() <= 1.0 + 1e-6
    assert torch.equal(made, scanner_images(store, config, seed=0))
    assert not torch.equal(made, scanner_images(store, config, seed=1))
    labels = store.tensors["label"].numpy()
    for case, label in set(zip(store.case.tolist(), labels.tolist(), strict=True)):  # each volume: changed, same head
        rows = torch.from_numpy(np.flatnonzero((store.case == case) & (labels == label)))
        a, b = clean[rows].flatten().numpy(), made[rows].flatten().numpy()
        assert not np.array_equal(a, b) and np.corrcoef(a, b)[0, 1] > 0.7


def test_through_the_scanner_swaps_whole_samples_and_nothing_at_zero():
    batch = {"ct": torch.zeros(64, 4, 2, 2), "mri": torch.zeros(64, 5, 4, 2, 2),
             "ct_scanner": torch.ones(64, 4, 2, 2), "mri_scanner": torch.ones(64, 5, 4, 2, 2)}
    assert through_scanner(batch, 0.0, torch.Generator().manual_seed(0)) is batch
    swapped = through_scanner(batch, 0.5, torch.Generator().manual_seed(0))
    ct, mri = swapped["ct"].flatten(1), swapped["mri"].flatten(1)
    assert torch.equal(ct.min(1).values, ct.max(1).values) and torch.equal(mri.min(1).values, ct[:, 0])
    assert 16 < int(ct[:, 0].sum()) < 48  # about half the samples, each with all its sources
    assert torch.equal(through_scanner(batch, 1.0, torch.Generator())["mri"], batch["mri_scanner"])


@pytest.mark.parametrize("field", ["scanner", "keep_prob", "cond_dropout"])
def test_a_spatial_probability_outside_0_1_is_a_user_error(field):
    with pytest.raises(InputError, match=f"\\[spatial\\] {field} is a probability"):
        SpatialRecipe(**{field: 1.5})
