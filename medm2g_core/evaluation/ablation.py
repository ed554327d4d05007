"""Table 7: one set of tasks on several variants of a model that differ in the CA / LCAG / VI switches.

Every variant is scored on the same held-out cases with the same seeds (a seed gives every variant the same
initial noise); ``--cases N`` takes N volumes for each translation and 4N chest cases for the text and X-ray
columns:

- ``report``: chest X-ray -> report, BLEU-1, BLEU-4, ROUGE-L (pycocoevalcap) and the findings' micro F1;
- ``effusion_auc`` and ``xray_fid``: one X-ray per report of the same chest cases, scored by the effusion judge
  trained on real films and by FID (Inception pool features) against the real films of those cases;
- ``pd_*``: T2 + T1 -> PD (mri-synthesis), PSNR / SSIM over the volume, as Table 7's BraTS column;
- ``ct_*``: MRI T2 -> CT, PSNR / SSIM, as Table 7's pelvic column.

The switches and the training cost come from what training recorded in each model (``info["stage:align"]``,
``info["stage:cross-*"]``): CA, LCAG and VI; the time per epoch of the alignment plus every round on the
machine that trained it; and the parameters those stages trained, shown as added to the first variant's.
"""

from collections.abc import Callable

import numpy as np

from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import Manifest
from medm2g_core.errors import InputError, ModelError
from medm2g_core.evaluation.tasks import (
    SAMPLES,
    EvalOptions,
    Sample,
    TaskResult,
    auc,
    effusion_classifier,
    films_from_reports,
    held_out,
    image_scores,
    middle_slice,
    text_scores,
    unit_range,
)
from medm2g_core.io.load import read_volume
from medm2g_core.metrics.image_metrics import fid, inception_features
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.sampling.report import ReportOptions, write_report
from medm2g_core.sampling.translate import TranslateOptions, translate_volume

REPORT_METRICS = ("bleu_1", "bleu_4", "rouge_l", "f1_micro")
SYNTHESIS = (("mr_t2", "mr_t1"), "mr_pd", "PD")  # sources, target key, target contrast
TO_CT = (("mr_t2",), "ct")
TEXT_CASES = 4  # chest cases per --cases: a report or a film costs a fraction of a volume
COMPONENTS = ("image_vae", "text_vae", *(f"{part}_{m}" for part in ("denoiser", "context_encoder", "prompt_encoder")
                                         for m in ("text", "xray", "ct", "mri")))


SPATIAL_STAGE = "stage:cross-spatial"


def switches(model: MedM2G) -> dict[str, bool | None]:
    """CA / LCAG / VI as the model's training recorded them (None: not recorded, or the rounds disagree), and
    whether it has the spatial path (our extension: the spatial round ran)."""
    align = model.info.get("stage:align", {})
    rounds = {v.get("lcag") for k, v in model.info.items() if k.startswith("stage:cross-") and k != SPATIAL_STAGE}
    return {"ca": align.get("ca"), "lcag": rounds.pop() if len(rounds) == 1 else None, "vi": align.get("vi"),
            "spatial": SPATIAL_STAGE in model.info}


def training_cost(model: MedM2G) -> tuple[float | None, int]:
    """(seconds per epoch of the alignment plus every round, parameters those stages trained)."""
    stages = [v for k, v in model.info.items() if k == "stage:align" or k.startswith("stage:cross-")]
    seconds = [s["seconds_per_epoch"] for s in stages if "seconds_per_epoch" in s]
    epoch = sum(seconds) if seconds and len(seconds) == sum(s.get("steps", 0) > 0 for s in stages) else None
    return epoch, sum(s.get("trained_parameters", 0) for s in stages)


