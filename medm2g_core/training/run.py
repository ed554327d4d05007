"""Run one training stage from a recipe: data -> cache -> stage -> trainer -> a MedM2G model folder.

``RUN/`` holds the trainer's files (checkpoints, metrics.jsonl, samples) and ``RUN/model``, a complete MedM2G
folder: the components of ``--model`` (when given) plus the one this stage trained. A later stage takes that
folder as its ``--model``, so ``train vae`` -> ``train ldm`` chains without copying anything by hand.
"""

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from medm2g_core import __version__
from medm2g_core.atomic import write_text
from medm2g_core.data.cache import Cache, CacheConfig, build_cache
from medm2g_core.errors import InputError
from medm2g_core.hub import load_model, model_folder, resolve_pretrained
from medm2g_core.models.context_encoder import ContextEncoderConfig
from medm2g_core.models.medm2g import MedM2G, load_exported
from medm2g_core.models.schedule import make_train_scheduler
from medm2g_core.training.config_loading import to_dict
from medm2g_core.training.recipe import Recipe
from medm2g_core.training.stage import OptimConfig, Stage
from medm2g_core.training.trainer import TrainResult, train
from medm2g_core.vocabulary import (
    CACHE_INDEX,
    LDM_MODALITIES,
    MODALITY_KEYS,
    MODEL_INDEX,
    OOD_REFERENCE,
    REPORT_ROUND,
    SPATIAL_ROUND,
    VAE_MODALITIES,
)


@dataclass
class StageRun:
    """What one ``medm2g train`` invocation asked for."""

    recipe: Recipe
    data: Path  # a manifest, a prepared folder holding manifest.jsonl, or a cache folder
    out: Path
    base_model: str | Path | None = None  # a folder, an imported name or a Hub id (as every --model)
    resume: bool = False
    device: str = "auto"
    progress: bool = True
    steps: int | None = None  # overrides the recipe's step count of the stage


def _optim(run: StageRun, optim: OptimConfig) -> OptimConfig:
    return optim if run.steps is None else replace(optim, steps=run.steps)


def init_folder(value: str | None, what: str) -> str | None:
    """A recipe's ``init`` (folder or Hub id, ``#subfolder``) as a local folder, or None."""
    return None if value is None else str(resolve_pretrained(value, what))


def open_cache(run: StageRun) -> Cache:
    """The cache ``--data`` names, or one built (once) from its manifest into ``RUN/cache``."""
    data = run.data
    if not data.exists():
        raise InputError(f"training data {data}: no such file or folder", option="data")
    if (data / CACHE_INDEX).is_file():
        cache = Cache.open(data)
        if cache.resolution != run.recipe.data.resolution:
            raise InputError(f"training data {data}: cached at {cache.resolution} px but recipe "
                             f"{run.recipe.name} trains at {run.recipe.data.resolution} px", option="data")
        return cache
    manifest = data / "manifest.jsonl" if data.is_dir() else data
    folder = run.out / "cache"
    if not (folder / CACHE_INDEX).is_file():
        config = CacheConfig(resolution=run.recipe.data.resolution, ct_clip_hu=run.recipe.data.ct_clip_hu,
                             min_foreground=run.recipe.data.min_foreground)
        run.out.mkdir(parents=True, exist_ok=True)
        build_cache(manifest, folder, config, overwrite=True)
    return Cache.open(folder)


def image_keys(cache: Cache, modality: str, recipe_keys: tuple[str, ...]) -> tuple[str, ...]:
    """The cache streams a modality trains on; an error when the data has none of them."""
    wanted = recipe_keys if modality == "image" else MODALITY_KEYS[modality]
    present = tuple(k for k in wanted if f"train/{k}" in cache.index["shards"])
    if not present:
        raise InputError(f"the data has no {modality} images in its train split (looked for {', '.join(wanted)})")
    return present


def load_base(run: StageRun, needed: tuple[str, ...] = ()) -> MedM2G:
    """The ``--model`` to build on (empty when not given); ``needed`` components must be in it."""
    if run.base_model is None:
        if needed:
            raise InputError(f"this stage builds on a model with {', '.join(needed)}; train it first", option="model")
        return MedM2G()
    model = load_model(str(run.base_model))  # verified, and in fp32 also from an fp16-stored model
    missing = [name for name in needed if name not in model]
    if missing:
        raise InputError(f"model {run.base_model} has no {', '.join(missing)}; train that stage first", option="model")
    return model


