"""Benchmark: do X-ray -> report and report -> X-ray follow their input? The report round against the paper's path.

For each model (``--models NAME=PATH ...``; ``default`` is the embedded model) and guidance scale, on the held-out
films of a phantom world:

* X-ray -> report (``medm2g report`` with its consistency redraw) on chest films: finding F1 (micro, macro) against
  the case's report, the share naming the other anatomy's finding over chest and skull films alike, and finding
  agreement between the reports of a film and of another case's film (lower: the film matters);
* report -> X-ray (``medm2g generate``) on chest reports with an effusion label: the effusion judge's AUC (a
  logistic regression trained on the real training films, as ``evaluate text-to-image`` does);
* report -> CT, alone and jointly with MRI, on the reports of the chest and skull films: the share of CT slices of
  the report's anatomy (nearer the mean training CT slice of the chest than of the head, or the reverse);
* the rows that bound them: the nearest training report in the aligned space, and the text VAE's reconstruction of
  the true report (encode, decode: how much of a report its text VAE keeps; sampled latents can score higher).

    python benchmarks/report_round.py --data data/world --cache data/cache --models default new=runs/report/model
"""

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from bench_report import write_section

from medm2g_core.data.cache import Cache
from medm2g_core.data.labeler import binary_labels, foreign_findings
from medm2g_core.data.manifest import read_manifest
from medm2g_core.evaluation.baselines import nearest_report
from medm2g_core.evaluation.tasks import (
    auc,
    case_anatomy,
    effusion_classifier,
    films_from_reports,
    held_out,
    middle_slice,
)
from medm2g_core.hub import load_model
from medm2g_core.io.load import read_volume
from medm2g_core.metrics.text_metrics import finding_scores
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.generate import GenerateOptions, generate_images
from medm2g_core.sampling.guides import decode_reports, text_guide
from medm2g_core.sampling.report import ReportOptions, write_report

SECTION = "## X-ray -> report and report -> X-ray: the report round (report_round.py)"


def agreement(a: str, b: str) -> float:
    left, right = binary_labels(a), binary_labels(b)
    return float(np.mean([left[n] == right[n] for n in left]))


def reports_of(model, films, sampling: SamplingConfig) -> list[str]:
    return [write_report(model, film, ReportOptions(sampling, 0))[0].text for film in films]


def anatomy_judge(cache: Cache):
    """Chest or brain for CT slices [N, R, R]: the nearer of the two mean training CT slices."""
    stream = cache.stream("train", "ct")
    sources = np.array([cache.index["cases"][c]["source"] for c in stream["case"]])
    means = {a: stream["images"][sources == f"phantom-{a}"].mean(0) for a in ("chest", "brain")}

    def judge(slices: np.ndarray) -> list[str]:
        return [min(means, key=lambda a: float(np.mean((s - means[a]) ** 2))) for s in slices]

    return judge


def ct_anatomy(model, reports: list[str], anatomies: list[str], judge, sampling: SamplingConfig) -> dict[str, float]:
    """The share of CT slices drawn from each report (alone, and jointly with MRI) of the report's anatomy."""
    seeds = list(range(len(reports)))
    alone = generate_images(model, reports, GenerateOptions(("ct",), sampling=sampling), seeds)["ct"]
    joint = generate_images(model, reports, GenerateOptions(("ct", "mri"), sampling=sampling), seeds)["ct"]
    return {name: float(np.mean([a == b for a, b in zip(judge(made), anatomies, strict=True)]))
            for name, made in (("CT anatomy", alone), ("joint CT anatomy", joint))}


