"""Benchmark: Table 8, does a synthetic corpus help downstream models?

Makes two corpora with `medm2g synthesize-dataset` from the training reports of a phantom world (xray, ct, mri and
text per case): one with the model as shipped (the MedM2G row) and one with the same model and guidance 0, i.e.
its unconditional branch: images that ignore their reports (the weaker generator standing in for UniXGen). Then
runs `medm2g evaluate downstream` on the world's cache with both and writes the table, with a reading computed
from the paired tests, to BENCHMARKS.md and the default model's card. Corpora are resumed when they exist.

    python benchmarks/downstream.py --data /tmp/w/world --cache /tmp/w/cache --work /tmp/t8 --write
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench_report import ROOT, write_section

SECTION = "## Synthetic corpora as pre-training data: Table 8 (downstream.py)"
CARD_SECTION = "## Synthetic corpora as pre-training data (Table 8; `benchmarks/downstream.py`)"
CORPORA = {"MedM2G": (), "unguided": ("--guidance", "0")}


def medm2g(*args: str) -> float:
    """Run ``medm2g ARGS`` with this interpreter; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medm2g_cli", *args], check=True)
    return time.perf_counter() - started


def reading(saved: dict) -> str:
    """Which cells each corpus helps, hurts or leaves unchanged, from the paired tests."""
    lines = []
    for row, tests in saved["paired"].items():
        by_verdict: dict[str, list[str]] = {}
        for metric, test in tests.items():
            by_verdict.setdefault(test["verdict"], []).append(f"{metric} ({test['difference']:+.3g})")
        lines.append(f"- {row}: " + "; ".join(f"{verdict}: {', '.join(cells)}"
                                             for verdict, cells in sorted(by_verdict.items())))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the phantom world (its folder)")
    parser.add_argument("--cache", type=Path, help="its cache (default: built by evaluate into OUT/cache)")
    parser.add_argument("--work", type=Path, required=True, help="corpora and the evaluation go here")
    parser.add_argument("--n", type=int, help="cases per corpus (default: one per training report)")
    parser.add_argument("--synth-steps", type=int, default=25, help="DDIM steps of the corpora")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=120)
    parser.add_argument("--head-steps", type=int, default=100)
    parser.add_argument("--baseline-steps", type=int, default=30)
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md and the model card")
    args = parser.parse_args()
    timings = {}
    for name, extra in CORPORA.items():
        timings[name] = medm2g("synthesize-dataset", "--from-manifest", str(args.data / "manifest.jsonl"), "--split",
                               "train", *(("--n", str(args.n)) if args.n else ()), "--modalities",
                               "xray,ct,mri,text", "--steps", str(args.synth_steps), "--batch-size", "16", *extra,
                               "--resume", "--out", str(args.work / f"corpus-{name}"))
    out = args.work / "evaluation"
    evaluate = ["evaluate", "downstream", "--data", str(args.cache or args.data), *(
        arg for name in CORPORA for arg in ("--synthetic", f"{name}={args.work / f'corpus-{name}'}")),
        "--seeds", str(args.seeds), "--pretrain-steps", str(args.pretrain_steps), "--head-steps",
        str(args.head_steps), "--baseline-steps", str(args.baseline_steps), "--out", str(out)]
    timings["evaluate"] = medm2g(*evaluate)
    saved = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text().split("\n\n", 2)[2]
    body = (f"Phantom world {args.data} ({saved['cases']} real test chest films). Corpora: `synthesize-dataset "
            f"--from-manifest` of the world's training reports, DDIM {args.synth_steps}, the shipped default model; "
            "MedM2G at its default guidance, unguided at guidance 0 (the unconditional branch: images that ignore "
            "their reports, the weaker generator standing in for UniXGen). Wall time of this run on the 2-core "
            "machine (shared with other jobs; a resumed corpus counts its check only): "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
            + ".\n\nEvaluation: `medm2g " + shlex.join(evaluate) + "`\n\n" + table + "\nReading (paired t-test over "
            "seeds against real only, p < 0.05):\n\n" + reading(saved) + "\n")
    print(body)
    if args.write:
        command = "python benchmarks/downstream.py " + shlex.join(sys.argv[1:])
        write_section(SECTION, body, command)
        write_section(CARD_SECTION, body, command, ROOT / "medm2g_core" / "default_model" / "README.md")


if __name__ == "__main__":
    main()
