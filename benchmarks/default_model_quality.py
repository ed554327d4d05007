"""Benchmark: what the default model does on held-out phantom cases, each task against a trivial baseline.

On the val + test cases of a phantom world (never seen in training), with the paper's sampler (DDIM 50, eta 1,
guidance 2):

- **MRI T1 -> CT** (brain): PSNR and SSIM of the translated volume against the phantom CT, on the input grid
  (``medm2g_core.evaluation.image_metrics``); baseline: the mean training CT slice put on every kept slice.
- **X-ray -> report** (chest films and skull films): corpus BLEU-4, ROUGE-L and the micro F1 of the findings the
  labeler reads; baseline: the most common training report (of the most common finding pattern).
- **report -> X-ray** (chest): does a requested pleural effusion appear? A logistic-regression classifier trained
  on real training X-rays (32 x 32, effusion label) judges every generated film; reported as AUC of its score
  against the requested label (0.5 = the report has no effect), with the classifier's AUC on the real held-out
  films as the ceiling.

    python benchmarks/default_model_quality.py --data data/phantom --cache data/c64 --write
"""

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_report import ROOT, write_section

from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import read_manifest
from medm2g_core.evaluation.image_metrics import volume_psnr_ssim
from medm2g_core.evaluation.labeler import binary_labels
from medm2g_core.evaluation.text_metrics import corpus_bleu, finding_scores, rouge_l
from medm2g_core.hub import load_model
from medm2g_core.io.load import read_volume
from medm2g_core.sampling.diffusion import SamplingConfig
from medm2g_core.sampling.generate import GenerateOptions, generate_images
from medm2g_core.sampling.report import ReportOptions, write_report
from medm2g_core.sampling.slices import cut, uncut
from medm2g_core.sampling.translate import TranslateOptions, output_mapping, translate_volume

SECTION = "## Default model quality on held-out phantom cases (default_model_quality.py)"
HELD_OUT = ("val", "test")
CLASSIFIER_SIDE = 32


def held_out(manifest, source: str, limit: int) -> list:
    return [r for r in manifest.records if r.split in HELD_OUT and r.source == source][:limit]


def mri_to_ct(model, manifest, cache: Cache, limit: int, sampling: SamplingConfig) -> dict:
    train = cache.stream("train", "ct")
    brain = np.array([cache.index["cases"][c]["source"] == "phantom-brain" for c in train["case"]])
    mean_slice = train["images"][brain].mean(axis=0)  # [R, R] in [-1, 1]
    scores = {"model": [], "baseline": []}
    for record in held_out(manifest, "phantom-brain", limit):
        t1 = read_volume(manifest.image_path(record, "mr_t1"), modality="MR")
        ct = read_volume(manifest.image_path(record, "ct"), modality="CT")
        made = translate_volume(model, [t1], TranslateOptions("ct", sampling=sampling))
        scores["model"].append(volume_psnr_ssim(made, ct))
        stack = cut(t1, cache.resolution)
        mapping, background = output_mapping("ct", [t1], stack)
        flat = uncut(stack, np.repeat(mean_slice[None], len(stack.kept), 0), mapping, background)
        scores["baseline"].append(volume_psnr_ssim(made.with_data(flat), ct))
    return {name: {metric: _mean_std([s[metric] for s in rows]) for metric in ("psnr", "ssim")}
            for name, rows in scores.items()} | {"cases": len(scores["model"])}


def most_common_report(cache: Cache) -> str:
    train = [c for c in cache.index["cases"] if c["split"] == "train" and c.get("report")]
    patterns = Counter(json.dumps(binary_labels(c["report"]), sort_keys=True) for c in train)
    pattern = patterns.most_common(1)[0][0]
    texts = Counter(c["report"] for c in train if json.dumps(binary_labels(c["report"]), sort_keys=True) == pattern)
    return texts.most_common(1)[0][0]


def report_task(model, manifest, cache: Cache, limit: int, sampling: SamplingConfig) -> dict:
    records = [r for r in manifest.records if r.split in HELD_OUT and "xray" in r.images and r.report][:limit]
    truth = [r.report for r in records]
    made = [write_report(model, read_volume(manifest.image_path(r, "xray"), modality="XRAY"),
                         ReportOptions(sampling=sampling))[0].text for r in records]
    constant = [most_common_report(cache)] * len(records)

    def scores(hypotheses: list[str]) -> dict:
        return {"bleu4": corpus_bleu(hypotheses, truth), "rouge_l": rouge_l(hypotheses, truth),
                "f1_micro": finding_scores(hypotheses, truth)["f1_micro"]}

    return {"model": scores(made), "baseline": scores(constant), "cases": len(records), "example": made[0]}


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None]).mean()
    ties = (positive[:, None] == negative[None]).mean()
    return float(greater + 0.5 * ties)


def _features(images: np.ndarray) -> torch.Tensor:
    """Slices [N, R, R] in [-1, 1] -> standardised 32 x 32 pixels [N, 1024]."""
    small = F.interpolate(torch.from_numpy(images).float()[:, None], size=(CLASSIFIER_SIDE, CLASSIFIER_SIDE),
                          mode="area")
    return small.flatten(1)


