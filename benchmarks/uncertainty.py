"""Benchmark: what ``translate --samples N`` buys on MRI T1 -> CT: PSNR/SSIM of the N-sample mean and the time
it costs for each N, and how well the samples' per-voxel standard deviation points at the error (Spearman rank
correlation and AUSE, :func:`medm2g_core.metrics.image_metrics.calibration`, over the foreground voxels of the
generated slices), on held-out phantom cases (issue 16's targets: rank correlation >= 0.5, the 8-sample mean
at least 1 dB above one sample).

    medm2g prepare phantom --cases 60 --seed 0 --out /tmp/vol/world --workers 1
    medm2g prepare cache /tmp/vol/world --out /tmp/vol/cache --resolution 64
    python benchmarks/uncertainty.py --data /tmp/vol/cache --cases 2 --samples 1,4,8 --write
"""

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from bench_report import write_section

from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import read_manifest
from medm2g_core.evaluation.tasks import held_out
from medm2g_core.hub import load_model
from medm2g_core.io.load import read_volume
from medm2g_core.metrics.image_metrics import calibration, volume_psnr_ssim
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.translate import TranslateOptions, translate_samples

SECTION = "## Samples and uncertainty maps: MRI -> CT (uncertainty.py)"
FOREGROUND_HU = -500.0  # voxels scored for calibration: the truth above this (tissue and bone, not air)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the phantom world's cache (prepare cache)")
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--samples", default="1,4,8", help="sample counts to compare")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    manifest = read_manifest(Cache.open(args.data).index["manifest"])
    records = held_out(manifest, args.split, ("mr_t1", "ct"), args.cases)
    counts = [int(n) for n in args.samples.split(",")]
    rows: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for record in records:
        t1 = read_volume(manifest.image_path(record, "mr_t1"))
        truth = read_volume(manifest.image_path(record, "ct"))
        for n in counts:
            options = TranslateOptions("ct", sampling=SamplingConfig(steps=args.steps), seed=0, samples=n)
            started = time.perf_counter()
            mean, deviation = translate_samples(model, [t1], options)
            seconds = time.perf_counter() - started
            row = volume_psnr_ssim(mean, truth) | {"seconds": seconds}
            if n > 1:
                inside = truth.data > FOREGROUND_HU
                scores = calibration(deviation.data[inside], mean.data[inside] - truth.data[inside])
                row |= {"spearman": scores["spearman"], "ause": scores["ause"],
                        "mae_hu": float(np.abs(mean.data[inside] - truth.data[inside]).mean())}
            rows[n].append(row)
            print(record.id, n, {k: round(v, 4) for k, v in row.items()}, flush=True)
    lines = [f"{len(records)} held-out cases, MRI T1 -> CT, seeds 0..N-1 per case (one network pass per step for "
             "all N).", "", "| N | PSNR (dB) | SSIM | s per volume | Spearman(std, abs error) | AUSE (HU) | "
             "foreground MAE (HU) |", "|---|---|---|---|---|---|---|"]
    for n in counts:
        mean_of = {k: float(np.mean([r[k] for r in rows[n]])) for k in rows[n][0]}
        extra = (f"{mean_of['spearman']:.3f} | {mean_of['ause']:.1f} | {mean_of['mae_hu']:.1f}" if n > 1
                 else "- | - | -")
        lines.append(f"| {n} | {mean_of['psnr']:.2f} | {mean_of['ssim']:.4f} | {mean_of['seconds']:.1f} | {extra} |")
    command = (f"python benchmarks/uncertainty.py --data {args.data} --split {args.split} --cases {args.cases} "
               f"--samples {args.samples} --steps {args.steps}" + " --write" * args.write)
    body = "\n".join(lines) + (
        f"\n\nPSNR/SSIM as `evaluate mri-to-ct` (normalised CT window; SSIM per axial slice). Calibration over the "
        f"voxels whose true CT is above {FOREGROUND_HU:.0f} HU. Model: {model.info.get('model_id')}, DDIM "
        f"{args.steps} steps, eta 1, guidance 2; {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads (the machine shared with other jobs: times are indicative).")
    print(body)
    if args.write:
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
