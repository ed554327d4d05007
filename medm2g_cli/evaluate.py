"""``medm2g evaluate TASK``: the paper's tasks on a model and held-out data, with baselines, as JSON, Markdown, HTML."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medm2g_cli import console
from medm2g_cli.generation import GUIDANCE_OPTION, MODEL_OPTION, STEPS_OPTION, open_model
from medm2g_core.atomic import check_folder_writable
from medm2g_core.errors import InputError
from medm2g_core.vocabulary import CACHE_INDEX, EVAL_TASKS

if TYPE_CHECKING:  # the engine is imported when the command runs, so `--help` starts without torch
    from medm2g_core.data.cache import Cache
    from medm2g_core.models.medm2g import MedM2G


def _cache(data: Path, out: Path, resolution: int) -> Cache:
    """``data`` as a cache, or a cache built once from its manifest into ``OUT/cache`` (baselines need the train
    split: mean images, the most common report, the effusion judge)."""
    from medm2g_core.data.cache import Cache, CacheConfig, build_cache

    if not data.exists():
        raise InputError(f"--data {data}: no such file or folder")
    if (data / CACHE_INDEX).is_file():
        cache = Cache.open(data)
    else:
        folder = out / "cache"
        if not (folder / CACHE_INDEX).is_file():
            console.say(f"building a {resolution} px cache of {data} in {folder}")
            build_cache(data / "manifest.jsonl" if data.is_dir() else data, folder, CacheConfig(resolution),
                        overwrite=True)
        cache = Cache.open(folder)
    if cache.resolution != resolution:
        raise InputError(f"--data {data}: cached at {cache.resolution} px but the model works at {resolution} px")
    return cache


ALL_TASKS = (*EVAL_TASKS, "ablation", "downstream")


def _variants(specs: list[str], model: str | None) -> dict[str, MedM2G]:
    """``--variant NAME=MODEL`` options as name -> loaded model, in the order given."""
    if model is not None:
        raise InputError("ablation compares --variant NAME=MODEL options; --model is for the other tasks")
    parsed = []
    for spec in specs:  # every option is checked before any model is loaded
        name, sep, folder = (part.strip() for part in spec.partition("="))
        if not sep or not name or not folder:
            raise InputError(f"--variant {spec!r}: write NAME=MODEL (a folder, imported name or Hub id)")
        parsed.append((name, folder))
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise InputError(f"--variant names must differ; got {', '.join(names)}")
    if len(parsed) < 2:
        raise InputError("ablation needs at least two --variant NAME=MODEL options (the first is the reference row)")
    return {name: open_model(folder) for name, folder in parsed}


def _downstream(data: Path, out: Path, model: str | None, variant: list[str], synthetic: list[str], seeds: int,
                pretrain_steps: int, head_steps: int, segment: str, baseline_steps: int | None) -> None:
    """Table 8: every corpus checked before anything is written, then the rows pre-trained and scored."""
    from medm2g_core.data.cache import Cache, CacheConfig
    from medm2g_core.data.manifest import read_manifest
    from medm2g_core.evaluation.downstream import DownstreamOptions, downstream
    from medm2g_core.evaluation.downstream_data import load_corpus, open_corpus, parse_synthetic
    from medm2g_core.evaluation.results_page import markdown_table, write_results

    if model is not None or variant:
        raise InputError("downstream scores corpora made beforehand (--synthetic); it takes no --model or --variant")
    options = DownstreamOptions(seeds=seeds, pretrain_steps=pretrain_steps, head_steps=head_steps, segment=segment,
                                **({} if baseline_steps is None else {"baseline_steps": baseline_steps}))
    manifests = {name: open_corpus(name, path) for name, path in parse_synthetic(synthetic).items()}
    resolution = Cache.open(data).resolution if (data / CACHE_INDEX).is_file() else CacheConfig().resolution
    cache = _cache(data, out, resolution)
    corpora = [load_corpus(name, manifest, cache.resolution) for name, manifest in manifests.items()]
    with console.progress("evaluate downstream") as update:
        result = downstream(cache, read_manifest(cache.index["manifest"]), corpora, options, update)
    page = write_results(result, out, "medm2g " + shlex.join(console.settings.argv))
    typer.echo(markdown_table(result))
    console.say(f"wrote {page}")


def evaluate_command(
    task: str = typer.Argument(..., help=f"One of {', '.join(ALL_TASKS)}."),
    data: Path = typer.Option(..., "--data", help="A manifest (or its folder) or a cache of it; held-out cases are "
                              "evaluated, the train split feeds the baselines."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.json, results.md and index.html."),
    model: str | None = MODEL_OPTION,
    split: str = typer.Option("test", "--split", help="Cases to evaluate: a split or several joined by + ."),
    cases: int | None = typer.Option(None, "--cases", help="At most this many cases."),
    seeds: int = typer.Option(3, "--seeds", help="Runs with seeds 0..N-1; tables show mean +/- std over them."),
    steps: int = STEPS_OPTION,
    guidance: float | None = GUIDANCE_OPTION,
    sources: str = typer.Option("T2,FLAIR", "--sources", help="mri-synthesis: the source contrasts."),
    target: str = typer.Option("T1", "--target", help="mri-synthesis: the target contrast."),
    baseline_steps: int | None = typer.Option(None, "--baseline-steps", help="Training steps of the supervised UNet "
                                              "baseline of the translation tasks (default 600) and of downstream's "
                                              "MRI -> CT rows (default 30)."),
    samples: int = typer.Option(1, "--samples", help="mri-to-ct, mri-synthesis: MedM2G's output is the mean of N "
                                "samples; with N >= 2 also the calibration of their per-voxel standard deviation "
                                "(rank correlation with the error, AUSE) and uncertainty maps beside error maps."),
    slice_noise: str = typer.Option("shared", "--slice-noise", help="mri-to-ct, mri-synthesis: shared (one noise "
                                    "for all slices of a volume, the default) or independent (one per slice)."),
    variant: list[str] = typer.Option([], "--variant", help="ablation: NAME=MODEL, repeated; the variants trained with "
                                      "the CA/LCAG/VI switches (`medm2g train align --no-ca`, `train cross "
                                      "--no-lcag`, ...). The first is the reference of the added parameters."),
    synthetic: list[str] = typer.Option([], "--synthetic", help="downstream: a synthesize-dataset corpus (CORPUS or "
                                        "NAME=CORPUS), repeated; each is a row added to real only. Every record "
                                        "must be marked synthetic."),
    pretrain_steps: int = typer.Option(120, "--pretrain-steps", help="downstream: contrastive pre-training steps of "
                                       "every row (the same budget per row)."),
    head_steps: int = typer.Option(100, "--head-steps", help="downstream: training steps of each classifier, "
                                   "segmentation and detection head on the frozen encoder."),
    segment: str = typer.Option("pneumothorax", "--segment", help="downstream: the finding to segment (SIIM's is "
                                "pneumothorax)."),
) -> None:
    """Evaluate a model on one of the paper's tasks against baselines on the same cases; prints the table.

    `ablation` (Table 7) scores several variants of a model, all trained on the same budget with different
    CA/LCAG/VI switches, on the same cases and seeds: report BLEU/ROUGE-L, report -> X-ray effusion AUC and FID,
    T2 + T1 -> PD and T2 -> CT PSNR/SSIM, with each variant's switches, time per epoch and added parameters as its
    training recorded them.

    `downstream` (Table 8) pre-trains a small image encoder on the real training films and reports alone and with
    each --synthetic corpus added, then scores chest finding classification (AUC), segmentation (Dice) and
    nodule/mass detection (mAP) with 1 % and 100 % of the training labels, and the MRI -> CT UNet with and
    without the corpus's MRI/CT pairs (PSNR/SSIM), with a paired test per cell against real only.

    Examples: `medm2g evaluate mri-to-ct --data data/phantom --out eval/mri-to-ct`,
    `medm2g evaluate report --data data/c64 --split val+test --seeds 3 --out eval/report`,
    `medm2g evaluate ablation --variant LDM=runs/ldm/model --variant full=runs/cross/model --data cache --out eval/t7`,
    `medm2g evaluate downstream --data cache --synthetic corpus/ --synthetic weak=corpus-unguided/ --out eval/t8`.
    """
    from medm2g_core.data.manifest import read_manifest
    from medm2g_core.evaluation.ablation import ablation
    from medm2g_core.evaluation.results_page import markdown_table, write_results
    from medm2g_core.evaluation.tasks import EvalOptions, evaluate
    from medm2g_core.models.sampler import SamplingConfig
    from medm2g_core.sampling.guides import image_resolution

    check_folder_writable(out)
    if task not in ALL_TASKS:
        raise InputError(f"unknown task {task!r}; tasks: {', '.join(ALL_TASKS)}")
    if synthetic and task != "downstream":
        raise InputError("--synthetic is for the downstream task")
    if task == "downstream":
        _downstream(data, out, model, variant, synthetic, seeds, pretrain_steps, head_steps, segment, baseline_steps)
        return
    if variant and task != "ablation":
        raise InputError("--variant is for the ablation task; the other tasks take one --model")
    options = EvalOptions(split, cases, seeds, SamplingConfig(steps=steps, guidance=guidance),
                          tuple(s.strip() for s in sources.split(",")), target,
                          EvalOptions.baseline_steps if baseline_steps is None else baseline_steps, samples,
                          slice_noise)
    variants = _variants(variant, model) if task == "ablation" else {"model": open_model(model)}
    cache = _cache(data, out, image_resolution(next(iter(variants.values()))))
    manifest = read_manifest(cache.index["manifest"])
    with console.progress(f"evaluate {task}") as update:
        if task == "ablation":
            result = ablation(variants, manifest, cache, options, update)
        else:
            result = evaluate(task, variants["model"], manifest, cache, options, update)
    page = write_results(result, out, "medm2g " + shlex.join(console.settings.argv))
    typer.echo(markdown_table(result))
    console.say(f"wrote {page}")
