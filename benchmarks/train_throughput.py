"""Benchmark: optimiser steps per second of every single-modal stage of a recipe on this machine.

Builds each stage exactly as ``medm2g train`` does (the recipe's model configs and batch sizes, untrained
weights: speed does not depend on them), times ``--steps`` AdamW steps after one warm-up step, and projects
the wall time of the recipe's step counts. The image VAE's latent encoding for the LDM stages is not timed.

    medm2g prepare phantom --out data/phantom --cases 200
    medm2g prepare cache data/phantom --out data/cache64 --resolution 64
    python benchmarks/train_throughput.py --cache data/cache64 --recipe phantom-tiny --write
"""

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from bench_report import write_section

from medm2g_core.data.cache import Cache
from medm2g_core.models.image_vae import build_image_vae
from medm2g_core.models.text_vae import TextVAE
from medm2g_core.training.image_ldm_stage import ImageLDMStage
from medm2g_core.training.image_vae_stage import ImageVAEStage
from medm2g_core.training.recipe import load_recipe
from medm2g_core.training.text_ldm_stage import TextLDMStage
from medm2g_core.training.text_vae_stage import TextVAEStage, reports_from_cache

SECTION = "## Training throughput (train_throughput.py)"


def steps_per_second(stage, batch_size: int, steps: int) -> float:
    dataset = stage.dataset("train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    optimiser = torch.optim.AdamW(list(stage.trainable()), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batches = iter(loader)
    timings = []
    for step in range(steps + 1):
        batch = next(batches, None)
        if batch is None:  # a small split: start another epoch
            batches = iter(loader)
            batch = next(batches)
        start = time.perf_counter()
        loss, _ = stage.loss(batch, generator)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        if step:  # the first step warms up allocators and kernels
            timings.append(time.perf_counter() - start)
    return len(timings) / sum(timings)


def stages(recipe, cache: Cache):
    vae = build_image_vae(recipe.image_vae.model)
    keys = tuple(k for k in recipe.image_vae.keys if f"train/{k}" in cache.index["shards"])
    yield "vae image", ImageVAEStage(cache, keys, recipe.image_vae.model), recipe.image_vae.optim
    guide = recipe.cross.context_encoder  # the self guides of the recipe's LDMs (training/guidance.py)
    for key in ("xray", "ct", "mri"):
        yield (f"ldm {key}", ImageLDMStage(cache, key, vae, recipe.image_ldm.model, recipe.diffusion,
                                           cond_dropout=recipe.image_ldm.cond_dropout,
                                           guide=guide if recipe.image_ldm.self_guide else None),
               recipe.image_ldm.optim)
    text = TextVAEStage(reports_from_cache(cache), recipe.text_vae.model)
    yield "vae text", text, recipe.text_vae.optim
    text_vae = TextVAE(**asdict(text.config), tokenizer=text.vae.tokenizer)
    yield "ldm text", TextLDMStage(cache, text_vae, recipe.text_ldm.model, recipe.diffusion,
                                   guide=guide if recipe.text_ldm.self_guide else None,
                                   cond_dropout=recipe.text_ldm.cond_dropout), recipe.text_ldm.optim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="a cache at the recipe's resolution")
    parser.add_argument("--recipe", default="phantom-tiny")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    recipe, cache = load_recipe(args.recipe), Cache.open(args.cache)
    rows, total = [], 0.0
    for name, stage, optim in stages(recipe, cache):
        speed = steps_per_second(stage, optim.batch_size, args.steps)
        minutes = optim.steps / speed / 60
        total += minutes
        rows.append(f"| {name} | {optim.batch_size} | {speed:.2f} | {speed * optim.batch_size:.1f} | {optim.steps} | "
                    f"{minutes:.1f} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"Recipe `{args.recipe}` at {recipe.data.resolution} px on a cache of {len(cache.index['cases'])} phantom "
        f"cases, {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, fp32; "
        f"{args.steps} timed steps per stage after one warm-up.",
        "",
        "| stage | batch | steps/s | samples/s | recipe steps | projected min |",
        "|---|---|---|---|---|---|",
        *rows,
        f"| **all single-modal stages** | | | | | **{total:.1f}** |",
    ])
    print(body)
    if args.write:
        write_section(SECTION, body, "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
