"""``medm2g train``: the training stages of the paper, each from a TOML recipe."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medm2g_cli import console
from medm2g_core.atomic import check_folder_writable
from medm2g_core.errors import InputError
from medm2g_core.vocabulary import CROSS_ROUNDS, LDM_MODALITIES, REPORT_ROUND, SPATIAL_ROUND, VAE_MODALITIES

if TYPE_CHECKING:  # the training engine is imported when a command runs, so `--help` starts without torch
    from medm2g_core.training.run import StageRun
    from medm2g_core.training.trainer import TrainResult

app = typer.Typer(help="Train the stages of MedM2G from TOML recipes (micro, phantom-tiny, paper); `train all` "
                  "runs every stage in order.",
                  no_args_is_help=True)

RECIPE_HELP = "A shipped recipe (micro, phantom-tiny, paper; see `medm2g info`) or a path to a .toml file."
DATA_HELP = "A manifest, a folder holding manifest.jsonl (`medm2g prepare`), or a cache (`medm2g prepare cache`)."
OUT_HELP = "Run folder: checkpoints, metrics.jsonl, samples/ and model/ (a complete MedM2G folder)."
RESUME_HELP = "Continue the run in --out from its newest checkpoint (exactly as if it had not stopped)."
STEPS_HELP = "Train this many optimiser steps instead of the recipe's (e.g. a quick smoke run)."
MODEL_KINDS = "A folder, a name from `medm2g weights import`, or a Hub id org/name[@revision]."


def _stage_run(recipe: str, data: Path, out: Path, model: str | None, resume: bool, steps: int | None) -> StageRun:
    if steps is not None and steps < 1:
        raise InputError("--steps must be at least 1")
    from medm2g_core.training.recipe import load_recipe
    from medm2g_core.training.run import StageRun

    check_folder_writable(out)
    return StageRun(recipe=load_recipe(recipe), data=data, out=out, base_model=model, resume=resume,
                    device=console.settings.device, progress=not console.settings.quiet, steps=steps)


def _report(result: TrainResult, out: Path) -> None:
    loss = result.metrics.get("loss")
    console.say(f"{result.steps} steps in {result.wall_s:.0f} s ({result.steps_per_s:.2f} steps/s)"
                + (f", final loss {loss:.4g}" if loss is not None else ""))
    typer.echo(str(out / "model"))


@app.command("vae")
def vae(
    modality: str = typer.Option(
        ..., "--modality", help=f"One of {', '.join(VAE_MODALITIES)} (image: one VAE for every imaging modality)."
    ),
    recipe: str = typer.Option("phantom-tiny", "--recipe", help=RECIPE_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    model: str | None = typer.Option(None, "--model", help="A MedM2G model to add the trained VAE to. " + MODEL_KINDS),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    steps: int | None = typer.Option(None, "--steps", help=STEPS_HELP),
) -> None:
    """Train an autoencoder: the image VAE (KL, one channel) or the text VAE (BERT encoder, GPT-2 decoder).

    Example: `medm2g train vae --modality image --recipe phantom-tiny --data data/phantom --out runs/vae`
    """
    from medm2g_core.training.run import train_vae

    result = train_vae(_stage_run(recipe, data, out, model, resume, steps), modality)
    _report(result, out)


@app.command("ldm")
def ldm(
    modality: str = typer.Option(..., "--modality", help=f"One of {', '.join(LDM_MODALITIES)}."),
    recipe: str = typer.Option("phantom-tiny", "--recipe", help=RECIPE_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    model: str = typer.Option(..., "--model", help="A MedM2G model with the autoencoder (RUN/model of train vae). "
                               + MODEL_KINDS),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    steps: int | None = typer.Option(None, "--steps", help=STEPS_HELP),
) -> None:
    """Train a single-modal latent diffusion model (eps-prediction, Eq. 2 of the paper) in the autoencoder's latents.

    Example: `medm2g train ldm --modality ct --data data/phantom --model runs/vae/model --out runs/ldm-ct`
    """
    from medm2g_core.training.run import train_ldm

    result = train_ldm(_stage_run(recipe, data, out, model, resume, steps), modality)
    _report(result, out)


@app.command("align")
def align(
    recipe: str = typer.Option("phantom-tiny", "--recipe", help=RECIPE_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    model: str = typer.Option(..., "--model", help="A MedM2G model with the text VAE (its tokenizer and encoder). "
                               + MODEL_KINDS),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    vi: bool | None = typer.Option(None, "--vi/--no-vi", help="Visual invariant (Barlow Twins) term; default: the "
                                   "recipe's [ablation] vi."),
    ca: bool | None = typer.Option(None, "--ca/--no-ca", help="Central alignment (InfoNCE) terms; default: the "
                                   "recipe's [ablation] ca. With --no-ca --no-vi the encoders are exported as built."),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    steps: int | None = typer.Option(None, "--steps", help=STEPS_HELP),
) -> None:
    """Central alignment (paper 3.2-3.3): prompt encoders for text, X-ray, CT and MRI in one space, text at the centre.

    Pairs are aligned in the recipe's order (text-xray, text-ct, ct-mri) with symmetric InfoNCE; with --vi each
    image encoder also keeps its features invariant to anatomy-preserving augmentations. Samples are held-out
    retrieval scores (samples/align-*.json).

    Example: `medm2g train align --data data/phantom --model runs/ldm-text/model --out runs/align`
    """
    from medm2g_core.training.run import train_align

    result = train_align(_stage_run(recipe, data, out, model, resume, steps), vi, ca)
    _report(result, out)


@app.command("cross")
def cross(
    round_name: str | None = typer.Option(None, "--round", help=f"One round: {', '.join(CROSS_ROUNDS)}, or "
                                          f"{SPATIAL_ROUND} (the spatial path of the CT and MRI denoisers), or "
                                          f"{REPORT_ROUND} (guided reports and films)."),
    all_rounds: bool = typer.Option(False, "--all", help="Run the recipe's rounds in order (RUN/<round>/, then "
                                    "RUN/model)."),
    recipe: str = typer.Option("phantom-tiny", "--recipe", help=RECIPE_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    model: str = typer.Option(..., "--model", help=MODEL_KINDS + " With the VAEs, denoisers and prompt encoders "
                               "(RUN/model of train align, or of the previous round)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    steps: int | None = typer.Option(None, "--steps", help=STEPS_HELP + " (per round)"),
    lcag: bool | None = typer.Option(None, "--lcag/--no-lcag", help="Latent cross-guided alignment: V_B reads the "
                                     "guide's noisy latent z_t^B besides f_B; default: the recipe's [ablation] lcag."),
    spatial: bool | None = typer.Option(None, "--spatial/--no-spatial", help="With --all: end with the spatial "
                                        "round; default: the recipe's [ablation] spatial."),
    report: bool | None = typer.Option(None, "--report/--no-report", help="With --all: end with the report round "
                                       "(after spatial); default: the recipe's [ablation] report."),
) -> None:
    """Latent cross-guided training (paper 3.4-3.5): context encoders and cross-attention, one multi-flow round
    at a time; everything else stays frozen.

    Rounds: text-xray (V_text, V_xray, both cross-attentions), text-ct (text frozen), ct-mri (CT frozen), and
    our extension spatial: copies of the CT and MRI denoisers that also read the source images' latents at their
    input (any subset of CT, T1, T1ce, T2, FLAIR, PD), used by image-to-image translation; and report: copies of
    the text and X-ray denoisers that also take the guide pooled into their timestep embedding, every weight
    trained, used by X-ray -> report and report -> X-ray.
    Samples are held-out denoising losses with the real vs a shuffled partner (samples/cross-*.json).

    Example: `medm2g train cross --all --data data/phantom --model runs/align/model --out runs/cross`
    """
    if all_rounds == (round_name is not None):
        raise InputError("give exactly one of --round R or --all")
    run = _stage_run(recipe, data, out, model, resume, steps)
    if all_rounds:
        from medm2g_core.training.run import train_cross_all

        results = train_cross_all(run, lcag, spatial, report)
        console.say(f"{len(results)} rounds, {sum(r.steps for r in results)} steps in "
                    f"{sum(r.wall_s for r in results):.0f} s")
        typer.echo(str(out / "model"))
        return
    from medm2g_core.training.run import train_cross

    _report(train_cross(run, round_name, lcag), out)


@app.command("ood")
def ood(
    recipe: str = typer.Option("phantom-tiny", "--recipe", help=RECIPE_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    model: str = typer.Option(..., "--model", help="A MedM2G model with the image VAE. " + MODEL_KINDS),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
) -> None:
    """Measure where the training images of each modality lie (the out-of-distribution reference) and add it to
    the model, so that `translate` and `report` warn about inputs unlike them (`--strict`: refuse).

    No optimisation: the image VAE encodes the data's train slices (mean and covariance per modality) and its val
    volumes (the threshold: 1.25 times the farthest); the same pass records where the anatomy lies in the train
    volumes (position and size), which translation standardises its inputs to. Use the data the model was trained on.

    Example: `medm2g train ood --data data/phantom --model runs/all/model --out runs/ood`
    """
    from medm2g_core.training.run import train_ood

    result = train_ood(_stage_run(recipe, data, out, model, False, None))
    console.say("thresholds: " + ", ".join(f"{k.removeprefix('threshold_')} {v:.1f}"
                                           for k, v in result.metrics.items()))
    typer.echo(str(out / "model"))


@app.command("all")
def all_stages(
    recipe: str = typer.Option("phantom-tiny", "--recipe", help=RECIPE_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Run folder: RUN/cache (built once from a manifest), RUN/<stage>/ "
                             "for each stage, and RUN/model, the finished MedM2G folder."),
    model: str | None = typer.Option(None, "--model", help="A MedM2G model to start from (default: nothing). "
                                      + MODEL_KINDS),
    resume: bool = typer.Option(False, "--resume", help="Continue: finished stages are kept, the interrupted one "
                                "continues from its newest checkpoint, the rest run."),
    steps: int | None = typer.Option(None, "--steps", help=STEPS_HELP + " (per stage and round)"),
) -> None:
    """Train every stage in order, each on the model of the one before: the image VAE, the X-ray, CT and MRI
    LDMs, the text VAE and LDM, central alignment, then the cross-guided rounds (and the spatial round when the
    recipe's [ablation] spatial is on), and last the out-of-distribution reference. Interrupted? Rerun with
    --resume.

    Example: `medm2g train all --recipe phantom-tiny --data data/phantom --out runs/all`
    """
    from medm2g_core.training.run import ALL_STAGES, train_all

    run = _stage_run(recipe, data, out, model, resume, steps)

    def announce(index: int, name: str, skipped: bool) -> None:
        console.say(f"[{index + 1}/{len(ALL_STAGES)}] {name}: " + ("finished before, kept" if skipped else
                                                                 f"training in {out / name}"))

    done = train_all(run, announce)
    results = [r for stage in done.values() for r in stage]
    console.say(f"{len(done)} stage(s) trained now, {sum(r.steps for r in results)} steps in "
                f"{sum(r.wall_s for r in results):.0f} s")
    typer.echo(str(out / "model"))