def _exported(folder: Path) -> dict[str, object]:
    """The components a stage exported into ``folder``, one per subfolder."""
    return {sub.name: load_exported(sub) for sub in sorted(p for p in folder.iterdir() if p.is_dir())}


def stage_info(stage: Stage, result: TrainResult, switches: dict[str, bool] | None = None) -> dict:
    """What the model's ``info["stage:NAME"]`` keeps of a stage: steps, the parameters it trained, the size of its
    training set, its time per epoch on the machine that trained it, and the ablation switches it ran with
    (Table 7's last columns)."""
    info: dict = {"steps": result.steps, "trained_parameters": sum(p.numel() for p in stage.trainable())}
    if result.examples:
        info["training_examples"] = result.examples
    if result.steps_per_s > 0:
        info["seconds_per_epoch"] = round(result.epoch_steps / result.steps_per_s, 3)
    return info | (switches or {})


def run_stage(run: StageRun, stage: Stage, optim: OptimConfig, base: MedM2G,
              switches: dict[str, bool] | None = None) -> TrainResult:
    """Train ``stage`` and write ``RUN/model``: ``base`` plus the exported component(s) and the scheduler.
    A stage with nothing to train (an ablation that switches its losses off) is exported as built."""
    optim = _optim(run, optim)
    if list(stage.trainable()):
        result = train(stage, optim, run.out, resume=run.resume, device=run.device, progress=run.progress)
    else:
        shutil.rmtree(run.out / "model", ignore_errors=True)
        stage.export(run.out / "model")
        result = TrainResult(steps=0, metrics={}, run_dir=run.out, wall_s=0.0, steps_per_s=0.0)
    model = base
    for name, component in _exported(run.out / "model").items():
        model = model.with_component(name, component)
    model = model.with_component("scheduler", make_train_scheduler(run.recipe.diffusion))
    model.info = {**model.info, "recipe": run.recipe.name, f"stage:{stage.name}": stage_info(stage, result, switches)}
    model.save_pretrained(run.out / "model", overwrite=True)
    write_run_record(run, stage.name, optim, result)
    return result


def write_run_record(run: StageRun, stage_name: str, optim: OptimConfig, result: TrainResult) -> Path:
    """``RUN/run.json``: what was run, on what, with which weights out (the provenance every output carries)."""
    index = json.loads((run.out / "model" / MODEL_INDEX).read_text(encoding="utf-8"))
    record = {
        "medm2g": __version__,
        "command": f"train {stage_name}",
        "recipe": to_dict(run.recipe),
        "data": str(run.data.resolve()),
        "base_model": str(model_folder(str(run.base_model)).resolve()) if run.base_model else None,
        "device": run.device,
        "seed": optim.seed,
        "steps": result.steps,
        "wall_s": round(result.wall_s, 3),
        "steps_per_s": round(result.steps_per_s, 4),
        "metrics": result.metrics,
        "model_sha256": index["sha256"],
    }
    return write_text(run.out / "run.json", json.dumps(record, indent=2, default=str) + "\n", overwrite=True)


def train_vae(run: StageRun, modality: str) -> TrainResult:
    """``medm2g train vae``: the image VAE (shared or per modality) or the text VAE."""
    from medm2g_core.training.image_vae_stage import ImageVAEStage
    from medm2g_core.training.text_vae_stage import TextVAEStage, reports_from_cache

    if modality not in VAE_MODALITIES:
        raise InputError(f"autoencoder modality must be one of {', '.join(VAE_MODALITIES)}; got {modality!r}",
                         option="modality")
    base = load_base(run)
    if modality == "text":
        section = run.recipe.text_vae
        inits = {name: init_folder(getattr(section, name), f"text_vae.{name}")
                 for name in ("tokenizer", "init_encoder", "init_decoder")}
        reports = reports_from_cache(open_cache(run))
        if section.phantom_reports:
            from medm2g_core.phantoms.world import report_corpus

            corpus = report_corpus(section.phantom_reports, section.phantom_reports_seed)
            reports["train"] = [*reports.get("train", []), *corpus]
        stage = TextVAEStage(reports, section.model, kl_anneal_steps=section.kl_anneal_steps, **inits)
        return run_stage(run, stage, section.optim, base)
    section = run.recipe.image_vae
    init = init_folder(section.init, "image_vae.init")
    cache = open_cache(run)
    keys = image_keys(cache, modality, section.keys)
    stage = ImageVAEStage(cache, keys, section.model, init=init, seed=section.optim.seed, balance=section.balance)
    return run_stage(run, stage, section.optim, base)