def effusion_classifier(cache: Cache) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """Logistic regression on real training chest X-rays: (model, feature mean, feature std)."""
    stream = cache.stream("train", "xray")
    cases = [cache.index["cases"][c] for c in stream["case"]]
    keep = np.array([c["source"] == "phantom-chest" for c in cases])
    x = _features(stream["images"][keep])
    y = torch.tensor([c["labels"]["pleural_effusion"] for c, k in zip(cases, keep, strict=True) if k]).float()
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    classifier = torch.nn.Linear(x.shape[1], 1)
    optimiser = torch.optim.LBFGS(classifier.parameters(), max_iter=200)
    weight = (1 - y.mean()) / y.mean()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(classifier(x)[:, 0], y, pos_weight=weight)
        loss = loss + 1e-2 * classifier.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return classifier, mean, std


def text_to_xray(model, manifest, cache: Cache, limit: int, sampling: SamplingConfig, samples: int) -> dict:
    classifier, mean, std = effusion_classifier(cache)
    records = held_out(manifest, "phantom-chest", limit)
    labels = np.array([r.labels["pleural_effusion"] for r in records])
    real = np.stack([cut(read_volume(manifest.image_path(r, "xray"), modality="XRAY"), cache.resolution).images[0]
                     for r in records])

    def score(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return classifier((_features(images) - mean) / std)[:, 0].numpy()

    generated, requested = [], []
    for k in range(samples):
        for start in range(0, len(records), 16):
            chunk = records[start:start + 16]
            seeds = [1000 * k + start + i for i in range(len(chunk))]
            images = generate_images(model, [r.report for r in chunk], GenerateOptions(("xray",), sampling=sampling),
                                     seeds)["xray"]
            generated.append(images)
            requested.extend(r.labels["pleural_effusion"] for r in chunk)
    made_scores, requested = score(np.concatenate(generated)), np.array(requested)
    return {"auc_generated": _auc(made_scores, requested), "auc_real": _auc(score(real), labels),
            "accuracy_generated": float(((made_scores > 0) == requested).mean()),
            "majority_accuracy": float(max(requested.mean(), 1 - requested.mean())),
            "positives": int(requested.sum()), "films": len(requested)}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def body(results: dict, command_args: argparse.Namespace) -> str:
    translation, report, xray = results["mri_to_ct"], results["report"], results["text_to_xray"]

    def ms(pair: tuple[float, float], digits: int) -> str:
        return f"{pair[0]:.{digits}f} +/- {pair[1]:.{digits}f}"

    lines = [
        f"Held-out (val + test) phantom cases; DDIM {command_args.steps} steps, eta 1, guidance 2; "
        f"{platform.machine()}, torch {torch.__version__}; {results['wall_s']:.0f} s in all.",
        "",
        f"**MRI T1 -> CT** ({translation['cases']} brain volumes; mean +/- std over cases):",
        "",
        "| method | PSNR (dB) | SSIM |", "|---|---|---|",
        f"| default model | {ms(translation['model']['psnr'], 2)} | {ms(translation['model']['ssim'], 3)} |",
        f"| mean training CT slice | {ms(translation['baseline']['psnr'], 2)} | "
        f"{ms(translation['baseline']['ssim'], 3)} |",
        "",
        f"**X-ray -> report** ({report['cases']} films, chest and skull):",
        "",
        "| method | BLEU-4 | ROUGE-L | finding F1 (micro) |", "|---|---|---|---|",
        *(f"| {name} | {report[key]['bleu4']:.3f} | {report[key]['rouge_l']:.3f} | {report[key]['f1_micro']:.3f} |"
          for name, key in (("default model", "model"), ("most common training report", "baseline"))),
        "",
        f"**Report -> X-ray, pleural effusion** ({xray['films']} generated chest films, {xray['positives']} asked "
        "for an effusion): a logistic-regression effusion classifier trained on real training films scores them.",
        "",
        "| | AUC of the classifier score vs the requested label | accuracy |", "|---|---|---|",
        f"| generated films | {xray['auc_generated']:.3f} | {xray['accuracy_generated']:.3f} |",
        f"| real held-out films (the classifier's ceiling) | {xray['auc_real']:.3f} | |",
        f"| trivial (no information / majority class) | 0.500 | {xray['majority_accuracy']:.3f} |",
        "",
        f"An example generated report: \"{report['example'][:300]}\"",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the phantom world (manifest.jsonl)")
    parser.add_argument("--cache", type=Path, required=True, help="its training cache (prepare cache)")
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--cases", type=int, default=20, help="held-out cases per task")
    parser.add_argument("--samples", type=int, default=2, help="generated films per chest report")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md and docs/default-model-quality.json")
    args = parser.parse_args()
    started = time.perf_counter()
    model = load_model(args.model, device="cpu")
    manifest = read_manifest(args.data / "manifest.jsonl" if args.data.is_dir() else args.data)
    cache = Cache.open(args.cache)
    sampling = SamplingConfig(steps=args.steps)
    results = {"mri_to_ct": mri_to_ct(model, manifest, cache, args.cases, sampling),
               "report": report_task(model, manifest, cache, 2 * args.cases, sampling),
               "text_to_xray": text_to_xray(model, manifest, cache, 2 * args.cases, sampling, args.samples)}
    results["wall_s"] = time.perf_counter() - started
    text = body(results, args)
    print(text)
    if args.write:
        (ROOT / "docs" / "default-model-quality.json").write_text(json.dumps(results, indent=1) + "\n")
        write_section(SECTION, text, f"python benchmarks/default_model_quality.py --data {args.data} --cache "
                                     f"{args.cache} --cases {args.cases} --samples {args.samples} --steps {args.steps}"
                                     " --write")


if __name__ == "__main__":
    main()
