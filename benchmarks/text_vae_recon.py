"""Benchmark: does the text VAE reconstruct held-out reports? (issue 14, item 4)

Trains the text VAE stage with a recipe's ``[text_vae]`` settings on the reports of a phantom world (the
world the embedded default is trained on: ``--cases 400 --world-seed 0``), once per ``--corpus`` size: the
number of generated phantom reports (``[text_vae] phantom_reports``, a text-only pretraining corpus from a world
with another seed) added to the world's training reports. Every run has the same step budget. The reports are
regenerated from their seeds (``phantoms.world.case_report``: the very text ``prepare phantom`` writes), so no
image is drawn and no cache is needed.

Held out: the val and test reports of that world. Scores, greedy decoding of the posterior mean: corpus BLEU-4,
micro and macro finding F1 of the labeler on the reconstruction against the labeler on the original, and the
share of reconstructions identical to their original. The embedded default's text VAE is scored on the same
reports as a reference row. Targets (issue 14): F1 >= 0.95 and BLEU-4 >= 0.80.

    python benchmarks/text_vae_recon.py --corpus 0 20000 --steps 1500 --write
"""

import argparse
import platform
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from bench_report import write_section

from medm2g_core.api import load_model
from medm2g_core.data.manifest import split_for
from medm2g_core.metrics.text_metrics import corpus_bleu, finding_scores
from medm2g_core.models.text_vae import TextVAE
from medm2g_core.phantoms.world import PhantomConfig, case_plan, case_report, report_corpus
from medm2g_core.training.recipe import load_recipe
from medm2g_core.training.text_vae_stage import TextVAEStage, reconstruct
from medm2g_core.training.trainer import train

SECTION = "## Text VAE reconstruction of held-out reports (text_vae_recon.py)"


def world_reports(cases: int, seed: int) -> dict[str, list[str]]:
    """The reports of a phantom world by split, exactly as ``prepare phantom`` writes them."""
    reports: dict[str, list[str]] = {}
    for case_id, task, case_seed in case_plan(PhantomConfig(cases=cases, seed=seed)):
        reports.setdefault(split_for(case_id), []).append(case_report(task, case_seed))
    return reports


def scores(vae: TextVAE, held_out: list[str]) -> dict[str, float]:
    rebuilt = reconstruct(vae.eval(), held_out)
    findings = finding_scores(rebuilt, held_out)
    return {
        "bleu4": corpus_bleu(rebuilt, held_out), "f1_micro": findings["f1_micro"], "f1_macro": findings["f1_macro"],
        "exact": sum(a.lower().split() == b.lower().split() for a, b in zip(rebuilt, held_out, strict=True))
        / len(held_out),
    }


def train_one(reports: dict[str, list[str]], corpus: list[str], recipe_name: str, steps: int | None,
              scratch: Path) -> tuple[TextVAE, float]:
    recipe = load_recipe(recipe_name)
    section = recipe.text_vae
    optim = replace(section.optim, steps=steps or section.optim.steps, sample_every=0, checkpoint_every=10**9)
    torch.manual_seed(optim.seed)
    stage = TextVAEStage({**reports, "train": [*reports["train"], *corpus]}, section.model,
                         kl_anneal_steps=section.kl_anneal_steps)
    result = train(stage, optim, scratch, device="cpu", progress=True)
    return stage.vae, result.wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="phantom-tiny")
    parser.add_argument("--cases", type=int, default=400, help="cases of the phantom world (train/val/test)")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--corpus", type=int, nargs="+", default=[0, 20000], help="generated reports added")
    parser.add_argument("--corpus-seed", type=int, default=1000)
    parser.add_argument("--steps", type=int, help="optimiser steps per run (default: the recipe's)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    reports = world_reports(args.cases, args.world_seed)
    held_out = reports.get("val", []) + reports.get("test", [])
    rows = []
    rows.append(("embedded default", "-", "-", scores(load_model(None, device="cpu")["text_vae"], held_out), None))
    for size in args.corpus:
        corpus = report_corpus(size, args.corpus_seed) if size else []
        seen = set(reports["train"]) | set(corpus)
        with tempfile.TemporaryDirectory() as scratch:
            vae, wall = train_one(reports, corpus, args.recipe, args.steps, Path(scratch))
        result = scores(vae, held_out)
        result["held_out_in_train"] = sum(r in seen for r in held_out) / len(held_out)
        rows.append((f"{args.recipe}, +{size} phantom reports", len(reports["train"]) + size,
                     args.steps or load_recipe(args.recipe).text_vae.optim.steps, result, wall))
        print(rows[-1], flush=True)
    lines = [
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, fp32. World: {args.cases} cases, seed "
        f"{args.world_seed}; held out: its {len(held_out)} val + test reports. Corpus: a phantom world of seed "
        f"{args.corpus_seed} (reports only). Greedy decoding of the posterior mean. Targets: finding F1 >= 0.95, "
        "BLEU-4 >= 0.80.", "",
        "| text VAE | training reports | steps | BLEU-4 | finding F1 micro | F1 macro | identical | held-out text "
        "also in training | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, count, steps, result, wall in rows:
        overlap = f"{result['held_out_in_train']:.2f}" if "held_out_in_train" in result else "-"
        lines.append(f"| {name} | {count} | {steps} | {result['bleu4']:.3f} | {result['f1_micro']:.3f} | "
                     f"{result['f1_macro']:.3f} | {result['exact']:.2f} | {overlap} | "
                     f"{'-' if wall is None else f'{wall:.0f}'} |")
    body = "\n".join(lines)
    print(body)
    if args.write:
        command = (f"python benchmarks/text_vae_recon.py --recipe {args.recipe} --corpus "
                   f"{' '.join(map(str, args.corpus))}" + (f" --steps {args.steps}" if args.steps else "") + " --write")
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
