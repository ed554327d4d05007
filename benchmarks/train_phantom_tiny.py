"""Benchmark: train every single-modal stage of a recipe on a phantom world and measure what it learned.

Runs the real commands (``medm2g prepare cache``, ``medm2g train vae|ldm``) one after another, then
evaluates on the held-out (val + test) cases: image VAE reconstruction PSNR per modality against the
mean-image baseline, text VAE reconstruction BLEU-4 of held-out reports (and finding-label F1 through the
labeler), steps/s and wall time of every stage, and writes a grid of unconditional LDM samples per modality.

    python benchmarks/train_phantom_tiny.py --data data/phantom --work runs/phantom-tiny --write

A rerun with the same ``--work`` skips the stages that finished (their wall times are kept in times.json).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_report import ROOT, write_section

from medm2g_core.data.cache import Cache
from medm2g_core.evaluation.labeler import binary_labels
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.schedule import make_sampler, sample_latents
from medm2g_core.training.image_vae_stage import evaluate_reconstruction, save_image_grid
from medm2g_core.training.recipe import load_recipe
from medm2g_core.training.text_vae_stage import corpus_bleu, reconstruct

SECTION = "## Single-modal stages on the phantom world (train_phantom_tiny.py)"
HELD_OUT = ("val", "test")
MRI_KEYS = ("mr_t1", "mr_t1ce", "mr_t2", "mr_flair", "mr_pd")


def medm2g(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medm2g_cli", "--quiet", *args], check=True)
    return time.perf_counter() - start


class Stages:
    """Runs stages once: wall times are kept in ``work/times.json``, so a rerun skips the finished stages."""

    def __init__(self, work: Path) -> None:
        self.path = work / "times.json"
        self.times = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, name: str, *args: str) -> None:
        if name not in self.times:
            self.times[name] = medm2g(*args)
            self.path.write_text(json.dumps(self.times, indent=1))


def held_out(cache: Cache, key: str) -> torch.Tensor | None:
    parts = [cache.stream(split, key)["images"] for split in HELD_OUT if f"{split}/{key}" in cache.index["shards"]]
    return torch.from_numpy(np.concatenate(parts))[:, None] if parts else None


def vae_rows(model: MedM2G, cache: Cache) -> list[str]:
    vae = model["image_vae"].eval()
    rows = []
    for key in ("xray", "ct", *MRI_KEYS):
        images = held_out(cache, key)
        train = torch.from_numpy(cache.stream("train", key)["images"])
        if images is None:
            continue
        with torch.no_grad():
            scores = evaluate_reconstruction(vae, images, mean_image=train.mean(0, keepdim=True))
        rows.append(f"| {key} | {len(images)} | {scores['psnr']:.2f} | {scores['mean_baseline_psnr']:.2f} |")
    return rows


def text_rows(model: MedM2G, cache: Cache) -> list[str]:
    reports = [c["report"] for c in cache.index["cases"] if c["split"] in HELD_OUT and c["report"]]
    with torch.no_grad():
        rebuilt = reconstruct(model["text_vae"].eval(), reports)
    truth = [binary_labels(r) for r in reports]
    guess = [binary_labels(r) for r in rebuilt]
    hits = sum(t[k] == g[k] == 1 for t, g in zip(truth, guess, strict=True) for k in t)
    positives = sum(v for t in truth for v in t.values())
    predicted = sum(v for g in guess for v in g.values())
    f1 = 2 * hits / max(positives + predicted, 1)
    return [f"| {len(reports)} | {corpus_bleu(rebuilt, reports):.3f} | {f1:.3f} |"]


@torch.no_grad()
def sample_grid(model: MedM2G, recipe, path: Path, per_row: int = 8) -> Path:
    vae = model["image_vae"].eval()
    rows = []
    for name in ("denoiser_xray", "denoiser_ct", "denoiser_mri"):
        if name not in model:
            continue
        denoiser = model[name].eval()
        generator = torch.Generator().manual_seed(0)
        shape = (per_row, vae.config.latent_channels, denoiser.config.sample_size, denoiser.config.sample_size)
        latents = sample_latents(lambda z, t, d=denoiser: d(z, t), shape, make_sampler(recipe.diffusion), 50,
                                 generator, torch.device("cpu"))
        rows.append(vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1))
    return save_image_grid(torch.cat(rows), path, columns=per_row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared phantom folder (manifest.jsonl)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the cache and the runs")
    parser.add_argument("--recipe", default="phantom-tiny")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md and docs/")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    work, cache_dir = args.work, args.work / "cache"
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work)
    stages.run("cache", "prepare", "cache", str(args.data), "--out", str(cache_dir), "--resolution",
               str(recipe.data.resolution), "--overwrite")
    common = ("--recipe", args.recipe, "--data", str(cache_dir))
    stages.run("vae image", "train", "vae", "--modality", "image", *common, "--out", str(work / "vae"))
    model = work / "vae" / "model"
    for modality in ("xray", "ct", "mri"):
        run = work / f"ldm-{modality}"
        stages.run(f"ldm {modality}", "train", "ldm", "--modality", modality, *common, "--model", str(model),
                   "--out", str(run))
        model = run / "model"
    stages.run("vae text", "train", "vae", "--modality", "text", *common, "--model", str(model),
               "--out", str(work / "vae-text"))
    model = work / "vae-text" / "model"
    stages.run("ldm text", "train", "ldm", "--modality", "text", *common, "--model", str(model),
               "--out", str(work / "ldm-text"))
    times = stages.times
    final = MedM2G.from_pretrained(work / "ldm-text" / "model")
    cache = Cache.open(cache_dir)
    grid = sample_grid(final, recipe, work / "ldm-samples.png")
    speed = {}
    for name, folder in (("vae image", "vae"), ("ldm xray", "ldm-xray"), ("ldm ct", "ldm-ct"), ("ldm mri", "ldm-mri"),
                         ("vae text", "vae-text"), ("ldm text", "ldm-text")):
        record = json.loads((work / folder / "run.json").read_text())
        speed[name] = (record["steps"], record["steps_per_s"])
    body = "\n".join([
        f"Recipe `{args.recipe}`, {len(cache.index['cases'])} phantom cases, {recipe.data.resolution} px, "
        f"{platform.machine()}, {os.cpu_count()} cores, fp32. Held out = val + test cases.",
        "",
        "| stage | steps | steps/s | wall s (incl. start, data, export) |",
        "|---|---|---|---|",
        *[f"| {n} | {speed[n][0]} | {speed[n][1]:.2f} | {times[n]:.0f} |" for n in speed],
        f"| cache | | | {times['cache']:.0f} |",
        f"| **all** | | | **{sum(times.values()) / 60:.1f} min** |",
        "",
        "Image VAE reconstruction on held-out slices (PSNR in dB on [-1, 1]; baseline: the training mean image):",
        "",
        "| key | slices | VAE PSNR | mean-image PSNR |",
        "|---|---|---|---|",
        *vae_rows(final, cache),
        "",
        "Text VAE reconstruction of held-out reports (greedy decoding; label F1: labeler on reconstruction vs "
        "original):",
        "",
        "| reports | BLEU-4 | finding-label F1 |",
        "|---|---|---|",
        *text_rows(final, cache),
        "",
        "Unconditional samples (DDIM 50, eta 1; rows: X-ray, CT, MRI): `docs/ldm-samples-phantom-tiny.png`.",
    ])
    print(body)
    if args.write:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "ldm-samples-phantom-tiny.png").write_bytes(grid.read_bytes())
        write_section(SECTION, body, "python benchmarks/train_phantom_tiny.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
