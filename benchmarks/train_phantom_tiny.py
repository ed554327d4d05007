"""Benchmark: train every stage of a recipe (issues 5 and 6) on a phantom world and measure what it learned.

Runs the real commands (``medm2g prepare cache``, ``medm2g train vae|ldm|align|cross``) one after another,
then evaluates on the held-out (val + test) cases: image VAE reconstruction PSNR per modality against the
mean-image baseline, text VAE reconstruction BLEU-4 of held-out reports (and finding-label F1 through the
labeler), a grid of unconditional LDM samples per modality, cross-modal retrieval recall of the aligned
prompt encoders with and without the visual invariant (the no-VI alignment is an extra run outside the budget),
the held-out denoising loss of every cross-guided direction with its real vs a shuffled partner, the parameters
each part adds and the time per epoch of each stage (Table 7's last two columns), and steps/s and wall time of
every stage against the 90-minute budget.

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
from medm2g_core.data.labeler import binary_labels
from medm2g_core.metrics.text_metrics import corpus_bleu
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig, Stream, sample
from medm2g_core.models.schedule import make_train_scheduler
from medm2g_core.training.align_stage import AlignStage
from medm2g_core.training.cross_stage import ROUNDS, CrossStage
from medm2g_core.training.image_vae_stage import evaluate_reconstruction, save_image_grid
from medm2g_core.training.pairs import image_store, text_store
from medm2g_core.training.recipe import load_recipe
from medm2g_core.training.retrieval import retrieval_matrix
from medm2g_core.training.text_vae_stage import reconstruct

SECTION = "## Single-modal stages on the phantom world (train_phantom_tiny.py)"
MULTI_SECTION = "## Alignment and cross-guided rounds on the phantom world (train_phantom_tiny.py)"
RETRIEVAL_PAIRS = ("text->xray", "text->ct", "ct->mri", "xray->ct", "xray->mri")  # the last two: never trained
BUDGET_MIN = 90
HELD_OUT = ("val", "test")
MRI_KEYS = ("mr_t1", "mr_t1ce", "mr_t2", "mr_flair", "mr_pd")
ROUNDS_MODALITIES = ("text", "xray", "ct", "mri")


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
        stream = Stream(denoiser, shape, lambda t, z, d=denoiser: d.null(per_row))
        latents = sample({name: stream}, make_train_scheduler(recipe.diffusion), SamplingConfig(50, guidance=1.0),
                         generator, torch.device("cpu"))[name]
        rows.append(vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1))
    return save_image_grid(torch.cat(rows), path, columns=per_row)


def multimodal_speed(work: Path) -> list[tuple[str, int, float, float]]:
    """(stage, steps, steps/s, training wall s) of the alignment and of every round."""
    rows = []
    for name, folder in (("align", work / "align"), *((f"cross {r}", work / "cross" / r) for r in ROUNDS)):
        record = json.loads((folder / "run.json").read_text())
        rows.append((name, record["steps"], record["steps_per_s"], record["wall_s"]))
    return rows


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def multimodal_body(work: Path, cache: Cache, recipe) -> str:
    """Retrieval with and without VI, guidance gain per direction, added parameters and time per epoch."""
    held_out = "+".join(HELD_OUT)
    retrieval = {}
    for name, folder in (("VI", work / "align" / "model"), ("no VI", work / "align-novi" / "model")):
        model = MedM2G.from_pretrained(folder)
        modalities = ("text", "xray", "ct", "mri")
        stores = {m: text_store(cache, held_out, model["text_vae"].tokenize) if m == "text"
                  else image_store(cache, held_out, m) for m in modalities}
        stores = {m: store for m, store in stores.items() if store is not None}
        retrieval[name] = retrieval_matrix({m: model[f"prompt_encoder_{m}"] for m in stores}, stores)
    rows = []
    for pair in RETRIEVAL_PAIRS:
        if pair not in retrieval["VI"]:
            continue
        vi, no_vi = retrieval["VI"][pair], retrieval["no VI"][pair]
        rows.append(f"| {pair} | {vi['cases']:.0f} | {vi['chance@1']:.3f} | {vi['r@1']:.3f} | {no_vi['r@1']:.3f} "
                    f"| {vi['chance@5']:.3f} | {vi['r@5']:.3f} | {no_vi['r@5']:.3f} |")
    guidance, epochs = [], {}
    align = json.loads((work / "align" / "run.json").read_text())
    align_stage = AlignStage(cache, MedM2G.from_pretrained(work / "align" / "model")["text_vae"], recipe.align)
    epochs["align"] = len(align_stage.dataset("train")) / recipe.align.optim.batch_size / align["steps_per_s"]
    added = {"CA: prompt encoders": sum(parameters(m) for m in align_stage.encoders.values()), "VI": 0}
    for round_name in ROUNDS:
        model = MedM2G.from_pretrained(work / "cross" / round_name / "model")
        stage = CrossStage(cache, model, round_name, recipe.cross, recipe.diffusion)
        for direction, gain in stage.guidance_gain(held_out, batches=8).items():
            guidance.append(f"| {round_name} | {direction} | {gain['real']:.4f} | {gain['shuffled']:.4f} "
                            f"| {gain['ratio']:.4f} |")
        record = json.loads((work / "cross" / round_name / "run.json").read_text())
        epochs[f"cross {round_name}"] = (len(stage.dataset("train")) / recipe.cross.optim.batch_size
                                         / record["steps_per_s"])
    final = MedM2G.from_pretrained(work / "cross" / "model")
    added["LCAG: context encoders V"] = sum(parameters(final[f"context_encoder_{m}"]) for m in ROUNDS_MODALITIES)
    added["LCAG: cross-attention trained in the rounds"] = sum(
        sum(p.numel() for p in final[f"denoiser_{m}"].cross_attention_parameters()) for m in ROUNDS_MODALITIES)
    return "\n".join([
        f"Recipe `{recipe.name}`, {len(cache.index['cases'])} phantom cases; held out = val + test cases. Retrieval"
        " is case-level (a CT/MRI case is the mean of its slice embeddings); x->y ranks every held-out case's y by"
        " cosine similarity to the query case's x. X-ray->CT and X-ray->MRI are never trained directly (alignment "
        f"pairs: {', '.join(recipe.align.pairs)}); brain cases hold a skull film, so X-ray->MRI has ground truth.",
        "",
        "| retrieval | cases | chance R@1 | R@1 (VI) | R@1 (no VI) | chance R@5 | R@5 (VI) | R@5 (no VI) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Cross-guided denoising loss (Eq. 6, eps-MSE) on held-out pairs after each round, with the real partner vs the"
        " partner of another sample (same noise, timesteps; no condition dropout); ratio < 1: the guide helps.",
        "",
        "| round | target<-guide | real | shuffled | ratio |",
        "|---|---|---|---|---|",
        *guidance,
        "",
        "Table 7's last two columns on this machine: parameters each part adds, time per epoch of each stage.",
        "",
        "| part | parameters |",
        "|---|---|",
        *[f"| {name} | {count / 1e6:.3f} M |" for name, count in added.items()],
        "",
        "| stage | time per epoch (s) |",
        "|---|---|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in epochs.items()],
    ])


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
    model = work / "ldm-text" / "model"
    stages.run("align", "train", "align", *common, "--model", str(model), "--out", str(work / "align"))
    stages.run("cross", "train", "cross", "--all", *common, "--model", str(work / "align" / "model"),
               "--out", str(work / "cross"))
    stages.run("align (no VI, outside the budget)", "train", "align", *common, "--model", str(model),
               "--out", str(work / "align-novi"), "--no-vi")
    times = {name: wall for name, wall in stages.times.items() if "outside the budget" not in name}
    final = MedM2G.from_pretrained(work / "cross" / "model")
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
        *[f"| {n} | {steps} | {rate:.2f} | {times.get(n, wall):.0f}{'' if n in times else ' (training only)'} |"
          for n, steps, rate, wall in multimodal_speed(work)],
        f"| cross, all rounds | | | {times['cross']:.0f} |",
        f"| **all** (budget {BUDGET_MIN} min) | | | **{sum(times.values()) / 60:.1f} min** |",
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
    multi = multimodal_body(work, cache, recipe)
    print(body, multi, sep="\n\n")
    if args.write:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "ldm-samples-phantom-tiny.png").write_bytes(grid.read_bytes())
        command = "python benchmarks/train_phantom_tiny.py " + " ".join(sys.argv[1:])
        write_section(SECTION, body, command)
        write_section(MULTI_SECTION, multi, command)


if __name__ == "__main__":
    main()
