"""Benchmark: are translated volumes consistent from slice to slice? The volume translations of ``medm2g evaluate``
(mri-to-ct, mri-synthesis) read in three planes: PSNR/SSIM of the axial slices and of the sagittal and coronal
reformats, and the through-plane error (mean absolute error of the z-gradient, in the target's units), for MedM2G
and both baselines (issue 16's measurement; its target: reformat PSNR within 1 dB of axial, through-plane error
no worse than the supervised UNet's).

Writes each task's results and page under ``--out`` and a table to BENCHMARKS.md with ``--write``.

    medm2g prepare phantom --cases 60 --seed 0 --out /tmp/vol/world --workers 1
    medm2g prepare cache /tmp/vol/world --out /tmp/vol/cache --resolution 64
    python benchmarks/slice_consistency.py --data /tmp/vol/cache --out /tmp/vol/runs --cases 4 --seeds 1 --write

MedM2G appears once per ``--slice-noise`` mode (default: shared and independent), the baselines once.
"""

import argparse
import platform
import time
from pathlib import Path

import torch
from bench_report import write_section

from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import read_manifest
from medm2g_core.evaluation.results_page import write_results
from medm2g_core.evaluation.tasks import MODEL, EvalOptions, TaskResult, evaluate
from medm2g_core.hub import load_model
from medm2g_core.models.sampler import SamplingConfig

SECTION = "## Slice consistency of volume translations (slice_consistency.py)"
PLANES = ("axial", "sagittal", "coronal")


def table(results: dict[str, TaskResult], units: str) -> list[str]:
    """One row per method: PSNR and SSIM per plane, the reformats' PSNR gap to axial, the through-plane error.
    ``results`` holds one evaluation per slice-noise mode: MedM2G once per mode, the baselines (the same in every
    run: they do not sample) from the first."""
    first = next(iter(results.values()))
    summary = {f"{MODEL}, {mode} noise": result.summary()[MODEL] for mode, result in results.items()}
    summary |= {method: row for method, row in first.summary().items() if method != MODEL}
    lines = [f"**{first.task}** ({first.cases} test cases)", "",
             "| method | " + " | ".join(f"{p} PSNR / SSIM" for p in PLANES)
             + f" | sagittal, coronal - axial PSNR (dB) | through-plane error ({units}) |", "|---" * 6 + "|"]
    for method, row in summary.items():
        cells = [f"{row[f'{p}_psnr'][0]:.2f} / " + (f"{row[f'{p}_ssim'][0]:.3f}" if f"{p}_ssim" in row else "-")
                 for p in PLANES]
        gaps = [f"{row[f'{p}_psnr'][0] - row['axial_psnr'][0]:+.2f}" for p in PLANES[1:]]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {', '.join(gaps)} | "
                     f"{row['through_plane_error'][0]:.1f} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the phantom world's cache (prepare cache)")
    parser.add_argument("--out", type=Path, required=True, help="folder for each task's results and page")
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tasks", default="mri-to-ct,mri-synthesis")
    parser.add_argument("--slice-noise", default="shared,independent", help="MedM2G's slice-noise modes to compare")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    cache = Cache.open(args.data)
    manifest = read_manifest(cache.index["manifest"])
    command = (f"python benchmarks/slice_consistency.py --data {args.data} --out {args.out} --cases {args.cases} "
               f"--seeds {args.seeds} --steps {args.steps} --tasks {args.tasks} --slice-noise {args.slice_noise}"
               + " --write" * args.write)
    lines, timings = [], []
    for task in args.tasks.split(","):
        results = {}
        for mode in args.slice_noise.split(","):
            started = time.perf_counter()
            results[mode] = evaluate(task, model, manifest, cache, EvalOptions(
                "test", args.cases, args.seeds, SamplingConfig(steps=args.steps), slice_noise=mode))
            timings.append(f"{task} ({mode}) {time.perf_counter() - started:.0f} s")
            write_results(results[mode], args.out / f"{task}-{mode}", command)
        lines += table(results, "HU" if task == "mri-to-ct" else "a.u. of the truth")
        print("\n".join(lines), flush=True)
    body = "\n".join(lines) + (
        f"\nPSNR and SSIM per plane: the mean over that plane's images with foreground, in the target's normalised "
        f"intensities (so a plane's PSNR differs from the volume PSNR of quality.py); SSIM needs 11 pixels a side. "
        f"Model: {model.info.get('model_id')}, DDIM {args.steps} steps, eta 1, the flows' guidance, seeds "
        f"0..{args.seeds - 1} (mean over seeds; baselines are deterministic); mri-synthesis is T2 + FLAIR -> T1. "
        f"{platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {', '.join(timings)}. Pages with the first "
        "case's sagittal and coronal reformats: `OUT/<task>-<mode>/index.html`. Shared noise: one noise draw "
        "(initial latent and every step's) for all slices of a volume; independent: a draw per slice.")
    if args.write:
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
