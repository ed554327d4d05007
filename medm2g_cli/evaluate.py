"""``medm2g evaluate TASK``: the paper's tasks on a model and held-out data, with baselines, as JSON, Markdown, HTML."""

import shlex
import sys
from pathlib import Path

import typer

from medm2g_cli import console
from medm2g_cli.generation import GUIDANCE_OPTION, MODEL_OPTION, STEPS_OPTION, open_model
from medm2g_core.data.cache import CACHE_INDEX, Cache, CacheConfig, build_cache
from medm2g_core.data.manifest import read_manifest
from medm2g_core.errors import InputError
from medm2g_core.evaluation.results_page import markdown_table, write_results
from medm2g_core.evaluation.tasks import TASKS, EvalOptions, evaluate
from medm2g_core.sampling.diffusion import SamplingConfig
from medm2g_core.sampling.guides import image_resolution


def _cache(data: Path, out: Path, resolution: int) -> Cache:
    """``data`` as a cache, or a cache built once from its manifest into ``OUT/cache`` (baselines need the train
    split: mean images, the most common report, the effusion judge)."""
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


def evaluate_command(
    task: str = typer.Argument(..., help=f"One of {', '.join(TASKS)}."),
    data: Path = typer.Option(..., "--data", help="A manifest (or its folder) or a cache of it; held-out cases are "
                              "evaluated, the train split feeds the baselines."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.json, results.md and index.html."),
    model: str | None = MODEL_OPTION,
    split: str = typer.Option("test", "--split", help="Cases to evaluate: a split or several joined by + ."),
    cases: int | None = typer.Option(None, "--cases", help="At most this many cases."),
    seeds: int = typer.Option(3, "--seeds", help="Runs with seeds 0..N-1; tables show mean +/- std over them."),
    steps: int = STEPS_OPTION,
    guidance: float = GUIDANCE_OPTION,
    sources: str = typer.Option("T2,FLAIR", "--sources", help="mri-synthesis: the source contrasts."),
    target: str = typer.Option("T1", "--target", help="mri-synthesis: the target contrast."),
    baseline_steps: int = typer.Option(600, "--baseline-steps", help="Training steps of the supervised UNet "
                                       "baseline of the translation tasks."),
) -> None:
    """Evaluate a model on one of the paper's tasks against baselines on the same cases; prints the table.

    Examples: `medm2g evaluate mri-to-ct --data data/phantom --out eval/mri-to-ct`,
    `medm2g evaluate report --data data/c64 --split val+test --seeds 3 --out eval/report`.
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    options = EvalOptions(split, cases, seeds, SamplingConfig(steps=steps, guidance=guidance),
                          tuple(s.strip() for s in sources.split(",")), target, baseline_steps)
    medm2g = open_model(model)
    cache = _cache(data, out, image_resolution(medm2g))
    manifest = read_manifest(cache.index["manifest"])
    with console.progress(f"evaluate {task}") as update:
        result = evaluate(task, medm2g, manifest, cache, options, update)
    page = write_results(result, out, "medm2g " + shlex.join(sys.argv[1:]))
    typer.echo(markdown_table(result))
    console.say(f"wrote {page}")
