"""Benchmark: CT volume -> X-ray shows this patient (issue 14, item 6).

On held-out phantom cases with a CT (chest CTs and head CTs), every method's film is compared at the model's
resolution with the plain (noise-free) DRR of the same CT, the issue's yardstick (target: SSIM >= 0.70), and
with the case's own film (the phantom world's DRR with detector noise, what the model was trained on).

Methods: the mean training film (a film that ignores its input), MedM2G's earlier route (the middle slice ->
report -> X-ray), and the DRR path at each ``--strength`` (the plain DRR redrawn by the X-ray denoiser over that
share of the schedule; ``translate --to xray`` on a CT volume). Guide effect per method: PSNR between the films
of two seeds (real CT) and between the films of the real CT and of another case's CT (same seed); a film that
follows its CT has the second well below the first.

    medm2g prepare phantom --cases 60 --out data/phantom60
    python benchmarks/ct_to_xray.py --data data/phantom60 --cases 8 --strength 0.3 0.5 0.7 1.0 --write
"""

import argparse
import platform
import time

import numpy as np
import torch
from bench_report import write_section

from medm2g_core.data.manifest import read_manifest
from medm2g_core.evaluation.tasks import held_out
from medm2g_core.hub import load_model
from medm2g_core.io.load import read_volume
from medm2g_core.metrics.image_metrics import psnr, ssim
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.guides import image_resolution
from medm2g_core.sampling.slices import cut
from medm2g_core.sampling.translate import TranslateOptions, plain_drr, translate_slices, translate_volume

SECTION = "## CT volume -> X-ray (ct_to_xray.py)"


def film(volume, resolution: int) -> np.ndarray:
    """A film [1, R, R] in [-1, 1], as the model reads films."""
    return cut(volume, resolution).images[:1]  # [1, R, R]: a batch of one, as the metrics take


def middle_slice_route(model: MedM2G, ct, options: TranslateOptions) -> np.ndarray:
    """The route translate took before the DRR path: the CT's middle slice -> report -> X-ray."""
    stack = cut(ct, image_resolution(model))
    middle = len(stack.kept) // 2
    generators = [torch.Generator().manual_seed(options.seed * 100_003 + int(stack.kept[middle]))]
    image = translate_slices(model, [stack.images[[middle]]], "ct", options, generators)  # [1, R, R]
    return image  # same orientation as a film cut from the saved Volume (translate transposes it back and forth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a phantom world folder (manifest.jsonl)")
    parser.add_argument("--model", help="default: the embedded model")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--strength", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    resolution = image_resolution(model)
    manifest = read_manifest(args.data)
    records = held_out(manifest, "test", ("ct", "xray"), args.cases)
    cts = [read_volume(manifest.image_path(r, "ct")) for r in records]
    drrs = [film(plain_drr(ct), resolution) for ct in cts]
    films = [film(read_volume(manifest.image_path(r, "xray")), resolution) for r in records]
    train = held_out(manifest, "train", ("xray",), None)
    mean_film = np.mean([film(read_volume(manifest.image_path(r, "xray")), resolution) for r in train], axis=0)
    sampling = SamplingConfig(steps=args.steps)

    def scores(outputs: list[np.ndarray]) -> dict[str, float]:
        return {"ssim_drr": np.mean([ssim(o, d, 2.0) for o, d in zip(outputs, drrs, strict=True)]),
                "psnr_drr": np.mean([psnr(o, d, 2.0) for o, d in zip(outputs, drrs, strict=True)]),
                "ssim_film": np.mean([ssim(o, f, 2.0) for o, f in zip(outputs, films, strict=True)]),
                "psnr_film": np.mean([psnr(o, f, 2.0) for o, f in zip(outputs, films, strict=True)])}

    rows = [("case's own film (noisy DRR, reference)", scores(films), None, None, 0.0),
            ("mean training film", scores([mean_film] * len(cts)), None, None, 0.0)]
    methods = {"MedM2G, middle slice -> report -> X-ray (before)":
               lambda ct, seed: middle_slice_route(model, ct, TranslateOptions("xray", sampling=sampling, seed=seed))}
    for strength in args.strength:
        methods[f"MedM2G, DRR path, strength {strength:g}"] = (
            lambda ct, seed, s=strength: film(translate_volume(
                model, [ct], TranslateOptions("xray", sampling=sampling, seed=seed, drr_strength=s)), resolution))
    for name, make in methods.items():
        started = time.perf_counter()
        seed0 = [make(ct, 0) for ct in cts]
        seconds = (time.perf_counter() - started) / len(cts)
        seed1 = [make(ct, 1) for ct in cts]
        shuffled = [make(cts[(i + 1) % len(cts)], 0) for i in range(len(cts))]
        seeds = np.mean([psnr(a, b, 2.0) for a, b in zip(seed0, seed1, strict=True)])
        guide = np.mean([psnr(a, b, 2.0) for a, b in zip(seed0, shuffled, strict=True)])
        rows.append((name, scores(seed0), seeds, guide, seconds))
        print(rows[-1], flush=True)
    anatomy = ", ".join(sorted({r.source for r in records}))
    lines = [
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, fp32; model "
        f"{args.model or 'embedded default'}; {len(cts)} test cases of {args.data} ({anatomy}); DDIM "
        f"{args.steps} steps; films compared at {resolution} px in [-1, 1]. Target (issue 14): SSIM against the "
        "plain DRR >= 0.70. Guide effect: PSNR between two seeds vs between the real and another case's CT "
        "(lower = the output moved more).", "",
        "| method | SSIM vs plain DRR | PSNR vs plain DRR | SSIM vs case's film | PSNR vs case's film "
        "| PSNR seed 0 vs 1 | PSNR real vs other CT | s per film |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s, seeds, guide, seconds in rows:
        extra = "- | - | -" if seeds is None else f"{seeds:.2f} | {guide:.2f} | {seconds:.2f}"
        lines.append(f"| {name} | {s['ssim_drr']:.3f} | {s['psnr_drr']:.2f} | {s['ssim_film']:.3f} | "
                     f"{s['psnr_film']:.2f} | {extra} |")
    body = "\n".join(lines)
    print(body)
    if args.write:
        command = (f"python benchmarks/ct_to_xray.py --data {args.data} --cases {args.cases} --strength "
                   f"{' '.join(f'{s:g}' for s in args.strength)} --steps {args.steps} --write")
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