def _self_guide(run: StageRun, wanted: bool) -> ContextEncoderConfig | None:
    """The self guide's architecture: the recipe's context encoder, so that it can seed V in the rounds."""
    return run.recipe.cross.context_encoder if wanted else None


def train_ldm(run: StageRun, modality: str) -> TrainResult:
    """``medm2g train ldm``: a single-modal denoiser in the latent space of the ``--model``'s autoencoder."""
    from medm2g_core.training.image_ldm_stage import ImageLDMStage
    from medm2g_core.training.text_ldm_stage import TextLDMStage

    if modality not in LDM_MODALITIES:
        raise InputError(f"denoiser modality must be one of {', '.join(LDM_MODALITIES)}; got {modality!r}",
                         option="modality")
    if modality == "text":
        base = load_base(run, ("text_vae",))
        section = run.recipe.text_ldm
        stage = TextLDMStage(open_cache(run), base["text_vae"], section.model, run.recipe.diffusion,
                             seed=section.optim.seed, guide=_self_guide(run, section.self_guide),
                             cond_dropout=section.cond_dropout)
        return run_stage(run, stage, section.optim, base)
    base = load_base(run, ("image_vae",))
    section = run.recipe.image_ldm
    init = init_folder(section.init, "image_ldm.init")
    cache = open_cache(run)
    image_keys(cache, modality, ())
    stage = ImageLDMStage(cache, modality, base["image_vae"], section.model, run.recipe.diffusion,
                          cond_dropout=section.cond_dropout, init=init, seed=section.optim.seed,
                          guide=_self_guide(run, section.self_guide))
    return run_stage(run, stage, section.optim, base)


def train_align(run: StageRun, vi: bool | None = None, ca: bool | None = None) -> TrainResult:
    """``medm2g train align``: the prompt encoders, aligned around text (CA) with the visual invariant (VI);
    ``ca``/``vi`` override the recipe's ``[ablation]`` switches."""
    from medm2g_core.training.align_stage import AlignStage

    base = load_base(run, ("text_vae",))
    section, ablation = run.recipe.align, run.recipe.ablation
    switches = {"ca": ablation.ca if ca is None else ca, "vi": ablation.vi if vi is None else vi}
    stage = AlignStage(open_cache(run), base["text_vae"], section, **switches, seed=section.optim.seed)
    return run_stage(run, stage, section.optim, base, switches)


def train_cross(run: StageRun, round_name: str, lcag: bool | None = None) -> TrainResult:
    """``medm2g train cross --round R``: one multi-flow round of cross-guided training on the ``--model``, or the
    spatial round (``R = spatial``); ``lcag`` overrides the recipe's ``[ablation]`` switch."""
    from medm2g_core.training.cross_stage import CrossStage, required_components

    if round_name == SPATIAL_ROUND:
        return train_spatial(run)
    if round_name == REPORT_ROUND:
        return train_report(run)
    base = load_base(run, required_components(round_name))  # before the cache is built: bad input writes nothing
    section = run.recipe.cross
    switches = {"lcag": run.recipe.ablation.lcag if lcag is None else lcag}
    stage = CrossStage(open_cache(run), base, round_name, section, run.recipe.diffusion, **switches,
                       seed=section.optim.seed)
    return run_stage(run, stage, section.optim, base, switches)


def train_spatial(run: StageRun) -> TrainResult:
    """``medm2g train cross --round spatial``: the spatial path of the CT and MRI denoisers (our extension)."""
    from medm2g_core.training.spatial_stage import SpatialStage, required_components

    base = load_base(run, required_components())
    section = run.recipe.spatial
    stage = SpatialStage(open_cache(run), base, section, run.recipe.diffusion, seed=section.optim.seed)
    return run_stage(run, stage, section.optim, base, {"spatial": True})


def train_report(run: StageRun) -> TrainResult:
    """``medm2g train cross --round report``: guided reports and films (the global path; our extension)."""
    from medm2g_core.training.report_stage import ReportStage, required_components

    base = load_base(run, required_components())
    section = run.recipe.report
    stage = ReportStage(open_cache(run), base, section, run.recipe.diffusion, seed=section.optim.seed)
    return run_stage(run, stage, section.optim, base, {"report": True})