def _mark(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[value]


def _columns(variants: dict[str, MedM2G]) -> dict[str, dict[str, str]]:
    first = training_cost(next(iter(variants.values())))[1]
    columns = {}
    for number, (name, model) in enumerate(variants.items()):
        epoch, trained = training_cost(model)
        columns[name] = {key.upper(): _mark(value) for key, value in switches(model).items()} | {
            "s/epoch": "?" if epoch is None else f"{epoch:.0f}",
            "added params (M)": "-" if number == 0 else f"{(trained - first) / 1e6:+.3f}",
        }
    return columns


def _translations(model: MedM2G, manifest: Manifest, records: list, sources: tuple[str, ...], target_key: str,
                  contrast: str | None, options: EvalOptions, seed: int, tick: Callable[[], None]) -> list[tuple]:
    """(source volumes, output, truth, scores) per record."""
    target = "ct" if target_key == "ct" else "mri"
    made = []
    for record in records:
        inputs = [read_volume(manifest.image_path(record, k)) for k in sources]
        truth = read_volume(manifest.image_path(record, target_key))
        output = translate_volume(model, inputs, TranslateOptions(target, contrast, options.sampling, seed))
        made.append((inputs, output, truth, image_scores(output, truth)))
        tick()
    return made


def ablation(variants: dict[str, MedM2G], manifest: Manifest, cache: Cache, options: EvalOptions,
             progress: Callable[[int, int], None] | None = None) -> TaskResult:
    """Score every variant (name -> model, the first is the reference of the added parameters) on the same cases
    and seeds; methods of the result are the variants."""
    if len(variants) < 2:
        raise InputError(f"the ablation compares at least two variants; got {len(variants)}", option="variants")
    for name, model in variants.items():
        missing = [c for c in COMPONENTS if c not in model]
        if missing:
            raise ModelError(f"variant {name!r} lacks {', '.join(missing)}: give complete models (RUN/model of "
                             "`medm2g train cross --all`)")
    chest = [r for r in held_out(manifest, options.split, ("xray",), None, report=True)
             if "pleural_effusion" in r.labels][:None if options.cases is None else TEXT_CASES * options.cases]
    synthesis = held_out(manifest, options.split, (*SYNTHESIS[0], SYNTHESIS[1]), options.cases)
    to_ct = held_out(manifest, options.split, (*TO_CT[0], TO_CT[1]), options.cases)
    if len(chest) < 2:
        raise InputError("the ablation needs at least two held-out chest reports with an effusion label")
    judge = effusion_classifier(cache)
    real = np.stack([middle_slice(read_volume(manifest.image_path(r, "xray"), modality="XRAY")) for r in chest])
    real_features = inception_features(unit_range(real))
    labels = np.array([r.labels["pleural_effusion"] for r in chest])
    xrays = [read_volume(manifest.image_path(r, "xray"), modality="XRAY") for r in chest]
    truth = [r.report for r in chest]
    result = TaskResult("ablation", 2 * len(chest) + len(synthesis) + len(to_ct))
    result.columns = _columns(variants)
    total, done = len(variants) * options.seeds * result.cases, 0

    def tick(count: int = 1) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    for name, model in variants.items():
        for seed in range(options.seeds):
            reports = []
            for film in xrays:
                reports.append(write_report(model, film, ReportOptions(options.sampling, seed))[0].text)
                tick()
            scores = text_scores(reports, truth)
            metrics = {f"report_{k}": scores[k] for k in REPORT_METRICS}
            seeds = [seed * 100_003 + i for i in range(len(truth))]
            made = films_from_reports(model, truth, options.sampling, seeds, tick)
            metrics |= {"effusion_auc": auc(judge(made), labels),
                        "xray_fid": fid(inception_features(unit_range(made)), real_features)}
            pd = _translations(model, manifest, synthesis, *SYNTHESIS, options, seed, tick)
            ct = _translations(model, manifest, to_ct, *TO_CT, None, options, seed, tick)
            for prefix, runs in (("pd", pd), ("ct", ct)):
                metrics |= {f"{prefix}_{k}": float(np.mean([r[3][k] for r in runs])) for k in ("psnr", "ssim")}
            result.add(name, metrics)
            if seed == 0:
                for prefix, runs in (("pd", pd), ("ct", ct)):
                    for run in runs:
                        result.add_case(name, {f"{prefix}_psnr": run[3]["psnr"]})
                inputs, output, target, _ = ct[0]
                result.samples.append(Sample(f"{name}: T2 -> CT, {to_ct[0].id}; X-ray of {chest[0].id}", {
                    "input": middle_slice(inputs[0]), "output": middle_slice(output),
                    "truth": middle_slice(target), "x-ray": made[0], "real x-ray": real[0]}))
                result.notes += [f"{name}, {chest[k].id}: {reports[k]}" for k in range(min(SAMPLES // 2, len(chest)))]
    result.notes.insert(0, f"report: the films of {len(chest)} chest cases; effusion_auc and xray_fid: their reports "
                        f"(judge AUC on their real films {auc(judge(real), labels):.3f}); pd: T2 + T1 -> PD on "
                        f"{len(synthesis)} volumes; ct: T2 -> CT on {len(to_ct)} volumes")
    return result
