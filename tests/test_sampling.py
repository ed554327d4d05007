"""The sampling pipelines on the embedded default model: guidance in one forward, routes, geometry, determinism."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.metrics.image_metrics import ssim
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SCHEDULERS, SamplingConfig, Stream, sample
from medm2g_core.phantoms.world import PhantomConfig, make_case
from medm2g_core.sampling.generate import GenerateOptions, generate_images, generate_reports
from medm2g_core.sampling.guides import guide_context, image_guide, text_guide
from medm2g_core.sampling.report import HEADER, ReportOptions, anatomy_of, problems_of, write_report
from medm2g_core.sampling.routes import hop_denoiser, route
from medm2g_core.sampling.slices import cut, uncut
from medm2g_core.sampling.translate import (
    TranslateOptions,
    covers_film,
    head_to_foot_mm,
    plain_drr,
    translate_samples,
    translate_volume,
)
from medm2g_core.vocabulary import PAPER_GUIDANCE, REPORT_GUIDANCE

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = SamplingConfig(steps=3)


@pytest.fixture(scope="module")
def model(default_model):
    return default_model


@pytest.fixture(scope="module")
def brain():
    images, report, _, _ = make_case("brain", 7, PhantomConfig(brain_slices=6, xray_pixels=64))
    return images, report


@pytest.fixture(scope="module")
def chest():
    images, report, _, _ = make_case("chest", 8, PhantomConfig(xray_pixels=64, chest_spacing_mm=6.0))
    return images, report


def test_routes_follow_trained_directions():
    assert route("mri", "ct") == ["mri", "ct"]
    assert route("ct", "xray") == ["ct", "text", "xray"]
    assert route("mri", "xray") == ["mri", "ct", "text", "xray"]
    assert route("mri", "mri") == ["mri", "ct", "mri"]
    assert route("xray", "text") == ["xray", "text"]
    with pytest.raises(InputError, match="nothing to translate"):
        route("ct", "ct")
    with pytest.raises(InputError, match="unknown modality"):
        route("pet", "ct")


def test_guidance_in_one_batched_forward_equals_two_forwards(model):
    denoiser = model["denoiser_ct"]
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 16, 16, generator=generator)
    context = torch.randn(3, 20, 128, generator=generator)
    t = torch.tensor(500)
    stream = Stream(denoiser, tuple(latents.shape), lambda t, z: context)
    with torch.no_grad():
        guided = stream.predict(latents, t, context, 2.5)
        conditioned = denoiser(latents, t.expand(3), context=context)
        null = denoiser(latents, t.expand(3), context=None)
    torch.testing.assert_close(guided, null + 2.5 * (conditioned - null), atol=1e-4, rtol=1e-4)


def test_x_ray_and_report_hops_take_the_report_rounds_copies_at_their_own_guidance(model):
    assert hop_denoiser(model, "xray", "text") == ("guided_text", "guided_context_xray")
    assert hop_denoiser(model, "text", "xray") == ("guided_xray", "guided_context_text")
    assert hop_denoiser(model, "text", "ct") == ("guided_ct", "guided_context_text")
    assert hop_denoiser(model, "ct", "text") == ("denoiser_text", "context_encoder_ct")  # the paper's text-CT round
    paper_only = MedM2G({k: v for k, v in model.components.items() if not k.startswith("guided_")}, model.info)
    assert hop_denoiser(paper_only, "xray", "text") == ("denoiser_text", "context_encoder_xray")
    guided = Stream(model["guided_text"], (1, 768), lambda t, z: None, guidance=REPORT_GUIDANCE)
    plain = Stream(model["denoiser_text"], (1, 768), lambda t, z: None)
    assert guided.scale(SamplingConfig()) == REPORT_GUIDANCE and plain.scale(SamplingConfig()) == PAPER_GUIDANCE
    assert guided.scale(SamplingConfig(guidance=3.0)) == plain.scale(SamplingConfig(guidance=3.0)) == 3.0


def test_slices_go_back_onto_an_oblique_lps_grid_exactly():
    rng = np.random.default_rng(0)
    theta = 0.3
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.5, -1.5, 3.0])  # LPS-like axes, rotated
    affine[:3, 3] = [10.0, -20.0, 5.0]
    x, y = np.meshgrid(np.linspace(-1, 1, 48), np.linspace(-1, 1, 40), indexing="ij")
    data = np.stack([np.exp(-(x**2 + y**2) * (2 + k)) * 100 for k in range(5)], axis=2)
    data += rng.uniform(0, 1, data.shape)
    volume = Volume(data.astype(np.float32), affine, "MR")
    stack = cut(volume, 48)
    back = uncut(stack, stack.images, stack.mapping, 0.0)
    assert back.shape == volume.shape
    inside = back > 1.0
    assert np.abs(back - np.clip(data, stack.mapping.low, stack.mapping.high))[inside].max() < 0.02 * data.max()


def test_translate_keeps_geometry_units_and_marks_synthetic(model, brain):
    images, _ = brain
    out = translate_volume(model, [images["mr_t1"]], TranslateOptions("ct", sampling=FAST))
    assert out.shape == images["mr_t1"].shape
    np.testing.assert_allclose(out.affine, images["mr_t1"].affine, atol=1e-6)
    assert out.modality == "CT" and out.units == "HU" and out.synthetic
    assert out.meta.series_description.startswith("SYNTHETIC")
    assert -1100 < out.data.min() < out.data.max() <= 2048


def test_translate_repeats_with_a_seed_differs_with_input_and_ignores_batch_size(model, brain):
    images, _ = brain
    t1 = images["mr_t1"]
    first = translate_volume(model, [t1], TranslateOptions("ct", sampling=FAST, seed=3, batch_size=2))
    again = translate_volume(model, [t1], TranslateOptions("ct", sampling=FAST, seed=3, batch_size=2))
    np.testing.assert_array_equal(first.data, again.data)
    batched = translate_volume(model, [t1], TranslateOptions("ct", sampling=FAST, seed=3, batch_size=32))
    np.testing.assert_allclose(batched.data, first.data, atol=0.05)  # float rounding of other GEMM shapes only
    other_seed = translate_volume(model, [t1], TranslateOptions("ct", sampling=FAST, seed=4))
    assert np.abs(other_seed.data - first.data).mean() > 1.0
    flair = translate_volume(model, [images["mr_flair"]], TranslateOptions("ct", sampling=FAST, seed=3))
    assert np.abs(flair.data - first.data).mean() > 1.0


def test_shared_slice_noise_makes_equal_sources_equal_slices_and_independent_noise_does_not(model, brain):
    """With one noise for all slices, two slices whose sources are equal come out equal: a volume varies along z
    only as its source does. With a noise per slice they differ (the through-plane noise of issue 16)."""
    t1 = brain[0]["mr_t1"]
    middle = t1.data.shape[2] // 2
    flat = replace(t1, data=np.repeat(t1.data[:, :, middle:middle + 1], t1.data.shape[2], axis=2))
    shared = translate_volume(model, [flat], TranslateOptions("ct", sampling=FAST, seed=2))
    independent = translate_volume(model, [flat], TranslateOptions("ct", sampling=FAST, seed=2,
                                                                   slice_noise="independent"))
    assert shared.data.std(axis=2).max() < 1e-2  # HU; rows of one batch agree up to float rounding
    assert independent.data.std(axis=2).mean() > 5.0
    same_seed_first_slice = translate_volume(model, [flat], TranslateOptions("ct", sampling=FAST, seed=2,
                                                                             batch_size=1))
    np.testing.assert_allclose(same_seed_first_slice.data, shared.data, atol=0.05)  # batch size does not matter
    with pytest.raises(InputError, match="slice noise must be one of shared, independent") as refused:
        TranslateOptions("ct", slice_noise="random")
    assert refused.value.option == "slice_noise"


def test_samples_are_batched_and_their_spread_is_zero_only_where_they_agree(model, brain):
    t1 = brain[0]["mr_t1"]
    options = TranslateOptions("ct", sampling=FAST, seed=3, samples=3)
    assert options.seeds == [3, 4, 5]
    copies, zero = translate_samples(model, [t1], options, seeds=[3, 3, 3])  # three copies of one seed
    single = translate_volume(model, [t1], TranslateOptions("ct", sampling=FAST, seed=3))
    assert np.abs(zero.data).max() < 1e-3  # HU; identical rows of one batch agree up to float rounding
    np.testing.assert_allclose(copies.data, single.data, atol=0.05)
    mean, spread = translate_samples(model, [t1], options)
    others = [translate_volume(model, [t1], TranslateOptions("ct", sampling=FAST, seed=s)).data for s in (4, 5)]
    np.testing.assert_allclose(mean.data, np.mean([single.data, *others], axis=0), atol=0.05)
    np.testing.assert_allclose(spread.data, np.std([single.data, *others], axis=0), atol=0.05)
    head = t1.data > np.percentile(t1.data, 60)
    assert spread.data[head].mean() > 1.0 and spread.data.min() >= 0  # HU
    assert spread.shape == mean.shape == t1.shape and np.array_equal(spread.affine, mean.affine)
    assert spread.units == "HU" and spread.synthetic and "uncertainty" in spread.meta.series_description
    assert mean.provenance["samples"] == "3" and mean.meta.series_description.startswith("SYNTHETIC CT")
    with pytest.raises(InputError, match="at least 1; got 0") as refused:
        TranslateOptions("ct", samples=0)
    assert refused.value.option == "samples"


def test_a_film_from_several_samples_has_its_spread_on_the_films_grid(model, chest):
    ct = chest[0]["ct"]
    single = translate_volume(model, [ct], TranslateOptions("xray", sampling=FAST, seed=2))
    mean, spread = translate_samples(model, [ct], TranslateOptions("xray", sampling=FAST, seed=2, samples=2))
    assert spread.shape == mean.shape == single.shape and np.array_equal(spread.affine, single.affine)
    assert spread.modality == "XRAY" and spread.data.max() > 0.001 and spread.data.min() >= 0
    copies, zero = translate_samples(model, [ct], TranslateOptions("xray", sampling=FAST), seeds=[2, 2])
    np.testing.assert_allclose(copies.data, single.data, atol=1e-3)
    assert np.abs(zero.data).max() < 1e-4  # two copies of one seed agree


def test_guides_differ_with_their_input(model, brain, chest):
    mri = cut(brain[0]["mr_t1"], 64).images
    context = [guide_context(model, "mri", g.latent, g.prompt, 0)
               for g in (image_guide(model, "mri", torch.from_numpy(mri[:1])),
                         image_guide(model, "mri", torch.from_numpy(mri[-1:])))]
    assert (context[0] - context[1]).abs().mean() > 1e-3
    texts = text_guide(model, [brain[1], chest[1]])
    assert texts.latent.shape == (2, 128) and torch.allclose(texts.prompt.norm(dim=-1), torch.ones(2))


def test_multi_contrast_synthesis_and_contrast_label(model, brain):
    images, _ = brain
    out = translate_volume(model, [images["mr_t2"], images["mr_flair"]],
                           TranslateOptions("mri", contrast="T1", sampling=FAST))
    assert out.modality == "MR" and out.contrast == "T1" and out.shape == images["mr_t2"].shape
    with pytest.raises(InputError, match="one modality"):
        translate_volume(model, [images["mr_t2"], images["xray"]], TranslateOptions("mri", sampling=FAST))
    cropped = Volume(images["mr_flair"].data[:-2], images["mr_flair"].affine, "MR", contrast="FLAIR")
    with pytest.raises(InputError, match="one grid"):
        translate_volume(model, [images["mr_t2"], cropped], TranslateOptions("mri", sampling=FAST))


def test_ct_to_xray_is_one_radiograph(model, chest):
    out = translate_volume(model, [chest[0]["ct"]], TranslateOptions("xray", sampling=FAST))
    assert out.is_2d and out.modality == "XRAY" and out.data.min() >= 0.0 and out.data.max() <= 1.0
    assert out.synthetic and out.meta.series_description.startswith("SYNTHETIC")


def test_ct_volume_to_xray_shows_this_ct(model, chest):
    """The film of a CT is a projection of that CT: closer to its plain DRR than the film of another CT is."""
    other, _, _, _ = make_case("chest", 21, PhantomConfig(xray_pixels=64, chest_spacing_mm=6.0))
    options = TranslateOptions("xray", sampling=SamplingConfig(steps=10))
    drr = cut(plain_drr(chest[0]["ct"]), 64).images[:1]
    own = cut(translate_volume(model, [chest[0]["ct"]], options), 64).images[:1]
    foreign = cut(translate_volume(model, [other["ct"]], options), 64).images[:1]
    assert ssim(own, drr, 2.0) > 0.6 and ssim(own, drr, 2.0) > ssim(foreign, drr, 2.0) + 0.1


def test_only_a_ct_that_spans_a_film_is_projected(brain, chest):
    """A chest CT (324 mm head to foot) is projected; a 6-slice slab through a head (10 mm) is not a skull film."""
    assert head_to_foot_mm(chest[0]["ct"]) == pytest.approx(324.0) and covers_film(chest[0]["ct"])
    assert head_to_foot_mm(brain[0]["ct"]) == pytest.approx(10.0) and not covers_film(brain[0]["ct"])


def test_a_start_latent_and_strength_keep_the_start(model):
    """SDEdit: a short strength changes the start little; the full schedule from noise ignores it."""
    denoiser = model["denoiser_xray"]
    start = torch.randn((1, *denoiser_shape(denoiser)), generator=torch.Generator().manual_seed(0))
    stream = Stream(denoiser, start.shape, lambda t, latents: denoiser.null(1))
    config = SamplingConfig(steps=20, guidance=1.0)

    def run(**kwargs) -> torch.Tensor:
        return sample({"x": stream}, model["scheduler"], config, torch.Generator().manual_seed(1), "cpu",
                      **kwargs)["x"]

    near, far = run(start={"x": start}, strength=0.1), run()
    assert (near - start).pow(2).mean() < 0.25 * (far - start).pow(2).mean()
    steps = []
    run(start={"x": start}, strength=0.3, progress=lambda done, total: steps.append(total))
    assert steps[-1] == 6
    with pytest.raises(InputError, match="strength"):
        run(start={"x": start}, strength=0.0)
    with pytest.raises(InputError, match="every stream"):
        run(start={"y": start}, strength=0.5)


def denoiser_shape(denoiser) -> tuple[int, int, int]:
    side = denoiser.config.sample_size
    return denoiser.config.in_channels, side, side


def test_report_is_headed_labelled_and_reproducible(model, chest):
    options = ReportOptions(sampling=FAST, seed=5, n=2)
    reports = write_report(model, chest[0]["xray"], options)
    assert len(reports) == 2 and [r.seed for r in reports] == [5, 6]
    assert reports[0].as_text().startswith(HEADER)
    assert set(reports[0].labels) >= {"pleural_effusion", "cardiomegaly"}
    assert [r.text for r in write_report(model, chest[0]["xray"], options)] == [r.text for r in reports]


def test_report_samples_give_each_finding_the_share_of_samples_stating_it(model, chest):
    """With N samples a report is one of its N drawn reports (seeds seed + k*N ..), the one nearest their majority,
    and its agreement is the share of the N that state each finding; the header says so."""
    film = chest[0]["xray"]
    drawn = write_report(model, film, ReportOptions(sampling=FAST, seed=3, n=8))
    pooled = write_report(model, film, ReportOptions(sampling=FAST, seed=3, n=2, samples=4))
    assert len(pooled) == 2
    for k, report in enumerate(pooled):
        group = drawn[4 * k:4 * k + 4]
        stated = [{f for f, v in r.labels.items() if v == 1} for r in group]
        assert report.samples == 4 and report.text in [r.text for r in group]
        assert report.agreement == {f: sum(f in s for s in stated) / 4 for f in sorted(set().union(*stated))}
        majority = {f for f, share in report.agreement.items() if share > 0.5}
        mine = {f for f, v in report.labels.items() if v == 1}
        assert len(mine ^ majority) == min(len(s ^ majority) for s in stated)
        assert report.as_json()["agreement"] == report.agreement
        assert "stated by the 4 samples" in report.as_text()
    assert "agreement" not in drawn[0].as_json() and "samples" not in drawn[0].as_text()
    with pytest.raises(InputError, match="number of samples must be at least 1; got 0"):
        ReportOptions(samples=0)


def test_a_report_draws_a_ct_of_its_anatomy_alone_and_with_mri(model, brain, chest):
    """Report -> CT through the report round's guided CT copy: a chest report draws a chest CT and a brain report a
    brain CT (each slice nearer the mean slice of the phantom CT of its own anatomy), alone and jointly with MRI."""
    references = {name: cut(images["ct"], 64).images.mean(axis=0) for name, (images, _) in
                  (("brain", brain), ("chest", chest))}
    reports, wanted = [brain[1], chest[1]] * 2, ["brain", "chest"] * 2
    sampling = SamplingConfig(steps=20)
    for modalities in (("ct",), ("ct", "mri")):
        made = generate_images(model, reports, GenerateOptions(modalities, sampling=sampling), [0, 0, 1, 1])["ct"]
        drawn = [min(references, key=lambda a, s=s: float(np.mean((s - references[a]) ** 2))) for s in made]
        assert drawn == wanted, (modalities, drawn)


def test_reports_are_redrawn_until_consistent_and_say_so(model, brain, chest):
    """Redraws keep only reports the labeler finds consistent, or say what is wrong; draw 1 is the no-redraw one."""
    films = [chest[0]["xray"], brain[0]["xray"]]
    assert [anatomy_of(f) for f in films] == ["chest", "brain"]
    for film in films:
        first = write_report(model, film, ReportOptions(sampling=FAST, seed=2, n=4, redraws=0))
        checked = write_report(model, film, ReportOptions(sampling=FAST, seed=2, n=4, redraws=8))
        for raw, kept in zip(first, checked, strict=True):
            assert raw.draws == 1 and raw.problems == problems_of(raw.text, anatomy_of(film))
            assert kept.problems == problems_of(kept.text, anatomy_of(film))
            assert kept.first_draw == raw.text  # the check changes what users get, and keeps the model's own
            assert (kept.text == raw.text) == (kept.draws == 1)  # a report that passed at once is not redrawn
            assert kept.draws == 1 if not raw.problems else 1 < kept.draws <= 9
            assert not kept.problems or (kept.draws == 9 and "WARNING" in kept.as_text())
    assert problems_of("FINDINGS: No pneumothorax. IMPRESSION: Right pneumothorax.", "chest")
    assert problems_of("FINDINGS: Small left pleural effusion. IMPRESSION: Effusion.", "brain")


def test_generate_one_and_joint_is_seeded_per_row(model, brain, chest):
    prompts = [chest[1], brain[1]]
    joint = generate_images(model, prompts, GenerateOptions(("xray", "ct", "mri"), sampling=FAST), [1, 2])
    assert {k: v.shape for k, v in joint.items()} == {m: (2, 64, 64) for m in ("xray", "ct", "mri")}
    alone = generate_images(model, prompts[:1], GenerateOptions(("xray", "ct", "mri"), sampling=FAST), [1])
    for modality in joint:  # equal up to float rounding of a batch of 2 vs 1 (guidance 7 scales it up 7x)
        np.testing.assert_allclose(alone[modality][0], joint[modality][0], atol=1e-4)
    single = generate_images(model, prompts, GenerateOptions(("xray",), sampling=FAST), [1, 1])
    assert np.abs(single["xray"][0] - single["xray"][1]).mean() > 1e-3  # same seed, different report
    with pytest.raises(InputError, match="needs CT"):
        generate_images(model, prompts, GenerateOptions(("xray", "mri"), sampling=FAST), [1, 2])


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_samples_finite_latents(model, scheduler):
    reports = generate_reports(model, [0, 1], SamplingConfig(steps=3, scheduler=scheduler))
    assert len(reports) == 2 and all(reports)
    null = model["denoiser_text"].null(1)
    latents = sample({"text": Stream(model["denoiser_text"], (1, 128), lambda t, z: null)}, model["scheduler"],
                     SamplingConfig(steps=3, scheduler=scheduler, guidance=1.0), torch.Generator().manual_seed(0),
                     torch.device("cpu"))
    assert torch.isfinite(latents["text"]).all()


def test_sampling_options_are_checked():
    for bad in ({"steps": 0}, {"eta": 2.0}, {"guidance": -1.0}, {"scheduler": "heun"}):
        with pytest.raises(InputError) as refused:
            SamplingConfig(**bad)
        assert refused.value.option == next(iter(bad)) and "--" not in str(refused.value)


def test_an_unset_eta_is_the_flows_and_the_spatial_mri_flow_samples_deterministically(monkeypatch, model):
    from medm2g_core.models.schedule import DiffusionConfig, make_train_scheduler
    from medm2g_core.sampling import routes
    from medm2g_core.training.spatial_stage import SpatialRecipe, spatial_diffusion
    from medm2g_core.vocabulary import PAPER_ETA, SPATIAL_MRI_ETA, SPATIAL_SCHEDULER

    plain = Stream(torch.nn.Identity(), (1, 4, 2, 2), lambda t, z: None)
    assert plain.noise(SamplingConfig()) == PAPER_ETA == 1.0
    assert replace(plain, eta=0.0).noise(SamplingConfig()) == 0.0
    assert replace(plain, eta=0.0).noise(SamplingConfig(eta=0.7)) == 0.7  # the user's eta wins
    seen = {}
    monkeypatch.setattr(routes, "sample", lambda streams, *a, **k: seen.update(streams) or
                        {n: torch.zeros(s.shape) for n, s in streams.items()})
    eps_trained = MedM2G({k: v for k, v in model.components.items() if k != SPATIAL_SCHEDULER}, model.info)
    zero_snr = eps_trained.with_component(SPATIAL_SCHEDULER, make_train_scheduler(
        spatial_diffusion(DiffusionConfig(), SpatialRecipe(zero_terminal_snr=True))))
    for chosen, target, contrast, eta in ((eps_trained, "mri", 1, SPATIAL_MRI_ETA), (eps_trained, "ct", None, None),
                                          (zero_snr, "mri", 1, None)):  # v-trained MRI copies: the paper's eta
        source = "ct" if target == "mri" else "mri"
        guide = image_guide(chosen, source, torch.zeros(1, 64, 64), "T2" if source == "mri" else None)
        routes.spatial_hop(chosen, [(source, guide)], target, SamplingConfig(), [torch.Generator()], contrast)
        assert seen[target].eta == eta and seen[target].schedule is chosen.get(SPATIAL_SCHEDULER)