def train_cross_all(run: StageRun, lcag: bool | None = None, spatial: bool | None = None,
                    report: bool | None = None) -> list[TrainResult]:
    """``medm2g train cross --all``: the recipe's rounds in order, each in ``RUN/<round>`` on the previous model,
    then the spatial round when ``spatial`` and the report round when ``report`` (defaults: the recipe's
    ``[ablation]`` switches); ``RUN/model`` is the final model."""
    spatial = run.recipe.ablation.spatial if spatial is None else spatial
    report = run.recipe.ablation.report if report is None else report
    extensions = (*((SPATIAL_ROUND,) if spatial else ()), *((REPORT_ROUND,) if report else ()))
    results, model = [], run.base_model
    for round_name in (*run.recipe.cross.rounds, *extensions):
        step = replace(run, out=run.out / round_name, base_model=model)
        results.append(train_cross(step, round_name, lcag))
        model = step.out / "model"
    final = MedM2G.from_pretrained(model)
    final.save_pretrained(run.out / "model", overwrite=True)
    return results


def train_ood(run: StageRun) -> TrainResult:
    """``medm2g train ood``: the out-of-distribution reference (no optimisation: the train split's latent
    statistics of each image modality, the val split's farthest volume for the threshold) added to the model."""
    from medm2g_core.training.ood_stage import build_reference

    base = load_base(run, ("image_vae",))
    cache = open_cache(run)
    run.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    reference = build_reference(base, cache)
    model = base.with_component(OOD_REFERENCE, reference)
    thresholds = {f"threshold_{m}": round(reference.threshold(m), 3) for m in reference.config.modalities}
    model.info = {**model.info, "stage:ood": thresholds}
    model.save_pretrained(run.out / "model", overwrite=True)
    result = TrainResult(steps=0, metrics=thresholds, run_dir=run.out, wall_s=time.perf_counter() - started,
                         steps_per_s=0.0)
    write_run_record(run, "ood", OptimConfig(steps=0), result)
    return result


ALL_STAGES = ("vae-image", "ldm-xray", "ldm-ct", "ldm-mri", "vae-text", "ldm-text", "align", "cross", "ood")


def stage_done(folder: Path) -> bool:
    """A stage folder whose run finished: its record and its complete model folder are written (in that order)."""
    return (folder / "run.json").is_file() and (folder / "model" / MODEL_INDEX).is_file()


def _one_of_all(run: StageRun, name: str) -> list[TrainResult]:
    kind, _, modality = name.partition("-")
    if kind == "vae":
        return [train_vae(run, modality)]
    if kind == "ldm":
        return [train_ldm(run, modality)]
    if kind == "align":
        return [train_align(run)]
    if kind == "ood":
        return [train_ood(run)]
    results = train_cross_all(run)
    write_text(run.out / "run.json", json.dumps({"medm2g": __version__, "command": "train cross --all",
                                                 "rounds": [r.steps for r in results]}, indent=2) + "\n",
               overwrite=True)
    return results


def train_all(run: StageRun, announce: Callable[[int, str, bool], None] | None = None,
              ) -> dict[str, list[TrainResult]]:
    """``medm2g train all``: every stage of the recipe in order, each in ``RUN/<stage>`` on the previous stage's
    model (the chain of the single commands), then ``RUN/model``. The data is cached once (``RUN/cache``). With
    ``run.resume`` finished stages are kept and the interrupted one continues from its newest checkpoint; a
    finished stage after one that trained now is stale (its base changed) and is trained again from scratch.
    ``announce(index, name, skipped)`` is told of each stage before it starts."""
    if not run.resume and run.out.exists() and any(run.out.iterdir()):
        raise InputError(f"run folder {run.out} is not empty; ask for resume to continue that run, or choose another "
                         "folder", option="resume")
    data = open_cache(replace(run, out=run.out)).root
    model, done = run.base_model, {}
    for index, name in enumerate(ALL_STAGES):
        folder = run.out / name
        skipped = stage_done(folder) and not done
        if announce:
            announce(index, name, skipped)
        if not skipped:
            if done and stage_done(folder):
                shutil.rmtree(folder)
            done[name] = _one_of_all(replace(run, data=data, out=folder, base_model=model), name)
        model = folder / "model"
    MedM2G.from_pretrained(model).save_pretrained(run.out / "model", overwrite=True)
    return done

