"""Benchmark: MRI -> CT translation of a 64-slice volume, the pipeline against a straightforward loop.

Both run the same networks of the same model with the paper's sampler (DDIM, eta 1, guidance 2):

- **pipeline**: ``medm2g_core.sampling.translate.translate_volume``: slices in batches, classifier-free guidance
  as one forward of the conditioned and null halves, ``torch.inference_mode``, no host copies inside the loop;
- **baseline**: what one writes first: one slice at a time (batch 1), the conditioned and the unconditioned
  prediction as two separate forwards per step, under ``torch.no_grad``.

Each variant runs in its own process (so peak memory is its own): slices/s, wall time and peak resident memory
(CPU) or peak allocated memory (CUDA). The ratio pipeline/baseline is the claim; both see identical inputs.

    python benchmarks/translate_speed.py --write            # default model, 64 slices, 50 steps
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch
from bench_report import write_section

from medm2g_core.hub import load_model
from medm2g_core.models.sampler import SamplingConfig, make_scheduler, tile_null
from medm2g_core.phantoms.brain import make_brain_case
from medm2g_core.sampling.guides import decode_images, guide_context, image_guide
from medm2g_core.sampling.slices import cut
from medm2g_core.sampling.translate import TranslateOptions, translate_volume

SECTION = "## Translate speed: batched pipeline vs per-slice loop (translate_speed.py)"


def volume(slices: int):
    return make_brain_case(3, spacing_mm=2.0, slices=slices).images["mr_t1"]


def baseline(model, source, sampling: SamplingConfig, device: torch.device) -> int:
    """Per slice, batch 1, two forwards per step; returns the number of slices generated."""
    stack = cut(source, int(model["image_vae"].config.sample_size))
    denoiser = model["denoiser_ct"]
    with torch.no_grad():
        for number, image in enumerate(stack.images):
            generator = torch.Generator().manual_seed(number)
            guide = image_guide(model, "mri", torch.from_numpy(image[None]).to(device))
            context = guide_context(model, "mri", guide.latent, guide.prompt, 0, generator)
            null = tile_null(denoiser, 1, context.shape[1])
            scheduler = make_scheduler(model["scheduler"], "ddim")
            scheduler.set_timesteps(sampling.steps)
            latents = torch.randn((1, 4, 16, 16), generator=generator).to(device)
            for t in scheduler.timesteps:
                step_t = t.reshape(1).to(device)
                conditioned = denoiser(latents, step_t, context=context)
                unconditioned = denoiser(latents, step_t, context=null)
                output = unconditioned + sampling.guidance * (conditioned - unconditioned)
                latents = scheduler.step(output.cpu(), t, latents.cpu(), eta=sampling.eta,
                                         generator=generator).prev_sample.to(device)
            decode_images(model, latents).cpu().numpy()
    return len(stack.images)


def run_variant(variant: str, slices: int, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    model = load_model(None, device=device)
    source = volume(slices)
    sampling = SamplingConfig(steps=steps, eta=1.0, guidance=2.0)  # the paper's sampler, as the module says
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if variant == "pipeline":
        translate_volume(model, [source], TranslateOptions("ct", sampling=sampling))
        count = len(cut(source, int(model["image_vae"].config.sample_size)).kept)
    else:
        count = baseline(model, source, sampling, torch.device(device))
    wall = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"variant": variant, "slices": count, "wall_s": wall, "slices_per_s": count / wall, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", choices=("pipeline", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.slices, args.steps, args.device)))
        return
    results = {}
    for variant in ("baseline", "pipeline"):
        proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--slices", str(args.slices),
                               "--steps", str(args.steps), "--device", args.device],
                              capture_output=True, text=True, check=True)
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(results[variant], file=sys.stderr)
    base, fast = results["baseline"], results["pipeline"]
    rows = ["| variant | slices generated | wall (s) | slices/s | peak memory (MiB) |", "|---|---|---|---|---|"]
    for r in (base, fast):
        rows.append(f"| {r['variant']} | {r['slices']} | {r['wall_s']:.1f} | {r['slices_per_s']:.2f} | "
                    f"{r['peak_mb']:.0f} |")
    body = "\n".join(rows) + (
        f"\n\nPipeline / baseline: **{fast['slices_per_s'] / base['slices_per_s']:.1f}x** slices/s, peak memory "
        f"{fast['peak_mb'] / base['peak_mb']:.2f}x. A {args.slices}-slice phantom T1 volume (slices without "
        f"foreground are not generated), embedded default model, DDIM {args.steps} steps, eta 1, guidance 2, on "
        f"{args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}). Peak memory is the process's peak resident set on CPU (it includes the "
        "Python runtime and the model) and peak allocated memory on CUDA."
    )
    print(body)
    if args.write:
        write_section(SECTION, body, f"python benchmarks/translate_speed.py --slices {args.slices} "
                                     f"--steps {args.steps} --device {args.device} --write")


if __name__ == "__main__":
    main()
