"""Benchmark: the spatial path's flows at each DDIM eta, for one or several models, over several seeds.

An eps-trained MRI copy's output depends strongly on the start noise (BENCHMARKS.md, "Guide effect ... --flows
volume"), so one seed says little. This scores T1 -> CT, T2 + FLAIR -> T1 and CT -> T2 on test cases of a phantom
world at each eta, mean +/- std of the volume PSNR (quality.py's measure) and mean SSIM over ``--seeds`` seeds x
``--cases`` cases; several ``--model`` compare spatial rounds on the same cases and seeds (eps against zero terminal
SNR + v-prediction: docs/METHOD.md, "Spatial path").

    python benchmarks/eta_sweep.py --data /tmp/w/world --cases 2 --seeds 3 --steps 50
    python benchmarks/eta_sweep.py --data /tmp/w/world --model eps=runs/eps/model --model zero-snr=runs/v/model
"""

import argparse
from pathlib import Path

import numpy as np

from medm2g_core.data.manifest import read_manifest
from medm2g_core.hub import load_model
from medm2g_core.io.load import read_volume
from medm2g_core.metrics.image_metrics import volume_psnr_ssim
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.translate import TranslateOptions, translate_volume

FLOWS = {"T1 -> CT": (("mr_t1",), "ct", None), "T2 + FLAIR -> T1": (("mr_t2", "mr_flair"), "mr_t1", "T1"),
         "CT -> T2": (("ct",), "mr_t2", "T2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a phantom world (its manifest.jsonl folder)")
    parser.add_argument("--model", action="append", default=None,
                        help="NAME=PATH or PATH, repeatable (default: the embedded model)")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--etas", default="0,1", help="comma-separated")
    args = parser.parse_args()
    manifest = read_manifest(args.data / "manifest.jsonl")
    records = [r for r in manifest.records if r.split == "test"
               and all(k in r.images for k in ("mr_t1", "mr_t2", "mr_flair", "ct"))][: args.cases]
    print("| model | flow | eta | psnr | ssim |\n|---|---|---|---|---|")
    for entry in args.model or ["default"]:
        name, _, path = entry.rpartition("=")
        model = load_model(None if path == "default" else path, device="cpu")
        for flow, (keys, target_key, contrast) in FLOWS.items():
            target = "ct" if target_key == "ct" else "mri"
            for eta in (float(e) for e in args.etas.split(",")):
                scores = []
                for record in records:
                    sources = [read_volume(manifest.image_path(record, k)) for k in keys]
                    truth = read_volume(manifest.image_path(record, target_key))
                    for seed in range(args.seeds):
                        options = TranslateOptions(target, contrast, SamplingConfig(steps=args.steps, eta=eta),
                                                   seed=seed)
                        scores.append(volume_psnr_ssim(translate_volume(model, sources, options), truth))
                psnr = [s["psnr"] for s in scores]
                print(f"| {name or path} | {flow} | {eta:g} | {np.mean(psnr):.2f} +/- {np.std(psnr):.2f} | "
                      f"{np.mean([s['ssim'] for s in scores]):.3f} |", flush=True)


if __name__ == "__main__":
    main()