def score_model(model, records, films, skull, effusion, judge, sampling: SamplingConfig) -> dict[str, float]:
    truth = [r.report for r in records]
    made = reports_of(model, films, sampling)
    shuffled = made[1:] + made[:1]  # the report of another case's film
    found = finding_scores(made, truth)
    skull_made = reports_of(model, skull, sampling)
    foreign = [bool(foreign_findings(t, "chest")) for t in made] + [bool(foreign_findings(t, "brain"))
                                                                     for t in skull_made]
    labels = np.array([r.labels["pleural_effusion"] for r in effusion])
    generated = films_from_reports(model, [r.report for r in effusion], sampling, list(range(len(effusion))))
    return {"f1_micro": found["f1_micro"], "f1_macro": found["f1_macro"],
            "other anatomy": float(np.mean(foreign)),
            "agreement": float(np.mean([agreement(a, b) for a, b in zip(made, shuffled,
                                                                                                   strict=True)])),
            "effusion AUC": auc(judge(generated), labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a phantom world folder (manifest.jsonl)")
    parser.add_argument("--cache", type=Path, required=True, help="its cache with X-ray and CT (the judges learn from "
                        "its train split)")
    parser.add_argument("--models", nargs="+", default=["default"], help="NAME=PATH, or default")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cases", type=int, default=24, help="chest films (and effusion-labelled reports)")
    parser.add_argument("--skull", type=int, default=8, help="skull films for the other-anatomy check")
    parser.add_argument("--guidance", default="2", help="scales (comma-separated)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    manifest = read_manifest(args.data / "manifest.jsonl")
    cache = Cache.open(args.cache)
    held = held_out(manifest, args.split, ("xray",), None, report=True)
    chest = [r for r in held if case_anatomy(r) == "chest"][:args.cases]
    skull = [r for r in held if case_anatomy(r) == "brain"][:args.skull]
    effusion = [r for r in held if "pleural_effusion" in r.labels][:args.cases]
    films = [read_volume(manifest.image_path(r, "xray"), modality="XRAY") for r in chest]
    skull_films = [read_volume(manifest.image_path(r, "xray"), modality="XRAY") for r in skull]
    judge, anatomy = effusion_classifier(cache), anatomy_judge(cache)
    truth = [r.report for r in chest]
    prompts = [r.report for r in chest + skull]
    anatomies = ["chest"] * len(chest) + ["brain"] * len(skull)
    lines = ["| model | guidance | finding F1 micro | F1 macro | names the other anatomy | agreement with another "
             "film's report | report -> X-ray effusion AUC | report -> CT of its anatomy | joint CT + MRI |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    bounds = []
    for spec in args.models:
        name, _, path = spec.partition("=")
        model = load_model(path or None, device="cpu")
        for scale in [float(s) for s in args.guidance.split(",")]:
            sampling = SamplingConfig(steps=args.steps, guidance=scale)
            row = score_model(model, chest, films, skull_films, effusion, judge, sampling)
            row |= ct_anatomy(model, prompts, anatomies, anatomy, sampling)
            lines.append(f"| {name} | {scale:g} | {row['f1_micro']:.3f} | {row['f1_macro']:.3f} | "
                         f"{row['other anatomy']:.2f} | {row['agreement']:.3f} | "
                         f"{row['effusion AUC']:.3f} | {row['CT anatomy']:.2f} | {row['joint CT anatomy']:.2f} |")
            print(lines[-1], flush=True)
        training = [c["report"] for c in cache.index["cases"] if c["split"] == "train" and c.get("report")]
        nearest = nearest_report(model, np.stack([middle_slice(f, cache.resolution) for f in films]), training)
        rebuilt = decode_reports(model, text_guide(model, truth).latent)
        for label, texts in ((f"{name}: nearest training report (aligned encoders)", nearest),
                             (f"{name}: text VAE reconstruction of the true report (encode, decode)", rebuilt)):
            found = finding_scores(texts, truth)
            bounds.append(f"| {label} | {found['f1_micro']:.3f} | {found['f1_macro']:.3f} |")
            print(bounds[-1], flush=True)
    lines += ["", "| bound | finding F1 micro | F1 macro |", "|---|---:|---:|", *bounds]
    command = (f"python benchmarks/report_round.py --data {args.data} --cache {args.cache} --models "
               f"{' '.join(args.models)} --split {args.split} --cases {args.cases} --skull {args.skull} "
               f"--guidance {args.guidance} --steps {args.steps}" + " --write" * args.write)
    body = "\n".join(lines) + (
        f"\n\n{len(chest)} chest films and {len(skull)} skull films ({args.split} split), {len(effusion)} "
        f"effusion-labelled reports; seed 0, DDIM {args.steps} steps, eta 1, reports with the consistency redraw "
        f"(default 8); {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{time.perf_counter() - started:.0f} s."
    )
    if args.write:
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
