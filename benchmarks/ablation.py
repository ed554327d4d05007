"""Benchmark: Table 7 on the phantom world, the CA / LCAG / VI switches trained with the same budget.

Every variant starts from the same single-modal model (the LDMs and VAEs of a ``train_phantom_tiny.py`` work
folder) and runs the same alignment and cross-guided rounds of the recipe, with the same seeds and steps; only
the switches differ:

- "LDM": no central alignment, no latent cross-guided alignment, no visual invariant (Table 7, row 1)
- "full": everything on; and the full model with one switch off: "no CA", "no LCAG", "no VI".

Alignments with the same switches are trained once and shared. Then ``medm2g evaluate ablation`` scores every
variant on the same held-out cases with the same seeds and the rows go to BENCHMARKS.md with this command.

    python benchmarks/ablation.py --work runs/phantom-tiny --out runs/ablation --cases 4 --seeds 2 --write
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_report import write_section
from train_phantom_tiny import Stages, medm2g

SECTION = "## Ablation: Table 7 on the phantom world (ablation.py)"
# name -> (ca, lcag, vi)
VARIANTS = {
    "LDM": (False, False, False),
    "no CA": (False, True, True),
    "no LCAG": (True, False, True),
    "no VI": (True, True, False),
    "full": (True, True, True),
}


def slug(text: str) -> str:
    return text.lower().replace(" ", "-")


def align_name(ca: bool, vi: bool) -> str:
    return f"align-{'ca' if ca else 'noca'}-{'vi' if vi else 'novi'}"


def train_variants(work: Path, out: Path, recipe: str) -> dict[str, Path]:
    """Train every variant's alignment and rounds (once; reruns skip what finished); name -> final model."""
    stages = Stages(out)
    common = ("--recipe", recipe, "--data", str(work / "cache"))
    base = work / "ldm-text" / "model"
    models = {}
    for name, (ca, lcag, vi) in VARIANTS.items():
        align = out / align_name(ca, vi)
        stages.run(align.name, "train", "align", *common, "--model", str(base), "--out", str(align),
                   "--ca" if ca else "--no-ca", "--vi" if vi else "--no-vi")
        cross = out / f"cross-{slug(name)}"
        stages.run(cross.name, "train", "cross", "--all", *common, "--model", str(align / "model"),
                   "--out", str(cross), "--lcag" if lcag else "--no-lcag")
        models[name] = cross / "model"
    return models


LOWER_IS_BETTER = ("xray_fid",)


def verdicts(results: dict) -> list[str]:
    """For each switch, on how many metrics the full model beats the variant without it, and on how many by more
    than the two rows' seed spreads together (what a reader can trust at this number of seeds)."""
    seeds, lines = results["seeds"], []
    full = seeds["full"]
    for switch in ("CA", "LCAG", "VI"):
        off = seeds[f"no {switch}"]
        better, clearly, worse_clearly = [], [], []
        for metric, values in full.items():
            sign = -1 if metric in LOWER_IS_BETTER else 1
            gain = sign * (np.mean(values) - np.mean(off[metric]))
            spread = np.std(values) + np.std(off[metric])
            if gain > 0:
                better.append(metric)
            if gain > spread:
                clearly.append(metric)
            elif -gain > spread:
                worse_clearly.append(metric)
        lines.append(f"- {switch}: the full model is better than without it on {len(better)} of {len(full)} metrics; "
                     f"by more than the seeds' spread on {', '.join(clearly) or 'none'}; worse by more than the "
                     f"spread on {', '.join(worse_clearly) or 'none'}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="a train_phantom_tiny.py work folder (its cache/ and ldm-text/model are used)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the variants and the evaluation")
    parser.add_argument("--recipe", default="phantom-tiny")
    parser.add_argument("--cases", type=int, default=4, help="volumes per translation column (4x as many chest cases)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--skip-eval", action="store_true", help="train the variants only")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = train_variants(args.work, args.out, args.recipe)
    if args.skip_eval:
        return
    evaluation = args.out / "evaluation"
    variants = [arg for name, model in models.items() for arg in ("--variant", f"{name}={model}")]
    medm2g("evaluate", "ablation", *variants, "--data", str(args.work / "cache"), "--out", str(evaluation),
           "--cases", str(args.cases), "--seeds", str(args.seeds))
    results = json.loads((evaluation / "results.json").read_text(encoding="utf-8"))
    table = (evaluation / "results.md").read_text(encoding="utf-8").split("\n", 2)[2].strip()
    body = "\n".join([
        f"Recipe `{args.recipe}`: every variant trains the alignment and the three cross-guided rounds with the "
        "recipe's steps and seeds from the same single-modal model (VAEs and LDMs of the phantom-tiny run); only "
        "the switches differ. \"LDM\" is Table 7's first row (no CA, LCAG, VI: the prompt encoders stay as "
        "initialised and the rounds give V_B only f_B). s/epoch: the alignment plus the three rounds, one pass over "
        "their training pairs each, on this machine; added params: parameters trained by those stages beyond the "
        "LDM row's. Evaluation: DDIM 50, eta 1, guidance 2, test split.",
        "", table, "", "How each switch fares (full model vs the full model without it):", "", *verdicts(results),
    ])
    print(body)
    if args.write:
        command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
