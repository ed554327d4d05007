"""Benchmark: does the out-of-distribution check pass the phantom test cases and flag the odd inputs of issue 18?

For every image of the test split of a phantom world (MRI contrasts, CT, films) and for odd inputs made from new
phantom cases (a chest CT given as a brain MRI, a brain MRI given as a CT, uniform noise, inverted intensities of
an MRI, a CT and a film), the median distance of ``sampling.ood.check_input`` and whether it is outside. Writes a
table to BENCHMARKS.md with ``--write``.

    python benchmarks/ood.py --data /tmp/w/world --cases 40 --seeds 6 --write
"""

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_report import write_section

from medm2g_core.data.manifest import read_manifest
from medm2g_core.hub import load_model
from medm2g_core.io.load import read_volume
from medm2g_core.io.volume import Volume
from medm2g_core.phantoms.world import PhantomConfig, make_case
from medm2g_core.sampling.ood import check_input

SECTION = "## Out-of-distribution check (ood.py)"
IMAGE_KEYS = ("mr_t1", "mr_t2", "mr_flair", "mr_pd", "mr_t1ce", "ct", "xray")


def odd_inputs(seed: int) -> dict[str, Volume]:
    """The odd inputs made from the phantom cases of ``seed`` (a brain and a chest)."""
    brain, _, _, _ = make_case("brain", seed, PhantomConfig())
    chest, _, _, _ = make_case("chest", seed, PhantomConfig())
    t1, ct, film = brain["mr_t1"], brain["ct"], chest["xray"]
    noise = np.random.default_rng(seed).uniform(0, 1000, t1.data.shape).astype(np.float32)
    return {"chest CT given as MRI": replace(chest["ct"], modality="MR", units="a.u.", contrast=None),
            "brain T1 given as CT": replace(t1, modality="CT", units="HU", contrast=None),
            "uniform noise (as MRI)": t1.with_data(noise),
            "inverted T1": t1.with_data(t1.data.max() - t1.data),
            "inverted CT": ct.with_data(ct.data.max() + ct.data.min() - ct.data),
            "inverted film": film.with_data(film.data.max() - film.data)}


def row(name: str, checks: list) -> str:
    distances = np.array([c.distance for c in checks])
    flagged = np.mean([c.outside for c in checks])
    return (f"| {name} | {len(checks)} | {checks[0].modality.upper()} | {np.median(distances):.1f} | "
            f"{distances.min():.1f} - {distances.max():.1f} | {checks[0].threshold:.1f} | {flagged:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a phantom world (prepare phantom)")
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--cases", type=int, default=40, help="test cases of the world")
    parser.add_argument("--seeds", type=int, default=6, help="phantom seeds the odd inputs are made from")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    manifest = read_manifest(args.data / "manifest.jsonl" if args.data.is_dir() else args.data)
    records = [r for r in manifest.records if r.split == "test"][: args.cases]
    inside: dict[str, list] = {}
    for record in records:
        for key in IMAGE_KEYS:
            if key in record.images:
                inside.setdefault(key, []).append(check_input(model, read_volume(manifest.image_path(record, key))))
    odd: dict[str, list] = {}
    for seed in range(10_000, 10_000 + args.seeds):
        for name, volume in odd_inputs(seed).items():
            odd.setdefault(name, []).append(check_input(model, volume))
    header = ["| input | images | read as | median distance | range | threshold | flagged |", "|---" * 7 + "|"]
    lines = ["**Phantom test images** (should pass)", "", *header,
             *[row(key, checks) for key, checks in inside.items()], "",
             "**Odd inputs** (should be flagged)", "", *header, *[row(name, checks) for name, checks in odd.items()]]
    body = "\n".join(lines) + (
        f"\n\nModel: {model.info.get('model_id')}; its reference (`medm2g train ood`) was measured on the world the "
        f"model was trained on (seed 0). Test images: the first {len(records)} test cases of `{args.data}`; odd "
        f"inputs: phantom cases of seeds 10000..{10_000 + args.seeds - 1} (not in any training world), altered. "
        "Distance: the median over an image's slices of the Mahalanobis distance of its pooled VAE latents to the "
        "training slices of the modality it is read as; threshold: 1.25 times the farthest held-out volume.")
    print(body)
    if args.write:
        command = (f"python benchmarks/ood.py --data {args.data} --cases {args.cases} --seeds {args.seeds}"
                   + " --write")
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
